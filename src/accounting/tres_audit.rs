//! The energy TRES audit (`spank-carbon tres`, Slurm 25.11+): ended jobs whose energy
//! TRES is not their record's, and the write that puts the record's value back.
//!
//! From 25.11 the courier sets each job's energy TRES to its record's GPU energy. On 26.05
//! a job's owner may rewrite their own completed job's TRES (`sacctmgr modify job ... set
//! tres=energy=1` is allowed to them, while SystemComment is not), so the record is the
//! authority: every ended job whose `ConsumedEnergyRaw` is not what the courier would set
//! ([`energy_plan`], the same decision) is listed, and a fix (root) writes the record's
//! value back, `tres=` only. Where Slurm measures energy itself (an energy plugin) and
//! `energy_tres` is not `overwrite`, a non-zero value that is not the record's may be
//! Slurm's: it is listed as kept, never fixed (tampering cannot be told from it).

use std::path::Path;

use super::tres::{energy_plan, EnergyPlan, EnergyRow};
use super::{
    energy_column, valid_job_selector, write_succeeded, Accounting, JobRows, Policy, SlurmTools,
    ENDED,
};
use crate::core::config::Field;
use crate::core::report;
use crate::record;
use crate::slurm::run::run_tool;
use crate::slurm::sacct_rows::{self, SacctCall};
use crate::slurm::Differences;

/// sacct's columns (the field last: it may hold anything).
const COLUMNS: &str = "JobIDRaw,JobID,User,State,Start,ConsumedEnergyRaw";
const NCOLS: usize = 7;

/// One ended job row whose energy TRES is not its record's.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub raw: u32,
    pub id: String,
    pub user: String,
    pub state: String,
    /// The row's run start, unix seconds (its record segment's `run=`).
    pub start: u64,
    /// The energy TRES the record gives the row, joules: its run's GPU energy (0 for a
    /// requeued run whose record is not whole, see [`energy_plan`]).
    pub record_j: u64,
    /// `ConsumedEnergyRaw` (`None`: none shown).
    pub tres_j: Option<u64>,
    /// Left as it is: Slurm measures energy itself and the value may be its own
    /// (`energy_tres` is not `overwrite`).
    pub kept: bool,
}

/// Why this build cannot do it, if it cannot: the energy TRES can be set from 25.11 on.
pub fn refusal(diffs: &Differences) -> Option<String> {
    (!diffs.energy_tres).then(|| {
        format!(
            "this spank-carbon is built for Slurm {}, which has no settable energy TRES (25.11 and later have); nothing to check",
            diffs.version
        )
    })
}

/// The comparison for one row (`cols` as [`COLUMNS`] then the field) under `policy`:
/// `Ok(None)` when the row has no record of its own run, has not ended, or its energy TRES
/// is what the courier would leave there; `Err` when the row is not what sacct prints.
pub fn compare(cols: &[&str], policy: &Policy) -> Result<Option<Mismatch>, String> {
    let [raw, id, user, state, start, energy, value] = cols else {
        return Err(format!("{} columns, not {NCOLS}", cols.len()));
    };
    let raw: u32 = raw
        .parse()
        .ok()
        .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("JobIDRaw `{}`", raw.chars().take(20).collect::<String>()))?;
    let tres_j =
        energy_column(energy).ok_or_else(|| format!("job {raw}: ConsumedEnergyRaw `{energy}`"))?;
    let word = state.split(" by ").next().unwrap_or_default();
    if !ENDED.contains(&word) && word != "REQUEUED" {
        return Ok(None);
    }
    // Its own run's segment: `run=` is the run's start as accounting has it.
    let Ok(start) = start.parse::<u64>() else {
        return Ok(None);
    };
    let row = EnergyRow {
        own_run: true,
        requeued: word == "REQUEUED",
        current_j: tres_j,
    };
    let (record_j, kept) = match energy_plan(policy, row, value, value, start) {
        EnergyPlan::Leave => return Ok(None),
        EnergyPlan::Set(j) => (j, false),
        EnergyPlan::NotOurs(_) => {
            let found = record::find_run(value, start).expect("a plan other than Leave");
            (
                super::joules(found.parts.values().map(|p| p.wh).sum()),
                true,
            )
        }
    };
    Ok(Some(Mismatch {
        raw,
        id: id.to_string(),
        user: user.to_string(),
        state: word.to_string(),
        start,
        record_j,
        tres_j,
        kept,
    }))
}

