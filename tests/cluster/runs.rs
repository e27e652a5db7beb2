//! Each run its own record, on the local Slurm cluster: a job its user requeues gets one
//! segment per run, each bound to its run and matching what the fake GPUs did in that
//! run. Run by scripts/test.sh (ignored by a plain `cargo test`: they need the cluster).

use std::time::{Duration, Instant};

use crate::common::*;

/// One row of `sacct -D -X`: (state, start, end) in unix seconds.
fn runs_of(job: u32) -> Vec<(String, u64, u64)> {
    let out = std::process::Command::new("/usr/bin/sacct")
        .env("SLURM_TIME_FORMAT", "%s")
        .args([
            "-n",
            "-P",
            "-D",
            "-X",
            "-j",
            &job.to_string(),
            "-o",
            "JobIDRaw,State,Start,End",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f.len() == 4 && f[0] == job.to_string()).then(|| {
                (
                    f[1].split(' ').next().unwrap().to_string(),
                    f[2].parse().unwrap_or(0),
                    f[3].parse().unwrap_or(0),
                )
            })
        })
        .collect()
}

/// Every segment of a field, by run.
fn segments(field: &str) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut rest = field;
    while let Some(at) = rest.find("spank-carbon/1 ") {
        let rec = parse_rec(&rest[at..]).unwrap();
        rest = &rest[at + "spank-carbon/1 ".len()..];
        out.push(rec);
    }
    out.sort_by_key(|r| r.top["run"].parse::<u64>().unwrap());
    out
}

/// Energy the fake GPUs of `node` counted for `job`, per sampler process (one per run on
/// the node), oldest run first: Wh by counter, first to last reading of each GPU.
fn truth_wh_per_run(job: u32, node: &str) -> Vec<f64> {
    let job_s = job.to_string();
    let text = std::fs::read_to_string(fake_dir().join("reads.log")).unwrap_or_default();
    // pid -> (first reading, minor -> (lowest mJ, highest mJ))
    type Span = std::collections::BTreeMap<u32, (u64, u64)>;
    let mut by_pid: std::collections::BTreeMap<u32, (u128, Span)> = Default::default();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 7 || f[5] != "energy" || f[2] != job_s || f[1] != node {
            continue;
        }
        let (ns, pid, minor, mj): (u128, u32, u32, u64) = (
            f[0].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
            f[6].parse().unwrap(),
        );
        let e = by_pid.entry(pid).or_insert((ns, Default::default()));
        e.0 = e.0.min(ns);
        let m = e.1.entry(minor).or_insert((mj, mj));
        m.0 = m.0.min(mj);
        m.1 = m.1.max(mj);
    }
    let mut runs: Vec<(u128, f64)> = by_pid
        .into_values()
        .map(|(first, minors)| {
            (
                first,
                minors.values().map(|(a, b)| (b - a) as f64 / 3.6e6).sum(),
            )
        })
        .collect();
    runs.sort_by_key(|r| r.0);
    runs.into_iter().map(|r| r.1).collect()
}

