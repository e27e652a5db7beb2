//! A big job end to end: 64 nodes (several slurmd on one host, each with its own state
//! directory through `state_dir=.../%n` and so its own courier), one GPU each. Its record
//! must be whole (nodes=64 of=64, in the compact form of jobs over 32 nodes), match the
//! fake GPUs' truth on every node, and be in accounting within 30 s of the job's end.
//!
//! Needs a cluster of at least 64 nodes: `SC_NODES=64 scripts/test.sh`, or by hand
//! `SC_NODES=64 scripts/cluster.sh start` and `cargo test --release --test big --
//! --include-ignored`. With fewer nodes the test fails, unless SC_ALLOW_SMALL=1 says
//! that skipping it is intended (it then says so on stderr).

mod common;

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

/// Nodes the job spans in the test.
const NODES_NEEDED: usize = 64;

/// Nodes the job spans: 64, or SC_BIG_JOB_NODES (scripts/bench.sh measures 4, 16 and 64).
fn job_nodes() -> usize {
    std::env::var("SC_BIG_JOB_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(NODES_NEEDED)
}
/// How long after the job's end its whole record may take.
const WITHIN_S: f64 = 30.0;

/// The job's end in accounting, unix seconds (sacct prints whole seconds, rounded down:
/// the latency measured from it is at most a second long, never short).
fn end_unix(job: u32) -> f64 {
    let out = Command::new("/usr/bin/sacct")
        .args([
            "-n",
            "-P",
            "-X",
            "-o",
            "JobIDRaw,End",
            "-j",
            &job.to_string(),
        ])
        .env("SLURM_TIME_FORMAT", "%s")
        .output()
        .unwrap();
    assert!(out.status.success(), "sacct: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{job}|");
    let end = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("job {job} not in sacct: {text}"));
    end.trim()
        .parse()
        .unwrap_or_else(|_| panic!("job {job}: End {end:?} is not unix seconds"))
}

#[test]
#[ignore = "needs the local Slurm cluster with 64 nodes: SC_NODES=64 scripts/test.sh"]
fn sixty_four_node_job_gets_its_whole_record_within_30_s() {
    let nodes = nodes();
    let want_nodes = job_nodes();
    if nodes.len() < want_nodes {
        let msg = format!(
            "tests/big.rs needs a cluster of {NODES_NEEDED} nodes or more, this one has {} \
             (start it with SC_NODES={NODES_NEEDED} scripts/cluster.sh start)",
            nodes.len()
        );
        if std::env::var("SC_ALLOW_SMALL").as_deref() == Ok("1") {
            eprintln!("SKIPPED (SC_ALLOW_SMALL=1): {msg}");
            return;
        }
        panic!("{msg}; SC_ALLOW_SMALL=1 skips this test");
    }
    standard_setup();
    // The stagger between nodes' first writes: SC_BIG_STAGGER_MS, else the tests' 300 ms.
    let stagger = std::env::var("SC_BIG_STAGGER_MS").ok();
    if let Some(ms) = &stagger {
        set_plugstack(&[&format!("stagger_ms={ms}")]);
    }
    let n = format!("-N{want_nodes}");
    let job = submit(&[&n, "--gres=gpu:1"], 5.0);
    // Poll the field from the start: the record is whole once all 64 parts are in it.
    let deadline = Instant::now() + Duration::from_secs(600);
    let (text, whole_at) = loop {
        let text = field(job, "SystemComment");
        let whole = parse_rec(&text).is_some_and(|r| {
            r.top.get("nodes") == Some(&want_nodes.to_string())
                && r.top.get("of") == Some(&want_nodes.to_string())
        });
        if whole && !in_queue(job) {
            break (text, now());
        }
        assert!(
            Instant::now() < deadline,
            "job {job}: no whole record in 600 s (queued: {}, pending: {:?}): {text}",
            in_queue(job),
            pending_of(job)
        );
        sleep(Duration::from_millis(250));
    };
    assert_eq!(job_state(job), "COMPLETED");
    let latency = whole_at - end_unix(job);
    eprintln!(
        "job {job} ({want_nodes} nodes, 1 GPU each): whole record {latency:.1} s after the \
         job's end in accounting ({} bytes)",
        text.len()
    );
    let rec = parse_rec(&text).unwrap();
    assert_eq!(
        rec.top.contains_key("parts") && rec.top.contains_key("hostlist"),
        want_nodes > 32,
        "a job over 32 nodes, and only such a job, gets the compact form: {text}"
    );
    assert_eq!(rec.nodes.len(), want_nodes, "{text}");
    // The nodes Slurm gave the job (from its own `scontrol show job -d`), and on each
    // the GPU the plugin must have read.
    let allocated = allocated_minors(job);
    let ran_on: Vec<&str> = allocated.keys().map(String::as_str).collect();
    assert_eq!(
        ran_on.len(),
        want_nodes,
        "Slurm's allocation: {allocated:?}"
    );
    assert!(ran_on.iter().all(|n| nodes.iter().any(|c| c == n)));
    check_record(job, &rec, &ran_on, 1);
    assert_no_node_drained();
    // Wait for every node's courier to be done, then count its accounting calls.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending_of(job).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", pending_of(job));
        sleep(Duration::from_millis(250));
    }
    let prefix = format!("job {job}.");
    let calls: Vec<(u32, u32)> = spank_log()
        .lines()
        .filter(|l| l.contains(&prefix) && l.contains(": record in "))
        .filter_map(|l| {
            let inner = l.split_once(": record in ")?.1.split_once(" (")?.1;
            let (w, r) = inner.split_once(" write(s), ")?;
            Some((w.parse().ok()?, r.split_once(' ')?.0.parse().ok()?))
        })
        .collect();
    assert_eq!(calls.len(), want_nodes, "one delivery per node");
    let (w, r): (Vec<u32>, Vec<u32>) = calls.into_iter().unzip();
    eprintln!(
        "accounting calls per node: sacctmgr writes mean {:.2} max {}, sacct reads mean {:.2} max {}",
        w.iter().sum::<u32>() as f64 / w.len() as f64,
        w.iter().max().unwrap(),
        r.iter().sum::<u32>() as f64 / r.len() as f64,
        r.iter().max().unwrap()
    );
    if stagger.is_some() {
        set_plugstack(&[]);
    }
    assert!(
        latency <= WITHIN_S,
        "job {job}: the whole record took {latency:.1} s after the job's end (limit {WITHIN_S} s)"
    );
}