/// The line `tres --fix` logs for a value it restored: the job, the old and new value,
/// and where Slurm shows who changed it (every `sacctmgr modify job` is a transaction
/// with its actor; the courier's own writes are there too, as root or SlurmUser).
pub fn restored_line(m: &Mismatch) -> String {
    format!(
        "job {} (user {}, run {}): energy TRES restored from {} to {} J (its record's); who changed it: sacctmgr list transactions Action=\"Modify Job\" Start=uts{} format=Time,Actor,Where,Info (the row's Where is job_db_inx=<sacct's DBIndex>)",
        m.id,
        m.user,
        m.start,
        m.tres_j.map_or("none".into(), |j| format!("{j} J")),
        m.record_j,
        m.start,
    )
}

/// sacct's arguments (without -P and the delimiter): `user`'s jobs (default: every
/// user's) over sacct's `-S`/`-E` range.
pub fn sacct_args(
    user: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    field: Field,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["-n".into(), "-D".into(), "-X".into()];
    match user {
        Some(u) => args.extend(["-u".into(), u.to_string()]),
        None => args.push("-a".into()),
    }
    args.extend(report::range_args(start, end));
    args.extend(["-o".into(), format!("{COLUMNS},{}", field.slurm_name())]);
    args
}

/// The rows of sacct's output for `args` (see [`sacct_args`]) whose energy TRES is not
/// their record's. sacct must print `Start` as unix seconds (`SLURM_TIME_FORMAT=%s`).
pub fn mismatches(sacct: &Path, args: &[String], policy: &Policy) -> Result<Vec<Mismatch>, String> {
    let call = SacctCall {
        sacct,
        args,
        timeout: None,
        clear_env: false,
    };
    sacct_rows::run_streamed(&call, |input, delim| {
        let mut out = Vec::new();
        sacct_rows::stream_rows(input, delim, NCOLS, |cols| {
            if let Some(m) = compare(cols, policy)? {
                out.push(m);
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    })
}

/// sacctmgr's arguments that set job `id`'s energy TRES alone.
pub fn fix_args(id: &str, joules: u64, diffs: &Differences) -> Result<Vec<String>, String> {
    if let Some(why) = refusal(diffs) {
        return Err(why);
    }
    if !valid_job_selector(id) {
        return Err(format!("`{id}` is not a job"));
    }
    Ok(vec![
        "-i".into(),
        "modify".into(),
        "job".into(),
        "where".into(),
        format!("jobid={id}"),
        "set".into(),
        format!("tres=energy={joules}"),
    ])
}

/// Whether `m` may be written by `jobid=<its id>` on the Slurm of `diffs`: sacctmgr
/// changes the latest row with that id (and, before 23.11, of every job whose array id or
/// het id it is), so the fresh read of the id must show this very row as the latest, and
/// nothing else it would change ([`super::rows::others_changed`]).
pub fn fixable(m: &Mismatch, rows: &JobRows, diffs: &Differences) -> Result<(), String> {
    let latest = rows
        .latest()
        .ok_or("the job is not in accounting any more")?;
    if latest.id != m.id || latest.start != Some(m.start) {
        return Err(format!(
            "sacctmgr's jobid={} now addresses another run or job (a requeue, a reused id)",
            m.id
        ));
    }
    match super::rows::others_changed(rows, &m.id, diffs) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Writes `m`'s record energy into its energy TRES, after a fresh read of its job shows
/// that `jobid=<its id>` addresses that row alone (see [`fixable`]); never a value kept
/// as Slurm's own.
pub fn fix(tools: &SlurmTools, m: &Mismatch, field: Field) -> Result<(), String> {
    let diffs = &tools.diffs;
    if m.kept {
        return Err(
            "Slurm measures energy itself (AcctGatherEnergyType): the value may be its own; energy_tres=overwrite replaces it"
                .into(),
        );
    }
    tools
        .read(&[m.raw], field)
        .map_err(|e| e.to_string())
        .and_then(|rows| match rows.get(&m.raw) {
            Some(Ok(r)) => fixable(m, r, diffs),
            Some(Err(e)) => Err(e.clone()),
            None => Err("the job is not in accounting any more".into()),
        })
        .and_then(|()| fix_args(&m.id, m.record_j, diffs))
        .and_then(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_tool(&tools.sacctmgr, &args, tools.timeout).map_err(|e| e.to_string())?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            write_succeeded(diffs, out.status.success(), &stdout).map_err(|why| {
                let err = String::from_utf8_lossy(&out.stderr);
                format!("sacctmgr failed ({}): {why}{}", out.status, err.trim())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{joules, Row};
    use crate::core::config::EnergyTres;
    use crate::record::{merge_in_run, Meta, Method, NodePart};
    use crate::slurm::SlurmVersion;
    use crate::units::GramsPerKwh;

    fn field(run: u64, whs: &[f64]) -> String {
        let meta = Meta {
            intensity: GramsPerKwh(475.0),
            pue: 1.58,
            expected_nodes: whs.len() as u32,
        };
        let mut f = String::from("site");
        for (i, wh) in whs.iter().enumerate() {
            let window = (run as f64 + 1.0, run as f64 + 9.0);
            let part = NodePart::new(format!("n{i}"), *wh, 1, 1.0, Method::Counter, window);
            f = merge_in_run(&f, &part, &meta, None, run);
        }
        f
    }

    /// 26.05, `energy_tres=auto`, with or without an energy plugin in slurm.conf.
    fn auto(slurm_energy: bool) -> Policy {
        Policy {
            slurm_energy,
            ..Policy::new(Differences::for_version(SlurmVersion::new(26, 5, 0)))
        }
    }

    fn tools() -> SlurmTools {
        SlurmTools {
            sacct: "/nonexistent/sacct".into(),
            sacctmgr: "/nonexistent/sacctmgr".into(),
            squeue: "/nonexistent/squeue".into(),
            timeout: std::time::Duration::from_secs(1),
            diffs: Differences::for_version(SlurmVersion::new(26, 5, 0)),
        }
    }

    fn row<'a>(state: &'a str, start: &'a str, energy: &'a str, value: &'a str) -> Vec<&'a str> {
        vec!["12", "12", "alice", state, start, energy, value]
    }

    #[test]
    fn lists_rows_whose_energy_is_not_the_records() {
        let f = field(1000, &[1.25, 0.75]);
        let j = joules(2.0).to_string();
        // Equal: nothing to list.
        assert_eq!(
            compare(&row("COMPLETED", "1000", &j, &f), &auto(false)).unwrap(),
            None
        );
        // The owner set it to 1 J: listed, with both values.
        let m = compare(&row("COMPLETED", "1000", "1", &f), &auto(false))
            .unwrap()
            .unwrap();
        assert_eq!((m.record_j, m.tres_j, m.kept), (7200, Some(1), false));
        assert_eq!(
            (m.id.as_str(), m.user.as_str(), m.start),
            ("12", "alice", 1000)
        );
        // None shown at all: listed too.
        let m = compare(&row("CANCELLED by 5", "1000", "", &f), &auto(false))
            .unwrap()
            .unwrap();
        assert_eq!((m.tres_j, m.state.as_str()), (None, "CANCELLED"));
        // No record of this row's own run (another run's segment, or none), or not ended.
        assert_eq!(
            compare(&row("COMPLETED", "999", "1", &f), &auto(false)).unwrap(),
            None
        );
        assert_eq!(
            compare(&row("COMPLETED", "1000", "1", "site"), &auto(false)).unwrap(),
            None
        );
        assert_eq!(
            compare(&row("RUNNING", "1000", "1", &f), &auto(false)).unwrap(),
            None
        );
        assert_eq!(
            compare(&row("COMPLETED", "Unknown", "1", &f), &auto(false)).unwrap(),
            None
        );
        // Not sacct's output: an error, never a silent skip.
        assert!(compare(&row("COMPLETED", "1000", "1.2K", &f), &auto(false)).is_err());
        assert!(compare(&["x", "12", "u", "COMPLETED", "1", "1", &f], &auto(false)).is_err());
        assert!(compare(&["12", "12"], &auto(false)).is_err());
    }

    /// Where Slurm measures energy itself, a non-zero value that is not the record's may
    /// be its own: listed as kept, never fixed, unless `energy_tres=overwrite`; 0 or none
    /// is still restored. `energy_tres=off`: nothing to check.
    #[test]
    fn with_an_energy_plugin_a_foreign_value_is_kept() {
        let f = field(1000, &[2.0]);
        let m = compare(&row("COMPLETED", "1000", "1", &f), &auto(true))
            .unwrap()
            .unwrap();
        assert_eq!((m.record_j, m.tres_j, m.kept), (7200, Some(1), true));
        assert!(fix(&tools(), &m, Field::System)
            .unwrap_err()
            .contains("AcctGatherEnergyType"));
        let m = compare(&row("COMPLETED", "1000", "0", &f), &auto(true))
            .unwrap()
            .unwrap();
        assert_eq!((m.record_j, m.tres_j, m.kept), (7200, Some(0), false));
        let over = Policy {
            energy: EnergyTres::Overwrite,
            ..auto(true)
        };
        let m = compare(&row("COMPLETED", "1000", "1", &f), &over)
            .unwrap()
            .unwrap();
        assert!(!m.kept);
        let off = Policy {
            energy: EnergyTres::Off,
            ..auto(false)
        };
        assert_eq!(
            compare(&row("COMPLETED", "1000", "1", &f), &off).unwrap(),
            None
        );
    }

    /// A requeued run's row: the whole run's energy when its record is whole, else 0.
    #[test]
    fn a_requeued_row_is_whole_or_cleared() {
        let whole = field(1000, &[1.0, 1.0]);
        let mut partial = field(1000, &[1.0]);
        partial = partial.replacen(" of=1 ", " of=2 ", 1);
        assert_eq!(
            record::find_run(&partial, 1000).unwrap().expected_nodes,
            Some(2),
            "{partial}"
        );
        let m = compare(&row("REQUEUED", "1000", "3600", &partial), &auto(false))
            .unwrap()
            .unwrap();
        assert_eq!((m.record_j, m.tres_j), (0, Some(3600)));
        assert_eq!(
            compare(&row("REQUEUED", "1000", "0", &partial), &auto(false)).unwrap(),
            None
        );
        let m = compare(&row("REQUEUED", "1000", "3600", &whole), &auto(false))
            .unwrap()
            .unwrap();
        assert_eq!(m.record_j, joules(2.0));
    }

    #[test]
    fn the_restored_line_names_job_values_and_transactions() {
        let m = compare(
            &row("COMPLETED", "1000", "1", &field(1000, &[1.0])),
            &auto(false),
        )
        .unwrap()
        .unwrap();
        let line = restored_line(&m);
        for want in [
            "job 12 ",
            "user alice",
            "from 1 J to 3600 J",
            "sacctmgr list transactions Action=\"Modify Job\" Start=uts1000",
        ] {
            assert!(line.contains(want), "{line}");
        }
    }

    #[test]
    fn refuses_below_25_11_and_writes_tres_only() {
        let v = |a, b| Differences::for_version(SlurmVersion::new(a, b, 0));
        assert!(refusal(&v(25, 5)).unwrap().contains("25.11"));
        assert!(refusal(&v(24, 11)).is_some());
        assert_eq!(refusal(&v(26, 5)), None);
        assert!(fix_args("12", 5, &v(24, 11)).is_err());
        let args = fix_args("12_3", 7200, &v(26, 5)).unwrap();
        assert_eq!(args[4..], ["jobid=12_3", "set", "tres=energy=7200"]);
        assert!(args.iter().all(|a| !a.contains("Comment")));
        assert!(fix_args("12;rm", 1, &v(26, 5)).is_err());
    }

    #[test]
    fn fixes_only_a_row_sacctmgr_addresses_alone() {
        let m = compare(
            &row("COMPLETED", "1000", "1", &field(1000, &[1.0])),
            &auto(false),
        )
        .unwrap()
        .unwrap();
        let r = |id: &str, submit, start| Row {
            id: id.into(),
            state: "COMPLETED".into(),
            ended: true,
            submit,
            start: Some(start),
            end: Some(start + 10),
            energy: Some(1),
            value: String::new(),
        };
        let alone = JobRows {
            runs: vec![r("12", 900, 1000)],
            selects_others: false,
            others_below: false,
        };
        let v26 = Differences::for_version(crate::slurm::SlurmVersion::new(26, 5, 0));
        let v22 = Differences::for_version(crate::slurm::SlurmVersion::new(22, 5, 0));
        assert_eq!(fixable(&m, &alone, &v26), Ok(()));
        let requeued = JobRows {
            runs: vec![r("12", 900, 1000), r("12", 1100, 1200)],
            selects_others: false,
            others_below: false,
        };
        assert!(fixable(&m, &requeued, &v26).is_err());
        let array = JobRows {
            selects_others: true,
            others_below: false,
            ..alone.clone()
        };
        // An older array whose id was 12: only 22.05's sacctmgr would change its tasks.
        assert_eq!(fixable(&m, &array, &v26), Ok(()));
        assert!(fixable(&m, &array, &v22).is_err());
        let wrapped = JobRows {
            others_below: true,
            ..array.clone()
        };
        assert!(fixable(&m, &wrapped, &v26).is_err());
        assert!(fixable(&m, &JobRows::default(), &v26).is_err());
    }

    #[test]
    fn sacct_arguments() {
        let args = sacct_args(None, Some("2026-11-01"), None, Field::System);
        assert!(args.contains(&"-a".to_string()) && args.contains(&"-D".to_string()));
        assert_eq!(
            args.last().unwrap(),
            "JobIDRaw,JobID,User,State,Start,ConsumedEnergyRaw,SystemComment"
        );
        assert_eq!(COLUMNS.split(',').count() + 1, NCOLS);
        let args = sacct_args(Some("bob"), Some("2026-11-01"), None, Field::Admin);
        assert!(!args.contains(&"-a".to_string()));
        assert!(args.windows(2).any(|w| w == ["-u", "bob"]));
    }
}
