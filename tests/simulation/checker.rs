//! The checker: what must hold once every courier is done. Every part measured is in
//! its run's record exactly once (the parts of an older job of a reused id refused, and
//! those whose `jobid=` would change an older array's tasks on this release), no row
//! holds another job's or another node's part, no row of an older job (an array's tasks
//! included) was changed, and no write was issued from a read older than `settle / 2`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use spank_carbon::accounting::Delivery;
use spank_carbon::record;

use crate::nodes::Outcome;
use crate::schedule::{Expect, BASE_UNIX};
use crate::slurmdbd::{Db, SimRow};
use crate::T;

/// The record a run's parts must end in: its segment in the job's latest row, or, when
/// that has none, in the run's own row.
pub fn final_segment(rows: &[SimRow], run: u64) -> Option<record::Segment> {
    let latest = rows.iter().max_by_key(|r| r.submit)?;
    let in_latest = record::parse_all(latest.value_at(T::MAX))
        .into_iter()
        .find(|(r, _)| *r == Some(run));
    if let Some((_, seg)) = in_latest {
        return Some(seg);
    }
    let own = rows.iter().find(|r| r.start == run)?;
    record::parse_all(own.value_at(T::MAX))
        .into_iter()
        .find(|(r, _)| *r == Some(run))
        .map(|(_, s)| s)
}

/// The record of a run with every part in: merged one by one into an empty field.
pub fn ideal(parts: &[&Delivery], run: u64) -> record::Segment {
    let mut field = String::new();
    for d in parts {
        field = record::merge_in_run(&field, &d.part, &d.meta, Some(&d.nodes), run);
    }
    record::parse_all(&field).remove(0).1
}

pub fn check(seed: u64, sc_expect: &Expect, out: &Outcome, db: &Db) -> Result<(), String> {
    if let Some(v) = db.violations.first() {
        return Err(format!("protocol rule broken: {v}"));
    }
    // Per (job, run): the parts that must be there.
    let mut runs: BTreeMap<(u32, u64), Vec<&Delivery>> = BTreeMap::new();
    for (k, (d, must_refuse)) in &sc_expect.parts {
        if *must_refuse {
            if out.done.contains_key(k) {
                return Err(format!("{k:?}: a part to refuse (reused id) was delivered"));
            }
            if !out.refused.contains(k) {
                return Err(format!(
                    "{k:?}: a part to refuse (reused id) was not refused"
                ));
            }
        } else {
            if out.refused.contains(k) {
                return Err(format!("{k:?}: refused"));
            }
            if !out.done.contains_key(k) {
                return Err(format!(
                    "{k:?}: never delivered (gave up {} times)",
                    out.gave_up
                ));
            }
            runs.entry((k.0, k.1)).or_default().push(d);
        }
    }
    for ((job, run), parts) in &runs {
        let rows = &db.jobs[job];
        let want = ideal(parts, *run);
        let got = final_segment(rows, *run)
            .ok_or_else(|| format!("job {job} run {run}: no record at all"))?;
        if got.parts != want.parts {
            let missing: Vec<&String> = want
                .parts
                .keys()
                .filter(|n| !got.parts.contains_key(*n))
                .collect();
            let extra: Vec<&String> = got
                .parts
                .keys()
                .filter(|n| !want.parts.contains_key(*n))
                .collect();
            let differ: Vec<&String> = want
                .parts
                .iter()
                .filter(|(n, p)| got.parts.get(*n).is_some_and(|g| g != *p))
                .map(|(n, _)| n)
                .collect();
            return Err(format!(
                "job {job} run {run}: record not whole: missing {missing:?}, extra {extra:?}, values differ {differ:?} (seed {seed})"
            ));
        }
        if got.meta.expected_nodes != parts[0].meta.expected_nodes {
            return Err(format!(
                "job {job} run {run}: of={}",
                got.meta.expected_nodes
            ));
        }
    }
    // No row holds a segment of a run that is not its job's, or a part of a node that
    // did not measure that run; no row holds a run twice.
    for (job, rows) in &db.jobs {
        for row in rows {
            let value = row.value_at(T::MAX);
            let segs = record::parse_all(value);
            let mut seen = BTreeSet::new();
            for (run, seg) in &segs {
                let run = run.ok_or_else(|| format!("job {job}: a segment without run="))?;
                if !seen.insert(run) {
                    return Err(format!("job {job}: run {run} twice in one row: {value}"));
                }
                let Some(parts) = runs.get(&(*job, run)) else {
                    return Err(format!(
                        "job {job}: a segment of run {run}, which is not this job's (or only an older job's): {value}"
                    ));
                };
                for node in seg.parts.keys() {
                    if !parts.iter().any(|d| d.part.node == *node) {
                        return Err(format!(
                            "job {job} run {run}: part of {node}, who did not measure it"
                        ));
                    }
                }
            }
            if row.end_state == "COMPLETED" && row.submit < BASE_UNIX && !row.landings.is_empty() {
                return Err(format!("job {job}: the older job's row was written"));
            }
        }
    }
    for (job, others) in &db.others {
        for (raw, row) in others {
            if !row.landings.is_empty() {
                return Err(format!(
                    "job {job}: the row of {} (id {raw}), a task of an older array, was written (Slurm {})",
                    row.id, db.diffs.version
                ));
            }
        }
    }
    Ok(())
}

/// The first moment from which the record held every part for good.
pub fn whole_at(db: &Db, expect: &Expect) -> Option<Duration> {
    let (job, rows) = db.jobs.iter().next()?;
    let want: BTreeSet<&String> = expect
        .parts
        .keys()
        .filter(|k| k.0 == *job)
        .map(|k| &k.2)
        .collect();
    let row = rows.iter().max_by_key(|r| r.submit)?;
    let mut landings: Vec<&(T, u64, String)> = row.landings.iter().collect();
    landings.sort_by_key(|(t, s, _)| (*t, *s));
    let mut whole = None;
    for (t, _, v) in landings {
        let has = record::parse_all(v)
            .first()
            .is_some_and(|(_, s)| want.iter().all(|n| s.parts.contains_key(*n)));
        whole = match (has, whole) {
            (true, None) => Some(*t),
            (true, w) => w,
            (false, _) => None,
        };
    }
    whole
}
