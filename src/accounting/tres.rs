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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::testkit::{merged_one, policy};

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
}
