//! The nodes: each runs the real courier (`node::courier::Courier`, the loop of
//! `spank-carbon deliver`) against the simulated slurmdbd, started by an epilog that
//! leaves a record while none runs, and killed at random (what it knew is gone, its
//! pending records stay). A node whose delivered records are due for their late check
//! (`verify_after_s`) gets a courier some time after (a later job's prolog or epilog).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spank_carbon::accounting::{AcctError, Delivery, Policy, Timing};
use spank_carbon::node::courier::{Courier, Outbox, Wake};
use spank_carbon::node::state::{JobKey, StateError};

use crate::schedule::{Key, Rng, Scenario};
use crate::slurmdbd::{Db, Node};
use crate::{secs, trace, T};

/// How long a courier waits to try a record again after giving up on it (`retry_s`).
pub const RETRY: Duration = Duration::from_secs(60);
/// Past this, the simulation stops: whatever is not delivered by then counts as lost.
const HORIZON: Duration = Duration::from_secs(4 * 3600);
/// The longest a node waits, once a late check is due, for a courier to run: the next
/// job's prolog or epilog there.
const NEXT_JOB_WITHIN: Duration = Duration::from_secs(600);

/// One node: its epilogs' records and its courier.
struct SimNode {
    /// The pending directory: what survives a crash.
    pending: BTreeMap<JobKey, Delivery>,
    /// The records waiting for their late check, with when they were last looked at
    /// and the text seen then (also on disk).
    verify: BTreeMap<JobKey, (Delivery, T, String)>,
    /// The node's courier, while one runs.
    courier: Option<Courier>,
    /// Its epilogs: (runs at, the record it leaves, the run).
    arrivals: Vec<(T, Delivery, u64)>,
    next_arrival: usize,
    /// When the node acts next (`None`: no courier runs, no epilog to come).
    wake: Option<T>,
}

impl SimNode {
    fn next_arrival_from(&self, t: T) -> Option<T> {
        self.arrivals.get(self.next_arrival).map(|a| a.0.max(t))
    }

    /// When the node acts next with no courier: its next epilog, or a later job's
    /// prolog or epilog (drawn) once a late check is due.
    fn next_wake_from(&self, t: T, verify_after: T, rng: &mut Rng) -> Option<T> {
        let check = self
            .verify
            .values()
            .map(|(_, at, _)| *at + verify_after)
            .min()
            .map(|due| due.max(t) + rng.between(secs(1), NEXT_JOB_WITHIN));
        match (self.next_arrival_from(t), check) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    fn check_due(&self, t: T, verify_after: T) -> bool {
        self.verify
            .values()
            .any(|(_, at, _)| *at + verify_after <= t)
    }
}

#[derive(Default, Debug)]
pub struct Outcome {
    pub done: BTreeMap<Key, u32>,
    pub refused: BTreeSet<Key>,
    pub gave_up: u64,
    pub crashes: u64,
    /// When each record was first done, and first given up on.
    pub first_done: BTreeMap<Key, T>,
    pub first_give_up: BTreeMap<Key, T>,
    /// When the last part of each run was first done.
    pub last_done: T,
    pub end: T,
    pub reads: u64,
    pub writes: u64,
    /// Late checks that found the part there, and that found it missing (the record
    /// went back to pending).
    pub verified: u64,
    pub reopened: u64,
}

/// The courier's key of the record `d` of run `run` (the simulation names runs by their
/// start).
fn job_key(d: &Delivery, run: u64) -> JobKey {
    JobKey {
        job: d.job,
        node: d.part.node.clone(),
        run: Some(run),
    }
}

fn key_of(k: &JobKey) -> Key {
    (
        k.job,
        k.run.expect("the simulation's keys name the run"),
        k.node.clone(),
    )
}

/// A node's pending records as its courier sees them; what the courier does with them
/// goes into the outcome.
struct SimOutbox<'a> {
    pending: &'a mut BTreeMap<JobKey, Delivery>,
    verify: &'a mut BTreeMap<JobKey, (Delivery, T, String)>,
    /// The node's clock.
    now: &'a Cell<T>,
    rng: &'a mut Rng,
    crash_after_done: f64,
    out: &'a mut Outcome,
    /// Killed after a delivery, before the pending record was removed.
    crashed: bool,
}