/// The parser this file relies on reads the compact form: every node's part, the head
/// tokens and the text around the segment (no cluster needed).
#[test]
fn the_test_parser_reads_the_compact_form() {
    use spank_carbon::record::{merge, part_co2e, Meta, Method, NodePart};
    use spank_carbon::units::GramsPerKwh;
    let meta = Meta {
        intensity: GramsPerKwh(400.0),
        pue: 1.2,
        expected_nodes: NODES_NEEDED as u32,
    };
    let wh_of = |i: usize| 0.25 + i as f64 / 997.0;
    let mut text = "site-tag".to_string();
    for i in 1..=NODES_NEEDED {
        let wh = wh_of(i);
        let gpus = 1 + (i % 3 == 0) as u32;
        let window = (1000.0, 1005.0 + i as f64 / 10.0);
        let part = NodePart {
            coverage: Some(1.0),
            peak_w: Some(100.0),
            intensity_src: Some("fixed".into()),
            ..NodePart::new(
                format!("node{i}"),
                wh,
                gpus,
                part_co2e(wh, &meta),
                Method::Counter,
                window,
            )
        };
        text = merge(&text, &part, &meta, None);
    }
    let rec = parse_rec(&text).unwrap();
    assert!(
        rec.top.contains_key("parts") && rec.top.contains_key("hostlist"),
        "{text}"
    );
    assert!(rec.nodes.keys().all(|n| !n.is_empty()));
    assert_eq!(rec.nodes.len(), NODES_NEEDED, "{text}");
    assert_eq!(rec.num("nodes") as usize, NODES_NEEDED);
    assert_eq!(rec.num("of") as usize, NODES_NEEDED);
    assert_eq!(rec.before, "site-tag ");
    assert_eq!(rec.after, "");
    let mut total = 0.0;
    for i in 1..=NODES_NEEDED {
        let node = format!("node{i}");
        // Parts keep 0.1 mWh (and the compact form 6 significant figures).
        let (got, want) = (rec.node_num(&node, "wh"), wh_of(i));
        assert!(
            (got - want).abs() <= 5e-5 + want * 5e-6,
            "{node}: {got} vs {want}"
        );
        assert_eq!(
            rec.nodes[&node]["gpus"],
            (1 + (i % 3 == 0) as u32).to_string()
        );
        total += wh_of(i);
    }
    let gpu_wh = rec.num("gpu_wh");
    assert!(
        (gpu_wh - total).abs() <= 5e-5 * (NODES_NEEDED + 1) as f64,
        "{gpu_wh} vs {total}"
    );
    // Node order: by number, each once.
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        node_order(names(&["node10", "node2", "node1", "node2", "node64"])),
        names(&["node1", "node2", "node10", "node64"])
    );
}
