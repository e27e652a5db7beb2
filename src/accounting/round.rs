//! One round of the merge protocol for many records (the courier's step), and
//! [`deliver`], rounds for one record until it is done.

use std::time::{Duration, Instant};

use super::item::MAX_ENERGY_WRITES;
use super::rows::{self, JobRows, Rows, Target};
use super::tres::{energy_plan, EnergyRow};
use super::{
    Accounting, AcctError, Clock, Delivered, Delivery, Item, Policy, Step, SystemClock, Timing,
    Verdict, PARALLEL_WRITES,
};
use crate::core::config::Field;
use crate::record::{self, check_writable, Meta};

/// A write a round makes: item `item`'s field, by sacct's id of the row, set to `merged`
/// (and the energy TRES to `energy_j` where given).
struct Write {
    item: usize,
    id: String,
    merged: String,
    /// The row's only writer: done when sacctmgr confirms.
    single: bool,
    energy_j: Option<u64>,
}

/// One round of delivery for the due items, oldest due first: per field, one read of
/// all their jobs' rows, a merge into the row each part belongs to ([`rows::target`]),
/// and writes where the field lacks the node's part, issued in batches of
/// [`PARALLEL_WRITES`] only while the read is younger than `settle / 2` (the rest wait
/// for the next round's fresh read), so that no write lands long after the read it was
/// based on. A part is done when sacctmgr confirms its write if it is the row's only
/// writer (one node, one run), else once the field has held it unchanged for
/// `timing.settle` and still holds it `timing.flight` later (see DESIGN-merge.md).
/// Returns one step per item.
pub fn round(
    acct: &dyn Accounting,
    items: &mut [&mut Item],
    timing: &Timing,
    policy: &Policy,
) -> Vec<Step> {
    round_with(acct, &SystemClock, items, timing, policy)
}

/// [`round`] with the time taken from `clock` (it reads no other).
pub fn round_with(
    acct: &dyn Accounting,
    clock: &dyn Clock,
    items: &mut [&mut Item],
    timing: &Timing,
    policy: &Policy,
) -> Vec<Step> {
    let now = clock.now();
    let mut steps: Vec<Step> = items.iter().map(|_| Step::Wait).collect();
    for field in [Field::System, Field::Admin, Field::Job] {
        let mut due: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].delivery.field == field && items[i].is_due(now))
            .collect();
        if due.is_empty() {
            continue;
        }
        due.sort_by_key(|&i| items[i].not_before);
        round_field(acct, clock, items, &due, field, timing, policy, &mut steps);
    }
    give_up_overdue(items, &mut steps, timing, clock.now());
    steps
}

/// The round for the due items `due` of `field`: one read, the merges, the writes.
#[allow(clippy::too_many_arguments)]
fn round_field(
    acct: &dyn Accounting,
    clock: &dyn Clock,
    items: &mut [&mut Item],
    due: &[usize],
    field: Field,
    timing: &Timing,
    policy: &Policy,
    steps: &mut [Step],
) {
    let mut jobs: Vec<u32> = due.iter().map(|&i| items[i].delivery.job).collect();
    jobs.sort_unstable();
    jobs.dedup();
    // The field's text is as of some moment during the read: at the earliest when it
    // started (how old a write's basis may be), at the latest when it returned (since
    // when the text has been seen).
    let read_started = clock.now();
    let rows = acct.read(&jobs, field);
    let read_at = clock.now();
    // Merge first, then write every field that lacks its part.
    let mut writes: Vec<Write> = Vec::new();
    for &i in due {
        let (step, write) = merge(
            i,
            items[i],
            &rows,
            field,
            timing,
            policy,
            (read_started, read_at),
        );
        steps[i] = step;
        writes.extend(write);
    }
    hold_plain_ids(acct, items, &mut writes, timing, read_at);
    write_batches(
        acct,
        clock,
        items,
        &writes,
        field,
        timing,
        read_started,
        steps,
    );
}

/// What the read `rows` (started and returned at `read`) means for due item `index`:
/// its step, and the write to make, if any.
fn merge(
    index: usize,
    item: &mut Item,
    rows: &Result<Rows, AcctError>,
    field: Field,
    timing: &Timing,
    policy: &Policy,
    read: (Instant, Instant),
) -> (Step, Option<Write>) {
    let read_at = read.1;
    item.reads += 1;
    let job_rows = match rows {
        Err(e) => Err(e.to_string()),
        Ok(rows) => match rows.get(&item.delivery.job) {
            Some(Ok(r)) => Ok(Some(r)),
            None => Ok(None),
            Some(Err(e)) => Err(e.clone()),
        },
    };
    let job_rows = match job_rows {
        Err(e) => {
            item.failed(e, read_at);
            return (Step::Wait, None);
        }
        Ok(None) => {
            item.wait_for_job("the job is not in accounting yet".into(), timing, read_at);
            return (Step::Wait, None);
        }
        Ok(Some(job_rows)) => job_rows,
    };
    let system = field == Field::System;
    let (id, value, run) =
        match rows::target(job_rows, item.delivery.part.start, system, &policy.diffs) {
            Target::Wait(why) => {
                item.wait_for_job(why, timing, read_at);
                return (Step::Wait, None);
            }
            Target::Refuse(why) => return (Step::Refused(AcctError::NoRow(why)), None),
            Target::Write { id, value, run } => (id, value, run),
        };
    item.backoff = timing.poll();
    let base = carried(job_rows, &value, run, &item.delivery);
    // A requeued run's row will be shared with the next run's writers (its row becomes
    // the latest): not a lone writer.
    let single = item.delivery.nodes.len() <= 1
        && job_rows.runs.len() <= 1
        && job_rows.runs.iter().all(|r| r.state != "REQUEUED");
    // The energy TRES is the row's own run's, and is rewritten by its completion record:
    // only once that is in.
    let row = job_rows.latest();
    let energy = EnergyRow {
        own_run: row.is_some_and(|r| r.ended && r.start == Some(run)),
        requeued: row.is_some_and(|r| r.state == "REQUEUED"),
        current_j: row.and_then(|r| r.energy),
    };
    match examine(
        item, &value, &base, run, single, timing, policy, energy, read,
    ) {
        Ok(step) => (step, None),
        Err((merged, energy_j)) => {
            let write = Write {
                item: index,
                id,
                merged,
                single,
                energy_j,
            };
            (Step::Wait, Some(write))
        }
    }
}

