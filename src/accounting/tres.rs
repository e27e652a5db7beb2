//! The energy TRES a write sets along with the record (Slurm 25.11 and later): the
//! run's GPU energy in joules, unless Slurm measured the job's energy itself.

use super::Policy;
use crate::core::config::EnergyTres;
use crate::record;

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

/// The row whose energy TRES a write may set, as the read saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnergyRow {
    /// The row is the run's own (its start is the segment's `run=`) and its completion
    /// record is in (Slurm rewrites the TRES wholesale then).
    pub own_run: bool,
    /// That row ended REQUEUED: once the next run's row is in, `jobid=` addresses that
    /// row and this one can never be written again.
    pub requeued: bool,
    /// Its `ConsumedEnergyRaw`.
    pub current_j: Option<u64>,
}

/// The energy TRES a write of `merged` into a row (`row`) that holds `current` should
/// carry, for the segment of run `run`.
///
/// The energy is the record's (ours) when it is zero or absent, or equals the total of
/// the run's segment in `current` (every write that set it set both at once), or when
/// Slurm does not measure energy itself (`policy.slurm_energy` false: no energy plugin,
/// so a non-zero value is ours or the job owner's, never Slurm's); otherwise it is Slurm's
/// own measurement, kept unless `energy_tres=overwrite`.
///
/// A requeued run's row may stop being writable at any time (the next run's row takes
/// `jobid=`), so it gets the run's energy only once the run's segment is whole (every
/// node's part in); until then it is kept at 0, and a partial value that an earlier
/// write left there is cleared: it ends with the whole run's energy or none.
pub fn energy_plan(
    policy: &Policy,
    row: EnergyRow,
    current: &str,
    merged: &str,
    run: u64,
) -> EnergyPlan {
    if !policy.sets_energy() || !row.own_run {
        return EnergyPlan::Leave;
    }
    let total = |field: &str| {
        record::find_run(field, run).map(|f| joules(f.parts.values().map(|p| p.wh).sum()))
    };
    let Some(found) = record::find_run(merged, run) else {
        return EnergyPlan::Leave;
    };
    let whole = found.parts.len() as u64 >= u64::from(found.expected_nodes.unwrap_or(1).max(1));
    let want = if row.requeued && !whole {
        0
    } else {
        joules(found.parts.values().map(|p| p.wh).sum())
    };
    let have = row.current_j.unwrap_or(0);
    if have == want {
        return EnergyPlan::Leave;
    }
    let ours = !policy.slurm_energy || have == 0 || total(current) == Some(have);
    if !ours && policy.energy != EnergyTres::Overwrite {
        return EnergyPlan::NotOurs(have);
    }
    EnergyPlan::Set(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::testkit::{delivery, merged_one, policy};

    /// The run's own ended row, holding `j` joules.
    fn own(j: Option<u64>) -> EnergyRow {
        EnergyRow {
            own_run: true,
            requeued: false,
            current_j: j,
        }
    }

    #[test]
    fn energy_plan_keeps_slurms_own_measurement() {
        let auto = policy(26, 5, EnergyTres::Auto);
        let merged = merged_one(2.5);
        let want = joules(2.5);
        assert_eq!(want, 9000);
        // Nothing measured: set it.
        assert_eq!(
            energy_plan(&auto, own(None), "", &merged, 0),
            EnergyPlan::Set(want)
        );
        assert_eq!(
            energy_plan(&auto, own(Some(0)), "", &merged, 0),
            EnergyPlan::Set(want)
        );
        // Already the record's: nothing to do.
        assert_eq!(
            energy_plan(&auto, own(Some(want)), &merged, &merged, 0),
            EnergyPlan::Leave
        );
        // Slurm's own (the field has no record, or one whose total differs): kept...
        assert_eq!(
            energy_plan(&auto, own(Some(123)), "site", &merged, 0),
            EnergyPlan::NotOurs(123)
        );
        let older = merged_one(1.0);
        assert_eq!(
            energy_plan(&auto, own(Some(123)), &older, &merged, 0),
            EnergyPlan::NotOurs(123)
        );
        // ...unless it is the record's earlier total (a part added since).
        assert_eq!(
            energy_plan(&auto, own(Some(joules(1.0))), &older, &merged, 0),
            EnergyPlan::Set(want)
        );
        // ...or the operator says overwrite.
        let over = policy(26, 5, EnergyTres::Overwrite);
        assert_eq!(
            energy_plan(&over, own(Some(123)), "site", &merged, 0),
            EnergyPlan::Set(want)
        );
        // Off, another run's segment, or a row that is not the run's own: never.
        let off = policy(26, 5, EnergyTres::Off);
        assert_eq!(
            energy_plan(&off, own(None), "", &merged, 0),
            EnergyPlan::Leave
        );
        let not_own = EnergyRow {
            own_run: false,
            ..own(None)
        };
        assert_eq!(
            energy_plan(&auto, not_own, "", &merged, 0),
            EnergyPlan::Leave
        );
        assert_eq!(
            energy_plan(&auto, own(None), "", &merged, 77),
            EnergyPlan::Leave
        );
    }

    /// Without an energy plugin Slurm never measures energy: a non-zero value that is not
    /// the record's (the owner's `sacctmgr modify job ... set tres=energy=1` before the
    /// first write, or after) is replaced under `auto`; `off` still never writes it.
    #[test]
    fn energy_plan_without_an_energy_plugin_overwrites_the_owners_value() {
        let mut auto = policy(26, 5, EnergyTres::Auto);
        auto.slurm_energy = false;
        let merged = merged_one(2.5);
        let want = joules(2.5);
        // Set by the owner before the courier's first write (no record in the row yet).
        assert_eq!(
            energy_plan(&auto, own(Some(1)), "", &merged, 0),
            EnergyPlan::Set(want)
        );
        assert_eq!(
            energy_plan(&auto, own(Some(1)), "site", &merged, 0),
            EnergyPlan::Set(want)
        );
        // Or after it, with the record's earlier segment in the row.
        assert_eq!(
            energy_plan(&auto, own(Some(1)), &merged_one(1.0), &merged, 0),
            EnergyPlan::Set(want)
        );
        assert_eq!(
            energy_plan(&auto, own(Some(want)), &merged, &merged, 0),
            EnergyPlan::Leave
        );
        let mut off = policy(26, 5, EnergyTres::Off);
        off.slurm_energy = false;
        assert_eq!(
            energy_plan(&off, own(Some(1)), "", &merged, 0),
            EnergyPlan::Leave
        );
        // Not settable below 25.11, whatever slurm.conf says.
        let mut old = policy(24, 11, EnergyTres::Auto);
        old.slurm_energy = false;
        assert_eq!(
            energy_plan(&old, own(Some(1)), "", &merged, 0),
            EnergyPlan::Leave
        );
    }

    /// A requeued run's row gets the whole run's energy or none: never a partial value
    /// that no later write could correct once the next run's row takes `jobid=`.
    #[test]
    fn energy_plan_requeued_row_is_whole_or_cleared() {
        let auto = policy(26, 5, EnergyTres::Auto);
        let requeued = |j| EnergyRow {
            requeued: true,
            ..own(j)
        };
        let nodes = ["n1", "n2"];
        let a = delivery("n1", 1.0, &nodes);
        let b = delivery("n2", 1.5, &nodes);
        let one = record::merge_in_run("", &a.part, &a.meta, Some(&a.nodes), 0);
        let both = record::merge_in_run(&one, &b.part, &b.meta, Some(&b.nodes), 0);
        assert_eq!(record::find_run(&one, 0).unwrap().expected_nodes, Some(2));
        // One node's part of two: the row's energy stays 0.
        assert_eq!(
            energy_plan(&auto, requeued(None), "", &one, 0),
            EnergyPlan::Leave
        );
        // A partial value set earlier (ours: the segment's total) is cleared.
        assert_eq!(
            energy_plan(&auto, requeued(Some(joules(1.0))), &one, &one, 0),
            EnergyPlan::Set(0)
        );
        // Whole: the run's energy.
        assert_eq!(
            energy_plan(&auto, requeued(Some(0)), &one, &both, 0),
            EnergyPlan::Set(joules(2.5))
        );
        assert_eq!(
            energy_plan(&auto, requeued(Some(joules(1.0))), &one, &both, 0),
            EnergyPlan::Set(joules(2.5))
        );
        // Slurm's own measurement on it is still kept.
        assert_eq!(
            energy_plan(&auto, requeued(Some(123)), &one, &one, 0),
            EnergyPlan::NotOurs(123)
        );
        // A run that was not requeued is set as its parts come in (its row stays the
        // one jobid= addresses): the partial total now, the whole later.
        assert_eq!(
            energy_plan(&auto, own(None), "", &one, 0),
            EnergyPlan::Set(joules(1.0))
        );
    }
}
