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
//!   the RPCs to slurmd) while it runs: so the wrapper waits only for a job that had GPUs
//!   and whose row is in accounting without its whole record, ends the wait as soon as the
//!   record is whole, and gives each sacct call at most `min(write_timeout_s, 10)` s. When
//!   slurmdbd is down sacct fails (it exits 1, "Problem talking to the database"): the mail
//!   goes out at once, unchanged. Keep `mail_wait_s` short on busy clusters.
//! - No variable of that environment names the job's GRES (22.05, 24.11 and 26.05 alike;
//!   `SLURM_JOB_COMMENT`, `SPANK_*` and the like belong to the job's owner), so "no GPUs"
//!   is read from the job's row: no GPU in AllocTRES (`gres/gpu`, `gres/gpu:TYPE`,
//!   `gres/shard`, `gres/mps`) and no record.
//! - Slurm's own default MailProg is `/bin/mail`, else `/usr/bin/mail`
//!   (`DEFAULT_MAIL_PROG`, `src/common/read_config.h`).
//! - The end mail is queued when the job completes, before or while the epilogs run,
//!   so the record usually lands a few seconds after the mail starts: hence the wait.
//!
//! What it does: finds the job id (`SLURM_JOB_ID`, else the subject, strictly); for mail
//! types that end a run (Ended, Failed, Reached time limit, Requeued, StageOut) it asks
//! sacct for the run's row. No row yet, a row with no GPU and no record, or sacct failing
//! (exit status, time limit, not runnable): the mail goes out at once, unchanged (the
//! reason logged). A GPU run (whole GPUs, shards or MPS) whose record is missing or
//! partial: polls for up to `mail_wait_s`. Then it runs `mail_prog` (absolute path, argv
//! passed on unchanged, never a shell) with the original body (stdin) followed by a short
//! footprint paragraph (GPUs as GPU-equivalents where boards were shared), or a line saying
//! that the record is not there yet. Nothing is added to BEGIN, time-limit warnings or
//! array summaries. Any error of ours (configuration, sacct, even a panic) hands on the
//! original mail unchanged and is logged to stderr.
use std::io::{IsTerminal, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use spank_carbon::core::config::Config;
use spank_carbon::core::mail::{
    compose, footprint, job_of, kind, lookup, mail_prog_line, sacct_timeout, subject_of, wait_for,
    Kind, Lookup, POLL,
};
use spank_carbon::core::report::{self, JobRow};
use spank_carbon::slurm::sacct_rows::{self, SacctCall};

/// The configuration the wrapper reads when slurmctld runs it (MailProg takes no
/// arguments): a TOML file with the plugin's keys.
pub const DEFAULT_CONFIG: &str = "/etc/spank-carbon/spank-carbon.toml";
/// The name (argv[0]'s last component) under which `spank-carbon` acts as MailProg.
pub const MULTICALL_NAME: &str = "spank-carbon-mail";

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

fn sacct_rows(config: &Config, job: u32, timeout: Duration) -> Result<Vec<JobRow>, String> {
    let args = report::job_sacct_args(job, config.field);
    let call = SacctCall {
        sacct: &config.sacct,
        args: &args,
        timeout: Some(timeout),
        clear_env: false,
    };
    sacct_rows::run_streamed(&call, |r, delim| {
        report::rows(r, delim).map_err(|e| e.to_string())
    })
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
    let found = wait_for(
        wait,
        POLL,
        |left| match sacct_rows(config, job, sacct_timeout(config.write_timeout_s, left)) {
            Ok(rows) => lookup(job, &rows),
            Err(e) => Lookup::Failed(e),
        },
        || start.elapsed(),
        std::thread::sleep,
    );
    match &found {
        Lookup::Failed(why) => {
            log::warn!("mail for job {job}: sacct failed ({why}); the mail goes out unchanged")
        }
        Lookup::NoRow => log::info!(
            "mail for job {job}: accounting has no row of the job yet; the mail goes out unchanged"
        ),
        Lookup::NotYet => log::warn!(
            "mail for job {job}: no record after {} s; the mail says so",
            config.mail_wait_s
        ),
        _ => {}
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
