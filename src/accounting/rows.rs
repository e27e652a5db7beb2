//! What sacct says about a job's runs, and which accounting row a node's part belongs in.
//!
//! A job id does not name one run. A requeued job keeps its id and gets a new row per
//! run (`sacct -D` shows them all); ids start again after a controller lost its state or
//! passed MaxJobId, so the same id can also name an older, unrelated job; and sacctmgr's
//! `jobid=N` selects the latest row of every job whose id, array id or het job id is N.
//! A part is therefore bound to the run it measured: the run whose row started before
//! the part's window and had not ended when it began. It is written into that run's row
//! when that row is the one sacctmgr addresses (the job's latest), into the latest run of
//! the same job (as a segment of its own, `run=<start>`) when the job was requeued since
//! (sacctmgr cannot address an earlier run's row), and nowhere when the id now names
//! another job or the write would also change other jobs' rows: before Slurm 23.11, the
//! tasks of an older array (or components of an older het job) whose id was N; on every
//! release, such a task whose own id is below N (see
//! [`Differences::jobid_newest_only`](crate::slurm::Differences)).

use std::collections::BTreeMap;

use super::{AcctError, ENDED};
use crate::slurm::Differences;

/// One row of `sacct -D -X`: one run of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The job as sacct names it (`JobID`): `123`, `120_7` for an array task, `130+1` for
    /// a heterogeneous job's component. sacctmgr's `jobid=` must be given this form.
    pub id: String,
    pub state: String,
    /// Whether slurmctld's completion record is in (a final state, REQUEUED included).
    pub ended: bool,
    /// Unix seconds.
    pub submit: u64,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// `ConsumedEnergyRaw`, joules: the job's energy TRES (Slurm's own measurement, or
    /// what `tres=energy=` set on 25.11+); `None` when sacct shows none.
    pub energy: Option<u64>,
    pub value: String,
}

/// Every row sacct printed for one job id (`JobIDRaw`), oldest submission first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobRows {
    pub runs: Vec<Row>,
    /// Whether a plain `jobid=<id>` would also select rows of other jobs (tasks of an
    /// array, components of a het job, whose array or het id is this id).
    pub selects_others: bool,
    /// Whether one of those other rows has an id below this one (ids wrapped at
    /// MaxJobId): Slurm 23.11+ drops the others only after the newest row of this id, in
    /// id order, so it still changes such a row.
    pub others_below: bool,
}

impl JobRows {
    /// The row sacctmgr's `jobid=` addresses: the latest submission.
    pub fn latest(&self) -> Option<&Row> {
        self.runs.iter().max_by_key(|r| r.submit)
    }
}

/// What a read found for each job asked for (by `JobIDRaw`); a job that accounting does
/// not know yet is absent.
pub type Rows = BTreeMap<u32, Result<JobRows, String>>;

/// sacct's columns, in this order; the field comes last because text in it may hold
/// anything, newlines included.
pub const COLUMNS: &str = "JobIDRaw,JobID,State,Submit,Start,End,ConsumedEnergyRaw";

/// `ConsumedEnergyRaw`: digits, or empty (none; 22.05 prints nothing for a job without).
/// `None` inside when absent; `None` outside when it is not a number.
pub fn energy_column(s: &str) -> Option<Option<u64>> {
    match s {
        "" => Some(None),
        // Slurm's NO_VAL64 and INFINITE64 mean none.
        _ if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<u64>()
            .ok()
            .map(|v| (v < u64::MAX - 1).then_some(v)),
        _ => None,
    }
}

/// How far a node's clock may be ahead of slurmctld's, seconds.
pub const CLOCK_SLACK_S: u64 = 30;

/// Whether sacct's `JobID` is a form sacctmgr selects exactly one job by: `N`, `N_T`
/// or `N+O`.
pub fn valid_job_selector(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    match id.split_once(['_', '+']) {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(id),
    }
}

/// The array or het job id in a `N_T` / `N+O` JobID.
fn group_of(id: &str) -> Option<u32> {
    id.split_once(['_', '+']).and_then(|(a, _)| a.parse().ok())
}

