//! `spank-carbon deliver`: the node's courier, the loop around the merge protocol's step
//! function (`accounting::round_with`), which delivers the pending records of the state
//! directory in rounds. The loop is [`Courier::tick`], with the time, the accounting and
//! the pending records given to it, so that the simulation (`tests/simulation/`) runs
//! the same code as [`courier`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::accounting::{
    round_with, verify, Accounting, AcctError, Clock, Delivery, Item, Policy, SlurmTools, Step,
    SystemClock, Timing, Verdict,
};
use crate::core::config::Config;
use crate::logging::chain;
use crate::node::state::{self, JobKey, StateDir, StateError};
use crate::slurm::Differences;

/// How long a courier with nothing left to deliver stays for the next record.
const COURIER_LINGER: Duration = Duration::from_secs(10);

/// The most records one round of a courier reads and writes.
const ROUND_MAX: usize = 200;

/// How long past its due time a late check that accounting never answers is tried
/// (the job purged from accounting, say) before the record goes unchecked.
const VERIFY_GIVE_UP: Duration = Duration::from_secs(7 * 86_400);

/// The node's courier: delivers every pending record of the state directory (or only
/// `only`) in rounds, one sacct read for all the records due in a round, until none is
/// left. In the background (started by an epilog) it is the node's only courier (a
/// lock in the state directory decides), picks up records that later epilogs leave, and
/// keeps retrying those it gave up on every `retry_s`; in the foreground (the operator's
/// `spank-carbon deliver`) it stops when each record is delivered or given up on.
/// Returns the number of records not delivered.
pub fn courier(
    state: &StateDir,
    config: &Config,
    only: Option<&JobKey>,
    foreground: bool,
) -> usize {
    let tools = SlurmTools {
        sacct: config.sacct.clone(),
        sacctmgr: config.sacctmgr.clone(),
        squeue: config.squeue.clone(),
        timeout: Duration::from_secs(config.write_timeout_s),
        diffs: Differences::built(),
    };
    let policy = Policy {
        diffs: Differences::built(),
        energy: config.energy_tres,
        slurm_energy: crate::slurm::gres::slurm_measures_energy(),
    };
    let timing = Timing {
        stagger: Duration::from_millis(config.stagger_ms),
        settle: Duration::from_millis(config.settle_ms),
        give_up: Duration::from_secs(config.deliver_timeout_s),
        flight: Duration::from_secs(config.write_timeout_s)
            + Duration::from_millis(config.settle_ms / 2),
    };
    let retry = Duration::from_secs(config.retry_s);
    let mut outbox = StateOutbox {
        state,
        config,
        lock: None,
        claims: Vec::new(),
    };
    if !foreground && !outbox.lock() {
        return 0; // the node's courier runs and will pick the records up
    }
    let mut courier = Courier::new(
        timing,
        policy,
        retry,
        only.cloned(),
        foreground,
        Instant::now(),
    )
    .verify_after(Duration::from_secs(config.verify_after_s));
    loop {
        match courier.tick(&tools, &SystemClock, &mut outbox) {
            Wake::After(wait) => {
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            Wake::Exit(failed) => return failed,
        }
    }
}

/// The node's pending records as a courier sees them, and what it leaves beside them:
/// the state directory in [`courier`], a map in the simulation.
pub trait Outbox {
    /// Housekeeping before each look (the state directory's retention sweep).
    fn sweep(&mut self);
    /// The records waiting for delivery.
    fn keys(&mut self) -> Vec<JobKey>;
    /// The record of `key`; `None` if it was delivered meanwhile.
    fn load(&mut self, key: &JobKey) -> Result<Option<Delivery>, StateError>;
    /// Where the record of `key` is kept, for the log.
    fn path(&self, key: &JobKey) -> PathBuf;
    /// Claims the record of `key` until [`Outbox::release`], so that no other courier
    /// works on it at once; false if it is gone or taken.
    fn claim(&mut self, key: &JobKey) -> bool;
    /// Releases the round's claims.
    fn release(&mut self);
    /// The record of `key` is in accounting: it goes, or, given `verify` (the record
    /// and the field's text its node saw last), waits for its late check (see
    /// [`Courier::verify_after`]).
    fn delivered(&mut self, key: &JobKey, verify: Option<(&Delivery, &str)>);
    /// The record of `key` waits for its (next) late check from now on, with the
    /// field's text `seen`.
    fn keep_verify(&mut self, key: &JobKey, d: &Delivery, seen: &str);
    /// The records waiting for their late check that were delivered at least `after`
    /// ago, with how long ago.
    fn due_verifications(&mut self, after: Duration) -> Vec<(JobKey, Duration)>;
    /// The record of `key` waiting for its late check, with the field's text last seen;
    /// `None` if it is gone.
    fn load_verify(&mut self, key: &JobKey) -> Result<Option<(Delivery, String)>, StateError>;
    /// The late check of `key` is over: the record goes, or (`again`) goes back to the
    /// pending records, to be delivered again.
    fn end_verify(&mut self, key: &JobKey, again: bool);
    /// The record of `key` stays, not delivered because of `why`.
    fn kept(&mut self, key: &JobKey, why: &AcctError);
    /// The record of `key` cannot be read.
    fn unreadable(&mut self, key: &JobKey);
    /// Brings the node's metrics up to date.
    fn refresh(&mut self);
    /// Takes the node's courier lock; false if another courier holds it.
    fn lock(&mut self) -> bool;
    /// Releases the node's courier lock.
    fn unlock(&mut self);
}

/// What a courier wants after a [`Courier::tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The next tick, this long from now.
    After(Duration),
    /// Done: this many records were not delivered.
    Exit(usize),
}

