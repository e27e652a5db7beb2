//! End-to-end tests on a real Slurm cluster (slurmctld, 4 x slurmd, slurmdbd on
//! MariaDB, munge) with fake GPUs. Run by scripts/test.sh, which starts the cluster;
//! ignored by a plain `cargo test` because they need it (and root).

use std::time::Duration;

use crate::common::*;

const NEEDS: &str = "needs the local Slurm cluster: run scripts/test.sh";

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn one_node_job_records_energy_and_co2e_in_sacct() {
    let _ = NEEDS;
    standard_setup();
    let job = submit(&["-N1", "-w", "node2", "--gres=gpu:2"], 3.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text)
        .unwrap_or_else(|| panic!("job {job}: no record in SystemComment: {text:?}"));
    assert!(rec.before.is_empty() && rec.after.is_empty(), "{text}");
    check_record(job, &rec, &["node2"], 2);
    assert_eq!(rec.top["method"], "counter");
    assert_eq!(rec.num("intensity"), 400.0);
    assert_eq!(rec.num("pue"), 1.2);
    // A 3 s job on two GPUs of 160 W and 181 W: a few tenths of a Wh, not zero, not absurd.
    let wh = rec.num("gpu_wh");
    assert!(wh > 0.2 && wh < 1.5, "{wh}");
    // The local JSON record is there for audit, with its per-GPU detail.
    let local = local_record(job, "node2").expect("the local record");
    assert_eq!(local["result"]["gpus"].as_array().unwrap().len(), 2);
    assert!(
        local["result"]["gpus"][0]["samples"].as_u64().unwrap() >= 5,
        "{local}"
    );
    // The other fields are untouched.
    assert_eq!(field(job, "AdminComment"), "");
    assert_eq!(field(job, "Comment"), "");
    assert_no_node_drained();
}

