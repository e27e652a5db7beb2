//! `spank-carbon mail`: a MailProg wrapper that adds the job's GPU footprint to Slurm's
//! end-of-job mail, then hands the mail to the site's real mail program.
//!
//! How slurmctld calls MailProg, the same in 22.05, 24.11 and 26.05 (tags
//! slurm-22-05-8-1, slurm-24-11-5-1, slurm-26-05-3-1):
//!
//! - `src/slurmctld/agent.c` `_mail_proc`: argv is exactly
//!   `{MailProg, "-s", <subject>, <mail_user>}`; MailProg is a path with no arguments of
//!   its own, so this wrapper is installed as a name (`spank-carbon-mail`, a link to
//!   `spank-carbon`) that it recognises from argv[0], or called through
//!   `spank-carbon mail -s SUBJECT USER`.
//! - It runs through `slurmscriptd_run_mail` (`src/slurmctld/slurmscriptd.c`), i.e. in
//!   slurmscriptd, which slurmctld forks: as **SlurmUser**, not root. It is killed after
//!   `MAIL_PROG_TIMEOUT` = 120 s (agent.c), so `mail_wait_s` is at most 90.
//! - `src/common/run_command.c`: stdin is `/dev/null` (so Slurm's mail has no body; the
//!   subject is all), stdout and stderr go to a pipe whose text slurmctld logs (`debug`,
//!   or `error` "MailProg returned error" when the exit status is not 0); the child gets
//!   its own process group.
//! - The environment (`_build_mail_env` in agent.c, `job_common_env_vars` in
//!   `src/slurmctld/job_mgr.c`) is built by slurmctld, not taken from the user:
//!   `SLURM_JOB_ID`/`SLURM_JOBID`, `SLURM_JOB_NAME`, `SLURM_JOB_USER`, ...,
//!   `SLURM_JOB_STATE` (e.g. `COMPLETED`), `SLURM_JOB_MAIL_TYPE` (`Began`, `Ended`,
//!   `Failed`, `Requeued`, `StageOut/Teardown`, `Reached time limit`, `Reached 90% of
//!   time limit`, ..., `Invalid dependency`: `_mail_type_str`), and for END/FAIL the
//!   exit code and run time.
//! - The subject (`mail_job_info` in agent.c): `Slurm Job_id=<id> Name=<name>
//!   <type><time><term>`, e.g. `Slurm Job_id=42 Name=train Ended, Run time 00:00:10,
//!   COMPLETED, ExitCode 0`; an array task `Slurm Array Task Job_id=<array>_<task> (<id>)
//!   Name=...`; the summary of a whole array `Slurm Array Summary Job_id=<array>_*
//!   (<id>) Name=...` (its environment is the array's master record).
//! - At most `MAX_MAIL_THREADS` = 64 MailProg run at once (`src/slurmctld/slurmctld.h`),
//!   each also holding one of slurmctld's agent threads (`agent_thread_cnt`, shared with
//!   the RPCs to slurmd) while it runs: the wait ends as soon as the record is whole and
//!   is not made for jobs without GPUs, but keep `mail_wait_s` short on busy clusters.
//! - Slurm's own default MailProg is `/bin/mail`, else `/usr/bin/mail`
//!   (`DEFAULT_MAIL_PROG`, `src/common/read_config.h`).
//! - The end mail is queued when the job completes, before or while the epilogs run,
//!   so the record usually lands a few seconds after the mail starts: hence the wait.
//!
//! What it does: finds the job id (`SLURM_JOB_ID`, else the subject, strictly); for mail
//! types that end a run (Ended, Failed, Reached time limit, Requeued, StageOut) of a job
//! with GPUs it polls sacct for the record for up to `mail_wait_s`, then runs
//! `mail_prog` (absolute path, argv passed on unchanged, never a shell) with the
//! original body (stdin) followed by a short footprint paragraph, or a line saying that
//! the record is not there yet. Nothing is added to BEGIN, time-limit warnings, array
//! summaries or jobs without GPUs. Any error of ours (configuration, sacct, even a
//! panic) hands on the original mail unchanged and is logged to stderr.