/// A plain `jobid=N` also selects every task of array N and every component of het job
/// N: write by it only when slurmctld (while it knows the job) names it so too, not
/// `N_T` or `N+O` that accounting has not caught up with yet. The others wait.
fn hold_plain_ids(
    acct: &dyn Accounting,
    items: &mut [&mut Item],
    writes: &mut Vec<Write>,
    timing: &Timing,
    read_at: Instant,
) {
    let plain: Vec<u32> = writes
        .iter()
        .filter(|w| !w.id.contains(['_', '+']))
        .map(|w| items[w.item].delivery.job)
        .collect();
    if plain.is_empty() {
        return;
    }
    let names = acct.ctld_names(&plain);
    writes.retain(|w| {
        let id = &w.id;
        if id.contains(['_', '+']) {
            return true;
        }
        let job = items[w.item].delivery.job;
        let why = match &names {
            Ok(names) => match names.get(&job) {
                Some(name) if name != id => format!(
                    "slurmctld names job {job} `{name}`, accounting still `{id}`: waiting for accounting"
                ),
                _ => return true,
            },
            Err(e) => format!("cannot ask slurmctld how it names job {job}: {e}"),
        };
        items[w.item].wait_for_job(why, timing, read_at);
        false
    });
}

/// Issues `writes`, [`PARALLEL_WRITES`] at a time, while the read that started at
/// `read_started` is young enough to write from.
#[allow(clippy::too_many_arguments)]
fn write_batches(
    acct: &dyn Accounting,
    clock: &dyn Clock,
    items: &mut [&mut Item],
    writes: &[Write],
    field: Field,
    timing: &Timing,
    read_started: Instant,
    steps: &mut [Step],
) {
    for batch in writes.chunks(PARALLEL_WRITES) {
        let now = clock.now();
        if now.saturating_duration_since(read_started) >= timing.settle / 2 {
            // The read is too old to write from: read again first (next round).
            for w in batch {
                items[w.item].not_before = now;
            }
            continue;
        }
        let requests: Vec<(&str, &str, Option<u64>)> = batch
            .iter()
            .map(|w| (w.id.as_str(), w.merged.as_str(), w.energy_j))
            .collect();
        let results = acct.write_all_energy(&requests, field);
        let now = clock.now();
        for (w, result) in batch.iter().zip(results) {
            let item = &mut items[w.item];
            if result.is_err() && w.energy_j.is_some() {
                item.energy_failures += 1;
            }
            steps[w.item] = match result {
                Ok(()) if w.single => Step::Done(Delivered {
                    writes: item.writes + 1,
                    reads: item.reads,
                    record: w.merged.clone(),
                    watched: false,
                }),
                Ok(()) => {
                    item.writes += 1;
                    item.last_seen = None;
                    item.guard_at = None;
                    item.not_before = now + timing.poll();
                    item.watch = timing.poll();
                    Step::Wait
                }
                Err(e) => {
                    item.failed(e.to_string(), now);
                    Step::Wait
                }
            };
        }
    }
}

/// Items still waiting past their deadline (that accounting was asked about at least
/// once) are given up on.
fn give_up_overdue(items: &[&mut Item], steps: &mut [Step], timing: &Timing, now: Instant) {
    for (item, step) in items.iter().zip(steps.iter_mut()) {
        if matches!(step, Step::Wait) && item.reads > 0 && now > item.deadline {
            *step = Step::GaveUp(AcctError::GaveUp {
                secs: timing.give_up.as_secs(),
                last: item.last_error.clone(),
            });
        }
    }
}