/// The courier's loop, one tick at a time: what it knows of the records it delivers.
pub struct Courier {
    timing: Timing,
    policy: Policy,
    retry: Duration,
    only: Option<JobKey>,
    foreground: bool,
    items: BTreeMap<JobKey, Item>,
    /// Records only a change of the field's content can help, and unreadable files.
    stuck: BTreeSet<JobKey>,
    /// Records given up on, waiting `retry` for their next try.
    given_up: BTreeSet<JobKey>,
    failed: usize,
    idle_since: Instant,
    /// How long after delivery a watched part is checked once more; zero: never.
    verify_after: Duration,
    /// Late checks that accounting did not answer: not again before this.
    verify_wait: BTreeMap<JobKey, Instant>,
}

impl Courier {
    /// A courier started at `now` that gives up on a record after `timing.give_up` and
    /// (in the background) tries it again `retry` later.
    pub fn new(
        timing: Timing,
        policy: Policy,
        retry: Duration,
        only: Option<JobKey>,
        foreground: bool,
        now: Instant,
    ) -> Courier {
        Courier {
            timing,
            policy,
            retry,
            only,
            foreground,
            items: BTreeMap::new(),
            stuck: BTreeSet::new(),
            given_up: BTreeSet::new(),
            failed: 0,
            idle_since: now,
            verify_after: Duration::ZERO,
            verify_wait: BTreeMap::new(),
        }
    }

    /// Keeps each part that was done by watching the field (a multi-node job's, a
    /// requeued run's) for a late check `after` its delivery (zero: none): a write that
    /// slurmdbd applies later than `flight` after its read can still drop it. The check
    /// is a read by the background courier that runs when it is due (this one, or the
    /// next that an epilog or prolog starts): a part found missing is delivered again;
    /// found in a text that changed since the node's last look, it is looked at again
    /// `after` later; found in the same text, it is done (see DESIGN-merge.md).
    pub fn verify_after(mut self, after: Duration) -> Courier {
        self.verify_after = after;
        self
    }

