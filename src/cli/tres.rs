//! `spank-carbon tres`: jobs whose energy TRES differs from their record (Slurm 25.11+).
//!
//! From 25.11 the courier sets each job's energy TRES to its record's GPU energy. On 26.05
//! a job's owner may rewrite their own completed job's TRES (`sacctmgr modify job ... set
//! tres=energy=1` is allowed to them, while SystemComment is not), so the record is the
//! authority: this lists every ended job whose `ConsumedEnergyRaw` is not its record's
//! total, and with `--fix` (root) writes the record's value back, `tres=` only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use spank_carbon::accounting::{
    self, joules, valid_job_selector, write_succeeded, Accounting, SlurmTools, ENDED,
};
use spank_carbon::core::config::Field;
use spank_carbon::record;
use spank_carbon::slurm::run::run_tool;
use spank_carbon::slurm::sacct_rows::{self, SacctCall};
use spank_carbon::slurm::Differences;

#[derive(clap::Args)]
pub struct Args {
    /// As sacct's -S (default: sacct's, today from midnight).
    #[arg(short = 'S', long)]
    starttime: Option<String>,
    /// As sacct's -E.
    #[arg(short = 'E', long)]
    endtime: Option<String>,
    /// Only this user's jobs (default: every user's, as far as sacct shows them).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Write each listed job's record energy back into its energy TRES (root).
    #[arg(long)]
    fix: bool,
    /// The comment field the plugin writes to.
    #[arg(long, default_value = "system", value_parser = ["system", "admin", "job"])]
    field: String,
    /// Slurm's sacct.
    #[arg(long, default_value = "/usr/bin/sacct")]
    sacct: PathBuf,
    /// Slurm's sacctmgr.
    #[arg(long, default_value = "/usr/bin/sacctmgr")]
    sacctmgr: PathBuf,
}

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
    /// The record's GPU energy, joules.
    pub record_j: u64,
    /// `ConsumedEnergyRaw` (`None`: none shown).
    pub tres_j: Option<u64>,
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

/// The comparison for one row (`cols` as [`COLUMNS`] then the field): `Ok(None)` when the
/// row has no record of its own run, has not ended, or its energy TRES equals the record's
/// total; `Err` when the row is not what sacct prints.
pub fn compare(cols: &[&str]) -> Result<Option<Mismatch>, String> {
    let [raw, id, user, state, start, energy, value] = cols else {
        return Err(format!("{} columns, not {NCOLS}", cols.len()));
    };
    let raw: u32 = raw
        .parse()
        .ok()
        .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("JobIDRaw `{}`", raw.chars().take(20).collect::<String>()))?;
    let tres_j = accounting::energy_column(energy)
        .ok_or_else(|| format!("job {raw}: ConsumedEnergyRaw `{energy}`"))?;
    let word = state.split(" by ").next().unwrap_or_default();
    if !ENDED.contains(&word) && word != "REQUEUED" {
        return Ok(None);
    }
    // Its own run's segment: `run=` is the run's start as accounting has it.
    let Ok(start) = start.parse::<u64>() else {
        return Ok(None);
    };
    let Some(found) = record::find_run(value, start) else {
        return Ok(None);
    };
    let record_j = joules(found.parts.values().map(|p| p.wh).sum());
    if tres_j.unwrap_or(0) == record_j {
        return Ok(None);
    }
    Ok(Some(Mismatch {
        raw,
        id: id.to_string(),
        user: user.to_string(),
        state: word.to_string(),
        start,
        record_j,
        tres_j,
    }))
}