use std::io::{IsTerminal, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use spank_carbon::core::config::{Config, Field};
use spank_carbon::core::report::{self, JobRow, FIELDS};
use spank_carbon::record::{num, Segment};
use spank_carbon::slurm::sacct_rows::{self, SacctCall};

/// The configuration the wrapper reads when slurmctld runs it (MailProg takes no
/// arguments): a TOML file with the plugin's keys.
pub const DEFAULT_CONFIG: &str = "/etc/spank-carbon/spank-carbon.toml";
/// The name (argv[0]'s last component) under which `spank-carbon` acts as MailProg.
pub const MULTICALL_NAME: &str = "spank-carbon-mail";
/// How often sacct is asked while waiting.
const POLL: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    /// TOML configuration (keys of plugstack.conf: mail_prog, mail_wait_s, field, sacct).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// What slurmctld passes to MailProg: -s SUBJECT RECIPIENT (passed on unchanged).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    mail_args: Vec<String>,
}

pub fn run(a: Args) -> ExitCode {
    mail(&a.config, a.mail_args)
}

/// `Some` when started as `spank-carbon-mail` (MailProg=/path/to/spank-carbon-mail).
pub fn multicall() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next()?);
    if argv0.file_name()? != MULTICALL_NAME {
        return None;
    }
    let rest = args.map(|a| a.to_string_lossy().into_owned()).collect();
    Some(mail(Path::new(DEFAULT_CONFIG), rest))
}

/// Which mails get a footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A run ended (Ended, Failed, Reached time limit, Requeued, StageOut/Teardown).
    RunEnded,
    /// Anything else (Began, time-limit warnings, invalid dependency, unknown).
    Other,
}

/// slurmctld's mail type strings that end a run (`_mail_type_str` in agent.c).
const ENDING: &[&str] = &[
    "Ended",
    "Failed",
    "Reached time limit",
    "Requeued",
    "StageOut/Teardown",
];
const NOT_ENDING: &[&str] = &[
    "Began",
    "Reached 90% of time limit",
    "Reached 80% of time limit",
    "Reached 50% of time limit",
    "Invalid dependency",
];

/// The kind of mail: `SLURM_JOB_MAIL_TYPE` when slurmctld set it, else the type word
/// after `Name=` in the subject (the last one there: a job's name may hold one too).
pub fn kind(mail_type: Option<&str>, subject: &str) -> Kind {
    if let Some(t) = mail_type {
        return if ENDING.contains(&t.trim()) {
            Kind::RunEnded
        } else {
            Kind::Other
        };
    }
    let Some(after) = subject.find(" Name=").map(|i| &subject[i..]) else {
        return Kind::Other;
    };
    let last = |words: &[&str]| {
        words
            .iter()
            .filter_map(|w| after.rfind(&format!(" {w}")))
            .max()
    };
    match (last(ENDING), last(NOT_ENDING)) {
        (Some(e), Some(n)) if e > n => Kind::RunEnded,
        (Some(_), None) => Kind::RunEnded,
        _ => Kind::Other,
    }
}

fn job_id(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// The job a mail is about: `SLURM_JOB_ID` (set by slurmctld), else the subject:
/// `Slurm Job_id=<id> Name=...` or `Slurm Array Task Job_id=<a>_<t> (<id>) Name=...`.
/// `None` for an array summary (many jobs) and anything else.
pub fn job_of(env_job: Option<&str>, subject: &str) -> Option<u32> {
    if subject.starts_with("Slurm Array Summary ") {
        return None;
    }
    if let Some(id) = env_job {
        return job_id(id.trim());
    }
    if let Some(rest) = subject.strip_prefix("Slurm Job_id=") {
        let (id, tail) = rest.split_once(' ')?;
        return tail.starts_with("Name=").then(|| job_id(id)).flatten();
    }
    let rest = subject.strip_prefix("Slurm Array Task Job_id=")?;
    let (array_task, tail) = rest.split_once(" (")?;
    let (array, task) = array_task.split_once('_')?;
    job_id(array)?;
    job_id(task).or((task == "0").then_some(0))?;
    let (id, tail) = tail.split_once(") ")?;
    tail.starts_with("Name=").then(|| job_id(id)).flatten()
}

/// What accounting says about the job so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The run allocated no GPU: nothing to add, nothing to wait for.
    NoGpus,
    /// The run's record; `complete` when every node of the job has reported.
    Record { seg: Segment, complete: bool },
    /// Not there yet (or sacct failed: the reason).
    NotYet(Option<String>),
}