    /// One pass of the loop: picks up new records, runs a round for those due, and
    /// says when to come back (or that the courier is done).
    pub fn tick(
        &mut self,
        acct: &dyn Accounting,
        clock: &dyn Clock,
        outbox: &mut dyn Outbox,
    ) -> Wake {
        outbox.sweep();
        self.pick_up(clock, outbox);
        if self.check_due(acct, clock, outbox) {
            self.pick_up(clock, outbox);
        }
        if self.items.is_empty() {
            return self.idle(clock, outbox);
        }
        let now = clock.now();
        self.idle_since = now;
        self.claim_due(outbox, now);
        let keys: Vec<JobKey> = self.items.keys().cloned().collect();
        let steps = {
            let mut refs: Vec<&mut Item> = self.items.values_mut().collect();
            round_with(acct, clock, &mut refs, &self.timing, &self.policy)
        };
        let mut delivered_any = false;
        for (key, step) in keys.into_iter().zip(steps) {
            delivered_any |= self.settle(key, step, clock, outbox);
        }
        outbox.release();
        outbox.refresh();
        if delivered_any {
            // Accounting takes records again: those waiting for their retry go now.
            for key in std::mem::take(&mut self.given_up) {
                if let Some(item) = self.items.get_mut(&key) {
                    item.restart_at(&self.timing, clock.now());
                }
            }
        }
        let next = self
            .items
            .values()
            .map(|i| i.not_before)
            .min()
            .unwrap_or(now)
            .saturating_duration_since(clock.now());
        // At most two rounds a second: records that end close together share a read.
        Wake::After(next.clamp(Duration::from_millis(500), Duration::from_secs(1)))
    }

    /// Takes in the records that appeared since the last look, forgets those gone.
    fn pick_up(&mut self, clock: &dyn Clock, outbox: &mut dyn Outbox) {
        // `--key <job>.<node>` names every run's record of that job on this node;
        // `<job>.<node>@<run>` one of them.
        let only = self.only.as_ref();
        let keys: BTreeSet<JobKey> = outbox
            .keys()
            .into_iter()
            .filter(|k| {
                only.map_or(true, |o| {
                    o.job == k.job && o.node == k.node && o.run.map_or(true, |r| k.run == Some(r))
                })
            })
            .collect();
        self.items.retain(|k, _| keys.contains(k));
        self.given_up.retain(|k| keys.contains(k));
        for key in keys {
            if self.items.contains_key(&key) || self.stuck.contains(&key) {
                continue;
            }
            match outbox.load(&key) {
                Ok(Some(d)) => {
                    let item = Item::new_at(d, &self.timing, clock.now());
                    self.items.insert(key, item);
                }
                Ok(None) => {} // delivered meanwhile
                Err(e) => {
                    log::error!("job {key}: not delivered: {}", chain(&e));
                    outbox.unreadable(&key);
                    self.stuck.insert(key);
                    self.failed += 1;
                }
            }
        }
    }

    /// The late checks that are due, in one read: a part still there goes, a missing
    /// one goes back to the pending records. True if any did. Only the background
    /// courier checks (the operator's `spank-carbon deliver` delivers and leaves).
    fn check_due(
        &mut self,
        acct: &dyn Accounting,
        clock: &dyn Clock,
        outbox: &mut dyn Outbox,
    ) -> bool {
        if self.foreground || self.verify_after.is_zero() {
            return false;
        }
        let now = clock.now();
        let mut due: Vec<(JobKey, Delivery, String, Duration)> = Vec::new();
        for (key, age) in outbox.due_verifications(self.verify_after) {
            let waits = self.verify_wait.get(&key).is_some_and(|t| *t > now);
            // A record delivered again meanwhile (epilog twice) is checked after that.
            if waits || self.items.contains_key(&key) || due.len() >= ROUND_MAX {
                continue;
            }
            match outbox.load_verify(&key) {
                Ok(Some((d, seen))) => due.push((key, d, seen, age)),
                Ok(None) => {}
                Err(e) => {
                    log::error!("job {key}: late check skipped: {}", chain(&e));
                    outbox.end_verify(&key, false);
                }
            }
        }
        if due.is_empty() {
            return false;
        }
        let records: Vec<&Delivery> = due.iter().map(|(_, d, ..)| d).collect();
        let verdicts = verify(acct, &records, &self.policy);
        let mut again = false;
        for ((key, d, seen, age), verdict) in due.into_iter().zip(verdicts) {
            let field = d.field.slurm_name();
            self.verify_wait.insert(key.clone(), now + self.retry);
            match verdict {
                Verdict::Present(text) if text == seen => {
                    log::info!(
                        "job {key}: still in {field}, unchanged {} s later",
                        age.as_secs()
                    );
                    outbox.end_verify(&key, false);
                }
                Verdict::Present(text) => {
                    // Others wrote since: a write based on a read from before then may
                    // still land. Done once the text holds still between two looks.
                    log::info!(
                        "job {key}: still in {field}, which changed in {} s: looking again in {} s",
                        age.as_secs(),
                        self.verify_after.as_secs()
                    );
                    outbox.keep_verify(&key, &d, &text);
                }
                Verdict::Missing => {
                    log::warn!(
                        "job {key}: the part is no longer in {field} {} s after its delivery (a write landing late dropped it): delivering it again",
                        age.as_secs()
                    );
                    outbox.end_verify(&key, true);
                    again = true;
                }
                Verdict::Gone(why) => {
                    log::warn!("job {key}: late check ends: {why}");
                    outbox.end_verify(&key, false);
                }
                Verdict::Unknown(_) if age > self.verify_after + VERIFY_GIVE_UP => {
                    log::warn!(
                        "job {key}: late check given up after {} s unanswered",
                        age.as_secs()
                    );
                    outbox.end_verify(&key, false);
                }
                Verdict::Unknown(why) => {
                    log::info!("job {key}: late check not answered ({why}): again later");
                }
            }
        }
        again
    }

