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

use std::time::{Duration, Instant};

use crate::core::config::{EnergyTres, Field};
use crate::record::{Meta, NodePart, Unwritable};
use crate::slurm::run::RunError;
use crate::slurm::Differences;

mod item;
mod round;
mod rows;
#[cfg(test)]
mod testkit;
mod tools;
mod tres;
pub mod tres_audit;

pub use item::Item;
pub use round::{deliver, round, round_with, verify};
pub use rows::{
    energy_column, parse as parse_sacct_rows, target, valid_job_selector, JobRows, Row, Rows,
    Target,
};
pub use tools::{sacctmgr_args, write_succeeded, SlurmTools, ENDED};
pub use tres::{energy_plan, joules, EnergyPlan, EnergyRow};

/// What the courier does differently by Slurm version and by the operator's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub diffs: Differences,
    /// Key `energy_tres` (used only where `diffs.energy_tres`).
    pub energy: EnergyTres,
    /// Slurm measures jobs' energy itself (an energy plugin is configured in slurm.conf,
    /// `crate::slurm::gres::slurm_measures_energy`): a non-zero energy TRES that is not
    /// the record's may be its measurement. Without one, it can only be ours or the
    /// owner's.
    pub slurm_energy: bool,
}

impl Policy {
    /// `diffs` with `energy_tres=auto`, Slurm taken to measure energy itself.
    pub fn new(diffs: Differences) -> Policy {
        Policy {
            diffs,
            energy: EnergyTres::Auto,
            slurm_energy: true,
        }
    }

    /// Whether this courier sets the energy TRES at all.
    pub fn sets_energy(&self) -> bool {
        self.diffs.energy_tres && self.energy != EnergyTres::Off
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcctError {
    /// The tool could not be run, or did not answer in time.
    #[error(transparent)]
    Run(#[from] RunError),
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
/// clock in the simulation (`tests/simulation/`), so that [`round_with`] never reads
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

#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub writes: u32,
    pub reads: u32,
    pub record: String,
    /// Done by watching the field (others write the row too), not by a lone writer's
    /// confirmed write: a write landing late can still drop the part (see
    /// [`verify`]).
    pub watched: bool,
}

/// What a late look at a delivered part found (see [`verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The field holds the part (merging it in would change nothing); its text.
    Present(String),
    /// The part is missing (a write landing late dropped it): deliver it again.
    Missing,
    /// Accounting did not say (it failed, or does not show the run): look again later.
    Unknown(String),
    /// The part can never be written again (its row is no longer the one to write).
    Gone(String),
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