/// The row of the run a mail is about: the job's latest row that has started (a
/// requeued job's new, pending row is not the run that ended).
pub fn lookup(job: u32, rows: &[JobRow]) -> Lookup {
    let Some(row) = rows
        .iter()
        .rev()
        .find(|r| r.job == job && !r.state.starts_with("PENDING"))
    else {
        return Lookup::NotYet(None);
    };
    if row.gpus == 0 {
        return Lookup::NoGpus;
    }
    match report::job_record(&[row]) {
        Some(seg) => {
            let complete = seg.parts.len() as u64 >= u64::from(seg.meta.expected_nodes);
            Lookup::Record { seg, complete }
        }
        None => Lookup::NotYet(None),
    }
}

/// Asks `fetch` (given the time left) until it has a complete record, knows there are
/// no GPUs, or `wait` has passed; then the best answer seen (a partial record rather
/// than none). `elapsed` and `sleep` are the clock (a fake one in tests).
pub fn wait_for(
    wait: Duration,
    every: Duration,
    mut fetch: impl FnMut(Duration) -> Lookup,
    mut elapsed: impl FnMut() -> Duration,
    mut sleep: impl FnMut(Duration),
) -> Lookup {
    let mut best = Lookup::NotYet(None);
    loop {
        let left = wait.saturating_sub(elapsed());
        match fetch(left) {
            done @ (Lookup::NoGpus | Lookup::Record { complete: true, .. }) => return done,
            partial @ Lookup::Record { .. } => best = partial,
            Lookup::NotYet(why) => {
                if let Lookup::NotYet(_) = best {
                    best = Lookup::NotYet(why);
                }
            }
        }
        if left.is_zero() {
            return best;
        }
        sleep(every.min(left));
    }
}

/// The paragraph added to the mail; `None` when nothing is to be added.
pub fn footprint(job: u32, found: &Lookup, waited_s: u64, imperial: bool) -> Option<String> {
    let mut out = String::from("-- \nGPU footprint (spank-carbon)\n");
    match found {
        Lookup::NoGpus => return None,
        Lookup::NotYet(_) => {
            out.push_str(&format!(
                "Not recorded yet (waited {waited_s} s for job {job}'s record). \
                 `spank-carbon report -j {job}` shows it once it is there.\n"
            ));
        }
        Lookup::Record { seg, complete } => {
            let how = match seg.method() {
                Some(spank_carbon::record::Method::Counter) => "GPU energy counters (NVML)",
                Some(spank_carbon::record::Method::Sampled) => "sampled GPU power (NVML)",
                Some(spank_carbon::record::Method::Mixed) => {
                    "GPU energy counters and sampled power (NVML)"
                }
                None => "-",
            };
            out.push_str(&format!(
                "GPU energy: {} Wh   CO2e: {} (grid {} gCO2e/kWh x PUE {})\n",
                num(seg.gpu_wh(), 4),
                report::mass(seg.co2e_g(), imperial),
                num(seg.shown_intensity(), 1),
                num(seg.meta.pue, 3),
            ));
            if let Some(first) = report::everyday(seg.co2e_g(), imperial).first() {
                out.push_str(&format!("That is {first}.\n"));
            }
            out.push_str(&format!(
                "Measured from {how} on {} node(s), {} GPU(s); CPU, memory and network not included.\n",
                seg.parts.len(),
                seg.gpus()
            ));
            if !complete {
                out.push_str(&format!(
                    "So far {} of the job's {} nodes have reported (waited {waited_s} s).\n",
                    seg.parts.len(),
                    seg.meta.expected_nodes
                ));
            }
            out.push_str(&format!("Details: spank-carbon report -j {job}\n"));
        }
    }
    Some(out)
}

/// The mail's new body: the original, then (after a blank line) the footprint.
pub fn compose(original: &[u8], footprint: Option<&str>) -> Vec<u8> {
    let mut body = original.to_vec();
    if let Some(f) = footprint {
        if !body.is_empty() {
            if !body.ends_with(b"\n") {
                body.push(b'\n');
            }
            body.push(b'\n');
        }
        body.extend_from_slice(f.as_bytes());
    }
    body
}

