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

/// Nodes the job spans.
const NODES_NEEDED: usize = 64;
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
    if nodes.len() < NODES_NEEDED {
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
    let n = format!("-N{NODES_NEEDED}");
    let job = submit(&[&n, "--gres=gpu:1"], 5.0);
    // Poll the field from the start: the record is whole once all 64 parts are in it.
    let deadline = Instant::now() + Duration::from_secs(600);
    let (text, whole_at) = loop {
        let text = field(job, "SystemComment");
        let whole = parse_rec(&text).is_some_and(|r| {
            r.top.get("nodes").map(String::as_str) == Some("64")
                && r.top.get("of").map(String::as_str) == Some("64")
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
        "job {job} ({NODES_NEEDED} nodes, 1 GPU each): whole record {latency:.1} s after the \
         job's end in accounting ({} bytes)",
        text.len()
    );
    let rec = parse_rec(&text).unwrap();
    assert!(
        rec.top.contains_key("parts") && rec.top.contains_key("hostlist"),
        "a job over 32 nodes gets the compact form: {text}"
    );
    assert_eq!(rec.nodes.len(), NODES_NEEDED, "{text}");
    // The nodes Slurm gave the job (from its own `scontrol show job -d`), and on each
    // the GPU the plugin must have read.
    let allocated = allocated_minors(job);
    let ran_on: Vec<&str> = allocated.keys().map(String::as_str).collect();
    assert_eq!(
        ran_on.len(),
        NODES_NEEDED,
        "Slurm's allocation: {allocated:?}"
    );
    assert!(ran_on.iter().all(|n| nodes.iter().any(|c| c == n)));
    check_record(job, &rec, &ran_on, 1);
    assert_no_node_drained();
    assert!(pending_of(job).is_empty(), "{:?}", pending_of(job));
    assert!(
        latency <= WITHIN_S,
        "job {job}: the whole record took {latency:.1} s after the job's end (limit {WITHIN_S} s)"
    );
}