/// The latest row's `value` with the parts of run `run` that the job's earlier rows hold
/// and it lacks: a requeued run's parts go to its own row while that is the job's latest,
/// and to the latest row (which sacctmgr addresses from then on) once the next run's row
/// is in; a part that settled in the run's own row before that is carried over by the
/// run's nodes that write after, so that the run's segment in the latest row is whole.
fn carried(job_rows: &JobRows, value: &str, run: u64, d: &Delivery) -> String {
    let Some(latest) = job_rows.latest() else {
        return value.to_string();
    };
    let mut base = value.to_string();
    for row in &job_rows.runs {
        if std::ptr::eq(row, latest)
            || row.id != latest.id
            || !row.value.contains(&format!(" run={run}"))
        {
            continue;
        }
        let Some(found) = record::find_run(&row.value, run) else {
            continue;
        };
        let Some(have) = record::find_run(&base, run) else {
            // The latest row has none of the run yet: the segment as it stands.
            let segment = &row.value[found.start..found.end];
            base = if base.is_empty() {
                segment.to_string()
            } else {
                format!("{base} {segment}")
            };
            continue;
        };
        let meta = match (found.intensity, found.pue) {
            (Some(intensity), Some(pue)) => Meta {
                intensity: crate::units::GramsPerKwh(intensity),
                pue,
                expected_nodes: found.expected_nodes.unwrap_or(0).max(d.meta.expected_nodes),
            },
            _ => d.meta,
        };
        for part in found.parts.values() {
            if part.node != d.part.node && !have.parts.contains_key(&part.node) {
                base = record::merge_in_run(&base, part, &meta, Some(&d.nodes), run);
            }
        }
    }
    base
}

/// The merge protocol's step for one record whose row was read (`current`, to hold the
/// segment of run `run`; `base`: `current` with what the run's earlier rows add, see
/// [`carried`]) by a read that started and returned at `started` and `now`:
/// done, waiting, or (`Err`) the field to write. The text is taken to be seen from `now`
/// on and until `started` (the safe ends of the read: see DESIGN-merge.md).
#[allow(clippy::too_many_arguments)]
fn examine(
    item: &mut Item,
    current: &str,
    base: &str,
    run: u64,
    single: bool,
    timing: &Timing,
    policy: &Policy,
    energy: EnergyRow,
    (started, now): (Instant, Instant),
) -> Result<Step, (String, Option<u64>)> {
    if item.last_seen.as_deref() != Some(current) {
        item.stable_since = now;
        item.last_seen = Some(current.to_string());
        item.holds = false;
    }
    if !(item.holds && base == current) {
        let d = &item.delivery;
        let job = d.job;
        let merged = record::merge_in_run_sluid(
            base,
            &d.part,
            &d.meta,
            Some(&d.nodes),
            run,
            d.sluid.as_deref(),
        );
        let plan = energy_plan(policy, energy, current, &merged, run);
        let energy_j = item.energy_to_send(plan);
        if merged != *current {
            item.guard_at = None;
            return match check_writable(&merged, &policy.diffs) {
                Ok(()) => Err((merged, energy_j)),
                Err(e) => Ok(Step::Refused(e.into())),
            };
        }
        // The field holds the part, the energy TRES is not the record's total yet (an
        // earlier write without it, or a write that set the field but not the TRES):
        // the same value again with the energy, a few times at most.
        if let Some(j) = energy_j {
            if item.energy_writes < MAX_ENERGY_WRITES
                && check_writable(&merged, &policy.diffs).is_ok()
            {
                item.energy_writes += 1;
                item.guard_at = None;
                return Err((merged, Some(j)));
            }
            if !item.energy_noted {
                item.energy_noted = true;
                log::warn!(
                    "job {job}: the energy TRES still differs from the record's {j} J after {MAX_ENERGY_WRITES} writes; left as it is"
                );
            }
        }
        item.holds = true;
    }
    let done = || {
        Step::Done(Delivered {
            writes: item.writes,
            reads: item.reads,
            record: current.to_string(),
            watched: !single,
        })
    };
    if single {
        return Ok(done());
    }
    if started.saturating_duration_since(item.stable_since) < timing.settle {
        item.not_before = if item.stable_since == now {
            // Changed, with the part in: others are still writing. Look less and less
            // often (a part dropped meanwhile is merged back at the next look; only
            // settling decides when the part is done, however seldom it looks).
            let at = now + item.watch;
            item.watch = (item.watch * 2).min(timing.max_watch());
            at
        } else {
            // Unchanged: look again once it may have settled.
            (item.stable_since + timing.settle).max(now + timing.poll())
        };
        return Ok(Step::Wait);
    }
    match item.guard_at {
        Some(at) if started >= at => Ok(done()),
        Some(at) => {
            item.not_before = at;
            Ok(Step::Wait)
        }
        None => {
            // Settled: one more look once any write based on an older read has landed.
            let at = now + timing.flight;
            item.guard_at = Some(at);
            item.not_before = at;
            Ok(Step::Wait)
        }
    }
}

/// The late look at delivered parts (`verify_after_s` after each was done): per field,
/// one read of all their jobs' rows, and for each part whether the row the protocol
/// would write now already holds it (merging it in, with what [`carried`] adds, changes
/// nothing). Writes nothing. One verdict per record, in order.
pub fn verify(acct: &dyn Accounting, records: &[&Delivery], policy: &Policy) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = records
        .iter()
        .map(|_| Verdict::Unknown("not read".into()))
        .collect();
    for field in [Field::System, Field::Admin, Field::Job] {
        let these: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].field == field)
            .collect();
        if these.is_empty() {
            continue;
        }
        let mut jobs: Vec<u32> = these.iter().map(|&i| records[i].job).collect();
        jobs.sort_unstable();
        jobs.dedup();
        let rows = acct.read(&jobs, field);
        for i in these {
            verdicts[i] = verdict(records[i], &rows, field, policy);
        }
    }
    verdicts
}