/// The subject among MailProg's arguments (`-s SUBJECT`).
fn subject_of(args: &[String]) -> &str {
    args.iter()
        .position(|a| a == "-s")
        .and_then(|i| args.get(i + 1))
        .map_or("", String::as_str)
}

/// The configuration; on an error, the defaults with `mail_prog` from the file if it
/// names one (so the mail still goes where the site wants), and the error.
fn load_config(path: &Path) -> (Config, Option<String>) {
    if !path.exists() {
        return (Config::default(), None);
    }
    let arg = format!("config={}", path.display());
    match Config::from_args(&[arg]) {
        Ok(c) => (c, None),
        Err(e) => {
            let mut c = Config::default();
            if let Some(p) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| mail_prog_line(&t))
            {
                let _ = c.set("mail_prog", &p);
            }
            (c, Some(format!("configuration: {e}")))
        }
    }
}

/// `mail_prog` from a configuration file that does not parse: the value of its last
/// `mail_prog = "..."` line (then checked by `Config::set` like any value).
pub fn mail_prog_line(text: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "mail_prog").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn sacct_rows(config: &Config, job: u32, timeout: Duration) -> Result<Vec<JobRow>, String> {
    let args = vec![
        "-n".into(),
        "-D".into(),
        "-X".into(),
        "-j".into(),
        job.to_string(),
        "-o".into(),
        format!("{FIELDS},{}", field_name(config.field)),
    ];
    let call = SacctCall {
        sacct: &config.sacct,
        args: &args,
        timeout: Some(timeout),
        clear_env: false,
    };
    sacct_rows::run_streamed(&call, |r, delim| {
        let mut rows = Vec::new();
        report::stream(r, delim, |row| rows.push(row)).map_err(|e| e.to_string())?;
        Ok(rows)
    })
}

fn field_name(f: Field) -> &'static str {
    f.slurm_name()
}

/// The footprint paragraph for this mail, or `None`; errors are ours, and mean the mail
/// goes out unchanged.
fn added_text(config: &Config, args: &[String]) -> Result<Option<String>, String> {
    let subject = subject_of(args);
    let mail_type = std::env::var("SLURM_JOB_MAIL_TYPE").ok();
    if kind(mail_type.as_deref(), subject) != Kind::RunEnded {
        return Ok(None);
    }
    let env_job = std::env::var("SLURM_JOB_ID").ok();
    let Some(job) = job_of(env_job.as_deref(), subject) else {
        return Ok(None);
    };
    let wait = Duration::from_secs(config.mail_wait_s);
    let start = Instant::now();
    let per_call = Duration::from_secs(config.write_timeout_s);
    let found = wait_for(
        wait,
        POLL,
        |left| match sacct_rows(config, job, per_call.min(left).max(Duration::from_secs(2))) {
            Ok(rows) => lookup(job, &rows),
            Err(e) => Lookup::NotYet(Some(e)),
        },
        || start.elapsed(),
        std::thread::sleep,
    );
    if let Lookup::NotYet(Some(why)) = &found {
        log::warn!("mail for job {job}: no record yet; last sacct error: {why}");
    }
    let imperial = report::imperial_locale(|k| std::env::var(k).ok());
    Ok(footprint(
        job,
        &found,
        start.elapsed().as_secs().min(config.mail_wait_s),
        imperial,
    ))
}