fn time(s: &str) -> Option<Option<u64>> {
    match s {
        "Unknown" | "None" | "" => Some(None),
        _ if s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.parse().ok()),
        _ => None,
    }
}

/// Parses `sacct -D -X -n -P --delimiter=<delim> -o COLUMNS,<field>` output (times as
/// unix seconds: SLURM_TIME_FORMAT=%s), keeping the rows of `jobs`. `delim` is a fresh
/// random string per call ([`crate::slurm::sacct_rows::nonce`]): text in the field cannot guess
/// it, so rows split only where sacct split them.
pub fn parse(jobs: &[u32], stdout: &[u8], delim: &str) -> Result<Rows, AcctError> {
    let bad = |line: &str| AcctError::Failed {
        tool: "sacct".into(),
        detail: format!(
            "unexpected output `{}`",
            line.chars().take(80).collect::<String>()
        ),
    };
    let text = std::str::from_utf8(stdout).map_err(|_| AcctError::NotUtf8)?;
    let split =
        crate::slurm::sacct_rows::split_rows(text, delim, 8).map_err(|e| AcctError::Failed {
            tool: "sacct".into(),
            detail: e.to_string(),
        })?;
    let mut rows: Vec<(u32, Row)> = Vec::new();
    for cols in split {
        let line = cols.join("|");
        let raw: u32 = match cols[0].parse() {
            Ok(r) if cols[0].bytes().all(|b| b.is_ascii_digit()) => r,
            _ => return Err(bad(&line)),
        };
        let word = cols[2].split(" by ").next().unwrap_or_default();
        let submit = time(cols[3]).flatten().ok_or_else(|| bad(&line))?;
        let start = time(cols[4]).ok_or_else(|| bad(&line))?;
        let end = time(cols[5]).ok_or_else(|| bad(&line))?;
        let energy = energy_column(cols[6]).ok_or_else(|| bad(&line))?;
        rows.push((
            raw,
            Row {
                id: cols[1].to_string(),
                state: word.to_string(),
                ended: ENDED.contains(&word) || word == "REQUEUED",
                submit,
                start,
                end,
                energy,
                value: cols[7].to_string(),
            },
        ));
    }
    let mut out = Rows::new();
    for &job in jobs {
        let mine: Vec<Row> = rows
            .iter()
            .filter(|(raw, _)| *raw == job)
            .map(|(_, r)| r.clone())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let others: Vec<u32> = rows
            .iter()
            .filter(|(raw, r)| *raw != job && group_of(&r.id) == Some(job))
            .map(|(raw, _)| *raw)
            .collect();
        let mut runs = mine;
        runs.sort_by_key(|r| r.submit);
        out.insert(
            job,
            Ok(JobRows {
                runs,
                selects_others: !others.is_empty(),
                others_below: others.iter().any(|&raw| raw < job),
            }),
        );
    }
    Ok(out)
}

/// Where a node's part goes, given its job's rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Not yet: the run is not in accounting, or has not ended there (why).
    Wait(String),
    /// Merge into `row` (sacct's JobID form `id`, current field `value`), in the segment of
    /// the run that started at `run`.
    Write { id: String, value: String, run: u64 },
    /// Never: the record is kept and listed (why).
    Refuse(String),
}

/// Why `sacctmgr modify job where jobid=<id>` (`id`: the latest row's JobID) would also
/// change rows of other jobs, on the Slurm of `diffs`; `None` when it changes only the
/// job's latest row. `jobid=N` selects every row whose id, array id or het id is N
/// (Slurm's `_setup_job_cond_selected_steps`), keeps the newest per id and, from 23.11
/// on, drops the rows of other arrays or het jobs that come after it in id order
/// ([`Differences::jobid_newest_only`]). A form `N_T` / `N+O` selects its own row only.
pub fn others_changed(rows: &JobRows, id: &str, diffs: &Differences) -> Option<String> {
    if !rows.selects_others || id.contains(['_', '+']) {
        return None;
    }
    if !diffs.jobid_newest_only {
        return Some(format!(
            "on Slurm {} (before 23.11) sacctmgr's jobid={id} would also change the rows of an older array's tasks (or an older het job's components) whose array id was {id} (ids restarted or wrapped); the record is kept",
            diffs.version
        ));
    }
    if rows.others_below {
        return Some(format!(
            "sacctmgr's jobid={id} would also change a task of an older array (or a component of an older het job) whose array id was {id} and whose own id is lower (ids wrapped at MaxJobId); the record is kept"
        ));
    }
    None
}