    /// Nothing to deliver: the foreground courier is done; the background one stays
    /// [`COURIER_LINGER`] for the next record.
    fn idle(&mut self, clock: &dyn Clock, outbox: &mut dyn Outbox) -> Wake {
        if self.foreground {
            outbox.refresh();
            return Wake::Exit(self.failed);
        }
        if clock.now().saturating_duration_since(self.idle_since) < COURIER_LINGER {
            return Wake::After(Duration::from_millis(500));
        }
        // Leave, unless a record arrived after the last look: the epilog that left it
        // saw the lock held and counted on this courier.
        outbox.unlock();
        let fresh = outbox.keys().iter().any(|k| !self.stuck.contains(k));
        if fresh && outbox.lock() {
            self.idle_since = clock.now();
            return Wake::After(Duration::ZERO);
        }
        log::info!("courier: nothing left to deliver");
        outbox.refresh();
        Wake::Exit(self.failed)
    }

    /// Claims the due records, so that an operator's `spank-carbon deliver` and this
    /// courier never work on one record at once. A round takes at most [`ROUND_MAX`]
    /// records, oldest due first, to keep its read and writes short; the others stay
    /// due for the next round.
    fn claim_due(&mut self, outbox: &mut dyn Outbox, now: Instant) {
        let mut claimed = 0;
        let mut due: Vec<(&JobKey, &mut Item)> = self
            .items
            .iter_mut()
            .filter(|(_, i)| i.is_due(now))
            .collect();
        due.sort_by_key(|(_, i)| i.not_before);
        for (key, item) in due {
            if claimed < ROUND_MAX && outbox.claim(key) {
                claimed += 1;
            } else {
                item.not_before = now + self.timing.poll();
            }
        }
    }