/// Reads the original body: all of stdin, unless it is a terminal.
fn read_body() -> Result<Vec<u8>, std::io::Error> {
    let mut stdin = std::io::stdin();
    let mut body = Vec::new();
    if !stdin.is_terminal() {
        stdin.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// The wrapper: never loses the mail. Whatever fails on our side, `mail_prog` gets the
/// original arguments and body.
fn mail(config_path: &Path, args: Vec<String>) -> ExitCode {
    spank_carbon::logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info);
    let (config, config_err) = load_config(config_path);
    if let Some(e) = &config_err {
        log::error!("mail: {e}; the mail goes out without the footprint");
    }
    let body = match read_body() {
        Ok(b) => b,
        Err(e) => {
            log::error!("mail: reading the mail's body: {e}; passing stdin on as it is");
            return exec_mail(&config.mail_prog, &args, None);
        }
    };
    let added = if config_err.is_some() {
        None
    } else {
        match std::panic::catch_unwind(|| added_text(&config, &args)) {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                log::error!("mail: {e}; the mail goes out without the footprint");
                None
            }
            Err(_) => {
                log::error!("mail: internal error; the mail goes out without the footprint");
                None
            }
        }
    };
    let body = compose(&body, added.as_deref());
    let code = exec_mail(&config.mail_prog, &args, Some(&body));
    // Only back here if mail_prog could not be run: try the system's mail program.
    let fallback = Path::new(spank_carbon::core::config::DEFAULT_MAIL_PROG);
    if config.mail_prog != fallback && fallback.exists() {
        log::error!("mail: trying {}", fallback.display());
        return exec_mail(fallback, &args, Some(&body));
    }
    code
}

/// Replaces this process with `prog ARGS` (no shell), its stdin the `body` (from an
/// anonymous memory file) or, with `None`, this process's stdin. Returns only on error.
fn exec_mail(prog: &Path, args: &[String], body: Option<&[u8]>) -> ExitCode {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Some(body) = body {
        match body_file(body) {
            Ok(f) => {
                cmd.stdin(f);
            }
            Err(e) => log::error!("mail: cannot hold the body: {e}"),
        }
    }
    let e = cmd.exec();
    log::error!("mail: cannot run mail_prog {}: {e}", prog.display());
    ExitCode::FAILURE
}