impl Outbox for SimOutbox<'_> {
    fn sweep(&mut self) {}

    fn keys(&mut self) -> Vec<JobKey> {
        self.pending.keys().cloned().collect()
    }

    fn load(&mut self, key: &JobKey) -> Result<Option<Delivery>, StateError> {
        Ok(self.pending.get(key).cloned())
    }

    fn path(&self, key: &JobKey) -> PathBuf {
        PathBuf::from(format!("pending/{key}.json"))
    }

    fn claim(&mut self, _: &JobKey) -> bool {
        true
    }

    fn release(&mut self) {}

    fn delivered(&mut self, key: &JobKey, verify: Option<(&Delivery, &str)>) {
        let now = self.now.get();
        let k = key_of(key);
        trace(|| format!("{:>9.3} done {k:?}", now.as_secs_f64()));
        *self.out.done.entry(k.clone()).or_default() += 1;
        self.out.first_done.entry(k).or_insert(now);
        self.out.last_done = self.out.last_done.max(now);
        if self.rng.chance(self.crash_after_done) {
            // Killed before the pending file was removed.
            self.crashed = true;
        } else {
            self.pending.remove(key);
            if let Some((d, seen)) = verify {
                self.keep_verify(key, d, seen);
            }
        }
    }

    fn due_verifications(&mut self, after: Duration) -> Vec<(JobKey, Duration)> {
        let now = self.now.get();
        self.verify
            .iter()
            .filter(|(_, (_, at, _))| *at + after <= now)
            .map(|(k, (_, at, _))| (k.clone(), now - *at))
            .collect()
    }

    fn keep_verify(&mut self, key: &JobKey, d: &Delivery, seen: &str) {
        let now = self.now.get();
        self.verify
            .insert(key.clone(), (d.clone(), now, seen.to_string()));
    }

    fn load_verify(&mut self, key: &JobKey) -> Result<Option<(Delivery, String)>, StateError> {
        Ok(self.verify.get(key).map(|(d, _, s)| (d.clone(), s.clone())))
    }

    fn end_verify(&mut self, key: &JobKey, again: bool) {
        let now = self.now.get();
        let Some((d, ..)) = self.verify.remove(key) else {
            return;
        };
        if again {
            trace(|| format!("{:>9.3} late check: {key} missing", now.as_secs_f64()));
            self.out.reopened += 1;
            self.pending.insert(key.clone(), d);
        } else {
            trace(|| format!("{:>9.3} late check: {key} there", now.as_secs_f64()));
            self.out.verified += 1;
        }
    }

    fn kept(&mut self, key: &JobKey, why: &AcctError) {
        let now = self.now.get();
        let k = key_of(key);
        if matches!(why, AcctError::GaveUp { .. }) {
            trace(|| format!("{:>9.3} gave up {k:?}: {why}", now.as_secs_f64()));
            self.out.gave_up += 1;
            self.out.first_give_up.entry(k).or_insert(now);
        } else {
            self.out.refused.insert(k);
        }
    }

    fn unreadable(&mut self, key: &JobKey) {
        panic!("{key}: the simulation's records are always readable");
    }

    fn refresh(&mut self) {}

    /// One courier per node: the simulation starts one only where none runs.
    fn lock(&mut self) -> bool {
        true
    }

    fn unlock(&mut self) {}
}

/// Runs every node's courier against the scenario's slurmdbd until all are done (or
/// [`HORIZON`]), always the one whose clock is earliest.
pub fn run_sim(mut sc: Scenario, timing: Timing, rng_seed: u64) -> (Outcome, Db) {
    let mut rng = Rng(rng_seed ^ 0xc0ffee);
    let base = Instant::now();
    let faults = sc.db.faults;
    let diffs = sc.db.diffs;
    let db = RefCell::new(std::mem::replace(
        &mut sc.db,
        Db {
            jobs: BTreeMap::new(),
            others: BTreeMap::new(),
            diffs,
            seq: 0,
            pauses: vec![],
            faults,
            rng: Rng(0),
            reads: 0,
            writes: 0,
            violations: vec![],
            read_ms: 0,
            write_ms: 0,
        },
    ));
    let mut nodes: Vec<SimNode> = sc
        .arrivals
        .drain(..)
        .map(|arrivals| SimNode {
            pending: BTreeMap::new(),
            verify: BTreeMap::new(),
            courier: None,
            wake: arrivals.first().map(|a| a.0),
            arrivals,
            next_arrival: 0,
        })
        .collect();
    let mut out = Outcome::default();
    let verify_after = sc.verify_after;
    // The node whose clock is earliest, each time.
    while let Some((ni, t)) = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.wake.map(|w| (i, w)))
        .min_by_key(|&(i, w)| (w, i))
    {
        if t > HORIZON {
            break;
        }
        let n = &mut nodes[ni];
        // Epilogs that ran by now: their records are pending.
        while n.next_arrival < n.arrivals.len() && n.arrivals[n.next_arrival].0 <= t {
            let (_, d, run) = n.arrivals[n.next_arrival].clone();
            n.next_arrival += 1;
            n.pending.insert(job_key(&d, run), d);
        }
        if n.courier.is_none() {
            if n.pending.is_empty() && !n.check_due(t, verify_after) {
                n.wake = n.next_wake_from(t, verify_after, &mut rng);
                continue;
            }
            // Started by the epilog (or, after a crash or for a late check, the next
            // epilog or prolog).
            n.courier = Some(
                Courier::new(timing, Policy::new(diffs), RETRY, None, false, base + t)
                    .verify_after(verify_after),
            );
        }
        if !n.pending.is_empty() && rng.chance(faults.crash) {
            // Killed: what it knew is gone, the pending files stay; the next epilog or
            // prolog starts another, some time later.
            out.crashes += 1;
            trace(|| format!("{:>9.3} courier {ni} crashed", t.as_secs_f64()));
            n.courier = None;
            n.wake = Some(t + rng.between(secs(1), secs(120)));
            continue;
        }
        let node = Node {
            db: &db,
            base,
            now: Cell::new(t),
            read_started: Cell::new(t),
            timing,
            timeout: secs(15),
        };
        let mut outbox = SimOutbox {
            pending: &mut n.pending,
            verify: &mut n.verify,
            now: &node.now,
            rng: &mut rng,
            crash_after_done: faults.crash_after_done,
            out: &mut out,
            crashed: false,
        };
        let courier = n.courier.as_mut().expect("started above");
        let wake = courier.tick(&node, &node, &mut outbox);
        let crashed = outbox.crashed;
        let now = node.now.get();
        if crashed {
            out.crashes += 1;
            n.courier = None;
            n.wake = Some(now + rng.between(secs(1), secs(120)));
        } else {
            match wake {
                Wake::After(wait) => n.wake = Some(now + wait),
                Wake::Exit(_) => {
                    n.courier = None;
                    n.wake = n.next_wake_from(now, verify_after, &mut rng);
                }
            }
        }
        out.end = out.end.max(now);
    }
    let db = db.into_inner();
    out.reads = db.reads;
    out.writes = db.writes;
    (out, db)
}
