//! `spank-carbon mail` as slurmctld runs it (argv `-s SUBJECT USER`, the environment of
//! `_build_mail_env`), with a fake sacct and a fake mail program that captures its argv
//! and stdin. No cluster.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_spank-carbon");

/// The README's 2-node record (from scripts/demo.sh).
const RECORD: &str = "spank-carbon/1 run=1796123091 gpu_wh=3.0936 co2e_g=2.3218 intensity=475 pue=1.58 gpus=4 nodes=2 of=2 method=counter node.node1=wh:1.5329,gpus:2,co2e:1.1505,m:counter,t:1796123091.285-1796123101.319,cov:1,pk:550,src:fixed node.node2=wh:1.5607,gpus:2,co2e:1.1713,m:counter,t:1796123091.285-1796123101.319,cov:1,pk:560,src:fixed";

struct Setup {
    dir: PathBuf,
    config: PathBuf,
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A record of one node's quarter of a board (2 of its 8 shards).
const SHARD_RECORD: &str = "spank-carbon/1 run=1796123091 gpu_wh=0.3867 co2e_g=0.2902 intensity=475 pue=1.58 gpus=1 nodes=1 of=1 method=counter node.node1=wh:0.3867,gpus:1,co2e:0.2902,m:counter,t:1796123091.285-1796123101.319,cov:1,f:estimate+shared,sh:shard_0.25";

/// A fake sacct printing, from its `record_from`-th call on, a row of job 4696 with
/// `tres` and the record (before that, the row without it); each call is counted.
fn setup(tag: &str, tres: &str, record_from: u32, extra_config: &str) -> Setup {
    setup_with(tag, tres, RECORD, record_from, extra_config)
}

fn setup_with(tag: &str, tres: &str, record: &str, record_from: u32, extra_config: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("sc-mail-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    write_exec(
        &dir.join("sacct"),
        &format!(
            r#"#!/bin/sh
for a in "$@"; do case $a in --delimiter=*) D=${{a#--delimiter=}};; esac; done
echo "$@" >> {d}/sacct.calls
n=$(wc -l < {d}/sacct.calls)
F=""
if [ "$n" -ge {record_from} ]; then F="{record}"; fi
printf '%s\n' "4696${{D}}alice${{D}}research${{D}}gpu${{D}}COMPLETED${{D}}10${{D}}{tres}${{D}}node[1-2]${{D}}$F"
"#
        ),
    );
    write_exec(
        &dir.join("mail"),
        &format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/mail.argv\ncat > {d}/mail.stdin\n"),
    );
    let config = dir.join("sc.toml");
    std::fs::write(
        &config,
        format!(
            "mail_prog = \"{d}/mail\"\nsacct = \"{d}/sacct\"\n{}{extra_config}",
            if extra_config.contains("mail_wait_s") {
                ""
            } else {
                "mail_wait_s = 6\n"
            }
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    Setup { dir, config }
}

impl Setup {
    /// Runs the wrapper as slurmctld does; returns (argv, stdin) the mail program got.
    fn run(&self, subject: &str, mail_type: &str, body: &str) -> (Vec<String>, String) {
        let mut child = Command::new(BIN)
            .args(["mail", "--config"])
            .arg(&self.config)
            .args(["-s", subject, "alice@example.org"])
            .env("SLURM_JOB_ID", "4696")
            .env("SLURM_JOB_MAIL_TYPE", mail_type)
            .env("SLURM_JOB_STATE", "COMPLETED")
            .env("LANG", "C")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let argv = std::fs::read_to_string(self.dir.join("mail.argv")).unwrap();
        let stdin = std::fs::read_to_string(self.dir.join("mail.stdin")).unwrap();
        (argv.lines().map(str::to_string).collect(), stdin)
    }

    fn sacct_calls(&self) -> usize {
        std::fs::read_to_string(self.dir.join("sacct.calls")).map_or(0, |s| s.lines().count())
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SUBJECT: &str =
    "Slurm Job_id=4696 Name=train Ended, Run time 00:00:10, COMPLETED, ExitCode 0";

#[test]
fn end_mail_carries_the_footprint_once_the_record_is_there() {
    let s = setup("end", "billing=2,cpu=2,gres/gpu=4,node=2", 2, "");
    let (argv, stdin) = s.run(SUBJECT, "Ended", "");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    let seg = spank_carbon::record::parse(RECORD).unwrap();
    let wh = spank_carbon::record::num(seg.gpu_wh(), 4);
    assert!(stdin.contains(&format!("GPU energy: {wh} Wh")), "{stdin}");
    assert!(
        stdin.contains(&spank_carbon::core::report::mass(seg.co2e_g(), false)),
        "{stdin}"
    );
    assert!(stdin.contains("on 2 node(s), 4 GPU(s)"), "{stdin}");
    assert!(stdin.contains("like flying"), "{stdin}");
    assert!(stdin.contains("spank-carbon report -j 4696"), "{stdin}");
    // It waited for the record: sacct was asked twice, for this job's field.
    assert_eq!(s.sacct_calls(), 2);
    let calls = std::fs::read_to_string(s.dir.join("sacct.calls")).unwrap();
    assert!(
        calls.contains("-j 4696") && calls.contains("SystemComment"),
        "{calls}"
    );
}

#[test]
fn the_original_body_comes_first() {
    let s = setup("body", "gres/gpu=4", 1, "");
    let (_, stdin) = s.run(SUBJECT, "Failed", "site text\nline 2");
    assert!(
        stdin.starts_with("site text\nline 2\n\n-- \nGPU footprint"),
        "{stdin}"
    );
}

#[test]
fn begin_mail_and_jobs_without_gpus_are_unchanged() {
    let s = setup("begin", "gres/gpu=4", 1, "");
    let (argv, stdin) = s.run(
        "Slurm Job_id=4696 Name=train Began, Queued time 00:00:01",
        "Began",
        "orig",
    );
    assert_eq!(
        argv[1],
        "Slurm Job_id=4696 Name=train Began, Queued time 00:00:01"
    );
    assert_eq!(stdin, "orig");
    assert_eq!(s.sacct_calls(), 0, "no sacct for a BEGIN mail");
    let s = setup(
        "nogpu",
        "billing=1,cpu=1,node=1",
        1000,
        "mail_wait_s = 30\n",
    );
    let t = Instant::now();
    let (_, stdin) = s.run(SUBJECT, "Ended", "");
    assert_eq!(stdin, "");
    assert_eq!(s.sacct_calls(), 1, "no wait for a job without GPUs");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_record_that_does_not_come_in_time_is_said_so() {
    let s = setup("late", "gres/gpu=4", 1000, "mail_wait_s = 0\n");
    let (argv, stdin) = s.run(SUBJECT, "Ended", "");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert!(
        stdin.contains("Not recorded yet (waited 0 s for job 4696's record)"),
        "{stdin}"
    );
    // A bounded wait: 3 s, asked at 0 and 2 s and at the end.
    let s = setup("late3", "gres/gpu=4", 1000, "mail_wait_s = 3\n");
    let t = Instant::now();
    let (_, stdin) = s.run(SUBJECT, "Ended", "");
    let took = t.elapsed();
    assert!(stdin.contains("waited 3 s"), "{stdin}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(s.sacct_calls(), 3);
}

#[test]
fn our_errors_never_lose_the_mail() {
    // A configuration with a bad key: the mail still goes to the configured program, as
    // it was.
    let s = setup("badconf", "gres/gpu=4", 1, "colour = 1\n");
    let (argv, stdin) = s.run(SUBJECT, "Ended", "orig\n");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert_eq!(stdin, "orig\n");
    assert_eq!(s.sacct_calls(), 0);
    // A file that is not TOML at all: the mail program is still found in it.
    let s = setup(
        "nottoml",
        "gres/gpu=4",
        1,
        "mail_wait_s = 1\nmail_wait_s = 2\n[[[\n",
    );
    let (argv, stdin) = s.run(SUBJECT, "Ended", "orig\n");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert_eq!(stdin, "orig\n");
}

/// Runs the wrapper for the END mail; (argv, stdin, how long it took).
fn timed(s: &Setup, body: &str) -> (Vec<String>, String, Duration) {
    let t = Instant::now();
    let (argv, stdin) = s.run(SUBJECT, "Ended", body);
    (argv, stdin, t.elapsed())
}

/// slurmdbd down: sacct exits 1 ("Problem talking to the database"). The mail goes out at
/// once, unchanged: no footprint, no "not recorded yet", no wait of `mail_wait_s`.
#[test]
fn sacct_failing_sends_the_mail_at_once_unchanged() {
    let s = setup("sacctfails", "gres/gpu=4", 1, "mail_wait_s = 30\n");
    write_exec(
        &s.dir.join("sacct"),
        &format!(
            "#!/bin/sh\necho x >> {}/sacct.calls\n\
             echo 'sacct: error: Problem talking to the database: Connection refused' >&2\nexit 1\n",
            s.dir.display()
        ),
    );
    let (argv, stdin, took) = timed(&s, "orig\n");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert_eq!(stdin, "orig\n", "the body unchanged");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.sacct_calls(), 1, "asked once, not polled");
    // sacct that cannot be run at all: the same.
    let s = setup("nosacct", "gres/gpu=4", 1, "mail_wait_s = 30\n");
    std::fs::remove_file(s.dir.join("sacct")).unwrap();
    let (argv, stdin, took) = timed(&s, "");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert_eq!(stdin, "");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// slurmdbd that hangs: sacct never answers. Each sacct call of the mail is limited to
/// min(write_timeout_s, 10) s; the first that runs out sends the mail, unchanged, so it
/// goes within write_timeout_s + 5 s (not after `mail_wait_s`).
#[test]
fn sacct_hanging_sends_the_mail_unchanged_after_one_time_limit() {
    let s = setup(
        "sacctghangs",
        "gres/gpu=4",
        1,
        "mail_wait_s = 30\nwrite_timeout_s = 2\n",
    );
    write_exec(
        &s.dir.join("sacct"),
        &format!(
            "#!/bin/sh\necho x >> {}/sacct.calls\nexec sleep 60\n",
            s.dir.display()
        ),
    );
    let (argv, stdin, took) = timed(&s, "orig\n");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert_eq!(stdin, "orig\n", "the body unchanged");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(2 + 5),
        "{took:?}"
    );
    assert_eq!(s.sacct_calls(), 1);
}

/// The job's row is not in accounting (its start has not reached slurmdbd): sacct answers
/// with nothing. A CPU-only job (or any) then gets its mail at once, unchanged.
#[test]
fn a_job_accounting_does_not_have_yet_gets_its_mail_at_once_unchanged() {
    let s = setup(
        "norow",
        "billing=1,cpu=1,node=1",
        1000,
        "mail_wait_s = 30\n",
    );
    write_exec(
        &s.dir.join("sacct"),
        &format!(
            "#!/bin/sh\necho x >> {}/sacct.calls\nexit 0\n",
            s.dir.display()
        ),
    );
    let (argv, stdin, took) = timed(&s, "orig\n");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert_eq!(stdin, "orig\n");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.sacct_calls(), 1);
}

/// A job that held only shards (AllocTRES `gres/shard=2`, no `gres/gpu`) is a GPU job: its
/// record is waited for and the footprint counts its GPU-equivalents (the record's share:
/// its shards over the board's), not whole boards.
#[test]
fn a_shard_only_job_gets_a_footprint_in_gpu_equivalents() {
    let s = setup_with(
        "shard",
        "billing=1,cpu=1,gres/shard=2,node=1",
        SHARD_RECORD,
        2,
        "mail_wait_s = 30\n",
    );
    let (argv, stdin, took) = timed(&s, "");
    assert_eq!(argv, ["-s", SUBJECT, "alice@example.org"]);
    assert!(stdin.contains("GPU energy: 0.3867 Wh"), "{stdin}");
    assert!(
        stdin.contains("on 1 node(s), 0.25 GPU-equivalent(s) of shared GPUs;"),
        "{stdin}"
    );
    assert_eq!(s.sacct_calls(), 2, "waited for the record");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // MPS alone: the same.
    let mps = SHARD_RECORD.replace("sh:shard_0.25", "sh:mps_0.3");
    let s = setup_with("mps", "cpu=1,gres/mps=30,node=1", &mps, 1, "");
    let (_, stdin, _) = timed(&s, "");
    assert!(
        stdin.contains("0.3 GPU-equivalent(s) of shared GPUs"),
        "{stdin}"
    );
}

/// A site whose AccountingStorageTRES lacks gres/gpu: AllocTRES has no GPU, the record
/// says the job had some, and the footprint is there.
#[test]
fn without_gres_gpu_in_accounting_the_record_gives_the_footprint() {
    let s = setup(
        "nogrestres",
        "billing=2,cpu=2,node=2",
        1,
        "mail_wait_s = 30\n",
    );
    let (_, stdin, took) = timed(&s, "");
    assert!(stdin.contains("on 2 node(s), 4 GPU(s)"), "{stdin}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}
