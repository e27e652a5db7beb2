//! The footprint Slurm's end-of-job mail gets (`spank-carbon mail`, the MailProg
//! wrapper): which mails get one, which job a mail is about, the run's record among the
//! job's accounting rows, the bounded wait for it, and the paragraph added to the body.

use std::time::Duration;

use crate::core::report::{self, JobRow};
use crate::record::{num, Method, Segment};

/// How often sacct is asked while waiting.
pub const POLL: Duration = Duration::from_secs(2);

/// Which mails get a footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A run ended (Ended, Failed, Reached time limit, Requeued, StageOut/Teardown).
    RunEnded,
    /// Anything else (Began, time-limit warnings, invalid dependency, unknown).
    Other,
}

/// slurmctld's mail type strings that end a run (`_mail_type_str` in agent.c).
const ENDING: &[&str] = &[
    "Ended",
    "Failed",
    "Reached time limit",
    "Requeued",
    "StageOut/Teardown",
];
const NOT_ENDING: &[&str] = &[
    "Began",
    "Reached 90% of time limit",
    "Reached 80% of time limit",
    "Reached 50% of time limit",
    "Invalid dependency",
];

/// The kind of mail: `SLURM_JOB_MAIL_TYPE` when slurmctld set it, else the type word
/// after `Name=` in the subject (the last one there: a job's name may hold one too).
pub fn kind(mail_type: Option<&str>, subject: &str) -> Kind {
    if let Some(t) = mail_type {
        return if ENDING.contains(&t.trim()) {
            Kind::RunEnded
        } else {
            Kind::Other
        };
    }
    let Some(after) = subject.find(" Name=").map(|i| &subject[i..]) else {
        return Kind::Other;
    };
    let last = |words: &[&str]| {
        words
            .iter()
            .filter_map(|w| after.rfind(&format!(" {w}")))
            .max()
    };
    match (last(ENDING), last(NOT_ENDING)) {
        (Some(e), Some(n)) if e > n => Kind::RunEnded,
        (Some(_), None) => Kind::RunEnded,
        _ => Kind::Other,
    }
}

fn job_id(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// The job a mail is about: `SLURM_JOB_ID` (set by slurmctld), else the subject:
/// `Slurm Job_id=<id> Name=...` or `Slurm Array Task Job_id=<a>_<t> (<id>) Name=...`.
/// `None` for an array summary (many jobs) and anything else.
pub fn job_of(env_job: Option<&str>, subject: &str) -> Option<u32> {
    if subject.starts_with("Slurm Array Summary ") {
        return None;
    }
    if let Some(id) = env_job {
        return job_id(id.trim());
    }
    if let Some(rest) = subject.strip_prefix("Slurm Job_id=") {
        let (id, tail) = rest.split_once(' ')?;
        return tail.starts_with("Name=").then(|| job_id(id)).flatten();
    }
    let rest = subject.strip_prefix("Slurm Array Task Job_id=")?;
    let (array_task, tail) = rest.split_once(" (")?;
    let (array, task) = array_task.split_once('_')?;
    job_id(array)?;
    job_id(task).or((task == "0").then_some(0))?;
    let (id, tail) = tail.split_once(") ")?;
    tail.starts_with("Name=").then(|| job_id(id)).flatten()
}

/// How long one sacct call of the mail may take: `write_timeout_s`, but never more than
/// this (slurmctld's agent thread waits on the mail; a slurmdbd that hangs must not hold it).
pub const SACCT_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// The time limit of each sacct call: `write_timeout_s` up to [`SACCT_TIMEOUT_MAX`], and
/// no more than the wait left (but at least 2 s, or the limit if shorter).
pub fn sacct_timeout(write_timeout_s: u64, left: Duration) -> Duration {
    let per_call = Duration::from_secs(write_timeout_s.max(1)).min(SACCT_TIMEOUT_MAX);
    per_call.min(left.max(Duration::from_secs(2)))
}

/// What accounting says about the job so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// sacct answered without a started row of the job (slurmdbd does not have its start
    /// yet): nothing is known to say, nothing to wait for.
    NoRow,
    /// The run's row has no GPU in AllocTRES (whole, shard or MPS) and no record: nothing
    /// to add, nothing to wait for. (slurmctld's environment for MailProg, agent.c
    /// `_build_mail_env` in 22.05 to 26.05, names no GRES: the row decides.)
    NoGpus,
    /// The run's record; `complete` when every node of the job has reported; `shared`
    /// when AllocTRES holds only shards or MPS shares (no whole GPU).
    Record {
        seg: Segment,
        complete: bool,
        shared: bool,
    },
    /// The run had GPUs and its record is not there yet.
    NotYet,
    /// sacct failed (exit status, time limit, could not run): why. The mail goes out at
    /// once, without a footprint.
    Failed(String),
}

