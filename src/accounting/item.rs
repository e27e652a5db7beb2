//! One record on its way through the merge protocol: when it is due, when it is given
//! up on, and what the protocol has seen of its field so far.

use std::time::{Duration, Instant};

use super::tres::EnergyPlan;
use super::{Delivery, Timing};

/// The longest a record whose job is not (yet) in accounting waits between reads.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// One record on its way: the delivery and where its merge protocol stands.
#[derive(Debug)]
pub struct Item {
    pub delivery: Delivery,
    /// Not to be read before this (stagger, polling, back-off).
    pub not_before: Instant,
    /// Given up on after this.
    pub deadline: Instant,
    pub(super) last_seen: Option<String>,
    /// Whether `last_seen` is known to hold the part (merging it in changed nothing), so
    /// that polling an unchanged field does not merge again.
    pub(super) holds: bool,
    pub(super) stable_since: Instant,
    /// When the settled part is checked the last time (see [`Timing::flight`]).
    pub(super) guard_at: Option<Instant>,
    pub(super) writes: u32,
    pub(super) reads: u32,
    pub(super) backoff: Duration,
    /// How long to wait before looking again at a field that holds the part but keeps
    /// changing (others still writing): doubles up to [`Timing::max_watch`].
    pub(super) watch: Duration,
    /// Why the record is not delivered yet.
    pub last_error: String,
    /// Whether it waits for accounting to know the job's run (not for accounting to
    /// answer): such a record is not hurried when other records go through.
    pub waits_for_job: bool,
    /// Writes made only to set the energy TRES (the field held the part already).
    pub(super) energy_writes: u32,
    /// Whether the log says why the energy TRES is left alone.
    pub(super) energy_noted: bool,
    /// Writes with the energy TRES that failed: after [`MAX_ENERGY_FAILURES`] the record
    /// goes without it (a slurmdbd that cannot set it must not keep the record out).
    pub(super) energy_failures: u32,
}

/// Failed writes with the energy TRES after which a record is written without it.
pub(super) const MAX_ENERGY_FAILURES: u32 = 2;

/// The most writes a record makes only to bring the energy TRES to its total.
pub(super) const MAX_ENERGY_WRITES: u32 = 3;

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
    pub(super) fn energy_to_send(&mut self, plan: EnergyPlan) -> Option<u64> {
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

    pub(super) fn failed(&mut self, e: String, now: Instant) {
        self.last_error = e;
        self.waits_for_job = false;
        self.not_before = now + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
    }

    /// Accounting answered, but does not have the job's run (ended) yet: read again
    /// later, less and less often, so that a job that never ends there costs little.
    pub(super) fn wait_for_job(&mut self, why: String, timing: &Timing, now: Instant) {
        self.last_error = why;
        self.waits_for_job = true;
        self.not_before = now + self.backoff;
        self.backoff = (self.backoff * 2).clamp(timing.poll(), MAX_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::testkit::{delivery, timing};

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
}
