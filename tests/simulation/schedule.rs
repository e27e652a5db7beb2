//! The random schedule: a seeded generator (splitmix64) and the scenarios drawn from
//! it: which jobs run on which nodes, when their epilogs leave records, how slurmdbd
//! misbehaves (see DESIGN-merge.md for the fault model).

use std::collections::BTreeMap;
use std::time::Duration;

use spank_carbon::accounting::Delivery;
use spank_carbon::core::config::Field;
use spank_carbon::record::{Meta, Method, NodePart};
use spank_carbon::slurm::{Differences, SlurmVersion};
use spank_carbon::units::GramsPerKwh;

use crate::slurmdbd::{Db, Faults, SimRow};
use crate::{secs, T};

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(self.below(span + 1))
    }
}

pub type Key = (u32, u64, String); // job, run start, node

pub fn key(d: &Delivery, run: u64) -> Key {
    (d.job, run, d.part.node.clone())
}

pub struct Expect {
    /// Every delivery, by the run it measured, with what must become of it.
    /// bool: must be refused (an older job's part of a reused id, or a part whose
    /// `jobid=` would also change an older array's tasks).
    pub parts: BTreeMap<Key, (Delivery, bool)>,
}

pub struct Scenario {
    pub db: Db,
    /// Per node: (arrives at, delivery, run).
    pub arrivals: Vec<Vec<(T, Delivery, u64)>>,
    pub expect: Expect,
    /// The couriers' `verify_after_s` (zero: no late check).
    pub verify_after: T,
}

/// `verify_after_s`'s default.
pub const VERIFY_AFTER: T = secs(300);

pub const POOL: usize = 64;
pub const BASE_UNIX: u64 = 1_790_000_000;

pub fn node_name(i: usize) -> String {
    format!("gpu{:04}", i + 1)
}

pub fn make_part(rng: &mut Rng, node: &str, start: f64, end: f64) -> NodePart {
    let wh = rng.below(999_999) as f64 / 10_000.0 + 0.0001;
    let gpus = 1 + rng.below(8) as u32;
    let method = if rng.chance(0.8) {
        Method::Counter
    } else {
        Method::Sampled
    };
    NodePart::new(node, wh, gpus, wh * 0.75, method, (start, end)).rounded()
}

