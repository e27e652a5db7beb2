//! The simulated slurmdbd: job rows whose field is the last write landed by a given
//! moment, and the faults it draws (slow or failed reads, lost, late and timed-out
//! writes, pauses); [`Node`] is one node's view of it, the `Accounting` and `Clock`
//! its courier gets.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use spank_carbon::accounting::{Accounting, AcctError, Clock, JobRows, Row, Rows, Timing};
use spank_carbon::core::config::Field;
use spank_carbon::slurm::Differences;

use crate::schedule::Rng;
use crate::{ms, secs, summary, trace, T};

/// One run's row of a job, and every write that landed in it.
pub struct SimRow {
    pub id: String,
    /// Unix seconds, as slurmctld's clock has them.
    pub submit: u64,
    pub start: u64,
    pub end: u64,
    pub end_state: &'static str,
    /// When the row appears in accounting, and when its completion record does.
    pub created_at: T,
    pub ended_at: T,
    pub initial: String,
    /// (lands at, sequence, value).
    pub landings: Vec<(T, u64, String)>,
}

impl SimRow {
    pub fn value_at(&self, t: T) -> &str {
        self.landings
            .iter()
            .filter(|(at, ..)| *at <= t)
            .max_by_key(|(at, seq, _)| (*at, *seq))
            .map_or(self.initial.as_str(), |(.., v)| v.as_str())
    }
}

/// How the database misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub read_fail: f64,
    pub read_slow: f64,
    pub write_lost: f64,
    pub write_failed_landed: f64,
    pub write_timeout: f64,
    pub write_slow: f64,
    pub crash: f64,
    pub crash_after_done: f64,
    /// A write that lands later than `flight` after its read (slurmdbd held it past
    /// sacctmgr's kill, an UPDATE waiting on locks): 5 to 90 s past that bound, with the
    /// stale field it was based on.
    pub late: f64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            read_fail: 0.0,
            read_slow: 0.0,
            write_lost: 0.0,
            write_failed_landed: 0.0,
            write_timeout: 0.0,
            write_slow: 0.0,
            crash: 0.0,
            crash_after_done: 0.0,
            late: 0.0,
        }
    }
    pub fn random(rng: &mut Rng) -> Faults {
        // Some seeds calm, some rough.
        let k = [0.0, 0.5, 1.0, 3.0][rng.below(4) as usize];
        Faults {
            read_fail: 0.03 * k,
            read_slow: 0.05 * k,
            write_lost: 0.03 * k,
            write_failed_landed: 0.02 * k,
            write_timeout: 0.03 * k,
            write_slow: 0.05 * k,
            crash: 0.002 * k,
            crash_after_done: 0.05 * k,
            late: 0.02 * k,
        }
    }
}

pub struct Db {
    pub jobs: BTreeMap<u32, Vec<SimRow>>,
    /// The rows of other jobs that sacctmgr's `jobid=N` may select, by N: the tasks of
    /// an older array whose id was N (their own id, their row). Nothing may change them.
    pub others: BTreeMap<u32, Vec<(u32, SimRow)>>,
    /// The Slurm release it behaves as: which rows `jobid=N` changes
    /// ([`Differences::jobid_newest_only`]).
    pub diffs: Differences,
    pub seq: u64,
    /// slurmdbd paused (or restarting) from .0 until .1.
    pub pauses: Vec<(T, T)>,
    pub faults: Faults,
    pub rng: Rng,
    pub reads: u64,
    pub writes: u64,
    /// Writes issued from a read older than settle/2: the protocol broke its own rule.
    pub violations: Vec<String>,
    /// Latency model.
    pub read_ms: u64,
    pub write_ms: u64,
}

impl Db {
    pub fn paused(&self, t: T) -> Option<T> {
        self.pauses
            .iter()
            .find(|(a, b)| *a <= t && t < *b)
            .map(|(_, b)| *b)
    }