/// The run a part measured in `[start, end]` (unix seconds, the node's clock) belongs to,
/// and the row to merge it into. `system_field`: the field slurmctld's completion record
/// never rewrites, so a later run's row may be written before that run ends. `diffs`:
/// which rows sacctmgr's `jobid=` changes ([`others_changed`]).
pub fn target(rows: &JobRows, start: f64, system_field: bool, diffs: &Differences) -> Target {
    let Some(latest) = rows.latest() else {
        return Target::Wait("the job is not in accounting yet".into());
    };
    // The run: the last one that started before the window began (give or take the
    // clocks) and had not ended by then.
    let own = rows
        .runs
        .iter()
        .filter(|r| {
            r.start
                .is_some_and(|s| s as f64 <= start + CLOCK_SLACK_S as f64)
                && r.end.map_or(true, |e| start < e as f64 + 1.0)
        })
        .max_by_key(|r| (r.start, r.submit));
    let Some(own) = own else {
        return Target::Wait("the job's run is not in accounting yet".into());
    };
    if !own.ended {
        return Target::Wait("the run's completion record is not in accounting yet".into());
    }
    let run = own.start.unwrap_or_default();
    if !valid_job_selector(&latest.id) {
        return Target::Refuse(format!(
            "sacct names the job `{}`, not a single job",
            latest.id
        ));
    }
    if std::ptr::eq(own, latest) {
        // The run's own row is the newest with this id: sacctmgr's target, and on
        // 23.11+ its only one unless an older array's task has a lower id.
        if let Some(why) = others_changed(rows, &latest.id, diffs) {
            return Target::Refuse(why);
        }
        return Target::Write {
            id: latest.id.clone(),
            value: latest.value.clone(),
            run,
        };
    }
    // A later row: another run of this job only if each run since was requeued and the
    // next submitted as it ended; else the id now names another job.
    let chain: Vec<&Row> = rows
        .runs
        .iter()
        .filter(|r| r.submit >= own.submit)
        .collect();
    let requeued = chain.windows(2).all(|w| {
        w[0].id == w[1].id
            && w[0].state == "REQUEUED"
            && w[0]
                .end
                .is_some_and(|e| w[1].submit.abs_diff(e) <= CLOCK_SLACK_S)
    });
    if !requeued {
        return Target::Refuse(format!(
            "job id {} now names another job (submitted at {}); this record is of a run that started at {run}, and is kept",
            latest.id, latest.submit
        ));
    }
    if !latest.ended && !system_field {
        return Target::Wait(
            "the job was requeued: waiting for its latest run's completion record".into(),
        );
    }
    if let Some(why) = others_changed(rows, &latest.id, diffs) {
        return Target::Refuse(why);
    }
    Target::Write {
        id: latest.id.clone(),
        value: latest.value.clone(),
        run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "@k3y";

    fn release(major: u8, minor: u8) -> Differences {
        Differences::for_version(crate::slurm::SlurmVersion::new(major, minor, 0))
    }

    fn v22() -> Differences {
        release(22, 5)
    }

    fn out(lines: &[&str]) -> Vec<u8> {
        let with: Vec<(&str, &str)> = lines.iter().map(|l| (*l, "")).collect();
        out_energy(&with)
    }

    /// Each line's six columns, its `ConsumedEnergyRaw`, then its field.
    fn out_energy(lines: &[(&str, &str)]) -> Vec<u8> {
        let mut s = String::new();
        for (l, energy) in lines {
            // The first six '|' separate columns; the rest is the field's own text.
            let cols: Vec<&str> = l.splitn(7, '|').collect();
            s.push_str(&cols[..cols.len().min(6)].join(D));
            if cols.len() == 7 {
                s.push_str(&format!("{D}{energy}{D}{}", cols[6]));
            }
            s.push('\n');
        }
        s.into_bytes()
    }

    #[test]
    fn reads_the_energy_column() {
        let text = out_energy(&[
            ("5|5|REQUEUED|100|110|200|a", "0"),
            ("5|5|COMPLETED|200|300|400|b", "123456"),
        ]);
        let r = parse(&[5], &text, D).unwrap().remove(&5).unwrap().unwrap();
        assert_eq!(r.runs[0].energy, Some(0));
        assert_eq!(r.runs[1].energy, Some(123_456));
        assert_eq!(r.runs[1].value, "b");
        let text = out_energy(&[("5|5|COMPLETED|1|2|3|b", &(u64::MAX - 1).to_string())]);
        let r = parse(&[5], &text, D).unwrap().remove(&5).unwrap().unwrap();
        assert_eq!(r.runs[0].energy, None);
        let none = rows(6, &["6|6|COMPLETED|1|2|3|x"]);
        assert_eq!(none.runs[0].energy, None);
        for bad in ["12.5K", "-1", "x"] {
            let text = out_energy(&[("5|5|COMPLETED|1|2|3|b", bad)]);
            assert!(parse(&[5], &text, D).is_err(), "{bad}");
        }
    }

    fn rows(job: u32, lines: &[&str]) -> JobRows {
        parse(&[job], &out(lines), D)
            .unwrap()
            .remove(&job)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn parses_runs_and_keeps_field_text_whole() {
        let r = rows(
            5,
            &[
                "5|5|REQUEUED|100|100|200|a|b\nfake|5|COMPLETED|1|1|1|x",
                "5|5|COMPLETED by 0|200|300|400|",
            ],
        );
        assert_eq!(r.runs.len(), 2);
        assert_eq!(r.runs[0].value, "a|b\nfake|5|COMPLETED|1|1|1|x");
        assert_eq!(r.runs[1].state, "COMPLETED");
        assert!(r.runs[0].ended && r.runs[1].ended);
        assert_eq!(r.runs[1].start, Some(300));
        let pending = rows(6, &["6|6|PENDING|100|Unknown|Unknown|"]);
        assert_eq!(
            (pending.runs[0].start, pending.runs[0].ended),
            (None, false)
        );
        assert!(parse(&[5], b"5|5|x\n", D).is_err());
        assert!(parse(&[5], b"\xff\n", D).is_err());
        // Cut short: not a whole row.
        assert!(parse(&[5], b"5@k3y5@k3yCOMPLETED@k3y1", D).is_err());
        assert_eq!(
            parse(&[7], &out(&["5|5|COMPLETED|1|1|2|"]), D)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn a_forged_row_in_the_field_stays_text() {
        // The field's owner writes what a '|'-separated row would look like: with an
        // unguessable delimiter it is only text.
        let r = rows(9, &["9|9|COMPLETED|1|1|2|x\n9|9|COMPLETED|1|1|2|evil"]);
        assert_eq!(r.runs.len(), 1);
        assert!(r.runs[0].value.ends_with("evil"));
    }

    #[test]
    fn own_run_is_written_in_place() {
        let r = rows(5, &["5|5|COMPLETED|100|110|200|site"]);
        assert_eq!(
            target(&r, 111.0, true, &v22()),
            Target::Write {
                id: "5".into(),
                value: "site".into(),
                run: 110
            }
        );
        let running = rows(5, &["5|5|RUNNING|100|110|Unknown|"]);
        assert!(matches!(
            target(&running, 111.0, true, &v22()),
            Target::Wait(_)
        ));
    }

    #[test]
    fn requeued_run_goes_to_the_latest_row_in_its_own_segment() {
        let r = rows(
            5,
            &[
                "5|5|REQUEUED|100|110|200|",
                "5|5|PENDING|200|Unknown|Unknown|",
            ],
        );
        // Run 1 (window from 111): into the pending run's row, bound to run 110.
        assert_eq!(
            target(&r, 111.0, true, &v22()),
            Target::Write {
                id: "5".into(),
                value: String::new(),
                run: 110
            }
        );
        // AdminComment/Comment: the completion record would rewrite it; wait.
        assert!(matches!(target(&r, 111.0, false, &v22()), Target::Wait(_)));
        // Run 2 measured from 300: its row has not started yet in accounting.
        assert!(matches!(target(&r, 300.0, true, &v22()), Target::Wait(_)));
        let r2 = rows(
            5,
            &["5|5|REQUEUED|100|110|200|", "5|5|COMPLETED|200|290|400|x"],
        );
        assert_eq!(
            target(&r2, 291.0, true, &v22()),
            Target::Write {
                id: "5".into(),
                value: "x".into(),
                run: 290
            }
        );
    }

    #[test]
    fn a_reused_id_never_gets_an_older_jobs_record() {
        // The old job (run from 110 to 200) is not the latest row any more: another job
        // got the id, submitted long after.
        let r = rows(
            5,
            &[
                "5|5|COMPLETED|100|110|200|",
                "5|5|COMPLETED|9000|9010|9100|",
            ],
        );
        assert!(matches!(target(&r, 111.0, true, &v22()), Target::Refuse(_)));
        // The new job's record goes to the new job's row.
        assert!(matches!(
            target(&r, 9011.0, true, &v22()),
            Target::Write { run: 9010, .. }
        ));
        // A record from before any row of this id: wait (its run may not be in yet).
        assert!(matches!(target(&r, 50.0, true, &v22()), Target::Wait(_)));
    }

    /// Ids restarted: the old array 1 (its master row, JobIDRaw 1, is `1_2`; its tasks
    /// 1_0 and 1_1 got ids 2 and 3) and the new plain job 1, as `sacct -D -X -j 1` shows
    /// them.
    fn reused_by_array() -> Vec<u8> {
        out(&[
            "1|1_2|COMPLETED|10|11|20|a",
            "2|1_0|COMPLETED|10|11|20|b",
            "3|1_1|COMPLETED|10|11|20|c",
            "1|1|COMPLETED|900|910|990|",
        ])
    }

    #[test]
    fn a_plain_id_that_also_selects_an_older_arrays_tasks_is_refused_before_23_11() {
        let all = parse(&[1], &reused_by_array(), D).unwrap();
        let r = all[&1].as_ref().unwrap();
        assert!(r.selects_others && !r.others_below);
        for v in [v22(), release(23, 2)] {
            match target(r, 911.0, true, &v) {
                Target::Refuse(why) => assert!(why.contains("before 23.11"), "{why}"),
                t => panic!("{t:?}"),
            }
        }
        // An array task's own selector addresses it alone, on every release.
        let text = out(&["3|1_1|COMPLETED|10|11|20|b"]);
        let all = parse(&[3], &text, D).unwrap();
        assert!(matches!(
            target(all[&3].as_ref().unwrap(), 12.0, true, &v22()),
            Target::Write { .. }
        ));
    }

    /// 23.11+: sacctmgr's `jobid=1` changes the newest row whose own id is 1 (the new
    /// job's) and drops the older array's rows: the new job's record is written there.
    #[test]
    fn a_reused_id_is_written_where_jobid_selects_the_newest_row_only() {
        let all = parse(&[1], &reused_by_array(), D).unwrap();
        let r = all[&1].as_ref().unwrap();
        for v in [release(23, 11), release(24, 11), release(26, 5)] {
            assert_eq!(
                target(r, 911.0, true, &v),
                Target::Write {
                    id: "1".into(),
                    value: String::new(),
                    run: 910
                },
                "{v:?}"
            );
            // AdminComment/Comment too, the run having ended.
            assert!(matches!(
                target(r, 911.0, false, &v),
                Target::Write { run: 910, .. }
            ));
            // The old array's late parts: never into the new job's row.
            assert!(matches!(target(r, 12.0, true, &v), Target::Refuse(_)));
        }
    }

    /// The new job's own row is not in accounting yet: the newest row with id 1 is the
    /// old array's, which sacctmgr would change; nothing is written, on any release.
    #[test]
    fn a_reused_id_waits_while_the_runs_own_row_is_absent() {
        let v24 = release(24, 11);
        let old = out(&["1|1_2|COMPLETED|10|11|20|a", "2|1_0|COMPLETED|10|11|20|b"]);
        let all = parse(&[1], &old, D).unwrap();
        assert!(matches!(
            target(all[&1].as_ref().unwrap(), 911.0, true, &v24),
            Target::Wait(_)
        ));
        // The old array's row never ended in accounting (lost controller state: a
        // runaway job): still not this run's, still no write.
        let runaway = out(&[
            "1|1_2|RUNNING|10|11|Unknown|a",
            "2|1_0|COMPLETED|10|11|20|b",
        ]);
        let all = parse(&[1], &runaway, D).unwrap();
        assert!(matches!(
            target(all[&1].as_ref().unwrap(), 911.0, true, &v24),
            Target::Wait(_)
        ));
        // The new run's row is in but has not ended: wait for it.
        let running = out(&[
            "1|1_2|RUNNING|10|11|Unknown|a",
            "2|1_0|COMPLETED|10|11|20|b",
            "1|1|RUNNING|900|910|Unknown|",
        ]);
        let all = parse(&[1], &running, D).unwrap();
        assert!(matches!(
            target(all[&1].as_ref().unwrap(), 911.0, false, &v24),
            Target::Wait(_)
        ));
    }

    /// Ids wrapped at MaxJobId: the older array 4000000's tasks got ids 1 and 2. Slurm
    /// 23.11+ drops another array's rows only after the newest row of the id, in id
    /// order, so `jobid=4000000` would still change them: refused on every release.
    #[test]
    fn an_older_arrays_task_with_a_lower_id_is_refused_on_every_release() {
        let text = out(&[
            "1|4000000_0|COMPLETED|10|11|20|b",
            "2|4000000_1|COMPLETED|10|11|20|c",
            "4000000|4000000_2|COMPLETED|10|11|20|a",
            "4000000|4000000|COMPLETED|900|910|990|",
        ]);
        let all = parse(&[4_000_000], &text, D).unwrap();
        let r = all[&4_000_000].as_ref().unwrap();
        assert!(r.selects_others && r.others_below);
        for v in [v22(), release(24, 11), release(26, 5)] {
            assert!(
                matches!(target(r, 911.0, true, &v), Target::Refuse(_)),
                "{v:?}"
            );
        }
    }

    /// A requeued job whose id an older array had: its runs' parts go to its latest row
    /// on 23.11+, and are refused before.
    #[test]
    fn a_requeued_job_with_a_reused_id_follows_the_release() {
        let text = out(&[
            "1|1_2|COMPLETED|10|11|20|a",
            "2|1_0|COMPLETED|10|11|20|b",
            "1|1|REQUEUED|900|910|990|",
            "1|1|COMPLETED|990|1000|1100|x",
        ]);
        let all = parse(&[1], &text, D).unwrap();
        let r = all[&1].as_ref().unwrap();
        assert_eq!(
            target(r, 911.0, true, &release(24, 11)),
            Target::Write {
                id: "1".into(),
                value: "x".into(),
                run: 910
            }
        );
        assert!(matches!(
            target(r, 1001.0, true, &release(26, 5)),
            Target::Write { run: 1000, .. }
        ));
        assert!(matches!(target(r, 911.0, true, &v22()), Target::Refuse(_)));
        assert!(matches!(target(r, 1001.0, true, &v22()), Target::Refuse(_)));
    }

    #[test]
    fn selectors() {
        assert!(
            valid_job_selector("9024_3") && valid_job_selector("130+1") && valid_job_selector("7")
        );
        for bad in ["", "9024_[1-3]", "1_2_3", "a", "1;2", "1 2", "_1", "1+"] {
            assert!(!valid_job_selector(bad), "{bad}");
        }
        let r = rows(77, &["77|77_[1-5]|PENDING|1|Unknown|Unknown|"]);
        assert!(matches!(target(&r, 1.0, true, &v22()), Target::Wait(_)));
    }
}