    /// Acts on a round's step for the record of `key`; true if it was delivered.
    fn settle(
        &mut self,
        key: JobKey,
        step: Step,
        clock: &dyn Clock,
        outbox: &mut dyn Outbox,
    ) -> bool {
        match step {
            Step::Wait => false,
            Step::Done(done) => {
                let item = self.items.remove(&key);
                let verify = item
                    .as_ref()
                    .filter(|_| done.watched && !self.verify_after.is_zero())
                    .map(|i| (&i.delivery, done.record.as_str()));
                outbox.delivered(&key, verify);
                if let Some(item) = item {
                    log::info!(
                        "job {key}: record in {} ({} write(s), {} read(s))",
                        item.delivery.field.slurm_name(),
                        done.writes,
                        done.reads
                    );
                }
                true
            }
            Step::Refused(e) | Step::GaveUp(e) => {
                log::error!(
                    "job {key}: not delivered yet, kept in {}: {}",
                    outbox.path(&key).display(),
                    chain(&e)
                );
                outbox.kept(&key, &e);
                let retry_later = matches!(e, AcctError::GaveUp { .. }) && !self.foreground;
                match self.items.get_mut(&key) {
                    Some(item) if retry_later => {
                        // A record whose job accounting does not have (ended) is not
                        // hurried by other deliveries: it would only be polled.
                        let hurry = !item.waits_for_job;
                        item.restart_at(&self.timing, clock.now());
                        item.not_before += self.retry;
                        item.deadline += self.retry;
                        if hurry {
                            self.given_up.insert(key);
                        }
                    }
                    _ => {
                        self.items.remove(&key);
                        self.stuck.insert(key);
                        self.failed += 1;
                    }
                }
                false
            }
        }
    }
}

/// The state directory as the courier's [`Outbox`]: `pending/`, `stuck/`, the metrics,
/// and the node's courier lock.
struct StateOutbox<'a> {
    state: &'a StateDir,
    config: &'a Config,
    lock: Option<std::fs::File>,
    claims: Vec<std::fs::File>,
}

impl Outbox for StateOutbox<'_> {
    fn sweep(&mut self) {
        crate::node::retention::maybe_sweep(self.state, self.config, std::time::SystemTime::now());
    }

    fn keys(&mut self) -> Vec<JobKey> {
        self.state.pending_keys()
    }

    fn load(&mut self, key: &JobKey) -> Result<Option<Delivery>, StateError> {
        state::load_pending(self.state, key)
    }

    fn path(&self, key: &JobKey) -> PathBuf {
        self.state.pending_path(key)
    }

    fn claim(&mut self, key: &JobKey) -> bool {
        match claim(&self.state.pending_path(key)) {
            Some(file) => {
                self.claims.push(file);
                true
            }
            None => false,
        }
    }

    fn release(&mut self) {
        self.claims.clear();
    }

    fn delivered(&mut self, key: &JobKey, verify: Option<(&Delivery, &str)>) {
        match verify {
            Some((d, seen)) => self.keep_verify(key, d, seen),
            None => {
                let _ = std::fs::remove_file(self.state.pending_path(key));
            }
        }
        state::clear_stuck(self.state, key);
        crate::node::metrics::count_delivery(self.state, true);
    }

    fn due_verifications(&mut self, after: Duration) -> Vec<(JobKey, Duration)> {
        state::due_verifications(self.state, after, std::time::SystemTime::now())
    }

    fn keep_verify(&mut self, key: &JobKey, d: &Delivery, seen: &str) {
        if let Err(e) = state::keep_for_verify(self.state, key, d, seen) {
            log::error!("job {key}: not kept for its late check: {}", chain(&e));
        }
    }

    fn load_verify(&mut self, key: &JobKey) -> Result<Option<(Delivery, String)>, StateError> {
        Ok(state::load_verify(self.state, key)?.map(|e| (e.delivery, e.seen)))
    }

    fn end_verify(&mut self, key: &JobKey, again: bool) {
        state::end_verify(self.state, key, again);
    }

    fn kept(&mut self, key: &JobKey, why: &AcctError) {
        state::note_stuck(self.state, key, &chain(why));
        crate::node::metrics::count_delivery(self.state, false);
    }

    fn unreadable(&mut self, _key: &JobKey) {
        crate::node::metrics::count_delivery(self.state, false);
    }

    fn refresh(&mut self) {
        crate::node::metrics::refresh(self.config, self.state, None);
    }

    fn lock(&mut self) -> bool {
        self.lock = crate::node::courier_lock::try_courier_lock(self.state);
        self.lock.is_some()
    }

    fn unlock(&mut self) {
        drop(self.lock.take());
    }
}

/// An exclusive lock on a pending record's file; `None` if it is gone or taken.
fn claim(path: &std::path::Path) -> Option<std::fs::File> {
    let file = OpenOptions::new().read(true).open(path).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(file)
}
