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

use crate::core::config::{EnergyTres, Field};
use crate::record::{self, check_writable, Meta, NodePart, Unwritable};
use crate::slurm::Differences;

mod rows;
pub mod tres_audit;
pub use rows::{
    energy_column, parse as parse_sacct_rows, target, valid_job_selector, JobRows, Row, Rows,
    Target,
};

/// What the courier does differently by Slurm version and by the operator's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub diffs: Differences,
    /// Key `energy_tres` (used only where `diffs.energy_tres`).
    pub energy: EnergyTres,
}

impl Policy {
    /// `diffs` with `energy_tres=auto`.
    pub fn new(diffs: Differences) -> Policy {
        Policy {
            diffs,
            energy: EnergyTres::Auto,
        }
    }

    /// Whether this courier sets the energy TRES at all.
    pub fn sets_energy(&self) -> bool {
        self.diffs.energy_tres && self.energy != EnergyTres::Off
    }
}

/// Joules, as the energy TRES takes them (an integer), of `wh` watt-hours.
pub fn joules(wh: f64) -> u64 {
    (wh * 3600.0).round().max(0.0) as u64
}

/// What to do with a row's energy TRES when its field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergyPlan {
    /// Leave it: not set on this Slurm or by this operator, or not this row's run, or
    /// already equal to the record's.
    Leave,
    /// Set it to this many joules (the run's segment's total in the merged field).
    Set(u64),
    /// Leave it: Slurm measured this much itself (not the record's energy), and
    /// `energy_tres` is not `overwrite`.
    NotOurs(u64),
}

/// The energy TRES a write of `merged` into a row that holds `current` and whose energy
/// TRES is `current_j` should carry, for the segment of run `run`. `own_run`: the row is
/// that run's own row and its completion record is in (it rewrites the TRES wholesale).
/// The energy is taken to be the record's (ours) when it is zero or absent, or equals the
/// total of the run's segment in `current` (every write that set it set both at once).
pub fn energy_plan(
    policy: &Policy,
    own_run: bool,
    current: &str,
    current_j: Option<u64>,
    merged: &str,
    run: u64,
) -> EnergyPlan {
    if !policy.sets_energy() || !own_run {
        return EnergyPlan::Leave;
    }
    let total = |field: &str| {
        record::find_run(field, run).map(|f| joules(f.parts.values().map(|p| p.wh).sum()))
    };
    let Some(want) = total(merged) else {
        return EnergyPlan::Leave;
    };
    let have = current_j.unwrap_or(0);
    if have == want {
        return EnergyPlan::Leave;
    }
    let ours = have == 0 || total(current) == Some(have);
    if !ours && policy.energy != EnergyTres::Overwrite {
        return EnergyPlan::NotOurs(have);
    }
    EnergyPlan::Set(want)
}

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
    /// The record can never go to its run's row (see [`rows::target`]).
    #[error("{0}")]
    NoRow(String),
}

impl AcctError {
    /// Errors that only a change of the field's content (not time) can cure.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            AcctError::Unwritable(_) | AcctError::NotUtf8 | AcctError::NoRow(_)
        )
    }
}

/// The job accounting database, as far as this plugin uses it.
pub trait Accounting {
    /// Every run's row and field of each of `jobs`, in one query.
    fn read(&self, jobs: &[u32], field: Field) -> Result<Rows, AcctError>;
    /// Sets the field of the job sacct names `id` (see [`Row::id`]): the latest run's row.
    fn write(&self, id: &str, field: Field, value: &str) -> Result<(), AcctError>;
    /// Several writes (`(id, value)`), in any order; one result for each.
    fn write_all(&self, writes: &[(&str, &str)], field: Field) -> Vec<Result<(), AcctError>> {
        writes
            .iter()
            .map(|(id, value)| self.write(id, field, value))
            .collect()
    }
    /// [`Accounting::write`] that also sets the job's energy TRES to `energy_j` joules
    /// in the same call, where given. By default only writes without energy are made.
    fn write_energy(
        &self,
        id: &str,
        field: Field,
        value: &str,
        energy_j: Option<u64>,
    ) -> Result<(), AcctError> {
        match energy_j {
            None => self.write(id, field, value),
            Some(_) => Err(AcctError::Failed {
                tool: "accounting".into(),
                detail: "cannot set the energy TRES".into(),
            }),
        }
    }
    /// [`Accounting::write_all`] with energy (`(id, value, energy_j)`).
    fn write_all_energy(
        &self,
        writes: &[(&str, &str, Option<u64>)],
        field: Field,
    ) -> Vec<Result<(), AcctError>> {
        if writes.iter().all(|w| w.2.is_none()) {
            let plain: Vec<(&str, &str)> = writes.iter().map(|w| (w.0, w.1)).collect();
            return self.write_all(&plain, field);
        }
        writes
            .iter()
            .map(|(id, value, e)| self.write_energy(id, field, value, *e))
            .collect()
    }
    /// How slurmctld names each of `jobs` it still knows (`JobIDRaw` -> `N`, `A_T`, `H+O`).
    /// Accounting can lag behind: for a few seconds after an array's last task ended, sacct
    /// shows it as plain `N`, before the rows of its other tasks are in, and a write to
    /// `jobid=N` then changes every task of array N. None known by default.
    fn ctld_names(
        &self,
        _jobs: &[u32],
    ) -> Result<std::collections::BTreeMap<u32, String>, AcctError> {
        Ok(Default::default())
    }
}

/// Slurm's own tools, run by absolute path with an argument vector and a time limit.
pub struct SlurmTools {
    pub sacct: PathBuf,
    pub sacctmgr: PathBuf,
    pub squeue: PathBuf,
    pub timeout: Duration,
    /// The Slurm these tools are (the build's).
    pub diffs: Differences,
}

/// sacctmgr's arguments that set `field` of job `id` to `value`, and its energy TRES to
/// `energy_j` joules where given. `tres=` is never sent to a Slurm below 25.11 (24.11
/// reports it as an unknown option, still writes the rest and exits 0).
pub fn sacctmgr_args(
    id: &str,
    field: Field,
    value: &str,
    energy_j: Option<u64>,
    diffs: &Differences,
) -> Result<Vec<String>, AcctError> {
    if !valid_job_selector(id) {
        return Err(AcctError::Failed {
            tool: "sacctmgr".into(),
            detail: format!("`{id}` is not a job"),
        });
    }
    let mut args: Vec<String> = ["-i", "modify", "job", "where"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("jobid={id}"));
    args.push("set".into());
    args.push(format!("{}={}", field.slurm_name(), value));
    if let Some(j) = energy_j {
        if !diffs.energy_tres {
            return Err(AcctError::Failed {
                tool: "sacctmgr".into(),
                detail: format!(
                    "Slurm {} cannot set the energy TRES (25.11 and later can)",
                    diffs.version
                ),
            });
        }
        args.push(format!("tres=energy={j}"));
    }
    Ok(args)
}