/// The row of the run a mail is about: the job's latest row that has started (a
/// requeued job's new, pending row is not the run that ended).
pub fn lookup(job: u32, rows: &[JobRow]) -> Lookup {
    let Some(row) = rows
        .iter()
        .rev()
        .find(|r| r.job == job && !r.state.starts_with("PENDING"))
    else {
        return Lookup::NoRow;
    };
    match report::job_record(&[row]) {
        Some(seg) => {
            let complete = seg.parts.len() as u64 >= u64::from(seg.meta.expected_nodes);
            Lookup::Record {
                seg,
                complete,
                shared: row.tres.shared_only(),
            }
        }
        // A site whose AccountingStorageTRES lacks the GPU GRES has none in AllocTRES:
        // then the record's presence is all there is, and a GPU job whose record is late
        // gets no footprint (`spank-carbon check` warns about that configuration).
        None if row.tres.any() => Lookup::NotYet,
        None => Lookup::NoGpus,
    }
}

/// Asks `fetch` (given the time left) until it has a complete record, knows there is
/// nothing to say (no row, no GPUs, sacct failed: at once), or `wait` has passed; then
/// the best answer seen (a partial record rather than none). Only a GPU run whose record
/// is missing or partial is waited for. `elapsed` and `sleep` are the clock (a fake one in
/// tests).
pub fn wait_for(
    wait: Duration,
    every: Duration,
    mut fetch: impl FnMut(Duration) -> Lookup,
    mut elapsed: impl FnMut() -> Duration,
    mut sleep: impl FnMut(Duration),
) -> Lookup {
    let mut best: Option<Lookup> = None;
    loop {
        let left = wait.saturating_sub(elapsed());
        match fetch(left) {
            done @ Lookup::Record { complete: true, .. } => return done,
            partial @ Lookup::Record { .. } => best = Some(partial),
            Lookup::NotYet => {
                best.get_or_insert(Lookup::NotYet);
            }
            // Nothing more will come now: a partial record already read still stands.
            end @ (Lookup::NoRow | Lookup::NoGpus | Lookup::Failed(_)) => {
                return match best {
                    Some(partial @ Lookup::Record { .. }) => partial,
                    _ => end,
                }
            }
        }
        if left.is_zero() {
            return best.unwrap_or(Lookup::NotYet);
        }
        sleep(every.min(left));
    }
}

/// The GPUs a record was measured on, for the footprint: whole GPUs, or the
/// GPU-equivalents charged where boards were shared (the record's `sh:` rule: shards over
/// the board's, MPS, MIG); where AllocTRES says the job held only shards or MPS shares but
/// the record gives no share, "shared GPU(s)" rather than a number of boards.
pub fn gpus_text(seg: &Segment, shared: bool) -> String {
    if seg.parts.values().any(|p| p.share.is_some()) {
        return format!(
            "{} GPU-equivalent(s) of shared GPUs",
            num(report::gpu_equivalents(seg), 4)
        );
    }
    if shared {
        return "shared GPU(s)".into();
    }
    format!("{} GPU(s)", seg.gpus())
}

/// The paragraph added to the mail; `None` when nothing is to be added.
pub fn footprint(job: u32, found: &Lookup, waited_s: u64, imperial: bool) -> Option<String> {
    let mut out = String::from("-- \nGPU footprint (spank-carbon)\n");
    match found {
        Lookup::NoRow | Lookup::NoGpus | Lookup::Failed(_) => return None,
        Lookup::NotYet => {
            out.push_str(&format!(
                "Not recorded yet (waited {waited_s} s for job {job}'s record). \
                 `spank-carbon report -j {job}` shows it once it is there.\n"
            ));
        }
        Lookup::Record {
            seg,
            complete,
            shared,
        } => {
            let how = match seg.method() {
                Some(Method::Counter) => "GPU energy counters (NVML)",
                Some(Method::Sampled) => "sampled GPU power (NVML)",
                Some(Method::Mixed) => "GPU energy counters and sampled power (NVML)",
                None => "-",
            };
            out.push_str(&format!(
                "GPU energy: {} Wh   CO2e: {} (grid {} gCO2e/kWh x PUE {})\n",
                num(seg.gpu_wh(), 4),
                report::mass(seg.co2e_g(), imperial),
                num(seg.shown_intensity(), 1),
                num(seg.meta.pue, 3),
            ));
            if let Some(first) = report::everyday(seg.co2e_g(), imperial).first() {
                out.push_str(&format!("That is {first}.\n"));
            }
            out.push_str(&format!(
                "Measured from {how} on {} node(s), {}; CPU, memory and network not included.\n",
                seg.parts.len(),
                gpus_text(seg, *shared)
            ));
            if !complete {
                out.push_str(&format!(
                    "So far {} of the job's {} nodes have reported (waited {waited_s} s).\n",
                    seg.parts.len(),
                    seg.meta.expected_nodes
                ));
            }
            out.push_str(&format!("Details: spank-carbon report -j {job}\n"));
        }
    }
    Some(out)
}

