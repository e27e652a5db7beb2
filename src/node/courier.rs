//! `spank-carbon deliver`: the node's courier, the loop around the merge protocol's step
//! function (`accounting::round`), which delivers the pending records of the state
//! directory in rounds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::time::{Duration, Instant};

use crate::accounting::{self, AcctError, Item, Policy, SlurmTools, Step, Timing};
use crate::core::config::Config;
use crate::logging::chain;
use crate::node::state::{self, JobKey, StateDir};
use crate::slurm::Differences;

/// How long a courier with nothing left to deliver stays for the next record.
const COURIER_LINGER: Duration = Duration::from_secs(10);

/// The most records one round of a courier reads and writes.
const ROUND_MAX: usize = 200;

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
    };
    let timing = Timing {
        stagger: Duration::from_millis(config.stagger_ms),
        settle: Duration::from_millis(config.settle_ms),
        give_up: Duration::from_secs(config.deliver_timeout_s),
        flight: Duration::from_secs(config.write_timeout_s)
            + Duration::from_millis(config.settle_ms / 2),
    };
    let retry = Duration::from_secs(config.retry_s);
    let mut lock = None;
    if !foreground {
        lock = crate::node::courier_lock::try_courier_lock(state);
        if lock.is_none() {
            return 0; // the node's courier runs and will pick the records up
        }
    }
    let mut items: BTreeMap<JobKey, Item> = BTreeMap::new();
    // Records only a change of the field's content can help, and unreadable files.
    let mut stuck: BTreeSet<JobKey> = BTreeSet::new();
    // Records given up on, waiting `retry_s` for their next try.
    let mut given_up: BTreeSet<JobKey> = BTreeSet::new();
    let mut failed = 0;
    let mut idle_since = Instant::now();
    loop {
        crate::node::retention::maybe_sweep(state, config, std::time::SystemTime::now());
        // `--key <job>.<node>` names every run's record of that job on this node;
        // `<job>.<node>@<run>` one of them.
        let keys: BTreeSet<JobKey> = state
            .pending_keys()
            .into_iter()
            .filter(|k| {
                only.map_or(true, |o| {
                    o.job == k.job && o.node == k.node && o.run.map_or(true, |r| k.run == Some(r))
                })
            })
            .collect();
        items.retain(|k, _| keys.contains(k));
        given_up.retain(|k| keys.contains(k));
        for key in keys {
            if items.contains_key(&key) || stuck.contains(&key) {
                continue;
            }
            match state::load_pending(state, &key) {
                Ok(Some(d)) => {
                    items.insert(key, Item::new(d, &timing));
                }
                Ok(None) => {} // delivered meanwhile
                Err(e) => {
                    log::error!("job {key}: not delivered: {}", chain(&e));
                    crate::node::metrics::count_delivery(state, false);
                    stuck.insert(key);
                    failed += 1;
                }
            }
        }
        if items.is_empty() {
            if foreground {
                crate::node::metrics::refresh(config, state, None);
                return failed;
            }
            if idle_since.elapsed() < COURIER_LINGER {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            // Leave, unless a record arrived after the last look: the epilog that left
            // it saw the lock held and counted on this courier.
            drop(lock.take());
            let fresh = state.pending_keys().iter().any(|k| !stuck.contains(k));
            if fresh {
                lock = crate::node::courier_lock::try_courier_lock(state);
                if lock.is_some() {
                    idle_since = Instant::now();
                    continue;
                }
            }
            log::info!("courier: nothing left to deliver");
            crate::node::metrics::refresh(config, state, None);
            return failed;
        }
        idle_since = Instant::now();
        let now = Instant::now();
        // Claim the due records' files, so that an operator's `spank-carbon deliver`
        // and this courier never work on one record at once.
        // A round takes at most ROUND_MAX records, oldest due first, to keep its read
        // and writes short; the others stay due for the next round.
        let mut claims = Vec::new();
        let mut due: Vec<(&JobKey, &mut Item)> =
            items.iter_mut().filter(|(_, i)| i.is_due(now)).collect();
        due.sort_by_key(|(_, i)| i.not_before);
        for (key, item) in due {
            match (claims.len() < ROUND_MAX)
                .then(|| claim(&state.pending_path(key)))
                .flatten()
            {
                Some(file) => claims.push(file),
                None => item.not_before = now + timing.poll(),
            }
        }
        let keys: Vec<JobKey> = items.keys().cloned().collect();
        let steps = {
            let mut refs: Vec<&mut Item> = items.values_mut().collect();
            accounting::round(&tools, &mut refs, &timing, &policy)
        };
        let mut delivered_any = false;
        for (key, step) in keys.into_iter().zip(steps) {
            let path = state.pending_path(&key);
            match step {
                Step::Wait => {}
                Step::Done(done) => {
                    let _ = std::fs::remove_file(&path);
                    state::clear_stuck(state, &key);
                    crate::node::metrics::count_delivery(state, true);
                    if let Some(item) = items.remove(&key) {
                        log::info!(
                            "job {key}: record in {} ({} write(s), {} read(s))",
                            item.delivery.field.slurm_name(),
                            done.writes,
                            done.reads
                        );
                    }
                    delivered_any = true;
                }
                Step::Refused(e) | Step::GaveUp(e) => {
                    log::error!(
                        "job {key}: not delivered yet, kept in {}: {}",
                        path.display(),
                        chain(&e)
                    );
                    state::note_stuck(state, &key, &chain(&e));
                    crate::node::metrics::count_delivery(state, false);
                    let retry_later = matches!(e, AcctError::GaveUp { .. }) && !foreground;
                    match items.get_mut(&key) {
                        Some(item) if retry_later => {
                            // A record whose job accounting does not have (ended) is
                            // not hurried by other deliveries: it would only be polled.
                            let hurry = !item.waits_for_job;
                            item.restart(&timing);
                            item.not_before += retry;
                            item.deadline += retry;
                            if hurry {
                                given_up.insert(key);
                            }
                        }
                        _ => {
                            items.remove(&key);
                            stuck.insert(key);
                            failed += 1;
                        }
                    }
                }
            }
        }
        drop(claims);
        crate::node::metrics::refresh(config, state, None);
        if delivered_any {
            // Accounting takes records again: those waiting for their retry go now.
            for key in std::mem::take(&mut given_up) {
                if let Some(item) = items.get_mut(&key) {
                    item.restart(&timing);
                }
            }
        }
        let next = items
            .values()
            .map(|i| i.not_before)
            .min()
            .unwrap_or(now)
            .saturating_duration_since(Instant::now());
        // At most two rounds a second: records that end close together share a read.
        std::thread::sleep(next.clamp(Duration::from_millis(500), Duration::from_secs(1)));
    }
}

/// An exclusive lock on a pending record's file; `None` if it is gone or taken.
fn claim(path: &std::path::Path) -> Option<std::fs::File> {
    let file = OpenOptions::new().read(true).open(path).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(file)
}