/// Whether sacctmgr changed exactly the one row of `id`, from its exit status and output.
/// It lists each row it changed (`  <id> submitted at <time>`, still so in 26.05): more
/// than one is an error on every version. Before 25.05 success also needs "Modified";
/// from 25.05 on it prints " Modified jobs..." before knowing the outcome, and exits
/// non-zero on failure ("Nothing modified" and commit errors included): the exit status
/// decides.
pub fn write_succeeded(diffs: &Differences, success: bool, stdout: &str) -> Result<(), String> {
    let changed = stdout
        .lines()
        .filter(|l| l.contains(" submitted at "))
        .count();
    if changed > 1 {
        return Err(format!(
            "changed {changed} rows, not one: {}",
            stdout.trim().replace('\n', "; ")
        ));
    }
    let ok = if diffs.exit_status_only {
        success
    } else {
        success && stdout.contains("Modified") && changed == 1
    };
    if ok {
        Ok(())
    } else {
        Err(String::new())
    }
}

pub struct CmdOutput {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `path args`, without a shell and with a minimal environment, killing it after
/// `timeout`.
pub fn run_tool(path: &PathBuf, args: &[&str], timeout: Duration) -> Result<CmdOutput, AcctError> {
    run_tool_env(path, args, &[], timeout)
}

/// [`run_tool`] with extra environment variables.
pub fn run_tool_env(
    path: &PathBuf,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<CmdOutput, AcctError> {
    let tool = path.display().to_string();
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .envs(env.iter().copied())
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

impl Accounting for SlurmTools {
    fn read(&self, jobs: &[u32], field: Field) -> Result<Rows, AcctError> {
        if jobs.is_empty() {
            return Ok(Rows::new());
        }
        let list = jobs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let format = format!("{},{}", rows::COLUMNS, field.slurm_name());
        let delim = crate::slurm::sacct_rows::nonce().map_err(|source| AcctError::Spawn {
            tool: "the random source".into(),
            source,
        })?;
        let delim_arg = crate::slurm::sacct_rows::delimiter_arg(&delim);
        let out = run_tool_env(
            &self.sacct,
            &[
                "-n", "-P", &delim_arg, "-D", "-X", "-j", &list, "-o", &format,
            ],
            &[("SLURM_TIME_FORMAT", "%s")],
            self.timeout,
        )?;
        if !out.status.success() {
            return Err(AcctError::Failed {
                tool: "sacct".into(),
                detail: detail(&out),
            });
        }
        rows::parse(jobs, &out.stdout, &delim)
    }

    fn write(&self, id: &str, field: Field, value: &str) -> Result<(), AcctError> {
        self.write_energy(id, field, value, None)
    }

    fn write_energy(
        &self,
        id: &str,
        field: Field,
        value: &str,
        energy_j: Option<u64>,
    ) -> Result<(), AcctError> {
        let args = sacctmgr_args(id, field, value, energy_j, &self.diffs)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_tool(&self.sacctmgr, &args, self.timeout)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match write_succeeded(&self.diffs, out.status.success(), &stdout) {
            Ok(()) => Ok(()),
            Err(why) => {
                if !why.is_empty() {
                    log::error!("sacctmgr jobid={id} {why}");
                }
                Err(AcctError::Failed {
                    tool: "sacctmgr".into(),
                    detail: detail(&out),
                })
            }
        }
    }

    fn ctld_names(
        &self,
        jobs: &[u32],
    ) -> Result<std::collections::BTreeMap<u32, String>, AcctError> {
        let mut names = std::collections::BTreeMap::new();
        if jobs.is_empty() {
            return Ok(names);
        }
        let list = jobs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let out = run_tool(
            &self.squeue,
            &["-h", "-t", "all", "-j", &list, "-o", "%A|%i"],
            self.timeout,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // One id that slurmctld no longer knows: "Invalid job id specified".
            if jobs.len() == 1 && String::from_utf8_lossy(&out.stderr).contains("Invalid job id") {
                return Ok(names);
            }
            return Err(AcctError::Failed {
                tool: "squeue".into(),
                detail: detail(&out),
            });
        }
        for line in stdout.lines() {
            if let Some((raw, id)) = line.trim().split_once('|') {
                if let Ok(raw) = raw.parse::<u32>() {
                    names.insert(raw, id.to_string());
                }
            }
        }
        Ok(names)
    }

    /// Up to [`PARALLEL_WRITES`] sacctmgr at a time: each waits about a quarter of a
    /// second on slurmdbd while costing almost no CPU, so a burst of records goes out
    /// several times faster than one after the other.
    fn write_all(&self, writes: &[(&str, &str)], field: Field) -> Vec<Result<(), AcctError>> {
        let with: Vec<(&str, &str, Option<u64>)> =
            writes.iter().map(|(id, v)| (*id, *v, None)).collect();
        self.write_all_energy(&with, field)
    }

    fn write_all_energy(
        &self,
        writes: &[(&str, &str, Option<u64>)],
        field: Field,
    ) -> Vec<Result<(), AcctError>> {
        let mut results = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(PARALLEL_WRITES) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(id, value, e)| {
                        scope.spawn(move || self.write_energy(id, field, value, *e))
                    })
                    .collect();
                for h in handles {
                    results.push(h.join().unwrap_or_else(|_| {
                        Err(AcctError::Failed {
                            tool: "sacctmgr".into(),
                            detail: "the writer thread panicked".into(),
                        })
                    }));
                }
            });
        }
        results
    }
}

/// How many sacctmgr a courier runs at once.
pub const PARALLEL_WRITES: usize = 4;

/// What one node delivers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub job: u32,
    pub field: Field,
    pub part: NodePart,
    pub meta: Meta,
    /// The job's nodes (lower case), in the order of the job's node list.
    pub nodes: Vec<String>,
    /// The run's SLUID (Slurm 25.11+), as the epilog's environment had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sluid: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub stagger: Duration,
    pub settle: Duration,
    pub give_up: Duration,
    /// The longest a write can be in flight: from the read it was based on until
    /// slurmdbd applied it (a write is issued within `settle / 2` of its read and
    /// sacctmgr is killed after its time limit). A multi-writer part is checked once
    /// more this long after it settled.
    pub flight: Duration,
}

