//! Faults a cluster really has, each on the local Slurm cluster: the job completes,
//! no node is drained, and the record is right, or absent and the log says why.
//! Run by scripts/test.sh (ignored by a plain `cargo test`: they need the cluster).

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

fn ends_well(job: u32) {
    assert_eq!(wait_job(job), "COMPLETED", "job {job}");
    assert_no_node_drained();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn slurmdbd_down_while_jobs_end_every_record_arrives() {
    standard_setup();
    cluster(&["stop-dbd"], &[]);
    let jobs = [
        (
            submit(&["-N1", "-w", "node1", "--gres=gpu:2"], 1.0),
            vec!["node1"],
        ),
        (
            submit(&["-N2", "-w", "node2,node3", "--gres=gpu:1"], 1.0),
            vec!["node2", "node3"],
        ),
    ];
    for (job, _) in &jobs {
        let deadline = Instant::now() + Duration::from_secs(60);
        while in_queue(*job) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    for (job, _) in &jobs {
        assert!(
            !pending_of(*job).is_empty(),
            "job {job}: record should be waiting"
        );
    }
    cluster(&["start-dbd"], &[]);
    for (job, nodes) in &jobs {
        assert_eq!(wait_job(*job), "COMPLETED");
        let text = wait_delivered(*job, "SystemComment", Duration::from_secs(120));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("job {job}: {text:?}"));
        check_record(*job, &rec, nodes, if nodes.len() == 1 { 2 } else { 1 });
    }
    assert_no_node_drained();
}

fn in_accounting(job: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while job_state(job).is_empty() {
        assert!(
            Instant::now() < deadline,
            "job {job} never reached slurmdbd"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `spank-carbon deliver --foreground` for `node` (its state directory: `%n`).
fn deliver_args(node: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "deliver".to_string(),
        "--foreground".into(),
        "--node".into(),
        node.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(
        plugstack_line(&[])
            .split_whitespace()
            .skip(2)
            .map(str::to_string),
    );
    args
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn records_given_up_on_arrive_by_the_courier_a_later_job_or_on_demand() {
    standard_setup();
    // 1. The courier gives up after 2 s and retries every 2 s; once slurmdbd is back,
    //    the record arrives with no job running, and the courier leaves.
    set_plugstack(&["deliver_timeout_s=2", "retry_s=2"]);
    cluster(&["stop-dbd"], &[]);
    let a = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 0.5);
    wait_given_up(a);
    cluster(&["start-dbd"], &[]);
    let text = wait_delivered(a, "SystemComment", Duration::from_secs(120));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("job {a}: {text:?}"));
    check_record(a, &rec, &["node1"], 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_named("spank-carbon").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the courier did not exit when done"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 2. A courier that retries seldom (retry_s=600): the operator's command, and the
    //    courier itself once a later job's record shows accounting answers, send what
    //    is pending.
    set_plugstack(&["deliver_timeout_s=2", "retry_s=600"]);
    cluster(&["stop-dbd"], &[]);
    let b = submit(&["-N1", "-w", "node2", "--gres=gpu:1"], 0.5);
    let c = submit(&["-N1", "-w", "node3", "--gres=gpu:1"], 0.5);
    wait_given_up(b);
    wait_given_up(c);
    cluster(&["start-dbd"], &[]);
    in_accounting(b);
    in_accounting(c);
    let args = deliver_args("node2", &["--key", &format!("{b}.node2")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("/usr/local/sbin/spank-carbon", &args);
    let text_b = field(b, "SystemComment");
    let rec = parse_rec(&text_b).unwrap_or_else(|| panic!("job {b}: {text_b:?}"));
    check_record(b, &rec, &["node2"], 1);
    assert!(pending_of(c).len() == 1, "c still waits for its turn");
    std::thread::sleep(Duration::from_secs(4)); // older than deliver_timeout_s + settle
    let later = submit(&["-N1", "-w", "node3", "--gres=gpu:1"], 0.5);
    ends_well(later);
    let text = wait_delivered(c, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("job {c}: {text:?}"));
    check_record(c, &rec, &["node3"], 1);
    // Idempotent: delivering everything again writes nothing new.
    let all = deliver_args("node2", &[]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run("/usr/local/sbin/spank-carbon", &all);
    assert_eq!(field(b, "SystemComment"), text_b);
    let _ = std::process::Command::new("/usr/bin/pkill")
        .args(["-x", "spank-carbon"])
        .status();
    set_plugstack(&[]);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn sampler_killed_mid_job_energy_still_from_counters() {
    standard_setup();
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:2"], 4.0);
    wait_running(job);
    let pid = sampler_pid(job, "node1");
    std::thread::sleep(Duration::from_millis(1500));
    run("/bin/kill", &["-KILL", &pid.to_string()]);
    ends_well(job);
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    check_record(job, &rec, &["node1"], 2);
    assert_eq!(rec.top["method"], "counter");
    assert!(
        node_flags(&rec, "node1").contains(&"samplerlost".to_string()),
        "{text}"
    );
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn nvml_hangs_in_the_epilog_it_returns_in_bounded_time_with_the_samples() {
    standard_setup();
    set_plugstack(&["nvml_timeout_ms=1000"]);
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:2"], 4.0);
    wait_running(job);
    let pid = sampler_pid(job, "node1");
    std::thread::sleep(Duration::from_millis(1500));
    run("/bin/kill", &["-KILL", &pid.to_string()]);
    // The driver wedges: node1's energy reads never return from now on (the epilog's
    // NVML init reads the fake's configuration afresh).
    let mut opts = GpuOptions::new();
    for m in 0..4 {
        opts.insert(("node1".into(), m), "hang=energy".into());
    }
    write_fake_config(&opts);
    ends_well(job);
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    assert_eq!(rec.top["method"], "sampled", "{text}");
    assert!(
        node_flags(&rec, "node1").contains(&"samplerlost".to_string()),
        "{text}"
    );
    assert!(
        slurmd_log("node1")
            .lines()
            .any(|l| l.contains("spank-carbon:") && l.contains("NVML timeout")),
        "no log line naming the timeout"
    );
    standard_setup();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn slurmd_restarted_mid_job_record_still_made() {
    standard_setup();
    let job = submit(&["-N1", "-w", "node2", "--gres=gpu:2"], 6.0);
    wait_running(job);
    std::thread::sleep(Duration::from_millis(1000));
    let pidfile = dir("run").join("slurmd-node2.pid");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    run("/bin/kill", &["-TERM", &pid]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(format!("/proc/{pid}")).is_ok() {
        assert!(Instant::now() < deadline, "slurmd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    run("/usr/bin/setsid", &["/usr/sbin/slurmd", "-N", "node2"]);
    ends_well(job);
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    check_record(job, &rec, &["node2"], 2);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn counter_reset_or_no_counter_uses_the_sampled_integral() {
    let mut opts = GpuOptions::new();
    let reset = now() + 2.0;
    for m in 0..4 {
        opts.insert(("node3".into(), m), format!("reset_at={reset:.3}"));
        opts.insert(("node4".into(), m), "counter=0".into());
    }
    write_fake_config(&opts);
    set_plugstack(&["checkpoint_s=1"]);
    wait_cluster_idle();
    let a = submit(&["-N1", "-w", "node3", "--gres=gpu:2"], 4.0);
    let b = submit(&["-N1", "-w", "node4", "--gres=gpu:2"], 3.0);
    for (job, node, flag) in [(a, "node3", Some("reset")), (b, "node4", None)] {
        ends_well(job);
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(rec.top["method"], "sampled", "{text}");
        if let Some(flag) = flag {
            assert!(node_flags(&rec, node).contains(&flag.to_string()), "{text}");
        }
        assert_close(
            &format!("job {job} sampled wh"),
            rec.num("gpu_wh"),
            sampled_truth_wh(job, node),
            0.02,
        );
        let cov: f64 = rec.nodes[node]["cov"].parse().unwrap();
        assert!(cov > 0.95, "{text}");
    }
    standard_setup();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn prolog_never_ran_on_a_node_no_false_record_and_a_clear_log() {
    standard_setup();
    // Without PrologFlags=Alloc the prolog runs on a node only at its first step: a
    // batch script without srun starts no step on the second node.
    cluster(&["start"], &[("SC_PROLOG_FLAGS", "")]);
    let job = submit(&["-N2", "-w", "node3,node4", "--gres=gpu:1"], 2.0);
    let outcome = std::panic::catch_unwind(|| {
        ends_well(job);
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(rec.num("nodes"), 1.0, "{text}");
        assert_eq!(rec.num("of"), 2.0, "{text}");
        let batch_host = rec.nodes.keys().next().unwrap().clone();
        let other = if batch_host == "node3" {
            "node4"
        } else {
            "node3"
        };
        assert_close(
            "batch host wh",
            rec.num("gpu_wh"),
            truth_wh(job, &batch_host),
            0.01,
        );
        assert!(
            slurmd_log(other).contains(&format!(
                "job {job}: no measurement on {other}: the prolog did not run here"
            )),
            "no clear line in {other}'s slurmd log"
        );
    });
    cluster(&["start"], &[]);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn sampler_whose_epilog_never_comes_stops_and_leaves_no_state() {
    standard_setup();
    // A job Slurm does not know: exactly what a sampler sees once its job ended on a
    // node whose epilog never ran.
    let key = "4000000000.node1";
    let job_dir = node_state_dir("node1").join("jobs").join(key);
    fs::create_dir_all(&job_dir).unwrap();
    let mut args = vec!["sample", "--key", key, "--minors", "2,0", "--"];
    let line = plugstack_line(&["liveness_s=1"]);
    args.extend(line.split_whitespace().skip(2));
    let mut child = std::process::Command::new("/usr/local/sbin/spank-carbon")
        .args(&args)
        .env("SLURMD_NODENAME", "node1")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "sampler still running");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    assert!(!job_dir.exists(), "state left behind");
    let local = local_record(4_000_000_000, "node1").expect("the orphan's local record");
    assert!(
        local["result"]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "noepilog"),
        "{local}"
    );
    assert!(
        pending_of(4_000_000_000).is_empty(),
        "an orphan's window is not delivered"
    );
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn unwritable_or_full_state_dir_jobs_run_and_the_log_says_why() {
    standard_setup();
    // Unwritable: a path under /proc.
    set_plugstack(&["state_dir=/proc/spank-carbon-state"]);
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 0.5);
    ends_well(job);
    assert!(
        slurmd_log("node1")
            .lines()
            .any(|l| l.contains("spank-carbon: prolog:") && l.contains("/proc/spank-carbon-state")),
        "no log line naming the state directory"
    );
    // Full: a tiny tmpfs, filled up.
    let full = dir("fullstate");
    fs::create_dir_all(&full).unwrap();
    run(
        "/bin/mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64k,mode=0700",
            "tmpfs",
            full.to_str().unwrap(),
        ],
    );
    let outcome = std::panic::catch_unwind(|| {
        for sub in ["jobs", "records", "pending"] {
            fs::create_dir_all(full.join(sub)).unwrap();
        }
        let _ = std::process::Command::new("/bin/dd")
            .args([
                "if=/dev/zero",
                &format!("of={}/filler", full.display()),
                "bs=4k",
            ])
            .output();
        let arg = format!("state_dir={}", full.display());
        set_plugstack(&[&arg]);
        let job = submit(&["-N1", "-w", "node2", "--gres=gpu:1"], 0.5);
        ends_well(job);
        assert_eq!(field(job, "SystemComment"), "");
        assert!(
            slurmd_log("node2")
                .lines()
                .any(|l| l.contains("spank-carbon: prolog:") && l.contains("No space left")),
            "no log line saying the disk is full"
        );
    });
    set_plugstack(&[]);
    let _ = std::process::Command::new("/bin/umount")
        .arg(&full)
        .status();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn disk_fills_during_the_job_the_pending_record_survives_and_arrives() {
    standard_setup();
    let full = dir("fillstate");
    fs::create_dir_all(&full).unwrap();
    run(
        "/bin/mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m,mode=0700",
            "tmpfs",
            full.to_str().unwrap(),
        ],
    );
    let outcome = std::panic::catch_unwind(|| {
        let arg = format!("state_dir={}", full.display());
        set_plugstack(&[&arg]);
        let job = submit(&["-N1", "-w", "node4", "--gres=gpu:2"], 4.0);
        wait_running(job);
        std::thread::sleep(Duration::from_secs(1));
        // The disk fills up while the job runs, leaving one page: room for the small
        // pending record, none for the audit record.
        fs::write(full.join("reserve"), vec![0u8; 4096]).unwrap();
        let _ = std::process::Command::new("/bin/dd")
            .args([
                "if=/dev/zero",
                &format!("of={}/filler", full.display()),
                "bs=4k",
            ])
            .output();
        fs::remove_file(full.join("reserve")).unwrap();
        ends_well(job);
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("job {job}: no record: {text:?}"));
        check_record(job, &rec, &["node4"], 2);
        assert!(
            slurmd_log("node4")
                .lines()
                .any(|l| l.contains(&format!("job {job}.node4"))
                    && l.contains("audit record not kept")),
            "no log line saying the audit record was not kept"
        );
    });
    set_plugstack(&[]);
    let _ = std::process::Command::new("/bin/umount")
        .arg(&full)
        .status();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn two_hundred_poison_records_do_not_delay_a_fresh_one() {
    use spank_carbon::accounting::Delivery;
    use spank_carbon::record::{Meta, Method, NodePart};
    standard_setup();
    set_plugstack(&["deliver_timeout_s=5", "retry_s=5"]);
    // 200 records of jobs accounting never shows (a lost start record, say), with
    // lower job ids than any real job: served first if the order were by id.
    let pending = node_state_dir("node1").join("pending");
    fs::create_dir_all(&pending).unwrap();
    for i in 0..200u32 {
        let start = now() - 600.0 + i as f64;
        let d = Delivery {
            job: 1_000_000_000 + i,
            field: spank_carbon::core::config::Field::System,
            part: NodePart::new("node1", 1.0, 1, 0.5, Method::Counter, (start, start + 10.0)),
            meta: Meta {
                intensity: spank_carbon::units::GramsPerKwh(400.0),
                pue: 1.2,
                expected_nodes: 1,
            },
            nodes: vec!["node1".into()],
            sluid: None,
        };
        let key = spank_carbon::node::state::JobKey::new(d.job, "node1")
            .unwrap()
            .with_run(start);
        fs::write(
            pending.join(format!("{key}.json")),
            serde_json::to_vec(&d).unwrap(),
        )
        .unwrap();
    }
    // Let a courier take them up and give up on them once.
    let first = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 0.5);
    ends_well(first);
    wait_delivered(first, "SystemComment", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(7));
    // A fresh job's record arrives as fast as a lone job's would.
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 0.5);
    ends_well(job);
    let ended = Instant::now();
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let took = ended.elapsed();
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("job {job}: no record: {text:?}"));
    check_record(job, &rec, &["node1"], 1);
    println!("fresh record in accounting {took:?} after its job ended, beside 200 poison records");
    assert!(took < Duration::from_secs(10), "fresh record took {took:?}");
    // The operator sees them, and why.
    let line = plugstack_line(&[]);
    let mut args = vec!["pending", "--node", "node1", "--"];
    args.extend(line.split_whitespace().skip(2));
    let listed = run("/usr/local/sbin/spank-carbon", &args);
    let poison: Vec<&str> = listed.lines().filter(|l| l.starts_with("10000")).collect();
    assert_eq!(poison.len(), 200, "{listed}");
    assert!(
        poison.iter().all(|l| l.contains("not in accounting")),
        "{listed}"
    );
    set_plugstack(&[]);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn corrupted_state_files_are_survived() {
    standard_setup();
    let job = submit(&["-N1", "-w", "node3", "--gres=gpu:1"], 3.0);
    wait_running(job);
    let pid = sampler_pid(job, "node3");
    std::thread::sleep(Duration::from_millis(800));
    run("/bin/kill", &["-KILL", &pid.to_string()]);
    let state_file = node_state_dir("node3")
        .join("jobs")
        .join(format!("{job}.node3"))
        .join("sampler.json");
    fs::write(&state_file, b"{\"job\": 1, garbage \xff\xfe").unwrap();
    ends_well(job);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(field(job, "SystemComment"), "");
    assert!(
        slurmd_log("node3")
            .lines()
            .any(|l| l.contains(&format!("job {job}.node3")) && l.contains("corrupted")),
        "no log line about the corrupted file"
    );
    // A corrupted pending record: delivery reports it and carries on.
    let bad = node_state_dir("node3")
        .join("pending")
        .join("4000000001.node3.json");
    fs::write(&bad, b"[[[").unwrap();
    let line = plugstack_line(&[]);
    let mut args = vec!["deliver", "--foreground", "--node", "node3", "--"];
    args.extend(line.split_whitespace().skip(2));
    let out = std::process::Command::new("/usr/local/sbin/spank-carbon")
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupted"),
        "{out:?}"
    );
    assert!(
        bad.exists(),
        "a record that cannot be read is kept, not deleted"
    );
    fs::remove_file(bad).unwrap();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn hostile_comments_no_injection_and_foreign_text_kept() {
    standard_setup();
    // 60 KiB of foreign text with % signs and format directives in SystemComment.
    // (No whitespace at its ends: 25.05+'s sacctmgr would trim it as the test sets it.)
    let foreign: String = format!("tool: %s%n%x 100% {}", "abcdefghij ".repeat(60 * 1024 / 11))
        .trim_end()
        .to_string();
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 6.0);
    wait_running(job);
    sacctmgr_set(job, "SystemComment", &foreign);
    ends_well(job);
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("no record after 60 KiB of text"));
    assert_eq!(rec.before, format!("{foreign} "), "foreign text changed");
    check_record(job, &rec, &["node1"], 1);

    // field=job: the user's comment has quotes, a backslash and SQL; it is never
    // rewritten (sacctmgr would alter it), the record waits locally, the log says why.
    set_plugstack(&["field=job", "deliver_timeout_s=3"]);
    let comment = "it's \"mine\"; DROP TABLE x; -- \\ %s";
    let job2 = submit(
        &[
            "-N1",
            "-w",
            "node2",
            "--gres=gpu:1",
            &format!("--comment={comment}"),
        ],
        0.5,
    );
    ends_well(job2);
    wait_given_up(job2);
    set_plugstack(&[]);
    let stored = field(job2, "Comment");
    assert!(!stored.contains("spank-carbon"), "{stored}");
    assert!(stored.contains("DROP TABLE x"), "{stored}");
    assert!(spank_log()
        .lines()
        .any(|l| l.contains(&format!("job {job2}.node2@")) && l.contains("not delivered yet")));
    assert_eq!(remove_pending(job2).len(), 1);
    // The accounting database is intact.
    assert!(run(
        "/usr/bin/sacct",
        &["-n", "-X", "-j", &job.to_string(), "-o", "JobID"]
    )
    .contains(&job.to_string()));
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn burst_of_200_jobs_over_4_nodes_loses_nothing() {
    standard_setup();
    let jobs = submit_mix(200);
    check_every_record(&jobs);
    assert_no_node_drained();
    // Nothing left behind: no sampler or courier, no job state, nothing pending.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let procs = processes_named("spank-carbon");
        let jobs_left = state_entries("jobs").len();
        let pending = state_entries("pending").len();
        if procs.is_empty() && jobs_left == 0 && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {procs:?}, {jobs_left} job dirs, {pending} pending"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn slurmdbd_paused_while_100_jobs_end_every_record_whole_after() {
    standard_setup();
    set_plugstack(&["write_timeout_s=5"]);
    cluster(&["pause-dbd"], &[]);
    let outcome = std::panic::catch_unwind(|| {
        let jobs = submit_mix(100);
        for &(job, ..) in &jobs {
            let deadline = Instant::now() + Duration::from_secs(300);
            while in_queue(job) {
                assert!(Instant::now() < deadline, "job {job} did not end");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // Couriers have tried against a slurmdbd that accepts and never answers.
        std::thread::sleep(Duration::from_secs(10));
        let waiting = state_entries("pending").len();
        assert!(
            waiting > 0,
            "records should be waiting while slurmdbd is paused"
        );
        cluster(&["resume-dbd"], &[]);
        jobs
    });
    let jobs = match outcome {
        Ok(jobs) => jobs,
        Err(e) => {
            cluster(&["resume-dbd"], &[]);
            std::panic::resume_unwind(e);
        }
    };
    check_every_record(&jobs);
    set_plugstack(&[]);
    assert_no_node_drained();
}

/// Submits `n` short GPU jobs of 1 to 4 nodes, 1 or 2 GPUs per node.
fn submit_mix(n: usize) -> Vec<(u32, usize, u32)> {
    let mut jobs = Vec::new();
    for i in 0..n {
        let nodes = [1, 1, 2, 1, 3, 1, 2, 4][i % 8];
        let gpus = 1 + (i % 2);
        let secs = [0.2, 0.5, 1.0][i % 3];
        let job = submit(
            &[&format!("-N{nodes}"), &format!("--gres=gpu:{gpus}")],
            secs,
        );
        jobs.push((job, nodes, gpus as u32));
    }
    jobs
}

/// Every job completed and its record is whole and right.
fn check_every_record(jobs: &[(u32, usize, u32)]) {
    let mut failures = Vec::new();
    for &(job, nodes, gpus) in jobs {
        if wait_job(job) != "COMPLETED" {
            failures.push(format!("job {job} did not complete"));
            continue;
        }
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(180));
        let Some(rec) = parse_rec(&text) else {
            failures.push(format!("job {job}: no record"));
            continue;
        };
        let alloc: Vec<String> = allocated_minors(job).keys().cloned().collect();
        let refs: Vec<&str> = alloc.iter().map(String::as_str).collect();
        if rec.nodes.len() != nodes || refs.len() != nodes {
            failures.push(format!(
                "job {job}: {} parts of {nodes}: {text}",
                rec.nodes.len()
            ));
            continue;
        }
        // Checks energy against the truth and that exactly Slurm's GPUs were read.
        check_record(job, &rec, &refs, gpus);
    }
    assert!(
        failures.is_empty(),
        "{} lost: {failures:#?}",
        failures.len()
    );
}