/// The mail's new body: the original, then (after a blank line) the footprint.
pub fn compose(original: &[u8], footprint: Option<&str>) -> Vec<u8> {
    let mut body = original.to_vec();
    if let Some(f) = footprint {
        if !body.is_empty() {
            if !body.ends_with(b"\n") {
                body.push(b'\n');
            }
            body.push(b'\n');
        }
        body.extend_from_slice(f.as_bytes());
    }
    body
}

/// The subject among MailProg's arguments (`-s SUBJECT`).
pub fn subject_of(args: &[String]) -> &str {
    args.iter()
        .position(|a| a == "-s")
        .and_then(|i| args.get(i + 1))
        .map_or("", String::as_str)
}

/// `mail_prog` from a configuration file that does not parse: the value of its last
/// `mail_prog = "..."` line (then checked by `Config::set` like any value).
pub fn mail_prog_line(text: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "mail_prog").then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use crate::record::{Meta, NodePart};
    use crate::units::GramsPerKwh;
    use std::cell::Cell;
    use std::path::Path;

    #[test]
    fn kinds_from_the_environment_and_the_subject() {
        for t in ENDING {
            assert_eq!(kind(Some(t), ""), Kind::RunEnded, "{t}");
        }
        for t in NOT_ENDING {
            assert_eq!(
                kind(Some(t), "Slurm Job_id=1 Name=x Ended"),
                Kind::Other,
                "{t}"
            );
        }
        let s = |t: &str| format!("Slurm Job_id=42 Name=train {t}");
        assert_eq!(
            kind(None, &s("Ended, Run time 00:00:10, COMPLETED, ExitCode 0")),
            Kind::RunEnded
        );
        assert_eq!(
            kind(None, &s("Failed, Run time 00:00:01, FAILED, ExitCode 1")),
            Kind::RunEnded
        );
        assert_eq!(kind(None, &s("Began, Queued time 00:00:01")), Kind::Other);
        assert_eq!(kind(None, &s("Reached 90% of time limit")), Kind::Other);
        // A job named after a mail type: the last type word decides.
        assert_eq!(
            kind(
                None,
                "Slurm Job_id=4 Name=Ended Began, Queued time 00:00:01"
            ),
            Kind::Other
        );
        assert_eq!(kind(None, "no subject of slurm's"), Kind::Other);
    }

    #[test]
    fn job_ids_from_the_environment_or_strictly_from_the_subject() {
        assert_eq!(job_of(Some("77"), "anything"), Some(77));
        assert_eq!(job_of(Some("7x"), "Slurm Job_id=3 Name=a Ended"), None);
        assert_eq!(
            job_of(
                None,
                "Slurm Job_id=4696 Name=train Ended, Run time 00:00:10"
            ),
            Some(4696)
        );
        assert_eq!(
            job_of(None, "Slurm Array Task Job_id=100_3 (103) Name=a Ended"),
            Some(103)
        );
        assert_eq!(
            job_of(None, "Slurm Array Task Job_id=100_0 (101) Name=a Ended"),
            Some(101)
        );
        // An array summary is about many jobs: none.
        assert_eq!(
            job_of(None, "Slurm Array Summary Job_id=100_* (100) Name=a Ended"),
            None
        );
        assert_eq!(
            job_of(
                Some("100"),
                "Slurm Array Summary Job_id=100_* (100) Name=a Ended"
            ),
            None
        );
        for bad in [
            "Slurm Job_id= Name=a Ended",
            "Slurm Job_id=12a Name=a Ended",
            "Slurm Job_id=-1 Name=a",
            "Slurm Job_id=0 Name=a",
            "Slurm Job_id=99999999999 Name=a",
            "Slurm Job_id=12Name=a",
            "Slurm Job_id=12 Nom=a",
            "Re: Slurm Job_id=12 Name=a",
            "Slurm Array Task Job_id=1_x (3) Name=a",
            "Slurm Array Task Job_id=1_2 (3)Name=a",
            "",
        ] {
            assert_eq!(job_of(None, bad), None, "{bad}");
        }
    }

    /// A row as sacct prints it: `tres` is its AllocTRES.
    fn row(job: u32, state: &str, tres: &str, field: &str) -> JobRow {
        let d = "|";
        let line = format!("{job}{d}u{d}a{d}p{d}{state}{d}10{d}{tres}{d}n1{d}{field}\n");
        report::rows(line.as_bytes(), d).unwrap().remove(0)
    }

    fn segment(wh: f64, co2e_g: f64, nodes: u32, parts: u32) -> Segment {
        let mut seg = Segment {
            meta: Meta {
                intensity: GramsPerKwh(475.0),
                pue: 1.58,
                expected_nodes: nodes,
            },
            parts: Default::default(),
            compact: false,
        };
        for i in 0..parts {
            let node = format!("n{i}");
            seg.parts.insert(
                node.clone(),
                NodePart {
                    coverage: Some(1.0),
                    ..NodePart::new(node, wh, 2, co2e_g, Method::Counter, (1.0, 11.0))
                },
            );
        }
        seg
    }

    fn field_of(seg: &Segment) -> String {
        let mut field = String::new();
        for p in seg.parts.values() {
            field = crate::record::merge(&field, p, &seg.meta, None);
        }
        field
    }

    #[test]
    fn lookup_takes_the_run_that_ended() {
        let seg = segment(1.5, 1.125, 1, 1);
        let field = field_of(&seg);
        assert_eq!(lookup(5, &[]), Lookup::NoRow);
        assert_eq!(
            lookup(5, &[row(5, "COMPLETED", "cpu=1", "")]),
            Lookup::NoGpus
        );
        assert_eq!(
            lookup(5, &[row(5, "COMPLETED", "gres/gpu=2", "")]),
            Lookup::NotYet
        );
        let Lookup::Record {
            seg: got,
            complete,
            shared,
        } = lookup(
            5,
            &[
                row(5, "REQUEUED", "gres/gpu=2", &field),
                row(5, "PENDING", "gres/gpu=2", ""),
            ],
        )
        else {
            panic!("the requeued run's record");
        };
        assert!(complete && !shared);
        assert_eq!(got.gpu_wh(), 1.5);
        // Another job's row is not this job's.
        assert_eq!(
            lookup(6, &[row(5, "COMPLETED", "gres/gpu=2", &field)]),
            Lookup::NoRow
        );
        // Only a started row counts: a pending one is not the run that ended.
        assert_eq!(
            lookup(5, &[row(5, "PENDING", "gres/gpu=2", "")]),
            Lookup::NoRow
        );
    }

    #[test]
    fn gpu_jobs_are_known_by_any_gpu_tres_or_by_their_record() {
        // Shards or MPS shares alone, or GPUs of a type only: a GPU job, its record is
        // waited for.
        for tres in [
            "cpu=1,gres/shard=2,node=1",
            "cpu=1,gres/mps=30,node=1",
            "cpu=1,gres/gpu:a100=1,node=1",
            "cpu=1,gres/shard:a100=1,node=1",
        ] {
            assert_eq!(
                lookup(5, &[row(5, "COMPLETED", tres, "")]),
                Lookup::NotYet,
                "{tres}"
            );
        }
        // gpumem and gpuutil are not GPUs; a 0 is none.
        for tres in ["cpu=1,gres/gpumem=8G", "gres/gpuutil=5,cpu=1", "gres/gpu=0"] {
            assert_eq!(
                lookup(5, &[row(5, "COMPLETED", tres, "")]),
                Lookup::NoGpus,
                "{tres}"
            );
        }
        // No GPU in AllocTRES (AccountingStorageTRES without gres/gpu), but a record: the
        // record says the job had GPUs.
        let seg = segment(1.5, 1.125, 1, 1);
        let Lookup::Record { seg: got, .. } =
            lookup(5, &[row(5, "COMPLETED", "cpu=2,node=1", &field_of(&seg))])
        else {
            panic!("the record");
        };
        assert_eq!(got.gpus(), 2);
        // Shards alone: the record is marked shared.
        let Lookup::Record { shared, .. } = lookup(
            5,
            &[row(5, "COMPLETED", "cpu=2,gres/shard=2", &field_of(&seg))],
        ) else {
            panic!("the record");
        };
        assert!(shared);
    }

    /// A fake clock: each sleep moves it on.
    fn run_wait(wait_s: u64, answers: Vec<Lookup>) -> (Lookup, u32, Duration) {
        let now = Cell::new(Duration::ZERO);
        let calls = Cell::new(0u32);
        let got = wait_for(
            Duration::from_secs(wait_s),
            POLL,
            |_| {
                let i = calls.get() as usize;
                calls.set(calls.get() + 1);
                answers.get(i).cloned().unwrap_or(Lookup::NotYet)
            },
            || now.get(),
            |d| now.set(now.get() + d),
        );
        (got, calls.get(), now.get())
    }

    fn record(nodes: u32, parts: u32) -> Lookup {
        Lookup::Record {
            seg: segment(1.0, 1.0, nodes, parts),
            complete: parts >= nodes,
            shared: false,
        }
    }

    #[test]
    fn the_wait_is_bounded_and_ends_early() {
        // A GPU job's record that never comes: asked at 0, 2, ..., 10 s, then gives up at 10 s.
        let (got, calls, spent) = run_wait(10, vec![]);
        assert_eq!(got, Lookup::NotYet);
        assert_eq!((calls, spent), (6, Duration::from_secs(10)));
        // A wait that is not a multiple of the poll: the last sleep is shorter.
        let (_, calls, spent) = run_wait(5, vec![]);
        assert_eq!((calls, spent), (4, Duration::from_secs(5)));
        // A complete record on the third ask stops the wait there.
        let whole = record(1, 1);
        let (got, calls, spent) = run_wait(30, vec![Lookup::NotYet, Lookup::NotYet, whole.clone()]);
        assert_eq!((got, calls, spent), (whole, 3, Duration::from_secs(4)));
        // A partial record is kept to the end and given if nothing better comes.
        let partial = record(2, 1);
        let (got, _, spent) = run_wait(4, vec![partial.clone(), Lookup::NotYet]);
        assert_eq!((got, spent), (partial.clone(), Duration::from_secs(4)));
        // Zero wait: one look.
        let (_, calls, spent) = run_wait(0, vec![]);
        assert_eq!((calls, spent), (1, Duration::ZERO));
    }

    #[test]
    fn nothing_to_wait_for_ends_the_wait_at_once() {
        for end in [
            Lookup::NoGpus,
            Lookup::NoRow,
            Lookup::Failed("sacct: exit status 1".into()),
        ] {
            // At the first answer: no sleep at all.
            let (got, calls, spent) = run_wait(90, vec![end.clone()]);
            assert_eq!((got, calls, spent), (end.clone(), 1, Duration::ZERO));
            // After a wait for a GPU job's record: at once too.
            let (got, calls, spent) = run_wait(90, vec![Lookup::NotYet, end.clone()]);
            assert_eq!((got, calls, spent), (end.clone(), 2, POLL));
            // A partial record read before still stands.
            let partial = record(2, 1);
            let (got, calls, _) = run_wait(90, vec![partial.clone(), end.clone()]);
            assert_eq!((got, calls), (partial, 2));
        }
        assert_eq!(footprint(4, &Lookup::NoRow, 0, false), None);
        assert_eq!(footprint(4, &Lookup::Failed("x".into()), 0, false), None);
    }

    #[test]
    fn sacct_calls_are_short() {
        let s = Duration::from_secs;
        assert_eq!(sacct_timeout(15, s(30)), s(10));
        assert_eq!(sacct_timeout(3, s(30)), s(3));
        assert_eq!(sacct_timeout(600, s(5)), s(5));
        assert_eq!(sacct_timeout(15, s(0)), s(2));
        assert_eq!(sacct_timeout(1, s(0)), s(1));
        assert_eq!(sacct_timeout(0, s(30)), s(1));
    }

    #[test]
    fn footprint_text() {
        assert_eq!(footprint(4, &Lookup::NoGpus, 0, false), None);
        let not_yet = footprint(4, &Lookup::NotYet, 30, false).unwrap();
        assert!(
            not_yet.contains("Not recorded yet (waited 30 s for job 4's record)"),
            "{not_yet}"
        );
        let seg = segment(1.5, 1.125, 2, 2);
        let co2e = seg.co2e_g();
        let text = footprint(
            9,
            &Lookup::Record {
                seg,
                complete: true,
                shared: false,
            },
            3,
            false,
        )
        .unwrap();
        assert!(
            text.starts_with("-- \nGPU footprint (spank-carbon)\n"),
            "{text}"
        );
        assert!(
            text.contains("GPU energy: 3 Wh   CO2e: 2.25 g (grid 475 gCO2e/kWh x PUE 1.58)"),
            "{text}"
        );
        let first = report::everyday(co2e, false).remove(0);
        assert!(text.contains(&format!("That is {first}.")), "{text}");
        assert!(
            text.contains("GPU energy counters (NVML) on 2 node(s), 4 GPU(s)"),
            "{text}"
        );
        assert!(text.contains("spank-carbon report -j 9"), "{text}");
        assert!(!text.contains("So far"), "{text}");
        let partial = footprint(
            9,
            &Lookup::Record {
                seg: segment(1.0, 1.0, 3, 1),
                complete: false,
                shared: false,
            },
            30,
            true,
        )
        .unwrap();
        assert!(
            partial.contains("So far 1 of the job's 3 nodes have reported (waited 30 s)"),
            "{partial}"
        );
        assert!(partial.contains(" lbs "), "imperial: {partial}");
    }

    #[test]
    fn shared_gpus_count_as_gpu_equivalents() {
        use crate::record::ShareRule;
        // Two nodes: one with a quarter of a board (2 of its 8 shards), one with a whole
        // board and 30% of another (MPS).
        let mut seg = segment(1.0, 1.0, 2, 2);
        let mut parts = seg.parts.values_mut();
        let a = parts.next().unwrap();
        a.gpus = 1;
        a.share = Some(ShareRule {
            rule: "shard".into(),
            gpus: 0.25,
        });
        let b = parts.next().unwrap();
        b.share = Some(ShareRule {
            rule: "mps".into(),
            gpus: 1.3,
        });
        assert_eq!(
            gpus_text(&seg, true),
            "1.55 GPU-equivalent(s) of shared GPUs"
        );
        let text = footprint(
            9,
            &Lookup::Record {
                seg: seg.clone(),
                complete: true,
                shared: true,
            },
            0,
            false,
        )
        .unwrap();
        assert!(
            text.contains("on 2 node(s), 1.55 GPU-equivalent(s) of shared GPUs;"),
            "{text}"
        );
        // Shards in AllocTRES but no share in the record: no number of boards.
        for p in seg.parts.values_mut() {
            p.share = None;
        }
        assert_eq!(gpus_text(&seg, true), "shared GPU(s)");
        assert_eq!(gpus_text(&seg, false), "3 GPU(s)");
    }

    #[test]
    fn body_composition() {
        assert_eq!(compose(b"", None), b"");
        assert_eq!(compose(b"hello", None), b"hello");
        assert_eq!(compose(b"", Some("F\n")), b"F\n");
        assert_eq!(compose(b"hello", Some("F\n")), b"hello\n\nF\n");
        assert_eq!(compose(b"hello\n", Some("F\n")), b"hello\n\nF\n");
        // Bytes that are not UTF-8 pass unchanged.
        assert_eq!(compose(b"\xff\x00", Some("F\n")), b"\xff\x00\n\nF\n");
    }

    #[test]
    fn mail_prog_from_a_broken_file() {
        assert_eq!(
            mail_prog_line("x = [\nmail_prog = \"/usr/bin/mail.mailutils\"\n[[\n").as_deref(),
            Some("/usr/bin/mail.mailutils")
        );
        assert_eq!(mail_prog_line("mail_prog_x = \"/a\"\n"), None);
        assert_eq!(
            mail_prog_line("mail_prog=/a\nmail_prog = \"/b\"").as_deref(),
            Some("/b")
        );
        // A relative one is then refused by Config::set (the default stays).
        let mut c = Config::default();
        assert!(c
            .set(
                "mail_prog",
                &mail_prog_line("mail_prog = \"mail\"").unwrap()
            )
            .is_err());
        assert_eq!(
            c.mail_prog,
            Path::new(crate::core::config::DEFAULT_MAIL_PROG)
        );
    }

    #[test]
    fn subject_is_the_argument_after_dash_s() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            subject_of(&a(&["-s", "Slurm Job_id=1 Name=x Ended", "u"])),
            "Slurm Job_id=1 Name=x Ended"
        );
        assert_eq!(subject_of(&a(&["u"])), "");
        assert_eq!(subject_of(&a(&["-s"])), "");
    }
}