impl Timing {
    /// How often a record waiting for its job's completion record, or for its field to
    /// settle, is read again.
    pub fn poll(&self) -> Duration {
        (self.settle / 6).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// The longest a node waits between looks at a field that holds its part but keeps
    /// changing: a big job's field changes with every node's write, and a node looking
    /// every [`Timing::poll`] until the last one wrote would cost accounting a read per
    /// node per poll for the whole spread of the stagger.
    pub fn max_watch(&self) -> Duration {
        (self.settle * 2).max(self.poll())
    }
}

/// Where the merge protocol gets the time: [`SystemClock`] in the courier, a virtual
/// clock in the simulation (`tests/simulation.rs`), so that [`round_with`] never reads
/// the time itself.
pub trait Clock {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The longest a record whose job is not (yet) in accounting waits between reads.
const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub writes: u32,
    pub reads: u32,
    pub record: String,
}

/// One record on its way: the delivery and where its merge protocol stands.
#[derive(Debug)]
pub struct Item {
    pub delivery: Delivery,
    /// Not to be read before this (stagger, polling, back-off).
    pub not_before: Instant,
    /// Given up on after this.
    pub deadline: Instant,
    last_seen: Option<String>,
    /// Whether `last_seen` is known to hold the part (merging it in changed nothing), so
    /// that polling an unchanged field does not merge again.
    holds: bool,
    stable_since: Instant,
    /// When the settled part is checked the last time (see [`Timing::flight`]).
    guard_at: Option<Instant>,
    writes: u32,
    reads: u32,
    backoff: Duration,
    /// How long to wait before looking again at a field that holds the part but keeps
    /// changing (others still writing): doubles up to [`Timing::max_watch`].
    watch: Duration,
    /// Why the record is not delivered yet.
    pub last_error: String,
    /// Whether it waits for accounting to know the job's run (not for accounting to
    /// answer): such a record is not hurried when other records go through.
    pub waits_for_job: bool,
    /// Writes made only to set the energy TRES (the field held the part already).
    energy_writes: u32,
    /// Whether the log says why the energy TRES is left alone.
    energy_noted: bool,
    /// Writes with the energy TRES that failed: after [`MAX_ENERGY_FAILURES`] the record
    /// goes without it (a slurmdbd that cannot set it must not keep the record out).
    energy_failures: u32,
}

/// Failed writes with the energy TRES after which a record is written without it.
const MAX_ENERGY_FAILURES: u32 = 2;

/// The most writes a record makes only to bring the energy TRES to its total.
const MAX_ENERGY_WRITES: u32 = 3;

/// The energy TRES of the row a part is merged into.
#[derive(Debug, Clone, Copy)]
struct EnergyRow {
    /// The row is the run's own and its completion record is in.
    own_run: bool,
    /// Its `ConsumedEnergyRaw`.
    current_j: Option<u64>,
}

impl Item {
    /// A record whose delivery starts now, after its node's stagger (its rank in the
    /// job's node list).
    pub fn new(delivery: Delivery, timing: &Timing) -> Item {
        Item::new_at(delivery, timing, Instant::now())
    }

    /// [`Item::new`] at time `now`.
    pub fn new_at(delivery: Delivery, timing: &Timing, now: Instant) -> Item {
        let rank = delivery
            .nodes
            .iter()
            .position(|n| *n == delivery.part.node)
            .unwrap_or(0) as u32;
        let spread = timing.stagger * u32::try_from(delivery.nodes.len()).unwrap_or(u32::MAX);
        Item {
            delivery,
            not_before: now + timing.stagger * rank,
            // Counted from the last node's turn: in a job of more than give_up / stagger
            // nodes, the last turns come after that, and every node watches the field
            // change until the last one wrote.
            deadline: now + spread + timing.give_up,
            last_seen: None,
            holds: false,
            stable_since: now,
            guard_at: None,
            writes: 0,
            reads: 0,
            backoff: timing.poll(),
            watch: timing.poll(),
            last_error: String::from("the job is not in accounting yet"),
            waits_for_job: true,
            energy_writes: 0,
            energy_noted: false,
            energy_failures: 0,
        }
    }

    /// Starts over (a retry after giving up): due now, a new deadline.
    pub fn restart(&mut self, timing: &Timing) {
        self.restart_at(timing, Instant::now())
    }

    /// [`Item::restart`] at time `now`.
    pub fn restart_at(&mut self, timing: &Timing, now: Instant) {
        self.not_before = now;
        self.deadline = now + timing.give_up;
        self.last_seen = None;
        self.guard_at = None;
        self.backoff = timing.poll();
        self.watch = timing.poll();
    }

    /// The energy a write should carry under `plan`; says once in the log why Slurm's
    /// own measurement is left alone.
    fn energy_to_send(&mut self, plan: EnergyPlan) -> Option<u64> {
        match plan {
            EnergyPlan::Set(_) if self.energy_failures >= MAX_ENERGY_FAILURES => {
                if !self.energy_noted {
                    self.energy_noted = true;
                    log::warn!(
                        "job {}: sacctmgr failed {} times when setting the energy TRES too; writing the record without it (energy_tres=off stops trying)",
                        self.delivery.job,
                        self.energy_failures
                    );
                }
                None
            }
            EnergyPlan::Set(j) => Some(j),
            EnergyPlan::Leave => None,
            EnergyPlan::NotOurs(have) => {
                if !self.energy_noted {
                    self.energy_noted = true;
                    log::warn!(
                        "job {}: energy TRES not set: Slurm measured {have} J for the job itself (energy_tres=overwrite would replace it with the GPU energy)",
                        self.delivery.job
                    );
                }
                None
            }
        }
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.not_before <= now
    }

    fn failed(&mut self, e: String, now: Instant) {
        self.last_error = e;
        self.waits_for_job = false;
        self.not_before = now + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
    }