/// sacct's arguments (without -P and the delimiter).
pub fn sacct_args(a: &Args, field: Field) -> Vec<String> {
    let mut args: Vec<String> = vec!["-n".into(), "-D".into(), "-X".into()];
    match &a.user {
        Some(u) => args.extend(["-u".into(), u.clone()]),
        None => args.push("-a".into()),
    }
    if let Some(s) = &a.starttime {
        args.extend(["-S".into(), s.clone()]);
    }
    if let Some(e) = &a.endtime {
        args.extend(["-E".into(), e.clone()]);
    }
    args.extend(["-o".into(), format!("{COLUMNS},{}", field.slurm_name())]);
    args
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

/// Whether `m` may be written by `jobid=<its id>`: sacctmgr changes the latest row of
/// every job with that id, array id or het id, so the fresh read of the id must show this
/// very row as the latest, and nothing else it would select.
pub fn fixable(m: &Mismatch, rows: &accounting::JobRows) -> Result<(), String> {
    let latest = rows
        .latest()
        .ok_or("the job is not in accounting any more")?;
    if latest.id != m.id || latest.start != Some(m.start) {
        return Err(format!(
            "sacctmgr's jobid={} now addresses another run or job (a requeue, a reused id)",
            m.id
        ));
    }
    if rows.selects_others && !m.id.contains(['_', '+']) {
        return Err(format!(
            "sacctmgr's jobid={} would also change other jobs' rows",
            m.id
        ));
    }
    Ok(())
}

pub fn run(a: Args) -> ExitCode {
    let diffs = Differences::built();
    if let Some(why) = refusal(&diffs) {
        eprintln!("spank-carbon tres: {why}");
        return ExitCode::from(2);
    }
    let field = match a.field.as_str() {
        "admin" => Field::Admin,
        "job" => Field::Job,
        _ => Field::System,
    };
    // Start as unix seconds, to find the row's own segment (`run=`). Set before any
    // thread starts.
    std::env::set_var("SLURM_TIME_FORMAT", "%s");
    let args = sacct_args(&a, field);
    let call = SacctCall {
        sacct: &a.sacct,
        args: &args,
        timeout: None,
        clear_env: false,
    };
    let listed = sacct_rows::run_streamed(&call, |input, delim| {
        let mut out = Vec::new();
        sacct_rows::stream_rows(input, delim, NCOLS, |cols| {
            if let Some(m) = compare(cols)? {
                out.push(m);
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    });
    let mismatches = match listed {
        Ok(m) => m,
        Err(e) => {
            eprintln!("spank-carbon tres: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{:<14} {:<12} {:<11} {:>14} {:>14}",
        "job", "user", "state", "record J", "energy TRES J"
    );
    for m in &mismatches {
        println!(
            "{:<14} {:<12} {:<11} {:>14} {:>14}",
            m.id,
            m.user,
            m.state,
            m.record_j,
            m.tres_j.map_or("-".into(), |j| j.to_string())
        );
    }
    println!(
        "{} job(s) whose energy TRES is not their record's",
        mismatches.len()
    );
    if !a.fix || mismatches.is_empty() {
        return if mismatches.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let tools = SlurmTools {
        sacct: a.sacct.clone(),
        sacctmgr: a.sacctmgr.clone(),
        squeue: PathBuf::from("/usr/bin/squeue"),
        timeout: Duration::from_secs(30),
        diffs,
    };
    let mut failed = 0;
    for m in &mismatches {
        let result = tools
            .read(&[m.raw], field)
            .map_err(|e| e.to_string())
            .and_then(|rows| match rows.get(&m.raw) {
                Some(Ok(r)) => fixable(m, r),
                Some(Err(e)) => Err(e.clone()),
                None => Err("the job is not in accounting any more".into()),
            })
            .and_then(|()| fix_args(&m.id, m.record_j, &diffs))
            .and_then(|args| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out =
                    run_tool(&tools.sacctmgr, &args, tools.timeout).map_err(|e| e.to_string())?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                write_succeeded(&diffs, out.status.success(), &stdout).map_err(|why| {
                    let err = String::from_utf8_lossy(&out.stderr);
                    format!("sacctmgr failed ({}): {why}{}", out.status, err.trim())
                })
            });
        match result {
            Ok(()) => println!("job {}: energy TRES set to {} J", m.id, m.record_j),
            Err(e) => {
                failed += 1;
                eprintln!("spank-carbon tres: job {}: not fixed: {e}", m.id);
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spank_carbon::accounting::{JobRows, Row};
    use spank_carbon::record::{merge_in_run, Meta, Method, NodePart};
    use spank_carbon::slurm::SlurmVersion;
    use spank_carbon::units::GramsPerKwh;

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

    fn row<'a>(state: &'a str, start: &'a str, energy: &'a str, value: &'a str) -> Vec<&'a str> {
        vec!["12", "12", "alice", state, start, energy, value]
    }

    #[test]
    fn lists_rows_whose_energy_is_not_the_records() {
        let f = field(1000, &[1.25, 0.75]);
        let j = joules(2.0).to_string();
        // Equal: nothing to list.
        assert_eq!(compare(&row("COMPLETED", "1000", &j, &f)).unwrap(), None);
        // The owner set it to 1 J: listed, with both values.
        let m = compare(&row("COMPLETED", "1000", "1", &f))
            .unwrap()
            .unwrap();
        assert_eq!((m.record_j, m.tres_j), (7200, Some(1)));
        assert_eq!(
            (m.id.as_str(), m.user.as_str(), m.start),
            ("12", "alice", 1000)
        );
        // None shown at all: listed too.
        let m = compare(&row("CANCELLED by 5", "1000", "", &f))
            .unwrap()
            .unwrap();
        assert_eq!((m.tres_j, m.state.as_str()), (None, "CANCELLED"));
        // No record of this row's own run (another run's segment, or none), or not ended.
        assert_eq!(compare(&row("COMPLETED", "999", "1", &f)).unwrap(), None);
        assert_eq!(
            compare(&row("COMPLETED", "1000", "1", "site")).unwrap(),
            None
        );
        assert_eq!(compare(&row("RUNNING", "1000", "1", &f)).unwrap(), None);
        assert_eq!(
            compare(&row("COMPLETED", "Unknown", "1", &f)).unwrap(),
            None
        );
        // Not sacct's output: an error, never a silent skip.
        assert!(compare(&row("COMPLETED", "1000", "1.2K", &f)).is_err());
        assert!(compare(&["x", "12", "u", "COMPLETED", "1", "1", &f]).is_err());
        assert!(compare(&["12", "12"]).is_err());
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
        let m = compare(&row("COMPLETED", "1000", "1", &field(1000, &[1.0])))
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
        };
        assert_eq!(fixable(&m, &alone), Ok(()));
        let requeued = JobRows {
            runs: vec![r("12", 900, 1000), r("12", 1100, 1200)],
            selects_others: false,
        };
        assert!(fixable(&m, &requeued).is_err());
        let array = JobRows {
            selects_others: true,
            ..alone.clone()
        };
        assert!(fixable(&m, &array).is_err());
        assert!(fixable(&m, &JobRows::default()).is_err());
    }

    #[test]
    fn sacct_arguments() {
        let a = Args {
            starttime: Some("2026-11-01".into()),
            endtime: None,
            user: None,
            fix: false,
            field: "system".into(),
            sacct: "/usr/bin/sacct".into(),
            sacctmgr: "/usr/bin/sacctmgr".into(),
        };
        let args = sacct_args(&a, Field::System);
        assert!(args.contains(&"-a".to_string()) && args.contains(&"-D".to_string()));
        assert_eq!(
            args.last().unwrap(),
            "JobIDRaw,JobID,User,State,Start,ConsumedEnergyRaw,SystemComment"
        );
        assert_eq!(COLUMNS.split(',').count() + 1, NCOLS);
        let bob = Args {
            user: Some("bob".into()),
            ..a
        };
        let args = sacct_args(&bob, Field::Admin);
        assert!(!args.contains(&"-a".to_string()));
        assert!(args.windows(2).any(|w| w == ["-u", "bob"]));
    }
}