    /// A write of job `job` landing at `t`: slurmdbd applies it to the job's latest row
    /// at that moment, and to the rows of other jobs that Slurm's `as_mysql_modify_job`
    /// also picks: before 23.11 every task of an older array whose id was `job`; from
    /// 23.11 on those whose own id is below `job` (they come before its newest row in id
    /// order), or all when that newest row is the array's own.
    pub fn land(&mut self, job: u32, t: T, value: &str) {
        self.seq += 1;
        let seq = self.seq;
        let mut newest_is_array = false;
        if let Some(row) = self.jobs.get_mut(&job).and_then(|rows| {
            rows.iter_mut()
                .filter(|r| r.created_at <= t)
                .max_by_key(|r| r.submit)
        }) {
            newest_is_array = row.id.contains('_');
            row.landings.push((t, seq, value.to_string()));
        }
        let newest_only = self.diffs.jobid_newest_only;
        for (raw, row) in self.others.get_mut(&job).into_iter().flatten() {
            if row.created_at <= t && (!newest_only || *raw < job || newest_is_array) {
                row.landings.push((t, seq, value.to_string()));
            }
        }
    }

    pub fn latency(&mut self, typical: u64, slow: f64) -> Duration {
        let base = self
            .rng
            .between(ms(typical * 6 / 10), ms(typical * 14 / 10));
        if self.rng.chance(slow) {
            base + self.rng.between(ms(0), secs(4))
        } else {
            base
        }
    }
}

/// One node's courier as the protocol sees the world: its clock and its calls.
pub struct Node<'a> {
    pub db: &'a RefCell<Db>,
    pub base: Instant,
    pub now: Cell<T>,
    pub read_started: Cell<T>,
    pub timing: Timing,
    /// sacct/sacctmgr's time limit.
    pub timeout: Duration,
}

impl Clock for Node<'_> {
    fn now(&self) -> Instant {
        self.base + self.now.get()
    }
}

pub fn timeout_err(tool: &str) -> AcctError {
    AcctError::Run(spank_carbon::slurm::run::RunError::Timeout {
        tool: tool.into(),
        secs: 15,
    })
}