fn multi_node_round(nodes_per_job: usize, jobs: usize) {
    standard_setup();
    let ids: Vec<u32> = (0..jobs)
        .map(|i| {
            let gpus = if i % 2 == 0 {
                "--gres=gpu:1"
            } else {
                "--gres=gpu:2"
            };
            submit(
                &[&format!("-N{nodes_per_job}"), gpus],
                1.0 + (i % 3) as f64 * 0.5,
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (i, &job) in ids.iter().enumerate() {
        assert_eq!(wait_job(job), "COMPLETED", "job {job}");
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(120));
        let Some(rec) = parse_rec(&text) else {
            failures.push(format!("job {job}: no record: {text:?}"));
            continue;
        };
        let nodes: Vec<String> = allocated_minors(job).keys().cloned().collect();
        let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
        if rec.nodes.len() != nodes_per_job {
            failures.push(format!(
                "job {job}: {} of {nodes_per_job} parts: {text}",
                rec.nodes.len()
            ));
            continue;
        }
        check_record(job, &rec, &node_refs, if i % 2 == 0 { 1 } else { 2 });
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_no_node_drained();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn two_node_jobs_keep_every_share() {
    multi_node_round(2, 6);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn twenty_three_node_jobs_keep_every_share() {
    multi_node_round(3, 20);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn concurrent_jobs_on_one_node_get_their_own_gpus() {
    standard_setup();
    let a = submit(&["-N1", "-w", "node3", "--gres=gpu:2"], 4.0);
    let b = submit(&["-N1", "-w", "node3", "--gres=gpu:2"], 4.0);
    assert_eq!(wait_job(a), "COMPLETED");
    assert_eq!(wait_job(b), "COMPLETED");
    let ma = allocated_minors(a)["node3"].clone();
    let mb = allocated_minors(b)["node3"].clone();
    assert!(
        ma.iter().all(|m| !mb.contains(m)),
        "overlapping GPUs {ma:?} {mb:?}"
    );
    let mut per_watt = Vec::new();
    for job in [a, b] {
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("job {job}: {text:?}"));
        check_record(job, &rec, &["node3"], 2);
        // Energy per second follows the power of that job's own GPUs.
        let t = truth(job);
        let secs = t["node3"]
            .values()
            .map(|(f, l)| (l.ns - f.ns) as f64 / 1e9)
            .fold(0.0, f64::max);
        per_watt.push(rec.num("gpu_wh") * 3600.0 / secs);
    }
    let want: Vec<f64> = [&ma, &mb]
        .iter()
        .map(|ms| {
            ms.iter()
                .map(|m| power_mw("node3", *m) as f64 / 1000.0)
                .sum()
        })
        .collect();
    assert_ne!(want[0], want[1]);
    for (got, want) in per_watt.iter().zip(&want) {
        assert_close("mean power of the job's GPUs", *got, *want, 0.01);
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn job_without_gpus_gets_no_record_and_gpu_job_after_it_does() {
    standard_setup();
    let plain = submit(&["-N1", "-w", "node1"], 1.0);
    assert_eq!(wait_job(plain), "COMPLETED");
    let gpu = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 1.0);
    assert_eq!(wait_job(gpu), "COMPLETED");
    let text = wait_delivered(gpu, "SystemComment", Duration::from_secs(60));
    assert!(
        parse_rec(&text).is_some(),
        "the GPU job has its record: {text:?}"
    );
    assert_eq!(field(plain, "SystemComment"), "");
    assert!(
        truth(plain).is_empty(),
        "no GPU was read for the job without GPUs"
    );
    assert!(local_record(plain, "node1").is_none());
    assert_no_node_drained();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn nvml_missing_the_job_runs_and_nothing_false_is_recorded() {
    standard_setup();
    set_plugstack(&["nvml_lib=/nonexistent/libnvidia-ml.so.1"]);
    let job = submit(&["-N1", "-w", "node4", "--gres=gpu:2"], 1.0);
    assert_eq!(wait_job(job), "COMPLETED");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(field(job, "SystemComment"), "");
    assert!(pending_of(job).is_empty());
    // slurmd's log says why, naming NVML.
    let slurmd = slurmd_log("node4");
    let line = slurmd
        .lines()
        .find(|l| {
            l.contains(&format!(
                "spank-carbon: warning: job {job}.node4: no measurement"
            ))
        })
        .unwrap_or_else(|| panic!("slurmd log has no line about job {job}"));
    assert!(line.contains("NVML could not be initialised"), "{line}");
    assert_no_node_drained();
    set_plugstack(&[]);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn bad_configuration_is_named_in_slurmd_log_and_jobs_still_run() {
    standard_setup();
    set_plugstack(&["intensty=300"]);
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 0.5);
    assert_eq!(wait_job(job), "COMPLETED");
    set_plugstack(&[]);
    assert_eq!(field(job, "SystemComment"), "");
    let log = slurmd_log("node1");
    assert!(
        log.contains("spank-carbon: plugstack.conf: unknown key `intensty`"),
        "slurmd log does not name the key"
    );
    assert_no_node_drained();
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn foreign_text_in_comment_fields_is_kept() {
    standard_setup();
    let job = submit(
        &[
            "-N2",
            "-w",
            "node1,node2",
            "--gres=gpu:1",
            "--comment=User's Own Note",
        ],
        4.0,
    );
    // While the job runs: the site tags the admin comment (case kept by scontrol),
    // another tool writes into SystemComment through sacctmgr.
    wait_running(job);
    run(
        "/usr/bin/scontrol",
        &[
            "update",
            &format!("JobId={job}"),
            "AdminComment=Site-Tag: 5%",
        ],
    );
    let foreign = "other-tool: quota=5% 60kib";
    sacctmgr_set(job, "SystemComment", foreign);
    assert_eq!(wait_job(job), "COMPLETED");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    assert_eq!(rec.before, format!("{foreign} "));
    assert_eq!(rec.after, "");
    check_record(job, &rec, &["node1", "node2"], 1);
    assert_eq!(field(job, "AdminComment"), "Site-Tag: 5%");
    assert_eq!(field(job, "Comment"), "User's Own Note");
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn array_tasks_each_get_their_own_record() {
    // `sacct -j N` and `sacctmgr modify job where jobid=N` select every task of array N
    // when N is the array's id, which is also the id of one of its tasks. That task's
    // record must land on it alone, and every task must get its own.
    standard_setup();
    let array = submit(&["-N1", "--array=1-4", "--gres=gpu:1"], 1.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let tasks: Vec<u32> = loop {
        let out = run(
            "/usr/bin/sacct",
            &[
                "-n",
                "-P",
                "-X",
                "-j",
                &array.to_string(),
                "-o",
                "JobIDRaw,State",
            ],
        );
        let rows: Vec<(u32, String)> = out
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(id, st)| (id.parse().unwrap(), st.to_string()))
            .collect();
        if rows.len() == 4 && rows.iter().all(|(_, st)| st == "COMPLETED") {
            break rows.into_iter().map(|(id, _)| id).collect();
        }
        assert!(std::time::Instant::now() < deadline, "array {array}: {out}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(tasks.contains(&array), "{tasks:?}");
    for task in tasks {
        let text = wait_delivered(task, "SystemComment", Duration::from_secs(60));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("task {task}: {text:?}"));
        let nodes: Vec<String> = allocated_minors(task).keys().cloned().collect();
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        // Against the fake GPUs' truth for this task's own GPU and window.
        check_record(task, &rec, &nodes, 1);
    }
}