    /// Accounting answered, but does not have the job's run (ended) yet: read again
    /// later, less and less often, so that a job that never ends there costs little.
    fn wait_for_job(&mut self, why: String, timing: &Timing, now: Instant) {
        self.last_error = why;
        self.waits_for_job = true;
        self.not_before = now + self.backoff;
        self.backoff = (self.backoff * 2).clamp(timing.poll(), MAX_WAIT);
    }
}

/// Where a record stands after a round.
#[derive(Debug)]
pub enum Step {
    /// Not due, or due again later.
    Wait,
    Done(Delivered),
    /// Only a change of the field's content can help: retrying on a timer is pointless.
    Refused(AcctError),
    GaveUp(AcctError),
}

/// One round of delivery for the due items, oldest due first: per field, one read of
/// all their jobs' rows, a merge into the row each part belongs to ([`rows::target`]),
/// and writes where the field lacks the node's part, issued in batches of
/// [`PARALLEL_WRITES`] only while the read is younger than `settle / 2` (the rest wait
/// for the next round's fresh read), so that no write lands long after the read it was
/// based on. A part is done when sacctmgr confirms its write if it is the row's only
/// writer (one node, one run), else once the field has held it unchanged for
/// `timing.settle` and still holds it `timing.flight` later (see DESIGN-merge.md).
/// Returns one step per item.
pub fn round(
    acct: &dyn Accounting,
    items: &mut [&mut Item],
    timing: &Timing,
    policy: &Policy,
) -> Vec<Step> {
    round_with(acct, &SystemClock, items, timing, policy)
}

/// [`round`] with the time taken from `clock` (it reads no other).
pub fn round_with(
    acct: &dyn Accounting,
    clock: &dyn Clock,
    items: &mut [&mut Item],
    timing: &Timing,
    policy: &Policy,
) -> Vec<Step> {
    let now = clock.now();
    let mut steps: Vec<Step> = items.iter().map(|_| Step::Wait).collect();
    for field in [Field::System, Field::Admin, Field::Job] {
        let mut due: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].delivery.field == field && items[i].is_due(now))
            .collect();
        if due.is_empty() {
            continue;
        }
        due.sort_by_key(|&i| items[i].not_before);
        let mut jobs: Vec<u32> = due.iter().map(|&i| items[i].delivery.job).collect();
        jobs.sort_unstable();
        jobs.dedup();
        // The field's text is as of some moment during the read: at the earliest when it
        // started (how old a write's basis may be), at the latest when it returned (since
        // when the text has been seen).
        let read_started = clock.now();
        let rows = acct.read(&jobs, field);
        let read_at = clock.now();
        // Merge first, then write every field that lacks its part.
        let mut writes: Vec<(usize, String, String, bool, Option<u64>)> = Vec::new();
        for i in due {
            let item = &mut items[i];
            item.reads += 1;
            let job_rows = match &rows {
                Err(e) => Err(e.to_string()),
                Ok(rows) => match rows.get(&item.delivery.job) {
                    Some(Ok(r)) => Ok(Some(r)),
                    None => Ok(None),
                    Some(Err(e)) => Err(e.clone()),
                },
            };
            steps[i] = match job_rows {
                Err(e) => {
                    item.failed(e, read_at);
                    Step::Wait
                }
                Ok(None) => {
                    item.wait_for_job("the job is not in accounting yet".into(), timing, read_at);
                    Step::Wait
                }
                Ok(Some(job_rows)) => {
                    let system = field == Field::System;
                    match rows::target(job_rows, item.delivery.part.start, system) {
                        Target::Wait(why) => {
                            item.wait_for_job(why, timing, read_at);
                            Step::Wait
                        }
                        Target::Refuse(why) => Step::Refused(AcctError::NoRow(why)),
                        Target::Write { id, value, run } => {
                            item.backoff = timing.poll();
                            let base = carried(job_rows, &value, run, &item.delivery);
                            // A requeued run's row will be shared with the next run's
                            // writers (its row becomes the latest): not a lone writer.
                            let single = item.delivery.nodes.len() <= 1
                                && job_rows.runs.len() <= 1
                                && job_rows.runs.iter().all(|r| r.state != "REQUEUED");
                            let read = (read_started, read_at);
                            // The energy TRES is the row's own run's, and is rewritten
                            // by its completion record: only once that is in.
                            let row = job_rows.latest();
                            let energy = EnergyRow {
                                own_run: row.is_some_and(|r| r.ended && r.start == Some(run)),
                                current_j: row.and_then(|r| r.energy),
                            };
                            match examine(
                                item, &value, &base, run, single, timing, policy, energy, read,
                            ) {
                                Ok(step) => step,
                                Err((merged, energy_j)) => {
                                    writes.push((i, id, merged, single, energy_j));
                                    Step::Wait
                                }
                            }
                        }
                    }
                }
            };
        }
        // A plain `jobid=N` also selects every task of array N and every component of
        // het job N: write by it only when slurmctld (while it knows the job) names it so
        // too, not `N_T` or `N+O` that accounting has not caught up with yet.
        let plain: Vec<u32> = writes
            .iter()
            .filter(|(_, id, ..)| !id.contains(['_', '+']))
            .map(|(i, ..)| items[*i].delivery.job)
            .collect();
        if !plain.is_empty() {
            let names = acct.ctld_names(&plain);
            writes.retain(|(i, id, ..)| {
                if id.contains(['_', '+']) {
                    return true;
                }
                let job = items[*i].delivery.job;
                let why = match &names {
                    Ok(names) => match names.get(&job) {
                        Some(name) if name != id => format!(
                            "slurmctld names job {job} `{name}`, accounting still `{id}`: waiting for accounting"
                        ),
                        _ => return true,
                    },
                    Err(e) => format!("cannot ask slurmctld how it names job {job}: {e}"),
                };
                items[*i].wait_for_job(why, timing, read_at);
                false
            });
        }
        for batch in writes.chunks(PARALLEL_WRITES) {
            let now = clock.now();
            if now.saturating_duration_since(read_started) >= timing.settle / 2 {
                // The read is too old to write from: read again first (next round).
                for (i, ..) in batch {
                    items[*i].not_before = now;
                }
                continue;
            }
            let requests: Vec<(&str, &str, Option<u64>)> = batch
                .iter()
                .map(|(_, id, v, _, e)| (id.as_str(), v.as_str(), *e))
                .collect();
            let results = acct.write_all_energy(&requests, field);
            let now = clock.now();
            for ((i, _, merged, single, energy_j), result) in batch.iter().zip(results) {
                let item = &mut items[*i];
                if result.is_err() && energy_j.is_some() {
                    item.energy_failures += 1;
                }
                steps[*i] = match result {
                    Ok(()) if *single => Step::Done(Delivered {
                        writes: item.writes + 1,
                        reads: item.reads,
                        record: merged.clone(),
                    }),
                    Ok(()) => {
                        item.writes += 1;
                        item.last_seen = None;
                        item.guard_at = None;
                        item.not_before = now + timing.poll();
                        item.watch = timing.poll();
                        Step::Wait
                    }
                    Err(e) => {
                        item.failed(e.to_string(), now);
                        Step::Wait
                    }
                };
            }
        }
    }
    let now = clock.now();
    for (item, step) in items.iter().zip(steps.iter_mut()) {
        if matches!(step, Step::Wait) && item.reads > 0 && now > item.deadline {
            *step = Step::GaveUp(AcctError::GaveUp {
                secs: timing.give_up.as_secs(),
                last: item.last_error.clone(),
            });
        }
    }
    steps
}