pub fn scenario(seed: u64, sizes: Option<&[usize]>) -> Scenario {
    let mut rng = Rng(seed);
    let faults = if sizes.is_some() {
        Faults::none()
    } else {
        Faults::random(&mut rng)
    };
    // The release slurmdbd behaves as, from a generator of its own (the scenarios drawn
    // from `rng` stay as they were): 22.05, where `jobid=N` also changes an older array's
    // tasks, or 24.11, where it does not.
    let mut own = Rng(seed ^ 0xa77a_11d5);
    let release = if own.chance(0.5) {
        SlurmVersion::new(24, 11, 5)
    } else {
        SlurmVersion::new(22, 5, 8)
    };
    let diffs = Differences::for_version(release);
    let mut db = Db {
        jobs: BTreeMap::new(),
        others: BTreeMap::new(),
        diffs,
        seq: 0,
        pauses: vec![],
        faults,
        rng: Rng(seed ^ 0x5eed),
        reads: 0,
        writes: 0,
        violations: vec![],
        read_ms: 100,
        write_ms: 270,
    };
    let pool = sizes.map_or(POOL, |s| s.iter().copied().max().unwrap_or(1));
    let nodes: Vec<String> = (0..pool).map(node_name).collect();
    // Each node's clock is off by up to 20 s either way.
    let offset: Vec<f64> = (0..pool)
        .map(|_| {
            if sizes.is_some() {
                0.0
            } else {
                rng.below(40_001) as f64 / 1000.0 - 20.0
            }
        })
        .collect();
    let mut arrivals: Vec<Vec<(T, Delivery, u64)>> = vec![vec![]; pool];
    let mut expect = Expect {
        parts: BTreeMap::new(),
    };
    if sizes.is_none() && rng.chance(0.3) {
        // slurmdbd paused or restarted for a while, once or twice.
        for _ in 0..1 + rng.below(2) {
            let a = rng.between(secs(0), secs(120));
            let b = a + rng.between(secs(1), secs(90));
            db.pauses.push((a, b));
        }
    }
    let job_sizes: Vec<usize> = match sizes {
        Some(s) => s.to_vec(),
        None => (0..1 + rng.below(6))
            .map(|_| match rng.below(80) {
                0..=34 => 1 + rng.below(2) as usize,
                35..=69 => 2 + rng.below(7) as usize,
                70..=78 => 9 + rng.below(24) as usize,
                _ => 33 + rng.below(32) as usize,
            })
            .collect(),
    };
    for (j, &n) in job_sizes.iter().enumerate() {
        let job = 1000 + j as u32;
        let first = rng.below((pool - n) as u64 + 1) as usize;
        let names: Vec<String> = nodes[first..first + n].to_vec();
        let kind = if sizes.is_some() { 0 } else { rng.below(10) };
        let submit = BASE_UNIX + j as u64 * 100_000;
        let start1 = submit + 10;
        let end1 = start1 + 300 + rng.below(10_000);
        let bench = sizes.is_some();
        // The bench: every epilog at once, as the completion record arrives.
        let ended1 = if bench {
            T::ZERO
        } else {
            rng.between(secs(0), secs(30))
        };
        let mut rows = Vec::new();
        // (run start, run end, completion in accounting)
        let mut runs: Vec<(u64, u64, T, bool)> = Vec::new();
        let initial = if rng.chance(0.3) {
            "site-tag=x".to_string()
        } else {
            String::new()
        };
        // Whether this job's parts must be refused: its id was an older array's, and
        // sacctmgr's `jobid=` would change that array's tasks too.
        let mut refuse_new = false;
        if kind == 9 {
            // Reused id: an older, unrelated job had this id; its late parts must be
            // refused, and it must never get the new job's. Half the time it was an array
            // (its own row `N_T`, its other tasks with ids of their own, now and then
            // below N: ids wrapped at MaxJobId), whose rows must never change.
            let old_submit = BASE_UNIX - 5_000_000;
            let array = own.chance(0.5);
            let mut old_id = job.to_string();
            if array {
                let tasks = 1 + own.below(3) as u32;
                let wrapped = own.chance(0.25);
                old_id = format!("{job}_{tasks}");
                let others = (0..tasks)
                    .map(|t| {
                        let raw = if wrapped { 10 + t } else { job + 500 + t };
                        let row = SimRow {
                            id: format!("{job}_{t}"),
                            submit: old_submit,
                            start: old_submit + 10,
                            end: old_submit + 900,
                            end_state: "COMPLETED",
                            created_at: T::ZERO,
                            ended_at: T::ZERO,
                            initial: format!("old-task-{t}"),
                            landings: vec![],
                        };
                        (raw, row)
                    })
                    .collect();
                db.others.insert(job, others);
                refuse_new = !diffs.jobid_newest_only || wrapped;
            }
            rows.push(SimRow {
                id: old_id,
                submit: old_submit,
                start: old_submit + 10,
                end: old_submit + 900,
                end_state: "COMPLETED",
                created_at: T::ZERO,
                ended_at: T::ZERO,
                initial: "old-site-text=1".into(),
                landings: vec![],
            });
            runs.push((old_submit + 10, old_submit + 900, T::ZERO, true));
        }
        rows.push(SimRow {
            id: job.to_string(),
            submit,
            start: start1,
            end: end1,
            end_state: if kind == 8 { "REQUEUED" } else { "COMPLETED" },
            created_at: T::ZERO,
            ended_at: ended1,
            initial: initial.clone(),
            landings: vec![],
        });
        runs.push((start1, end1, ended1, false));
        if kind == 8 {
            // Requeued: the next run's row appears some time after this one ended
            // (often after some of this run's parts are in).
            let tight = rng.chance(0.3);
            let created = ended1
                + if tight {
                    rng.between(secs(0), secs(3))
                } else {
                    rng.between(secs(0), secs(40))
                };
            let submit2 = end1 + 1;
            let start2 = end1 + 25;
            let end2 = start2 + 300 + rng.below(10_000);
            // Sometimes the next run fails at once (its completion record right after
            // its row), so its nodes write while this run's are still writing.
            let ended2 = if tight {
                created + rng.between(secs(0), secs(2))
            } else {
                created + rng.between(secs(5), secs(60))
            };
            rows.push(SimRow {
                id: job.to_string(),
                submit: submit2,
                start: start2,
                end: end2,
                end_state: "COMPLETED",
                created_at: created,
                ended_at: ended2,
                initial: String::new(),
                landings: vec![],
            });
            runs.push((start2, end2, ended2, false));
        }
        db.jobs.insert(job, rows);
        for &(rstart, rend, ended, old) in &runs {
            // The old job of a reused id ran on some other nodes.
            let run_nodes: Vec<String> = if old {
                names
                    .iter()
                    .take(1 + rng.below(n as u64) as usize)
                    .cloned()
                    .collect()
            } else {
                names.clone()
            };
            for name in &run_nodes {
                let i = nodes.iter().position(|x| x == name).expect("in the pool");
                let part = make_part(
                    &mut rng,
                    name,
                    rstart as f64 + 1.0 + offset[i] + 0.123,
                    rend as f64 - 0.5 + offset[i],
                );
                let d = Delivery {
                    job,
                    field: Field::System,
                    part,
                    meta: Meta {
                        intensity: GramsPerKwh(475.0),
                        pue: 1.58,
                        expected_nodes: n as u32,
                    },
                    nodes: if old {
                        run_nodes.clone()
                    } else {
                        names.clone()
                    },
                    sluid: None,
                };
                let at = if bench {
                    T::ZERO
                } else if old {
                    rng.between(secs(0), secs(60))
                } else if kind == 8 && ended > ended1 {
                    // The next run's epilogs, as soon as it ended.
                    ended + rng.between(secs(0), secs(2))
                } else {
                    ended.saturating_sub(secs(5)) + rng.between(secs(0), secs(20))
                };
                arrivals[i].push((at, d.clone(), rstart));
                if sizes.is_none() && rng.chance(0.1) {
                    // The epilog ran twice: the same part again, later.
                    let again = at + rng.between(secs(0), secs(120));
                    arrivals[i].push((again, d.clone(), rstart));
                }
                expect.parts.insert(key(&d, rstart), (d, old || refuse_new));
            }
        }
    }
    for a in &mut arrivals {
        a.sort_by_key(|x| x.0);
    }
    Scenario {
        db,
        arrivals,
        expect,
        verify_after: VERIFY_AFTER,
    }
}