fn requeue_by_user(first: &str, second: &str) {
    standard_setup();
    // Run 1 is long (the user requeues it after a few seconds); run 2 is short.
    let script = "if [ \"${SLURM_RESTART_COUNT:-0}\" = 0 ]; then sleep 60; else sleep 4; fi";
    let out = run(
        "/usr/sbin/runuser",
        &[
            "-u",
            "scuser",
            "--",
            "/usr/bin/sbatch",
            "--parsable",
            "--requeue",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "-A",
            "research",
            "-N1",
            "-w",
            first,
            "--gres=gpu:2",
            "--wrap",
            script,
        ],
    );
    let job: u32 = out.trim().parse().unwrap();
    wait_running(job);
    std::thread::sleep(Duration::from_secs(5));
    // On the same node the user holds the requeued job until run 1 is done there: slurmd
    // 22.05 skips the prolog of a run that it launches in the same second as the previous
    // run's end (its credential cache still holds the job), and that run goes unmeasured.
    let verb = if first == second {
        "requeuehold"
    } else {
        "requeue"
    };
    run(
        "/usr/sbin/runuser",
        &[
            "-u",
            "scuser",
            "--",
            "/usr/bin/scontrol",
            verb,
            &job.to_string(),
        ],
    );
    // Slurm holds a requeued job back for a while: let it go at once, where the test says.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = run(
            "/usr/bin/squeue",
            &["-h", "-j", &job.to_string(), "-o", "%T"],
        );
        if q.trim() == "PENDING" {
            break;
        }
        assert!(Instant::now() < deadline, "job {job} not requeued: {q}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Run 1's epilog and record first: slurmd 22.05 skips the prolog of a run that
    // starts on a node before the previous run's epilog is done there.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending_of(job).is_empty() || !spank_log().contains(&format!("job {job}.{first}@")) {
        assert!(
            Instant::now() < deadline,
            "job {job}: run 1's record not delivered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And a new second: slurmd refuses a run whose credential is not newer, to the second,
    // than the revocation of the previous run's ("already killed"), or skips its prolog.
    std::thread::sleep(Duration::from_secs(2));
    let id = format!("jobid={job}");
    let nodes = format!("ReqNodeList={second}");
    run("/usr/bin/scontrol", &["update", &id, &nodes]);
    if first == second {
        run(
            "/usr/sbin/runuser",
            &[
                "-u",
                "scuser",
                "--",
                "/usr/bin/scontrol",
                "release",
                &job.to_string(),
            ],
        );
    }
    run("/usr/bin/scontrol", &["update", &id, "StartTime=now"]);
    assert_eq!(wait_job(job), "COMPLETED");
    // Each run's segment is in its own row, or (when the job was requeued before it
    // arrived) in the job's latest row: each run once, wherever it stands.
    let deadline = Instant::now() + Duration::from_secs(90);
    let segs = loop {
        let mut by_run: std::collections::BTreeMap<u64, Rec> = Default::default();
        for row in all_rows(job).iter().filter(|r| r.0 == job) {
            for seg in segments(&row.4) {
                let run = seg.top["run"].parse::<u64>().unwrap();
                if let Some(seen) = by_run.get(&run) {
                    assert_eq!(seen.nodes, seg.nodes, "run {run} differs between rows");
                }
                by_run.insert(run, seg);
            }
        }
        if pending_of(job).is_empty() && by_run.len() == 2 {
            break by_run.into_values().collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "job {job}: not two runs: {:?} pending {:?}",
            all_rows(job),
            pending_of(job)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let runs = runs_of(job);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].0, "REQUEUED", "{runs:?}");
    let text = format!("{segs:?}");
    for (i, (seg, node)) in segs.iter().zip([first, second]).enumerate() {
        // Bound to its own run, measured on that run's node, and right.
        assert_eq!(seg.num("run") as u64, runs[i].1, "segment {i} of {text}");
        assert_eq!(seg.nodes.keys().collect::<Vec<_>>(), [node], "{text}");
        // The k-th run on this node is its k-th sampler.
        let k = if i == 1 && first == second { 1 } else { 0 };
        let per_run = truth_wh_per_run(job, node);
        assert_eq!(
            per_run.len(),
            if first == second { 2 } else { 1 },
            "samplers on {node}"
        );
        let want = per_run[k];
        assert!(
            want > 0.0001,
            "run {i}: the GPUs did not run (truth {want} Wh)"
        );
        assert_close(
            &format!("job {job} run {i} wh"),
            seg.num("gpu_wh"),
            want,
            0.01,
        );
        assert_eq!(seg.num("gpus"), 2.0);
    }
    // The report counts both runs, once each.
    let report = run(
        "/usr/local/sbin/spank-carbon",
        &["report", "-j", &job.to_string()],
    );
    assert!(report.contains("Runs: 2"), "{report}");
    let total: f64 = segs.iter().map(|s| s.num("gpu_wh")).sum();
    assert!(
        report.contains(&format!(
            "GPU energy: {} Wh",
            spank_carbon::record::num(total, 4)
        )),
        "{report}"
    );
    assert_no_node_drained();
}
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn requeued_by_its_user_on_the_same_node_each_run_gets_its_record() {
    requeue_by_user("node2", "node2");
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn requeued_by_its_user_onto_another_node_each_run_gets_its_record() {
    requeue_by_user("node1", "node3");
}

/// Rows of `sacct -D -X -j <id>` for one raw id and everything the selector catches:
/// (JobIDRaw, JobID, Submit, State, SystemComment).
fn all_rows(id: u32) -> Vec<(u32, String, u64, String, String)> {
    let out = std::process::Command::new("/usr/bin/sacct")
        .env("SLURM_TIME_FORMAT", "%s")
        .args([
            "-n",
            "-P",
            "--delimiter=#~#",
            "-D",
            "-X",
            "-j",
            &id.to_string(),
            "-o",
            "JobIDRaw,JobID,Submit,State,SystemComment",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(5, "#~#").collect();
            (f.len() == 5).then(|| {
                (
                    f[0].parse().unwrap(),
                    f[1].to_string(),
                    f[2].parse().unwrap(),
                    f[3].to_string(),
                    f[4].to_string(),
                )
            })
        })
        .collect()
}

fn highest_job_id() -> u32 {
    let out = run(
        "/usr/bin/sacct",
        &[
            "-a",
            "-n",
            "-P",
            "-X",
            "-D",
            "-S",
            "2000-01-01",
            "-o",
            "JobIDRaw",
        ],
    );
    out.lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

fn submit_gpu(args: &[&str], secs: u32) -> u32 {
    let mut full: Vec<String> = [
        "--parsable",
        "-o",
        "/dev/null",
        "-e",
        "/dev/null",
        "--gres=gpu:1",
        "-N1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    full.extend(args.iter().map(|s| s.to_string()));
    full.push("--wrap".into());
    full.push(format!("sleep {secs}"));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    run("/usr/bin/sbatch", &refs)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn reused_job_ids_never_receive_or_change_an_older_jobs_record() {
    standard_setup();
    // A fresh id range, then an array and a job whose records land as usual.
    let base = highest_job_id() + 100;
    cluster(&["restart-ctld-clean", &base.to_string()], &[]);
    let array = submit_gpu(&["--array=0-2", "-w", "node1"], 2);
    assert_eq!(array, base);
    let older = submit_gpu(&["-w", "node2"], 2);
    // The array's tasks get their own ids as they start (the last keeps the array's).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut old_ids: Vec<u32> = loop {
        let ids: Vec<u32> = all_rows(array)
            .iter()
            .filter(|r| r.1.starts_with(&format!("{array}_")))
            .map(|r| r.0)
            .collect();
        if ids.len() == 3 {
            break ids;
        }
        assert!(Instant::now() < deadline, "array {array}: {ids:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    old_ids.push(older);
    old_ids.sort_unstable();
    let top = *old_ids.last().unwrap();
    for id in &old_ids {
        let deadline = Instant::now() + Duration::from_secs(120);
        while in_queue(*id)
            || !pending_of(*id).is_empty()
            || all_rows(*id)
                .iter()
                .any(|r| r.0 == *id && !r.4.contains("spank-carbon/1"))
        {
            assert!(
                Instant::now() < deadline,
                "job {id}: no record: {:?}",
                all_rows(*id)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let before: Vec<_> = old_ids.iter().flat_map(|id| all_rows(*id)).collect();
    assert!(
        before.iter().all(|r| r.4.contains("spank-carbon/1")),
        "{before:?}"
    );
    // The controller loses its state: ids start again at the array's.
    std::thread::sleep(Duration::from_secs(1));
    let wiped = now();
    cluster(&["restart-ctld-clean", &base.to_string()], &[]);
    let new_ids: Vec<u32> = (base..=top)
        .map(|_| submit_gpu(&["-w", "node3"], 2))
        .collect();
    assert_eq!(
        new_ids,
        (base..=top).collect::<Vec<_>>(),
        "ids did not repeat"
    );
    for id in &new_ids {
        assert_eq!(wait_job(*id), "COMPLETED");
    }
    // The new job `base` shares its id with the array. From 23.11 on, sacctmgr's
    // jobid=<base> changes only the newest row whose own id is <base> (the new job's):
    // the record is written there. On 22.05 it would also change the array's tasks, so
    // the record is kept and logged, not written.
    let exact = spank_carbon::slurm::Differences::built().jobid_newest_only;
    let refusal = |l: &str| l.contains(&format!("job {base}.node3")) && l.contains("older array");
    if !exact {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !spank_log()
            .lines()
            .any(|l| refusal(l) && l.contains("23.11"))
        {
            assert!(
                Instant::now() < deadline,
                "job {base}: no refusal in the log (Slurm {})",
                spank_carbon::SLURM_VERSION
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(
            !pending_of(base).is_empty(),
            "job {base}'s record must be kept"
        );
    }
    let written: &[u32] = if exact { &new_ids } else { &new_ids[1..] };
    // The others (and on 23.11+ `base` too) get their own records, in their own plain
    // row, right per the fake GPUs after the wipe.
    for id in written {
        let deadline = Instant::now() + Duration::from_secs(60);
        let rec = loop {
            let rows = all_rows(*id);
            let newest = rows
                .iter()
                .filter(|r| r.0 == *id)
                .max_by_key(|r| r.2)
                .unwrap()
                .clone();
            // The new job's own row (not an older one of the id that is still the newest
            // in accounting), with its record.
            if newest.2 as f64 >= wiped.floor()
                && pending_of(*id).is_empty()
                && newest.4.contains("spank-carbon/1")
            {
                assert_eq!(newest.1, id.to_string(), "job {id}: {rows:?}");
                break parse_rec(&newest.4).unwrap();
            }
            assert!(Instant::now() < deadline, "job {id}: {rows:?}");
            std::thread::sleep(Duration::from_millis(300));
        };
        let want = *truth_wh_per_run(*id, "node3").last().unwrap();
        assert!(want > 0.0001, "job {id}: the GPU did not run");
        assert_close(&format!("new job {id} wh"), rec.num("gpu_wh"), want, 0.01);
    }
    if exact {
        assert!(
            !spank_log().lines().any(refusal),
            "job {base}: refused on Slurm {}",
            spank_carbon::SLURM_VERSION
        );
    }
    // No older row changed, on every release: the array's rows (its master's and its
    // tasks') and the older job, byte for byte.
    let after: Vec<_> = old_ids
        .iter()
        .flat_map(|id| all_rows(*id))
        .filter(|r| (r.2 as f64) < wiped)
        .collect();
    assert_eq!(after.len(), before.len(), "{after:?}");
    for row in &before {
        assert!(after.contains(row), "changed: {row:?}\nnow: {after:?}");
    }
    // Ids unique again for the tests that follow.
    cluster(&["restart-ctld-clean", &(base + 1000).to_string()], &[]);
    assert_no_node_drained();
}