fn body_file(body: &[u8]) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::memfd_create("spank-carbon-mail", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(body)?;
    f.rewind()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spank_carbon::record::{Meta, Method, NodePart};
    use spank_carbon::units::GramsPerKwh;
    use std::cell::Cell;

    #[test]
    fn kinds_from_the_environment_and_the_subject() {
        for t in ENDING {
            assert_eq!(kind(Some(t), ""), Kind::RunEnded, "{t}");
        }
        for t in NOT_ENDING {
            assert_eq!(
                kind(Some(t), "Slurm Job_id=1 Name=x Ended"),
                Kind::Other,
                "{t}"
            );
        }
        let s = |t: &str| format!("Slurm Job_id=42 Name=train {t}");
        assert_eq!(
            kind(None, &s("Ended, Run time 00:00:10, COMPLETED, ExitCode 0")),
            Kind::RunEnded
        );
        assert_eq!(
            kind(None, &s("Failed, Run time 00:00:01, FAILED, ExitCode 1")),
            Kind::RunEnded
        );
        assert_eq!(kind(None, &s("Began, Queued time 00:00:01")), Kind::Other);
        assert_eq!(kind(None, &s("Reached 90% of time limit")), Kind::Other);
        // A job named after a mail type: the last type word decides.
        assert_eq!(
            kind(
                None,
                "Slurm Job_id=4 Name=Ended Began, Queued time 00:00:01"
            ),
            Kind::Other
        );
        assert_eq!(kind(None, "no subject of slurm's"), Kind::Other);
    }

    #[test]
    fn job_ids_from_the_environment_or_strictly_from_the_subject() {
        assert_eq!(job_of(Some("77"), "anything"), Some(77));
        assert_eq!(job_of(Some("7x"), "Slurm Job_id=3 Name=a Ended"), None);
        assert_eq!(
            job_of(
                None,
                "Slurm Job_id=4696 Name=train Ended, Run time 00:00:10"
            ),
            Some(4696)
        );
        assert_eq!(
            job_of(None, "Slurm Array Task Job_id=100_3 (103) Name=a Ended"),
            Some(103)
        );
        assert_eq!(
            job_of(None, "Slurm Array Task Job_id=100_0 (101) Name=a Ended"),
            Some(101)
        );
        // An array summary is about many jobs: none.
        assert_eq!(
            job_of(None, "Slurm Array Summary Job_id=100_* (100) Name=a Ended"),
            None
        );
        assert_eq!(
            job_of(
                Some("100"),
                "Slurm Array Summary Job_id=100_* (100) Name=a Ended"
            ),
            None
        );
        for bad in [
            "Slurm Job_id= Name=a Ended",
            "Slurm Job_id=12a Name=a Ended",
            "Slurm Job_id=-1 Name=a",
            "Slurm Job_id=0 Name=a",
            "Slurm Job_id=99999999999 Name=a",
            "Slurm Job_id=12Name=a",
            "Slurm Job_id=12 Nom=a",
            "Re: Slurm Job_id=12 Name=a",
            "Slurm Array Task Job_id=1_x (3) Name=a",
            "Slurm Array Task Job_id=1_2 (3)Name=a",
            "",
        ] {
            assert_eq!(job_of(None, bad), None, "{bad}");
        }
    }

    fn row(job: u32, state: &str, gpus: u32, field: &str) -> JobRow {
        JobRow {
            job,
            user: "u".into(),
            account: "a".into(),
            partition: "p".into(),
            state: state.into(),
            elapsed_s: 10,
            gpus,
            nodelist: "n1".into(),
            field: field.into(),
        }
    }

    fn segment(wh: f64, co2e_g: f64, nodes: u32, parts: u32) -> Segment {
        let mut seg = Segment {
            meta: Meta {
                intensity: GramsPerKwh(475.0),
                pue: 1.58,
                expected_nodes: nodes,
            },
            parts: Default::default(),
            compact: false,
        };
        for i in 0..parts {
            let node = format!("n{i}");
            seg.parts.insert(
                node.clone(),
                NodePart {
                    coverage: Some(1.0),
                    ..NodePart::new(node, wh, 2, co2e_g, Method::Counter, (1.0, 11.0))
                },
            );
        }
        seg
    }

    #[test]
    fn lookup_takes_the_run_that_ended() {
        let seg = segment(1.5, 1.125, 1, 1);
        let field =
            spank_carbon::record::merge("", seg.parts.values().next().unwrap(), &seg.meta, None);
        assert_eq!(lookup(5, &[]), Lookup::NotYet(None));
        assert_eq!(lookup(5, &[row(5, "COMPLETED", 0, "")]), Lookup::NoGpus);
        assert_eq!(
            lookup(5, &[row(5, "COMPLETED", 2, "")]),
            Lookup::NotYet(None)
        );
        let Lookup::Record { seg: got, complete } = lookup(
            5,
            &[row(5, "REQUEUED", 2, &field), row(5, "PENDING", 2, "")],
        ) else {
            panic!("the requeued run's record");
        };
        assert!(complete);
        assert_eq!(got.gpu_wh(), 1.5);
        // Another job's row is not this job's.
        assert_eq!(
            lookup(6, &[row(5, "COMPLETED", 2, &field)]),
            Lookup::NotYet(None)
        );
    }

    /// A fake clock: each sleep moves it on.
    fn run_wait(wait_s: u64, answers: Vec<Lookup>) -> (Lookup, u32, Duration) {
        let now = Cell::new(Duration::ZERO);
        let calls = Cell::new(0u32);
        let got = wait_for(
            Duration::from_secs(wait_s),
            POLL,
            |_| {
                let i = calls.get() as usize;
                calls.set(calls.get() + 1);
                answers.get(i).cloned().unwrap_or(Lookup::NotYet(None))
            },
            || now.get(),
            |d| now.set(now.get() + d),
        );
        (got, calls.get(), now.get())
    }

    #[test]
    fn the_wait_is_bounded_and_ends_early() {
        // Nothing ever: asked at 0, 2, ..., 10 s, then gives up at 10 s.
        let (got, calls, spent) = run_wait(10, vec![]);
        assert_eq!(got, Lookup::NotYet(None));
        assert_eq!((calls, spent), (6, Duration::from_secs(10)));
        // A wait that is not a multiple of the poll: the last sleep is shorter.
        let (_, calls, spent) = run_wait(5, vec![]);
        assert_eq!((calls, spent), (4, Duration::from_secs(5)));
        // No GPUs: at once.
        let (got, calls, _) = run_wait(10, vec![Lookup::NoGpus]);
        assert_eq!((got, calls), (Lookup::NoGpus, 1));
        // A complete record on the third ask stops the wait there.
        let whole = Lookup::Record {
            seg: segment(1.0, 1.0, 1, 1),
            complete: true,
        };
        let (got, calls, spent) = run_wait(
            30,
            vec![Lookup::NotYet(None), Lookup::NotYet(None), whole.clone()],
        );
        assert_eq!((got, calls, spent), (whole, 3, Duration::from_secs(4)));
        // A partial record is kept to the end and given if nothing better comes.
        let partial = Lookup::Record {
            seg: segment(1.0, 1.0, 2, 1),
            complete: false,
        };
        let (got, _, spent) = run_wait(
            4,
            vec![partial.clone(), Lookup::NotYet(Some("sacct".into()))],
        );
        assert_eq!((got, spent), (partial, Duration::from_secs(4)));
        // Zero wait: one look.
        let (_, calls, spent) = run_wait(0, vec![]);
        assert_eq!((calls, spent), (1, Duration::ZERO));
    }

    #[test]
    fn footprint_text() {
        assert_eq!(footprint(4, &Lookup::NoGpus, 0, false), None);
        let not_yet = footprint(4, &Lookup::NotYet(None), 30, false).unwrap();
        assert!(
            not_yet.contains("Not recorded yet (waited 30 s for job 4's record)"),
            "{not_yet}"
        );
        let seg = segment(1.5, 1.125, 2, 2);
        let co2e = seg.co2e_g();
        let text = footprint(
            9,
            &Lookup::Record {
                seg,
                complete: true,
            },
            3,
            false,
        )
        .unwrap();
        assert!(
            text.starts_with("-- \nGPU footprint (spank-carbon)\n"),
            "{text}"
        );
        assert!(
            text.contains("GPU energy: 3 Wh   CO2e: 2.25 g (grid 475 gCO2e/kWh x PUE 1.58)"),
            "{text}"
        );
        let first = report::everyday(co2e, false).remove(0);
        assert!(text.contains(&format!("That is {first}.")), "{text}");
        assert!(
            text.contains("GPU energy counters (NVML) on 2 node(s), 4 GPU(s)"),
            "{text}"
        );
        assert!(text.contains("spank-carbon report -j 9"), "{text}");
        assert!(!text.contains("So far"), "{text}");
        let partial = footprint(
            9,
            &Lookup::Record {
                seg: segment(1.0, 1.0, 3, 1),
                complete: false,
            },
            30,
            true,
        )
        .unwrap();
        assert!(
            partial.contains("So far 1 of the job's 3 nodes have reported (waited 30 s)"),
            "{partial}"
        );
        assert!(partial.contains(" lbs "), "imperial: {partial}");
    }

    #[test]
    fn body_composition() {
        assert_eq!(compose(b"", None), b"");
        assert_eq!(compose(b"hello", None), b"hello");
        assert_eq!(compose(b"", Some("F\n")), b"F\n");
        assert_eq!(compose(b"hello", Some("F\n")), b"hello\n\nF\n");
        assert_eq!(compose(b"hello\n", Some("F\n")), b"hello\n\nF\n");
        // Bytes that are not UTF-8 pass unchanged.
        assert_eq!(compose(b"\xff\x00", Some("F\n")), b"\xff\x00\n\nF\n");
    }

    #[test]
    fn mail_prog_from_a_broken_file() {
        assert_eq!(
            mail_prog_line("x = [\nmail_prog = \"/usr/bin/mail.mailutils\"\n[[\n").as_deref(),
            Some("/usr/bin/mail.mailutils")
        );
        assert_eq!(mail_prog_line("mail_prog_x = \"/a\"\n"), None);
        assert_eq!(
            mail_prog_line("mail_prog=/a\nmail_prog = \"/b\"").as_deref(),
            Some("/b")
        );
        // A relative one is then refused by Config::set (the default stays).
        let mut c = Config::default();
        assert!(c
            .set(
                "mail_prog",
                &mail_prog_line("mail_prog = \"mail\"").unwrap()
            )
            .is_err());
        assert_eq!(
            c.mail_prog,
            Path::new(spank_carbon::core::config::DEFAULT_MAIL_PROG)
        );
    }

    #[test]
    fn subject_is_the_argument_after_dash_s() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            subject_of(&a(&["-s", "Slurm Job_id=1 Name=x Ended", "u"])),
            "Slurm Job_id=1 Name=x Ended"
        );
        assert_eq!(subject_of(&a(&["u"])), "");
        assert_eq!(subject_of(&a(&["-s"])), "");
    }
}