/// The latest row's `value` with the parts of run `run` that the job's earlier rows hold
/// and it lacks: a requeued run's parts go to its own row while that is the job's latest,
/// and to the latest row (which sacctmgr addresses from then on) once the next run's row
/// is in; a part that settled in the run's own row before that is carried over by the
/// run's nodes that write after, so that the run's segment in the latest row is whole.
fn carried(job_rows: &JobRows, value: &str, run: u64, d: &Delivery) -> String {
    let Some(latest) = job_rows.latest() else {
        return value.to_string();
    };
    let mut base = value.to_string();
    for row in &job_rows.runs {
        if std::ptr::eq(row, latest)
            || row.id != latest.id
            || !row.value.contains(&format!(" run={run}"))
        {
            continue;
        }
        let Some(found) = record::find_run(&row.value, run) else {
            continue;
        };
        let Some(have) = record::find_run(&base, run) else {
            // The latest row has none of the run yet: the segment as it stands.
            let segment = &row.value[found.start..found.end];
            base = if base.is_empty() {
                segment.to_string()
            } else {
                format!("{base} {segment}")
            };
            continue;
        };
        let meta = match (found.intensity, found.pue) {
            (Some(intensity), Some(pue)) => Meta {
                intensity: crate::units::GramsPerKwh(intensity),
                pue,
                expected_nodes: found.expected_nodes.unwrap_or(0).max(d.meta.expected_nodes),
            },
            _ => d.meta,
        };
        for part in found.parts.values() {
            if part.node != d.part.node && !have.parts.contains_key(&part.node) {
                base = record::merge_in_run(&base, part, &meta, Some(&d.nodes), run);
            }
        }
    }
    base
}

/// The merge protocol's step for one record whose row was read (`current`, to hold the
/// segment of run `run`; `base`: `current` with what the run's earlier rows add, see
/// [`carried`]) by a read that started and returned at `started` and `now`:
/// done, waiting, or (`Err`) the field to write. The text is taken to be seen from `now`
/// on and until `started` (the safe ends of the read: see DESIGN-merge.md).
#[allow(clippy::too_many_arguments)]
fn examine(
    item: &mut Item,
    current: &str,
    base: &str,
    run: u64,
    single: bool,
    timing: &Timing,
    policy: &Policy,
    energy: EnergyRow,
    (started, now): (Instant, Instant),
) -> Result<Step, (String, Option<u64>)> {
    if item.last_seen.as_deref() != Some(current) {
        item.stable_since = now;
        item.last_seen = Some(current.to_string());
        item.holds = false;
    }
    if !(item.holds && base == current) {
        let d = &item.delivery;
        let job = d.job;
        let merged = record::merge_in_run_sluid(
            base,
            &d.part,
            &d.meta,
            Some(&d.nodes),
            run,
            d.sluid.as_deref(),
        );
        let plan = energy_plan(
            policy,
            energy.own_run,
            current,
            energy.current_j,
            &merged,
            run,
        );
        let energy_j = item.energy_to_send(plan);
        if merged != *current {
            item.guard_at = None;
            return match check_writable(&merged, &policy.diffs) {
                Ok(()) => Err((merged, energy_j)),
                Err(e) => Ok(Step::Refused(e.into())),
            };
        }
        // The field holds the part, the energy TRES is not the record's total yet (an
        // earlier write without it, or a write that set the field but not the TRES):
        // the same value again with the energy, a few times at most.
        if let Some(j) = energy_j {
            if item.energy_writes < MAX_ENERGY_WRITES
                && check_writable(&merged, &policy.diffs).is_ok()
            {
                item.energy_writes += 1;
                item.guard_at = None;
                return Err((merged, Some(j)));
            }
            if !item.energy_noted {
                item.energy_noted = true;
                log::warn!(
                    "job {job}: the energy TRES still differs from the record's {j} J after {MAX_ENERGY_WRITES} writes; left as it is"
                );
            }
        }
        item.holds = true;
    }
    let done = || {
        Step::Done(Delivered {
            writes: item.writes,
            reads: item.reads,
            record: current.to_string(),
        })
    };
    if single {
        return Ok(done());
    }
    if started.saturating_duration_since(item.stable_since) < timing.settle {
        item.not_before = if item.stable_since == now {
            // Changed, with the part in: others are still writing. Look less and less
            // often (a part dropped meanwhile is merged back at the next look; only
            // settling decides when the part is done, however seldom it looks).
            let at = now + item.watch;
            item.watch = (item.watch * 2).min(timing.max_watch());
            at
        } else {
            // Unchanged: look again once it may have settled.
            (item.stable_since + timing.settle).max(now + timing.poll())
        };
        return Ok(Step::Wait);
    }
    match item.guard_at {
        Some(at) if started >= at => Ok(done()),
        Some(at) => {
            item.not_before = at;
            Ok(Step::Wait)
        }
        None => {
            // Settled: one more look once any write based on an older read has landed.
            let at = now + timing.flight;
            item.guard_at = Some(at);
            item.not_before = at;
            Ok(Step::Wait)
        }
    }
}