impl Accounting for Node<'_> {
    fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
        let t = self.now.get();
        self.read_started.set(t);
        let mut db = self.db.borrow_mut();
        db.reads += 1;
        if let Some(resume) = db.paused(t) {
            // No answer until slurmdbd is back, or sacct is killed.
            let wait = (resume - t).min(self.timeout);
            self.now.set(t + wait);
            return Err(timeout_err("sacct"));
        }
        let (read_ms, slow, fail) = (db.read_ms, db.faults.read_slow, db.faults.read_fail);
        let took = db.latency(read_ms, slow).min(self.timeout);
        if db.rng.chance(fail) {
            self.now.set(t + took);
            return Err(AcctError::Failed {
                tool: "sacct".into(),
                detail: "simulated failure".into(),
            });
        }
        let mut out = Rows::new();
        for &job in jobs {
            let Some(rows) = db.jobs.get(&job) else {
                continue;
            };
            let mut runs: Vec<Row> = rows
                .iter()
                .filter(|r| r.created_at <= t)
                .map(|r| {
                    let ended = r.ended_at <= t;
                    Row {
                        id: r.id.clone(),
                        state: if ended { r.end_state } else { "RUNNING" }.into(),
                        ended,
                        submit: r.submit,
                        start: Some(r.start),
                        end: ended.then_some(r.end),
                        energy: None,
                        value: r.value_at(t).to_string(),
                    }
                })
                .collect();
            if runs.is_empty() {
                continue;
            }
            runs.sort_by_key(|r| r.submit);
            // `sacct -D -j N` shows the tasks of an older array whose id was N too.
            let others: Vec<u32> = db
                .others
                .get(&job)
                .into_iter()
                .flatten()
                .filter(|(_, r)| r.created_at <= t)
                .map(|(raw, _)| *raw)
                .collect();
            out.insert(
                job,
                Ok(JobRows {
                    runs,
                    selects_others: !others.is_empty(),
                    others_below: others.iter().any(|&raw| raw < job),
                }),
            );
        }
        self.now.set(t + took);
        Ok(out)
    }

    fn write(&self, id: &str, field: Field, value: &str) -> Result<(), AcctError> {
        self.write_all(&[(id, value)], field).pop().expect("one")
    }

    fn write_all(&self, writes: &[(&str, &str)], _: Field) -> Vec<Result<(), AcctError>> {
        let t = self.now.get();
        let read = self.read_started.get();
        // In the model, a write lands at the latest `flight` after its read started.
        let bound = read + self.timing.flight;
        let mut db = self.db.borrow_mut();
        if t.saturating_sub(read) >= self.timing.settle / 2 {
            db.violations.push(format!(
                "write issued {:?} after its read started",
                t.saturating_sub(read)
            ));
        }
        let mut took = Duration::ZERO;
        let mut results = Vec::new();
        for (id, value) in writes {
            db.writes += 1;
            let job: u32 = id.parse().expect("the simulation's ids are plain");
            let f = db.faults;
            let (result, dur, lands): (Result<(), AcctError>, Duration, Option<T>) =
                if let Some(resume) = db.paused(t) {
                    // Held by slurmdbd; sacctmgr is killed at its time limit.
                    let lands = if resume <= bound.min(t + self.timeout) {
                        Some(resume)
                    } else {
                        None
                    };
                    let dur = if resume <= t + self.timeout && lands == Some(resume) {
                        resume - t + ms(50)
                    } else {
                        self.timeout
                    };
                    if dur < self.timeout {
                        (Ok(()), dur, lands)
                    } else {
                        (Err(timeout_err("sacctmgr")), dur, lands)
                    }
                } else {
                    let write_ms = db.write_ms;
                    let dur = db.latency(write_ms, f.write_slow).min(self.timeout);
                    let roll = db.rng.below(1_000_000) as f64 / 1e6;
                    if roll < f.write_lost {
                        let e = AcctError::Failed {
                            tool: "sacctmgr".into(),
                            detail: "simulated failure".into(),
                        };
                        (Err(e), dur, None)
                    } else if roll < f.write_lost + f.write_failed_landed {
                        let at = t + db.rng.between(Duration::ZERO, dur);
                        let e = AcctError::Failed {
                            tool: "sacctmgr".into(),
                            detail: "simulated failure after the change".into(),
                        };
                        (Err(e), dur, Some(at))
                    } else if roll < f.write_lost + f.write_failed_landed + f.late {
                        // Held past sacctmgr's time limit and applied long after.
                        let lands = bound + db.rng.between(secs(5), secs(90));
                        (Err(timeout_err("sacctmgr")), self.timeout, Some(lands))
                    } else if roll < f.write_lost + f.write_failed_landed + f.late + f.write_timeout
                    {
                        // Killed at its time limit; slurmdbd may still apply it, late.
                        let lands = db
                            .rng
                            .chance(0.7)
                            .then(|| db.rng.between(t, bound.min(t + self.timeout)));
                        (Err(timeout_err("sacctmgr")), self.timeout, lands)
                    } else {
                        // Confirmed: landed before sacctmgr returned.
                        let at = t + db.rng.between(dur / 2, dur);
                        (Ok(()), dur, Some(at))
                    }
                };
            trace(|| {
                format!(
                    "{:>9.3} write job {job} (read at {:.3}) -> {:?} lands {:?}: {}",
                    t.as_secs_f64(),
                    read.as_secs_f64(),
                    result.as_ref().map_err(|e| e.to_string()),
                    lands.map(|l| l.as_secs_f64()),
                    summary(value)
                )
            });
            if let Some(at) = lands {
                db.land(job, at, value);
            }
            took = took.max(dur);
            results.push(result);
        }
        self.now.set(t + took);
        results
    }
}
