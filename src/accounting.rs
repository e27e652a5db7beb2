//! Writing the record into the job's accounting comment, and the merge protocol that
//! lets every node of a multi-node job add its part without losing anyone's.
//!
//! sacctmgr can only overwrite a field, and two nodes writing at once leave only the
//! last one's text. Each node therefore runs read-merge-write-verify until it has seen
//! the field, with its own part in it, unchanged for a settle period longer than one
//! read-write round trip. A writer that read before another's write and wrote after it
//! (the only way to lose a part) changes the field within that period; the node whose
//! part it dropped is still watching, sees the change, and merges its part back. Nodes
//! also start at staggered times (by their rank in the job's node list), which makes
//! such collisions rare in the first place.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Field;
use crate::record::{self, check_writable, Meta, NodePart, Unwritable};

#[derive(Debug, thiserror::Error)]
pub enum AcctError {
    #[error("{tool}: could not run: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool}: no answer within {secs} s")]
    Timeout { tool: String, secs: u64 },
    #[error("{tool}: failed: {detail}")]
    Failed { tool: String, detail: String },
    #[error("the field's text is not UTF-8")]
    NotUtf8,
    #[error("cannot write the field without altering text others wrote: {0}")]
    Unwritable(#[from] Unwritable),
    #[error("gave up after {secs} s; last error: {last}")]
    GaveUp { secs: u64, last: String },
}

impl AcctError {
    /// Errors that only a change of the field's content (not time) can cure.
    pub fn is_permanent(&self) -> bool {
        matches!(self, AcctError::Unwritable(_) | AcctError::NotUtf8)
    }
}

/// The job accounting database, as far as this plugin uses it.
pub trait Accounting {
    /// The field's current text; `None` while the job is not (yet) in accounting.
    fn read(&self, job: u32, field: Field) -> Result<Option<String>, AcctError>;
    fn write(&self, job: u32, field: Field, value: &str) -> Result<(), AcctError>;
}

/// Slurm's own tools, run by absolute path with an argument vector and a time limit.
pub struct SlurmTools {
    pub sacct: PathBuf,
    pub sacctmgr: PathBuf,
    pub timeout: Duration,
}

pub struct CmdOutput {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `path args`, without a shell and with a minimal environment, killing it after
/// `timeout`.
pub fn run_tool(path: &PathBuf, args: &[&str], timeout: Duration) -> Result<CmdOutput, AcctError> {
    let tool = path.display().to_string();
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(conf) = std::env::var_os("SLURM_CONF") {
        cmd.env("SLURM_CONF", conf);
    }
    let mut child = cmd.spawn().map_err(|source| AcctError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    let mut out_pipe = child.stdout.take().expect("piped");
    let err_pipe = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.take(64 * 1024).read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AcctError::Timeout {
                    tool,
                    secs: timeout.as_secs(),
                });
            }
        }
    };
    Ok(CmdOutput {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn detail(out: &CmdOutput) -> String {
    let text = String::from_utf8_lossy(if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    });
    let text = text.trim().replace('\n', "; ");
    format!(
        "{} ({})",
        text.chars().take(300).collect::<String>(),
        out.status
    )
}

/// Job states of a job that has ended (sacct once slurmctld's completion record is in
/// the database; squeue while slurmctld still remembers the job).
pub const ENDED: [&str; 9] = [
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

/// Parses `sacct -n -P -X -o JobIDRaw,State,<field>` output for `job`: the field's text
/// once the job's completion record is in the database, `None` before. Waiting for it
/// matters for AdminComment and Comment, which the completion record rewrites.
pub fn parse_sacct_field(job: u32, stdout: &[u8]) -> Result<Option<String>, AcctError> {
    let text = std::str::from_utf8(stdout).map_err(|_| AcctError::NotUtf8)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Ok(None);
    }
    let prefix = format!("{job}|");
    match text
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once('|'))
    {
        Some((state, value)) => Ok(ENDED
            .iter()
            .any(|s| state.starts_with(s))
            .then(|| value.to_string())),
        None => Err(AcctError::Failed {
            tool: "sacct".into(),
            detail: format!(
                "unexpected output `{}`",
                text.chars().take(80).collect::<String>()
            ),
        }),
    }
}

impl Accounting for SlurmTools {
    fn read(&self, job: u32, field: Field) -> Result<Option<String>, AcctError> {
        let job_s = job.to_string();
        let format = format!("JobIDRaw,State,{}", field.slurm_name());
        let out = run_tool(
            &self.sacct,
            &["-n", "-P", "-X", "-j", &job_s, "-o", &format],
            self.timeout,
        )?;
        if !out.status.success() {
            return Err(AcctError::Failed {
                tool: "sacct".into(),
                detail: detail(&out),
            });
        }
        parse_sacct_field(job, &out.stdout)
    }