/// Delivers one record, rounds until it is done: what [`round`] does for many.
pub fn deliver(
    acct: &dyn Accounting,
    d: &Delivery,
    timing: &Timing,
    policy: &Policy,
    sleep: &dyn Fn(Duration),
) -> Result<Delivered, AcctError> {
    let mut item = Item::new(d.clone(), timing);
    loop {
        let wait = item.not_before.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            sleep(wait);
        }
        let mut steps = round(acct, &mut [&mut item], timing, policy);
        match steps.pop() {
            Some(Step::Done(done)) => return Ok(done),
            Some(Step::Refused(e)) | Some(Step::GaveUp(e)) => return Err(e),
            Some(Step::Wait) | None => {}
        }
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
        NodePart::new(node, wh, 1, wh, Method::Counter, (1.0, 2.0))
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
            sluid: None,
        }
    }

    /// Every job asked for has `value` (one run, ended), or none is in accounting yet.
    fn rows(jobs: &[u32], value: Option<String>) -> Rows {
        jobs.iter()
            .filter_map(|&j| {
                let v = value.clone()?;
                Some((
                    j,
                    Ok(JobRows {
                        runs: vec![Row {
                            id: j.to_string(),
                            state: "COMPLETED".into(),
                            ended: true,
                            submit: 0,
                            start: Some(0),
                            end: Some(3),
                            energy: None,
                            value: v,
                        }],
                        selects_others: false,
                    }),
                ))
            })
            .collect()
    }

    struct Db {
        value: RefCell<Option<String>>,
        writes: RefCell<u32>,
        fail_reads: RefCell<u32>,
    }

    impl Accounting for Db {
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            if *self.fail_reads.borrow() > 0 {
                *self.fail_reads.borrow_mut() -= 1;
                return Err(AcctError::Timeout {
                    tool: "sacct".into(),
                    secs: 1,
                });
            }
            Ok(rows(jobs, self.value.borrow().clone()))
        }
        fn write(&self, _: &str, _: Field, v: &str) -> Result<(), AcctError> {
            *self.writes.borrow_mut() += 1;
            *self.value.borrow_mut() = Some(v.to_string());
            Ok(())
        }
    }

    fn v22() -> Policy {
        Policy::new(Differences::for_version(crate::slurm::SlurmVersion::new(
            22, 5, 8,
        )))
    }

    fn timing() -> Timing {
        Timing {
            stagger: Duration::ZERO,
            settle: Duration::from_millis(30),
            give_up: Duration::from_secs(5),
            flight: Duration::from_millis(20),
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
        let r = deliver(&db, &d, &timing(), &v22(), &std::thread::sleep).unwrap();
        assert_eq!(r.writes, 1);
        // Two failed reads, one to merge and write: a lone writer needs nothing more.
        assert_eq!(r.reads, 3);
        assert!(
            r.record
                .starts_with("site-tag=1 spank-carbon/1 run=0 gpu_wh=2 "),
            "{}",
            r.record
        );
        // Delivering again (a retry after a crash) writes nothing.
        let r2 = deliver(&db, &d, &timing(), &v22(), &std::thread::sleep).unwrap();
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
            &v22(),
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
        let e = deliver(&db, &delivery("n1", 1.0, &["n1"]), &t, &v22(), &|_| {
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
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            Ok(rows(jobs, Some(self.value.lock().unwrap().clone())))
        }
        fn write(&self, _: &str, _: Field, v: &str) -> Result<(), AcctError> {
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
                            flight: Duration::from_millis(40),
                        };
                        deliver(&db, &d, &t, &v22(), &std::thread::sleep).unwrap()
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
    fn a_requeued_runs_parts_settled_in_its_own_row_are_carried_to_the_latest() {
        let nodes = ["a", "b", "c"];
        let row = |submit: u64, state: &str, start: u64, end: Option<u64>, value: String| Row {
            id: "9".into(),
            state: state.into(),
            ended: end.is_some(),
            submit,
            start: Some(start),
            end,
            energy: None,
            value,
        };
        let d = |n: &str, wh: f64| delivery(n, wh, &nodes);
        let mut own = String::from("site");
        for (n, wh) in [("a", 1.0), ("b", 2.0)] {
            let x = d(n, wh);
            own = record::merge_in_run(&own, &x.part, &x.meta, Some(&x.nodes), 0);
        }
        // Run 0 was requeued; run 1's row is the latest and has none of run 0's parts.
        let rows = JobRows {
            runs: vec![
                row(0, "REQUEUED", 0, Some(3), own.clone()),
                row(3, "RUNNING", 30, None, "x".into()),
            ],
            selects_others: false,
        };
        let c = d("c", 4.0);
        let base = carried(&rows, "x", 0, &c);
        let seg = record::find_run(&base, 0).unwrap();
        assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(base.starts_with("x "), "{base}");
        // The latest row already has part of run 0 (c's): a is merged in (b, the node
        // delivering, merges its own part after).
        let latest = record::merge_in_run("x", &c.part, &c.meta, Some(&c.nodes), 0);
        let base = carried(&rows, &latest, 0, &d("b", 2.0));
        let seg = record::parse_all(&base);
        assert_eq!(seg.len(), 1);
        assert_eq!(seg[0].1.parts.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(seg[0].1.gpu_wh(), 5.0);
        // Another run's segment is not carried; neither is anything when the latest row
        // is the run's own.
        assert_eq!(carried(&rows, "x", 30, &c), "x");
        let alone = JobRows {
            runs: vec![rows.runs[0].clone()],
            selects_others: false,
        };
        assert_eq!(carried(&alone, &own, 0, &c), own);
    }

    #[test]
    fn give_up_counts_from_the_last_nodes_turn() {
        let t = Timing {
            stagger: Duration::from_millis(400),
            give_up: Duration::from_secs(300),
            ..timing()
        };
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let now = Instant::now();
        let last = Item::new_at(delivery("n999", 1.0, &refs), &t, now);
        // Its turn comes after 399.6 s, past give_up: it still gets give_up from then.
        assert!(last.not_before - now > t.give_up);
        assert!(last.deadline - last.not_before >= t.give_up);
        // The first node watches the field until the last one wrote, and then some.
        let first = Item::new_at(delivery("n0", 1.0, &refs), &t, now);
        assert_eq!(first.not_before, now);
        assert!(first.deadline >= last.not_before + t.give_up);
    }

    /// Accounting that shows job 9 as plain `9` (it has not caught up) while slurmctld
    /// names it `9_4`, an array task: a write to `jobid=9` would change the whole array.
    #[test]
    fn a_plain_id_is_not_written_while_slurmctld_names_an_array_task() {
        struct Lagging {
            ctld: RefCell<Option<String>>,
            writes: RefCell<Vec<String>>,
        }
        impl Accounting for Lagging {
            fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
                Ok(rows(jobs, Some(String::new())))
            }
            fn write(&self, id: &str, _: Field, _: &str) -> Result<(), AcctError> {
                self.writes.borrow_mut().push(id.to_string());
                Ok(())
            }
            fn ctld_names(
                &self,
                jobs: &[u32],
            ) -> Result<std::collections::BTreeMap<u32, String>, AcctError> {
                Ok(jobs
                    .iter()
                    .filter_map(|&j| Some((j, self.ctld.borrow().clone()?)))
                    .collect())
            }
        }
        let acct = Lagging {
            ctld: RefCell::new(Some("9_4".into())),
            writes: RefCell::new(vec![]),
        };
        let mut item = Item::new(delivery("n1", 1.0, &["n1"]), &timing());
        let steps = round(&acct, &mut [&mut item], &timing(), &v22());
        assert!(matches!(steps[0], Step::Wait));
        assert!(
            acct.writes.borrow().is_empty(),
            "wrote {:?}",
            acct.writes.borrow()
        );
        assert!(item.last_error.contains("9_4"), "{}", item.last_error);
        // slurmctld agrees (or has forgotten the job): the write goes.
        *acct.ctld.borrow_mut() = None;
        item.not_before = Instant::now();
        let steps = round(&acct, &mut [&mut item], &timing(), &v22());
        assert!(matches!(steps[0], Step::Done(_)), "{steps:?}");
        assert_eq!(*acct.writes.borrow(), ["9"]);
    }

    #[test]
    fn one_round_reads_every_due_record_at_once() {
        struct Count {
            reads: RefCell<Vec<Vec<u32>>>,
            writes: RefCell<Vec<String>>,
        }
        impl Accounting for Count {
            fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
                self.reads.borrow_mut().push(jobs.to_vec());
                Ok(rows(jobs, Some(String::new())))
            }
            fn write(&self, id: &str, _: Field, _: &str) -> Result<(), AcctError> {
                self.writes.borrow_mut().push(id.to_string());
                Ok(())
            }
        }
        let acct = Count {
            reads: RefCell::new(vec![]),
            writes: RefCell::new(vec![]),
        };
        let mut items: Vec<Item> = (1..=5)
            .map(|j| {
                let mut d = delivery("n1", 1.0, &["n1"]);
                d.job = j;
                Item::new(d, &timing())
            })
            .collect();
        let mut refs: Vec<&mut Item> = items.iter_mut().collect();
        let steps = round(&acct, &mut refs, &timing(), &v22());
        assert!(steps.iter().all(|s| matches!(s, Step::Done(_))));
        assert_eq!(*acct.reads.borrow(), vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(acct.writes.borrow().len(), 5);
    }

    fn policy(major: u8, minor: u8, energy: EnergyTres) -> Policy {
        Policy {
            diffs: Differences::for_version(crate::slurm::SlurmVersion::new(major, minor, 0)),
            energy,
        }
    }

    #[test]
    fn tres_is_never_sent_below_25_11() {
        let v24 = policy(24, 11, EnergyTres::Overwrite).diffs;
        let v26 = policy(26, 5, EnergyTres::Auto).diffs;
        assert!(sacctmgr_args("9", Field::System, "x", Some(5), &v24).is_err());
        let plain = sacctmgr_args("9", Field::System, "x", None, &v24).unwrap();
        assert!(plain.iter().all(|a| !a.contains("tres")), "{plain:?}");
        assert_eq!(plain.last().unwrap(), "SystemComment=x");
        let with = sacctmgr_args("9_2", Field::System, "x", Some(7200), &v26).unwrap();
        assert_eq!(
            with[with.len() - 3..],
            ["set", "SystemComment=x", "tres=energy=7200"]
        );
        assert!(sacctmgr_args("9 or 1=1", Field::System, "x", None, &v26).is_err());
        // This build: tres= goes out exactly when its Slurm is 25.11 or later.
        let built = Differences::built();
        let sent = sacctmgr_args("9", Field::System, "x", Some(1), &built)
            .is_ok_and(|a| a.iter().any(|x| x == "tres=energy=1"));
        assert_eq!(
            sent,
            built.version >= crate::slurm::SlurmVersion::new(25, 11, 0)
        );
        // The courier's round, with any energy_tres setting, never asks for tres= there.
        for mode in [EnergyTres::Auto, EnergyTres::Overwrite] {
            let p = policy(25, 5, mode);
            assert!(!p.sets_energy());
            let plan = energy_plan(&p, true, "", None, &merged_one(2.0), 0);
            assert_eq!(plan, EnergyPlan::Leave);
        }
    }

    #[test]
    fn sacctmgrs_outcome_by_version() {
        let v22 = policy(22, 5, EnergyTres::Auto).diffs;
        let v26 = policy(26, 5, EnergyTres::Auto).diffs;
        let one = " Modified jobs...\n  9 submitted at 2026-12-01T10:00:00\n";
        let two = " Modified jobs...\n  9 submitted at x\n  9 submitted at y\n";
        for v in [&v22, &v26] {
            assert!(write_succeeded(v, true, one).is_ok());
            assert!(write_succeeded(v, true, two)
                .unwrap_err()
                .contains("2 rows"));
        }
        // 26.05 prints " Modified jobs..." before the outcome: the exit status decides.
        assert!(write_succeeded(&v26, false, " Modified jobs...\n  Nothing modified\n").is_err());
        assert!(write_succeeded(&v26, false, one).is_err());
        assert!(write_succeeded(&v26, true, "").is_ok());
        // 22.05: success also needs the listing of the one row.
        assert!(write_succeeded(&v22, true, "").is_err());
        assert!(write_succeeded(&v22, false, one).is_err());
    }

    fn merged_one(wh: f64) -> String {
        let d = delivery("n1", wh, &["n1"]);
        record::merge_in_run("", &d.part, &d.meta, Some(&d.nodes), 0)
    }

    #[test]
    fn energy_plan_keeps_slurms_own_measurement() {
        let auto = policy(26, 5, EnergyTres::Auto);
        let merged = merged_one(2.5);
        let want = joules(2.5);
        assert_eq!(want, 9000);
        // Nothing measured: set it.
        assert_eq!(
            energy_plan(&auto, true, "", None, &merged, 0),
            EnergyPlan::Set(want)
        );
        assert_eq!(
            energy_plan(&auto, true, "", Some(0), &merged, 0),
            EnergyPlan::Set(want)
        );
        // Already the record's: nothing to do.
        assert_eq!(
            energy_plan(&auto, true, &merged, Some(want), &merged, 0),
            EnergyPlan::Leave
        );
        // Slurm's own (the field has no record, or one whose total differs): kept...
        assert_eq!(
            energy_plan(&auto, true, "site", Some(123), &merged, 0),
            EnergyPlan::NotOurs(123)
        );
        let older = merged_one(1.0);
        assert_eq!(
            energy_plan(&auto, true, &older, Some(123), &merged, 0),
            EnergyPlan::NotOurs(123)
        );
        // ...unless it is the record's earlier total (a part added since).
        assert_eq!(
            energy_plan(&auto, true, &older, Some(joules(1.0)), &merged, 0),
            EnergyPlan::Set(want)
        );
        // ...or the operator says overwrite.
        let over = policy(26, 5, EnergyTres::Overwrite);
        assert_eq!(
            energy_plan(&over, true, "site", Some(123), &merged, 0),
            EnergyPlan::Set(want)
        );
        // Off, another run's segment, or a row that is not the run's own: never.
        let off = policy(26, 5, EnergyTres::Off);
        assert_eq!(
            energy_plan(&off, true, "", None, &merged, 0),
            EnergyPlan::Leave
        );
        assert_eq!(
            energy_plan(&auto, false, "", None, &merged, 0),
            EnergyPlan::Leave
        );
        assert_eq!(
            energy_plan(&auto, true, "", None, &merged, 77),
            EnergyPlan::Leave
        );
    }

    /// A row whose field and energy TRES a write sets together, as 25.11+ does.
    struct EnergyDb {
        value: RefCell<String>,
        energy: RefCell<Option<u64>>,
        sent: RefCell<Vec<Option<u64>>>,
        /// Writes ignore the energy (a sacct that does not show it, say).
        drop_energy: bool,
    }

    impl EnergyDb {
        fn new(value: &str, energy: Option<u64>) -> EnergyDb {
            EnergyDb {
                value: RefCell::new(value.into()),
                energy: RefCell::new(energy),
                sent: RefCell::new(vec![]),
                drop_energy: false,
            }
        }
    }

    impl Accounting for EnergyDb {
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            let mut r = rows(jobs, Some(self.value.borrow().clone()));
            for rows in r.values_mut().flatten() {
                rows.runs[0].energy = *self.energy.borrow();
            }
            Ok(r)
        }
        fn write(&self, id: &str, field: Field, v: &str) -> Result<(), AcctError> {
            self.write_energy(id, field, v, None)
        }
        fn write_energy(
            &self,
            _: &str,
            _: Field,
            v: &str,
            energy: Option<u64>,
        ) -> Result<(), AcctError> {
            self.sent.borrow_mut().push(energy);
            *self.value.borrow_mut() = v.to_string();
            if let Some(e) = energy.filter(|_| !self.drop_energy) {
                *self.energy.borrow_mut() = Some(e);
            }
            Ok(())
        }
    }

    #[test]
    fn the_record_and_its_energy_go_in_one_write_on_25_11() {
        let p = policy(26, 5, EnergyTres::Auto);
        let db = EnergyDb::new("site", Some(0));
        let r = deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(r.writes, 1);
        assert_eq!(*db.sent.borrow(), [Some(joules(2.0))]);
        assert_eq!(*db.energy.borrow(), Some(7200));
        // The same on 24.11: the record, never tres=.
        let db = EnergyDb::new("site", Some(0));
        let p24 = policy(24, 11, EnergyTres::Overwrite);
        deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p24,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(*db.sent.borrow(), [None]);
        assert_eq!(*db.energy.borrow(), Some(0));
        // Slurm measured the job's energy: the record goes in, the energy stays.
        let db = EnergyDb::new("site", Some(555));
        deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(*db.sent.borrow(), [None]);
        assert_eq!(*db.energy.borrow(), Some(555));
        assert!(record::parse(&db.value.borrow()).is_some());
    }

    #[test]
    fn the_energy_follows_the_running_total_as_parts_arrive() {
        let p = policy(26, 5, EnergyTres::Auto);
        let db = EnergyDb::new("", None);
        let nodes = ["a", "b", "c"];
        for (i, n) in nodes.iter().enumerate() {
            deliver(
                &db,
                &delivery(n, i as f64 + 1.5, &nodes),
                &timing(),
                &p,
                &std::thread::sleep,
            )
            .unwrap();
            let seg = record::parse(&db.value.borrow()).unwrap();
            assert_eq!(seg.parts.len(), i + 1);
            assert_eq!(*db.energy.borrow(), Some(joules(seg.gpu_wh())));
        }
        assert_eq!(*db.energy.borrow(), Some(joules(1.5 + 2.5 + 3.5)));
        // A record already whole whose energy was never set (written by an older
        // version, or energy_tres=off then): set by the next delivery, field unchanged.
        let whole = db.value.borrow().clone();
        *db.energy.borrow_mut() = None;
        deliver(
            &db,
            &delivery("c", 3.5, &nodes),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(*db.value.borrow(), whole);
        assert_eq!(*db.energy.borrow(), Some(joules(7.5)));
    }

    #[test]
    fn an_energy_that_never_sticks_is_tried_a_few_times_only() {
        let p = policy(26, 5, EnergyTres::Auto);
        let mut db = EnergyDb::new("", None);
        db.drop_energy = true;
        let nodes = ["a", "b"];
        deliver(
            &db,
            &delivery("a", 1.0, &nodes),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        let sent = db.sent.borrow().len();
        assert_eq!(sent as u32, 1 + MAX_ENERGY_WRITES);
        assert!(db.sent.borrow().iter().all(|e| *e == Some(joules(1.0))));
    }

    /// A slurmdbd that cannot set the energy TRES (sacctmgr fails when asked to) does not
    /// keep the record out: after two failures it goes without.
    #[test]
    fn a_failing_energy_write_does_not_keep_the_record_out() {
        struct NoTres(EnergyDb);
        impl Accounting for NoTres {
            fn read(&self, jobs: &[u32], f: Field) -> Result<Rows, AcctError> {
                self.0.read(jobs, f)
            }
            fn write(&self, id: &str, f: Field, v: &str) -> Result<(), AcctError> {
                self.0.write(id, f, v)
            }
            fn write_energy(
                &self,
                id: &str,
                f: Field,
                v: &str,
                e: Option<u64>,
            ) -> Result<(), AcctError> {
                self.0.sent.borrow_mut().push(e);
                if e.is_some() {
                    return Err(AcctError::Failed {
                        tool: "sacctmgr".into(),
                        detail: "REGEXP_REPLACE does not exist".into(),
                    });
                }
                self.0.write(id, f, v)
            }
        }
        let db = NoTres(EnergyDb::new("site", None));
        let p = policy(26, 5, EnergyTres::Auto);
        let r = deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert!(record::parse(&r.record).is_some());
        let sent = db.0.sent.borrow();
        let with = sent.iter().filter(|e| e.is_some()).count() as u32;
        assert_eq!(with, MAX_ENERGY_FAILURES, "{sent:?}");
        assert_eq!(sent.last(), Some(&None));
    }
}