/// [`verify`] for one record, from the read `rows`.
fn verdict(d: &Delivery, rows: &Result<Rows, AcctError>, field: Field, policy: &Policy) -> Verdict {
    let job_rows = match rows {
        Err(e) => return Verdict::Unknown(e.to_string()),
        Ok(rows) => match rows.get(&d.job) {
            Some(Ok(r)) => r,
            None => return Verdict::Unknown("the job is not in accounting".into()),
            Some(Err(e)) => return Verdict::Unknown(e.clone()),
        },
    };
    match rows::target(
        job_rows,
        d.part.start,
        field == Field::System,
        &policy.diffs,
    ) {
        Target::Wait(why) => Verdict::Unknown(why),
        Target::Refuse(why) => Verdict::Gone(why),
        Target::Write { value, run, .. } => {
            let base = carried(job_rows, &value, run, d);
            let merged = record::merge_in_run_sluid(
                &base,
                &d.part,
                &d.meta,
                Some(&d.nodes),
                run,
                d.sluid.as_deref(),
            );
            if merged == value {
                Verdict::Present(value)
            } else {
                Verdict::Missing
            }
        }
    }
}

/// Delivers one record, rounds until it is done: what [`round`] does for many.
pub fn deliver(
    acct: &dyn Accounting,
    d: &Delivery,
    timing: &Timing,
    policy: &Policy,
    sleep: &dyn Fn(Duration),
) -> Result<Delivered, AcctError> {
    let mut item = Item::new(d.clone(), timing);
    loop {
        let wait = item.not_before.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            sleep(wait);
        }
        let mut steps = round(acct, &mut [&mut item], timing, policy);
        match steps.pop() {
            Some(Step::Done(done)) => return Ok(done),
            Some(Step::Refused(e)) | Some(Step::GaveUp(e)) => return Err(e),
            Some(Step::Wait) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::item::MAX_ENERGY_FAILURES;
    use crate::accounting::testkit::{delivery, policy, rows, timing, v22};
    use crate::accounting::{joules, Row};
    use crate::core::config::EnergyTres;
    use crate::record::parse;
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex};

    struct Db {
        value: RefCell<Option<String>>,
        writes: RefCell<u32>,
        fail_reads: RefCell<u32>,
    }

    impl Accounting for Db {
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            if *self.fail_reads.borrow() > 0 {
                *self.fail_reads.borrow_mut() -= 1;
                return Err(AcctError::Run(crate::slurm::run::RunError::Timeout {
                    tool: "sacct".into(),
                    secs: 1,
                }));
            }
            Ok(rows(jobs, self.value.borrow().clone()))
        }
        fn write(&self, _: &str, _: Field, v: &str) -> Result<(), AcctError> {
            *self.writes.borrow_mut() += 1;
            *self.value.borrow_mut() = Some(v.to_string());
            Ok(())
        }
    }

    #[test]
    fn single_writer_writes_once_and_keeps_foreign_text() {
        let db = Db {
            value: RefCell::new(Some("site-tag=1".into())),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(2),
        };
        let d = delivery("n1", 2.0, &["n1"]);
        let r = deliver(&db, &d, &timing(), &v22(), &std::thread::sleep).unwrap();
        assert_eq!(r.writes, 1);
        // Two failed reads, one to merge and write: a lone writer needs nothing more.
        assert_eq!(r.reads, 3);
        assert!(
            r.record
                .starts_with("site-tag=1 spank-carbon/1 run=0 gpu_wh=2 "),
            "{}",
            r.record
        );
        // Delivering again (a retry after a crash) writes nothing.
        let r2 = deliver(&db, &d, &timing(), &v22(), &std::thread::sleep).unwrap();
        assert_eq!(r2.writes, 0);
        assert_eq!(r2.record, r.record);
        assert_eq!(*db.writes.borrow(), 1);
    }

    #[test]
    fn refuses_to_alter_foreign_text() {
        let db = Db {
            value: RefCell::new(Some("Site-Tag".into())),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(0),
        };
        let e = deliver(
            &db,
            &delivery("n1", 1.0, &["n1"]),
            &timing(),
            &v22(),
            &std::thread::sleep,
        )
        .unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(*db.writes.borrow(), 0);
    }

    #[test]
    fn gives_up_when_accounting_never_answers() {
        let db = Db {
            value: RefCell::new(None),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(u32::MAX),
        };
        let t = Timing {
            give_up: Duration::from_millis(50),
            ..timing()
        };
        let e = deliver(&db, &delivery("n1", 1.0, &["n1"]), &t, &v22(), &|_| {
            std::thread::sleep(Duration::from_millis(5))
        })
        .unwrap_err();
        assert!(matches!(e, AcctError::GaveUp { .. }), "{e}");
    }

    /// A shared register with the lost-update behaviour of sacctmgr: a write lands some
    /// time after the read it was based on, and the last write wins.
    struct SlowDb {
        value: Mutex<String>,
        latency: Duration,
    }

    impl Accounting for Arc<SlowDb> {
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            Ok(rows(jobs, Some(self.value.lock().unwrap().clone())))
        }
        fn write(&self, _: &str, _: Field, v: &str) -> Result<(), AcctError> {
            std::thread::sleep(self.latency);
            *self.value.lock().unwrap() = v.to_string();
            Ok(())
        }
    }

    #[test]
    fn concurrent_writers_lose_no_part() {
        for round in 0..20 {
            let db = Arc::new(SlowDb {
                value: Mutex::new(String::new()),
                latency: Duration::from_millis(3 + round % 4),
            });
            let nodes = ["a", "b", "c", "d", "e"];
            let handles: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let db = db.clone();
                    let d = delivery(n, i as f64 + 1.0, &nodes);
                    std::thread::spawn(move || {
                        let t = Timing {
                            stagger: Duration::ZERO, // worst case: everyone at once
                            settle: Duration::from_millis(60),
                            give_up: Duration::from_secs(20),
                            flight: Duration::from_millis(40),
                        };
                        deliver(&db, &d, &t, &v22(), &std::thread::sleep).unwrap()
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let seg = parse(&db.value.lock().unwrap()).unwrap();
            assert_eq!(seg.parts.len(), 5, "round {round}: {:?}", seg.parts.keys());
            assert_eq!(seg.gpu_wh(), 15.0);
        }
    }

    #[test]
    fn a_requeued_runs_parts_settled_in_its_own_row_are_carried_to_the_latest() {
        let nodes = ["a", "b", "c"];
        let row = |submit: u64, state: &str, start: u64, end: Option<u64>, value: String| Row {
            id: "9".into(),
            state: state.into(),
            ended: end.is_some(),
            submit,
            start: Some(start),
            end,
            energy: None,
            value,
        };
        let d = |n: &str, wh: f64| delivery(n, wh, &nodes);
        let mut own = String::from("site");
        for (n, wh) in [("a", 1.0), ("b", 2.0)] {
            let x = d(n, wh);
            own = record::merge_in_run(&own, &x.part, &x.meta, Some(&x.nodes), 0);
        }
        // Run 0 was requeued; run 1's row is the latest and has none of run 0's parts.
        let rows = JobRows {
            runs: vec![
                row(0, "REQUEUED", 0, Some(3), own.clone()),
                row(3, "RUNNING", 30, None, "x".into()),
            ],
            selects_others: false,
            others_below: false,
        };
        let c = d("c", 4.0);
        let base = carried(&rows, "x", 0, &c);
        let seg = record::find_run(&base, 0).unwrap();
        assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(base.starts_with("x "), "{base}");
        // The latest row already has part of run 0 (c's): a is merged in (b, the node
        // delivering, merges its own part after).
        let latest = record::merge_in_run("x", &c.part, &c.meta, Some(&c.nodes), 0);
        let base = carried(&rows, &latest, 0, &d("b", 2.0));
        let seg = record::parse_all(&base);
        assert_eq!(seg.len(), 1);
        assert_eq!(seg[0].1.parts.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(seg[0].1.gpu_wh(), 5.0);
        // Another run's segment is not carried; neither is anything when the latest row
        // is the run's own.
        assert_eq!(carried(&rows, "x", 30, &c), "x");
        let alone = JobRows {
            runs: vec![rows.runs[0].clone()],
            selects_others: false,
            others_below: false,
        };
        assert_eq!(carried(&alone, &own, 0, &c), own);
    }

    /// The late check: two nodes deliver; a stale write (based on a read that had only
    /// b's part) lands after a was done and drops a's part. The check finds a's part
    /// missing and b's there, with the field's text; it writes nothing, and says so
    /// when accounting does not answer.
    #[test]
    fn the_late_check_finds_a_part_a_late_write_dropped() {
        let nodes = ["a", "b"];
        let db = Db {
            value: RefCell::new(Some("site".into())),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(0),
        };
        let t = Timing {
            settle: Duration::from_millis(10),
            flight: Duration::from_millis(5),
            ..timing()
        };
        let (a, b) = (delivery("a", 1.0, &nodes), delivery("b", 2.0, &nodes));
        let done_b = deliver(&db, &b, &t, &v22(), &std::thread::sleep).unwrap();
        assert!(done_b.watched, "a multi-node part is done by watching");
        let stale = db.value.borrow().clone().unwrap();
        let done_a = deliver(&db, &a, &t, &v22(), &std::thread::sleep).unwrap();
        assert!(done_a.watched);
        let whole = db.value.borrow().clone().unwrap();
        let writes = *db.writes.borrow();
        assert_eq!(
            verify(&db, &[&a, &b], &v22()),
            [Verdict::Present(whole.clone()), Verdict::Present(whole)]
        );
        // The late write lands: b's base, without a's part.
        *db.value.borrow_mut() = Some(stale.clone());
        assert_eq!(
            verify(&db, &[&a, &b], &v22()),
            [Verdict::Missing, Verdict::Present(stale)]
        );
        assert_eq!(*db.writes.borrow(), writes, "the check writes nothing");
        *db.fail_reads.borrow_mut() = 1;
        assert!(matches!(
            verify(&db, &[&a], &v22())[..],
            [Verdict::Unknown(_)]
        ));
        // A 1-node part is done by its own confirmed write: no check.
        let lone = Db {
            value: RefCell::new(None),
            writes: RefCell::new(0),
            fail_reads: RefCell::new(0),
        };
        *lone.value.borrow_mut() = Some(String::new());
        let one = delivery("a", 1.0, &["a"]);
        assert!(
            !deliver(&lone, &one, &t, &v22(), &std::thread::sleep)
                .unwrap()
                .watched
        );
    }

    /// Accounting that shows job 9 as plain `9` (it has not caught up) while slurmctld
    /// names it `9_4`, an array task: a write to `jobid=9` would change the whole array.
    #[test]
    fn a_plain_id_is_not_written_while_slurmctld_names_an_array_task() {
        struct Lagging {
            ctld: RefCell<Option<String>>,
            writes: RefCell<Vec<String>>,
        }
        impl Accounting for Lagging {
            fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
                Ok(rows(jobs, Some(String::new())))
            }
            fn write(&self, id: &str, _: Field, _: &str) -> Result<(), AcctError> {
                self.writes.borrow_mut().push(id.to_string());
                Ok(())
            }
            fn ctld_names(
                &self,
                jobs: &[u32],
            ) -> Result<std::collections::BTreeMap<u32, String>, AcctError> {
                Ok(jobs
                    .iter()
                    .filter_map(|&j| Some((j, self.ctld.borrow().clone()?)))
                    .collect())
            }
        }
        let acct = Lagging {
            ctld: RefCell::new(Some("9_4".into())),
            writes: RefCell::new(vec![]),
        };
        let mut item = Item::new(delivery("n1", 1.0, &["n1"]), &timing());
        let steps = round(&acct, &mut [&mut item], &timing(), &v22());
        assert!(matches!(steps[0], Step::Wait));
        assert!(
            acct.writes.borrow().is_empty(),
            "wrote {:?}",
            acct.writes.borrow()
        );
        assert!(item.last_error.contains("9_4"), "{}", item.last_error);
        // slurmctld agrees (or has forgotten the job): the write goes.
        *acct.ctld.borrow_mut() = None;
        item.not_before = Instant::now();
        let steps = round(&acct, &mut [&mut item], &timing(), &v22());
        assert!(matches!(steps[0], Step::Done(_)), "{steps:?}");
        assert_eq!(*acct.writes.borrow(), ["9"]);
    }

    /// One row of Slurm's job table: (id_job, sacct's JobID, id_array_job, submit,
    /// start, end, field).
    type DbRow = (u32, &'static str, u32, u64, u64, u64, String);

    /// The rows `sacctmgr modify job where jobid=<job>` changes, as Slurm's
    /// `as_mysql_modify_job` picks them: `_setup_job_cond_selected_steps` selects the
    /// rows whose id or array id is `job` (no time predicate: NO_DEFAULT_USAGE), and
    /// `_cluster_get_jobs` keeps them in `order by id_job, time_submit desc`, the first
    /// row per id, and from 23.11 on (`newest_only`) drops another array's rows after it
    /// (the `jobid_filtered` / `comb_id` loop of commit 3b6f268783, transcribed).
    fn slurm_modifies(rows: &[DbRow], job: u32, newest_only: bool) -> Vec<usize> {
        let mut order: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].0 == job || rows[i].2 == job)
            .collect();
        order.sort_by_key(|&i| (rows[i].0, std::cmp::Reverse(rows[i].3)));
        let (mut last_id, mut comb_id) = (-1i64, 0i64);
        let mut kept = vec![];
        for i in order {
            let (curr_id, array) = (i64::from(rows[i].0), i64::from(rows[i].2));
            if curr_id == last_id {
                continue;
            }
            if newest_only {
                if last_id != array && last_id != 0 {
                    comb_id = array;
                } else if comb_id != array {
                    continue;
                }
            }
            kept.push(i);
            last_id = curr_id;
        }
        kept
    }

    /// Slurm's job table, read with `sacct -D -X -j` and written with sacctmgr as the
    /// release of `newest_only` does.
    struct SlurmDb {
        rows: RefCell<Vec<DbRow>>,
        newest_only: bool,
        writes: RefCell<u32>,
    }

    impl Accounting for SlurmDb {
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            let mut text = String::new();
            for r in self.rows.borrow().iter() {
                if jobs.contains(&r.0) || jobs.contains(&r.2) {
                    text.push_str(&format!(
                        "{}@d{}@dCOMPLETED@d{}@d{}@d{}@d@d{}\n",
                        r.0, r.1, r.3, r.4, r.5, r.6
                    ));
                }
            }
            rows::parse(jobs, text.as_bytes(), "@d")
        }
        fn write(&self, id: &str, _: Field, value: &str) -> Result<(), AcctError> {
            *self.writes.borrow_mut() += 1;
            let job: u32 = id.parse().expect("a plain id");
            let hit = slurm_modifies(&self.rows.borrow(), job, self.newest_only);
            for i in hit {
                self.rows.borrow_mut()[i].6 = value.to_string();
            }
            Ok(())
        }
    }

    /// Ids restarted: job 9 is new (ran 1000-1020); an older array 9 (master row 9_2,
    /// tasks 9_0 and 9_1 with ids 10 and 11, or with `wrapped` ids 1 and 2) ran long
    /// before.
    fn reused(wrapped: bool) -> Vec<DbRow> {
        let (a, b) = if wrapped { (1, 2) } else { (10, 11) };
        vec![
            (9, "9_2", 9, 10, 11, 20, "old-a".into()),
            (a, "9_0", 9, 10, 11, 20, "old-b".into()),
            (b, "9_1", 9, 10, 11, 20, "old-c".into()),
            (9, "9", 0, 990, 1000, 1020, "site".into()),
        ]
    }

    #[test]
    fn the_model_of_sacctmgr_changes_what_slurm_does_per_release() {
        let rows = reused(false);
        assert_eq!(slurm_modifies(&rows, 9, false), [3, 1, 2]);
        assert_eq!(slurm_modifies(&rows, 9, true), [3]);
        let rows = reused(true);
        assert_eq!(slurm_modifies(&rows, 9, true), [1, 2, 3]);
        // A job alone, and an array's own master id: as before.
        let alone = vec![(5, "5", 0, 1, 2, 3, String::new())];
        assert_eq!(slurm_modifies(&alone, 5, true), [0]);
        let array = &reused(false)[..3];
        assert_eq!(slurm_modifies(array, 9, true), [0, 1, 2]);
    }

    /// The new job whose id an older array had: its record goes into its own row where
    /// `jobid=9` changes that row alone (23.11+), and is refused on 22.05; the old
    /// array's rows stay as they were on every release.
    #[test]
    fn a_reused_id_gets_its_record_where_slurm_addresses_the_run_exactly() {
        for (p, newest_only, written) in [
            (v22(), false, false),
            (policy(24, 11, EnergyTres::Off), true, true),
            (policy(26, 5, EnergyTres::Off), true, true),
        ] {
            assert_eq!(p.diffs.jobid_newest_only, newest_only);
            let db = SlurmDb {
                rows: RefCell::new(reused(false)),
                newest_only,
                writes: RefCell::new(0),
            };
            let mut d = delivery("n1", 1.0, &["n1"]);
            (d.part.start, d.part.end) = (1001.0, 1019.0);
            let result = deliver(&db, &d, &timing(), &p, &std::thread::sleep);
            let rows = db.rows.borrow();
            let old: Vec<&str> = rows[..3].iter().map(|r| r.6.as_str()).collect();
            assert_eq!(old, ["old-a", "old-b", "old-c"], "{:?}", p.diffs.version);
            if written {
                assert!(result.is_ok(), "{result:?}");
                let seg = parse(&rows[3].6).expect("the new job's record");
                assert_eq!(seg.gpu_wh(), 1.0);
                assert!(rows[3].6.starts_with("site "), "{}", rows[3].6);
            } else {
                match &result {
                    Err(e @ AcctError::NoRow(_)) => assert!(e.to_string().contains("23.11"), "{e}"),
                    r => panic!("{r:?}"),
                }
                assert_eq!(*db.writes.borrow(), 0);
                assert_eq!(rows[3].6, "site");
            }
        }
        // Ids wrapped: 23.11+ would change the tasks with the lower ids too: refused.
        let db = SlurmDb {
            rows: RefCell::new(reused(true)),
            newest_only: true,
            writes: RefCell::new(0),
        };
        let mut d = delivery("n1", 1.0, &["n1"]);
        (d.part.start, d.part.end) = (1001.0, 1019.0);
        let p = policy(24, 11, EnergyTres::Off);
        let result = deliver(&db, &d, &timing(), &p, &std::thread::sleep);
        assert!(matches!(result, Err(AcctError::NoRow(_))), "{result:?}");
        assert_eq!(*db.writes.borrow(), 0);
    }

    #[test]
    fn one_round_reads_every_due_record_at_once() {
        struct Count {
            reads: RefCell<Vec<Vec<u32>>>,
            writes: RefCell<Vec<String>>,
        }
        impl Accounting for Count {
            fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
                self.reads.borrow_mut().push(jobs.to_vec());
                Ok(rows(jobs, Some(String::new())))
            }
            fn write(&self, id: &str, _: Field, _: &str) -> Result<(), AcctError> {
                self.writes.borrow_mut().push(id.to_string());
                Ok(())
            }
        }
        let acct = Count {
            reads: RefCell::new(vec![]),
            writes: RefCell::new(vec![]),
        };
        let mut items: Vec<Item> = (1..=5)
            .map(|j| {
                let mut d = delivery("n1", 1.0, &["n1"]);
                d.job = j;
                Item::new(d, &timing())
            })
            .collect();
        let mut refs: Vec<&mut Item> = items.iter_mut().collect();
        let steps = round(&acct, &mut refs, &timing(), &v22());
        assert!(steps.iter().all(|s| matches!(s, Step::Done(_))));
        assert_eq!(*acct.reads.borrow(), vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(acct.writes.borrow().len(), 5);
    }

    /// A row whose field and energy TRES a write sets together, as 25.11+ does.
    struct EnergyDb {
        value: RefCell<String>,
        energy: RefCell<Option<u64>>,
        sent: RefCell<Vec<Option<u64>>>,
        /// Writes ignore the energy (a sacct that does not show it, say).
        drop_energy: bool,
    }

    impl EnergyDb {
        fn new(value: &str, energy: Option<u64>) -> EnergyDb {
            EnergyDb {
                value: RefCell::new(value.into()),
                energy: RefCell::new(energy),
                sent: RefCell::new(vec![]),
                drop_energy: false,
            }
        }
    }

    impl Accounting for EnergyDb {
        fn read(&self, jobs: &[u32], _: Field) -> Result<Rows, AcctError> {
            let mut r = rows(jobs, Some(self.value.borrow().clone()));
            for rows in r.values_mut().flatten() {
                rows.runs[0].energy = *self.energy.borrow();
            }
            Ok(r)
        }
        fn write(&self, id: &str, field: Field, v: &str) -> Result<(), AcctError> {
            self.write_energy(id, field, v, None)
        }
        fn write_energy(
            &self,
            _: &str,
            _: Field,
            v: &str,
            energy: Option<u64>,
        ) -> Result<(), AcctError> {
            self.sent.borrow_mut().push(energy);
            *self.value.borrow_mut() = v.to_string();
            if let Some(e) = energy.filter(|_| !self.drop_energy) {
                *self.energy.borrow_mut() = Some(e);
            }
            Ok(())
        }
    }

    #[test]
    fn the_record_and_its_energy_go_in_one_write_on_25_11() {
        let p = policy(26, 5, EnergyTres::Auto);
        let db = EnergyDb::new("site", Some(0));
        let r = deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(r.writes, 1);
        assert_eq!(*db.sent.borrow(), [Some(joules(2.0))]);
        assert_eq!(*db.energy.borrow(), Some(7200));
        // The same on 24.11: the record, never tres=.
        let db = EnergyDb::new("site", Some(0));
        let p24 = policy(24, 11, EnergyTres::Overwrite);
        deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p24,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(*db.sent.borrow(), [None]);
        assert_eq!(*db.energy.borrow(), Some(0));
        // Slurm measured the job's energy: the record goes in, the energy stays.
        let db = EnergyDb::new("site", Some(555));
        deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(*db.sent.borrow(), [None]);
        assert_eq!(*db.energy.borrow(), Some(555));
        assert!(record::parse(&db.value.borrow()).is_some());
    }

    #[test]
    fn the_energy_follows_the_running_total_as_parts_arrive() {
        let p = policy(26, 5, EnergyTres::Auto);
        let db = EnergyDb::new("", None);
        let nodes = ["a", "b", "c"];
        for (i, n) in nodes.iter().enumerate() {
            deliver(
                &db,
                &delivery(n, i as f64 + 1.5, &nodes),
                &timing(),
                &p,
                &std::thread::sleep,
            )
            .unwrap();
            let seg = record::parse(&db.value.borrow()).unwrap();
            assert_eq!(seg.parts.len(), i + 1);
            assert_eq!(*db.energy.borrow(), Some(joules(seg.gpu_wh())));
        }
        assert_eq!(*db.energy.borrow(), Some(joules(1.5 + 2.5 + 3.5)));
        // A record already whole whose energy was never set (written by an older
        // version, or energy_tres=off then): set by the next delivery, field unchanged.
        let whole = db.value.borrow().clone();
        *db.energy.borrow_mut() = None;
        deliver(
            &db,
            &delivery("c", 3.5, &nodes),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert_eq!(*db.value.borrow(), whole);
        assert_eq!(*db.energy.borrow(), Some(joules(7.5)));
    }

    #[test]
    fn an_energy_that_never_sticks_is_tried_a_few_times_only() {
        let p = policy(26, 5, EnergyTres::Auto);
        let mut db = EnergyDb::new("", None);
        db.drop_energy = true;
        let nodes = ["a", "b"];
        deliver(
            &db,
            &delivery("a", 1.0, &nodes),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        let sent = db.sent.borrow().len();
        assert_eq!(sent as u32, 1 + MAX_ENERGY_WRITES);
        assert!(db.sent.borrow().iter().all(|e| *e == Some(joules(1.0))));
    }

    /// A slurmdbd that cannot set the energy TRES (sacctmgr fails when asked to) does not
    /// keep the record out: after two failures it goes without.
    #[test]
    fn a_failing_energy_write_does_not_keep_the_record_out() {
        struct NoTres(EnergyDb);
        impl Accounting for NoTres {
            fn read(&self, jobs: &[u32], f: Field) -> Result<Rows, AcctError> {
                self.0.read(jobs, f)
            }
            fn write(&self, id: &str, f: Field, v: &str) -> Result<(), AcctError> {
                self.0.write(id, f, v)
            }
            fn write_energy(
                &self,
                id: &str,
                f: Field,
                v: &str,
                e: Option<u64>,
            ) -> Result<(), AcctError> {
                self.0.sent.borrow_mut().push(e);
                if e.is_some() {
                    return Err(AcctError::Failed {
                        tool: "sacctmgr".into(),
                        detail: "REGEXP_REPLACE does not exist".into(),
                    });
                }
                self.0.write(id, f, v)
            }
        }
        let db = NoTres(EnergyDb::new("site", None));
        let p = policy(26, 5, EnergyTres::Auto);
        let r = deliver(
            &db,
            &delivery("n1", 2.0, &["n1"]),
            &timing(),
            &p,
            &std::thread::sleep,
        )
        .unwrap();
        assert!(record::parse(&r.record).is_some());
        let sent = db.0.sent.borrow();
        let with = sent.iter().filter(|e| e.is_some()).count() as u32;
        assert_eq!(with, MAX_ENERGY_FAILURES, "{sent:?}");
        assert_eq!(sent.last(), Some(&None));
    }
}