    fn write(&self, job: u32, field: Field, value: &str) -> Result<(), AcctError> {
        let cond = format!("jobid={job}");
        let set = format!("{}={}", field.slurm_name(), value);
        let out = run_tool(
            &self.sacctmgr,
            &["-i", "modify", "job", "where", &cond, "set", &set],
            self.timeout,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("Modified") {
            Ok(())
        } else {
            Err(AcctError::Failed {
                tool: "sacctmgr".into(),
                detail: detail(&out),
            })
        }
    }
}

/// What one node delivers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub job: u32,
    pub field: Field,
    pub part: NodePart,
    pub meta: Meta,
    /// The job's nodes (lower case), in the order of the job's node list.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub stagger: Duration,
    pub settle: Duration,
    pub give_up: Duration,
}

impl Timing {
    fn poll(&self) -> Duration {
        (self.settle / 6).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub writes: u32,
    pub reads: u32,
    pub record: String,
}

/// Merges `d.part` into the job's field and stays until the field has held it,
/// unchanged, for `timing.settle`. See the module's documentation.
pub fn deliver(
    acct: &dyn Accounting,
    d: &Delivery,
    timing: &Timing,
    lowercases: bool,
    sleep: &dyn Fn(Duration),
) -> Result<Delivered, AcctError> {
    let rank = d.nodes.iter().position(|n| *n == d.part.node).unwrap_or(0) as u32;
    sleep(timing.stagger * rank);
    // A one-node job has no other writer of its record (the completion record, the
    // other writer of AdminComment and Comment, is waited for before the first read):
    // one verifying read after the write is enough.
    let settle = if d.nodes.len() > 1 {
        timing.settle
    } else {
        Duration::ZERO
    };
    let started = Instant::now();
    let poll = timing.poll();
    let mut backoff = poll;
    let mut last_seen: Option<String> = None;
    let mut stable_since = Instant::now();
    let mut writes = 0;
    let mut reads = 0;
    let mut last_error = String::from("the job is not in accounting yet");
    loop {
        if started.elapsed() > timing.give_up {
            return Err(AcctError::GaveUp {
                secs: timing.give_up.as_secs(),
                last: last_error,
            });
        }
        reads += 1;
        let current = match acct.read(d.job, d.field) {
            Ok(Some(text)) => text,
            Ok(None) => {
                sleep(poll);
                continue;
            }
            Err(e) => {
                last_error = e.to_string();
                sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = poll;
        if last_seen.as_deref() != Some(current.as_str()) {
            stable_since = Instant::now();
            last_seen = Some(current.clone());
        }
        let merged = record::merge(&current, &d.part, &d.meta, Some(&d.nodes));
        if merged != current {
            check_writable(&merged, lowercases)?;
            match acct.write(d.job, d.field, &merged) {
                Ok(()) if settle.is_zero() => {
                    // One writer: sacctmgr's "Modified" is the confirmation.
                    return Ok(Delivered {
                        writes: writes + 1,
                        reads,
                        record: merged,
                    });
                }
                Ok(()) => writes += 1,
                Err(e) => {
                    last_error = e.to_string();
                    sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            last_seen = None;
            sleep(poll);
            continue;
        }
        if stable_since.elapsed() >= settle {
            return Ok(Delivered {
                writes,
                reads,
                record: current,
            });
        }
        sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse, Method};
    use crate::units::GramsPerKwh;
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex};

    fn part(node: &str, wh: f64) -> NodePart {
        NodePart {
            node: node.into(),
            wh,
            gpus: 1,
            co2e_g: wh,
            method: Method::Counter,
            start: 1.0,
            end: 2.0,
            coverage: None,
            flags: vec![],
            peak_w: None,
            intensity_src: None,
            embodied_g: None,
        }
    }

    fn delivery(node: &str, wh: f64, nodes: &[&str]) -> Delivery {
        Delivery {
            job: 9,
            field: Field::System,
            part: part(node, wh),
            meta: Meta {
                intensity: GramsPerKwh(475.0),
                pue: 1.58,
                expected_nodes: nodes.len() as u32,
            },
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
        }
    }

    struct Db {
        value: RefCell<Option<String>>,
        writes: RefCell<u32>,
        fail_reads: RefCell<u32>,
    }

    impl Accounting for Db {
        fn read(&self, _: u32, _: Field) -> Result<Option<String>, AcctError> {
            if *self.fail_reads.borrow() > 0 {
                *self.fail_reads.borrow_mut() -= 1;
                return Err(AcctError::Timeout {
                    tool: "sacct".into(),
                    secs: 1,
                });
            }
            Ok(self.value.borrow().clone())
        }
        fn write(&self, _: u32, _: Field, v: &str) -> Result<(), AcctError> {
            *self.writes.borrow_mut() += 1;
            *self.value.borrow_mut() = Some(v.to_string());
            Ok(())
        }
    }

    fn timing() -> Timing {
        Timing {
            stagger: Duration::ZERO,
            settle: Duration::from_millis(30),
            give_up: Duration::from_secs(5),
        }
    }

    #[test]
    fn single_writer_writes_once_and_keeps_foreign_text() {
        let db = Db {
            value: RefCell::new(Some("site-tag=1".into())),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(2),
        };
        let d = delivery("n1", 2.0, &["n1"]);
        let r = deliver(&db, &d, &timing(), true, &std::thread::sleep).unwrap();
        assert_eq!(r.writes, 1);
        // Two failed reads, one to merge and write: a lone writer needs nothing more.
        assert_eq!(r.reads, 3);
        assert!(
            r.record.starts_with("site-tag=1 spank-carbon/1 gpu_wh=2 "),
            "{}",
            r.record
        );
        // Delivering again (a retry after a crash) writes nothing.
        let r2 = deliver(&db, &d, &timing(), true, &std::thread::sleep).unwrap();
        assert_eq!(r2.writes, 0);
        assert_eq!(r2.record, r.record);
        assert_eq!(*db.writes.borrow(), 1);
    }

    #[test]
    fn refuses_to_alter_foreign_text() {
        let db = Db {
            value: RefCell::new(Some("Site-Tag".into())),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(0),
        };
        let e = deliver(
            &db,
            &delivery("n1", 1.0, &["n1"]),
            &timing(),
            true,
            &std::thread::sleep,
        )
        .unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(*db.writes.borrow(), 0);
    }

    #[test]
    fn gives_up_when_accounting_never_answers() {
        let db = Db {
            value: RefCell::new(None),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(u32::MAX),
        };
        let t = Timing {
            give_up: Duration::from_millis(50),
            ..timing()
        };
        let e = deliver(&db, &delivery("n1", 1.0, &["n1"]), &t, true, &|_| {
            std::thread::sleep(Duration::from_millis(5))
        })
        .unwrap_err();
        assert!(matches!(e, AcctError::GaveUp { .. }), "{e}");
    }

    /// A shared register with the lost-update behaviour of sacctmgr: a write lands some
    /// time after the read it was based on, and the last write wins.
    struct SlowDb {
        value: Mutex<String>,
        latency: Duration,
    }

    impl Accounting for Arc<SlowDb> {
        fn read(&self, _: u32, _: Field) -> Result<Option<String>, AcctError> {
            Ok(Some(self.value.lock().unwrap().clone()))
        }
        fn write(&self, _: u32, _: Field, v: &str) -> Result<(), AcctError> {
            std::thread::sleep(self.latency);
            *self.value.lock().unwrap() = v.to_string();
            Ok(())
        }
    }

    #[test]
    fn concurrent_writers_lose_no_part() {
        for round in 0..20 {
            let db = Arc::new(SlowDb {
                value: Mutex::new(String::new()),
                latency: Duration::from_millis(3 + round % 4),
            });
            let nodes = ["a", "b", "c", "d", "e"];
            let handles: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let db = db.clone();
                    let d = delivery(n, i as f64 + 1.0, &nodes);
                    std::thread::spawn(move || {
                        let t = Timing {
                            stagger: Duration::ZERO, // worst case: everyone at once
                            settle: Duration::from_millis(60),
                            give_up: Duration::from_secs(20),
                        };
                        deliver(&db, &d, &t, true, &std::thread::sleep).unwrap()
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let seg = parse(&db.value.lock().unwrap()).unwrap();
            assert_eq!(seg.parts.len(), 5, "round {round}: {:?}", seg.parts.keys());
            assert_eq!(seg.gpu_wh(), 15.0);
        }
    }

    #[test]
    fn sacct_output_parsing() {
        assert_eq!(parse_sacct_field(5, b"").unwrap(), None);
        assert_eq!(
            parse_sacct_field(5, b"5|COMPLETED|\n").unwrap(),
            Some(String::new())
        );
        assert_eq!(
            parse_sacct_field(5, b"5|CANCELLED by 0|a|b\nc\n").unwrap(),
            Some("a|b\nc".into())
        );
        // Still running in the database: the completion record has not arrived.
        assert_eq!(parse_sacct_field(5, b"5|RUNNING|x\n").unwrap(), None);
        assert!(parse_sacct_field(5, b"6|COMPLETED|x\n").is_err());
        assert!(parse_sacct_field(5, b"5|x\n").is_err());
        assert!(parse_sacct_field(5, b"5|COMPLETED|\xff\n").is_err());
    }
}
