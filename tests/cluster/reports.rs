//! Reports, time-varying intensity, embodied emissions and energy-aware fair-share on
//! the local Slurm cluster, checked against the fake GPUs' truth. Run by
//! scripts/test.sh (ignored by a plain `cargo test`: they need the cluster).

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const BIN: &str = "/usr/local/sbin/spank-carbon";

fn report(args: &[&str], env: &[(&str, &str)]) -> String {
    let attempt = || {
        Command::new(BIN)
            .arg("report")
            .args(args)
            .env_remove("LC_ALL")
            .env_remove("LC_MEASUREMENT")
            .env_remove("LANG")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    // sacct itself may fail for a moment (slurmdbd busy); the report then says so.
    let mut out = attempt();
    for _ in 0..3 {
        if out.status.success() {
            break;
        }
        eprintln!(
            "report failed, retrying: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
        out = attempt();
    }
    assert!(
        out.status.success(),
        "report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn report_of_one_job_matches_the_truth() {
    standard_setup();
    let job = submit(&["-N2", "-w", "node1,node2", "--gres=gpu:2"], 3.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap();
    check_record(job, &rec, &["node1", "node2"], 2);
    let j: serde_json::Value =
        serde_json::from_str(&report(&["-j", &job.to_string(), "--json"], &[])).unwrap();
    assert_close(
        "report gpu_wh",
        j["gpu_wh"].as_f64().unwrap(),
        rec.num("gpu_wh"),
        1e-9,
    );
    assert_close(
        "report co2e_g",
        j["co2e_g"].as_f64().unwrap(),
        rec.num("co2e_g"),
        1e-9,
    );
    for node in ["node1", "node2"] {
        let n = j["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .unwrap();
        // Constant scripted power: average and peak both equal the GPUs' power.
        let watts: f64 = allocated_minors(job)[node]
            .iter()
            .map(|m| power_mw(node, *m) as f64 / 1000.0)
            .sum();
        assert_close(
            &format!("{node} peak W"),
            n["peak_w"].as_f64().unwrap(),
            watts,
            0.001,
        );
        assert_close(
            &format!("{node} avg W"),
            n["avg_w"].as_f64().unwrap(),
            watts,
            0.02,
        );
        assert_close(
            &format!("{node} wh"),
            n["gpu_wh"].as_f64().unwrap(),
            truth_wh(job, node),
            0.01,
        );
    }
    let human = report(&["-j", &job.to_string()], &[]);
    assert!(
        human.contains("like flying") && human.contains(" km "),
        "{human}"
    );
    assert!(
        human.contains("of a year of an average human life"),
        "{human}"
    );
    let us = report(&["-j", &job.to_string()], &[("LANG", "en_US.UTF-8")]);
    assert!(us.contains(" miles ") && us.contains(" lbs"), "{us}");
    let csv = report(&["-j", &job.to_string(), "--csv"], &[]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn totals_per_account_and_partition_add_up() {
    standard_setup();
    let since = run("/bin/date", &["+%Y-%m-%dT%H:%M:%S"]).trim().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let mut jobs = Vec::new();
    for (account, gpus) in [("research", 1), ("heavy", 2), ("heavy", 3), ("research", 1)] {
        jobs.push(submit(
            &["-N1", "-A", account, &format!("--gres=gpu:{gpus}")],
            1.0,
        ));
    }
    let mut want: std::collections::BTreeMap<&str, (f64, f64, u32)> = Default::default();
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(wait_job(*job), "COMPLETED");
        let rec = parse_rec(&wait_delivered(
            *job,
            "SystemComment",
            Duration::from_secs(60),
        ))
        .unwrap();
        let account = if i == 1 || i == 2 {
            "heavy"
        } else {
            "research"
        };
        let e = want.entry(account).or_default();
        e.0 += rec.num("gpu_wh");
        e.1 += rec.num("co2e_g");
        e.2 += 1;
    }
    // sacct's view of a time window (-S/-E) was seen to lag a few seconds behind what
    // `sacct -j` already shows: give it up to 20 s to list every job.
    let until = run("/bin/date", &["-d", "+2 minutes", "+%Y-%m-%dT%H:%M:%S"])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (json, totals) = loop {
        let json = report(
            &["--by", "account", "-S", &since, "-E", &until, "--json"],
            &[],
        );
        let totals: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        let listed: u64 = totals
            .iter()
            .map(|t| t["measured_jobs"].as_u64().unwrap())
            .sum();
        if listed >= jobs.len() as u64 || Instant::now() > deadline {
            break (json, totals);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    for (account, (wh, co2e, n)) in &want {
        let t = totals
            .iter()
            .find(|t| t["name"] == *account)
            .unwrap_or_else(|| {
                panic!(
                    "{json}\nsince {since}, jobs {jobs:?}\nsacct: {:?}",
                    try_run(
                        "/usr/bin/sacct",
                        &[
                            "-a",
                            "-n",
                            "-P",
                            "-X",
                            "-S",
                            &since,
                            "-o",
                            "JobIDRaw,Account,Submit"
                        ]
                    )
                )
            });
        assert_eq!(t["measured_jobs"].as_u64().unwrap(), *n as u64, "{json}");
        assert_close(
            &format!("{account} wh"),
            t["gpu_wh"].as_f64().unwrap(),
            *wh,
            1e-6,
        );
        assert_close(
            &format!("{account} co2e"),
            t["co2e_g"].as_f64().unwrap(),
            *co2e,
            1e-6,
        );
    }
    // Sorted by CO2e, largest first; heavy used more GPUs.
    assert_eq!(totals[0]["name"], "heavy", "{json}");
    let table = report(&["--by", "partition", "-S", &since, "-E", &until], &[]);
    assert!(table.lines().any(|l| l.starts_with("gpu ")), "{table}");
    let csv = report(&["--by", "user", "-S", &since, "-E", &until, "--csv"], &[]);
    assert!(
        csv.starts_with("user,jobs,measured_jobs,gpu_hours,gpu_kwh,co2e_kg,embodied_kg\n"),
        "{csv}"
    );
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn intensity_series_a_job_straddling_a_step() {
    standard_setup();
    let step = now() + 6.0;
    let csv = dir("intensity.csv");
    fs::write(
        &csv,
        format!(
            "timestamp,gco2e_per_kwh,scope\n{:.3},100\n{step:.3},900\n{:.3},50,partition=other\n",
            now() - 3600.0,
            now() - 3600.0
        ),
    )
    .unwrap();
    let arg = format!("intensity_series={}", csv.display());
    set_plugstack(&[&arg]);
    let job = submit(&["-N1", "-w", "node2", "--gres=gpu:2"], 10.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let rec = parse_rec(&wait_delivered(
        job,
        "SystemComment",
        Duration::from_secs(60),
    ))
    .unwrap();
    assert_eq!(rec.nodes["node2"]["src"], "series");
    let local = local_record(job, "node2").unwrap();
    let (a, b) = (
        local["window"]["start_unix"].as_f64().unwrap(),
        local["window"]["end_unix"].as_f64().unwrap(),
    );
    assert!(a < step && step < b, "the job straddles the step");
    // Constant power: the energy before and after the step is proportional to time.
    let effective = (100.0 * (step - a) + 900.0 * (b - step)) / (b - a);
    let want = rec.num("gpu_wh") / 1000.0 * 1.2 * effective;
    assert_close("co2e across the step", rec.num("co2e_g"), want, 0.01);
    assert_close("shown intensity", rec.num("intensity"), effective, 0.01);

    // A stale series (last point long before the job) falls back to the fixed value.
    fs::write(&csv, format!("{:.3},100\n", now() - 86_400.0)).unwrap();
    let job = submit(&["-N1", "-w", "node2", "--gres=gpu:1"], 1.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let rec = parse_rec(&wait_delivered(
        job,
        "SystemComment",
        Duration::from_secs(60),
    ))
    .unwrap();
    set_plugstack(&[]);
    assert_eq!(rec.nodes["node2"]["src"], "fallback");
    // The record rounds co2e_g to 0.1 mg and gpu_wh to 0.1 mWh (CO2e comes from the
    // unrounded energy): allow both roundings, nothing more.
    let g_per_wh = 1.2 * 400.0 / 1000.0;
    let want = rec.num("gpu_wh") * g_per_wh;
    assert!(
        (rec.num("co2e_g") - want).abs() <= 0.00005 + 0.00005 * g_per_wh + 1e-9,
        "fixed co2e: got {}, want {want}",
        rec.num("co2e_g")
    );
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn embodied_emissions_are_their_own_number() {
    standard_setup();
    set_plugstack(&["embodied_kg_per_gpu_hour=0.02"]);
    let job = submit(&["-N1", "-w", "node3", "--gres=gpu:2"], 2.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let rec = parse_rec(&wait_delivered(
        job,
        "SystemComment",
        Duration::from_secs(60),
    ))
    .unwrap();
    set_plugstack(&[]);
    let local = local_record(job, "node3").unwrap();
    let hours = local["window"]["seconds"].as_f64().unwrap() / 3600.0;
    assert_close(
        "embodied g",
        rec.num("embodied_g"),
        20.0 * 2.0 * hours,
        0.01,
    );
    // Operational CO2e is untouched by it.
    let g_per_wh = 1.2 * 400.0 / 1000.0;
    let want = rec.num("gpu_wh") * g_per_wh;
    assert!(
        (rec.num("co2e_g") - want).abs() <= 0.00005 + 0.00005 * g_per_wh + 1e-9,
        "co2e: got {}, want {want} (both rounded to 4 decimals)",
        rec.num("co2e_g")
    );
    let human = report(&["-j", &job.to_string()], &[]);
    assert!(
        human.contains("Embodied emissions of the GPUs' allocation (not included above)"),
        "{human}"
    );
}

fn sshare_raw(account: &str) -> u32 {
    let out = run(
        "/usr/bin/sshare",
        &["-n", "-P", "-o", "Account,User,RawShares"],
    );
    out.lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|f| f[0].trim() == account && f[1].is_empty())
        .and_then(|f| f[2].parse().ok())
        .unwrap_or_else(|| panic!("no {account} in sshare: {out}"))
}

/// Fair-share factors of two pending jobs, from sprio.
fn fairshare_of(a: u32, b: u32) -> Option<(f64, f64)> {
    let out = try_run("/usr/bin/sprio", &["-h", "-o", "%i %F"])?;
    let get = |job: u32| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(&job.to_string()))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    };
    Some((get(a)?, get(b)?))
}

fn wait_for_order(
    first_account_job: u32,
    second_account_job: u32,
    first_ahead: bool,
) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        if let Some((r, h)) = fairshare_of(first_account_job, second_account_job) {
            if (first_ahead && r > h) || (!first_ahead && h > r) {
                return (r, h);
            }
        }
        assert!(
            Instant::now() < deadline,
            "sprio never showed the expected order: {:?}",
            try_run("/usr/bin/sprio", &["-l"])
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn fairshare_moves_shares_and_the_order_of_pending_jobs() {
    standard_setup();
    // Two accounts of this test's own, so that no other test's jobs count: "green"
    // uses more CPU time (Slurm's usage) but far less GPU energy than "hungry".
    // (On this cluster Slurm counts the usage of running jobs; jobs that start and end
    // between two of its 60 s decay passes were seen to add none.)
    // Fresh names each run, so that a rerun on the same database starts clean too.
    let tag = (now() as u64) % 1_000_000;
    let (green, hungry) = (format!("green{tag}"), format!("hungry{tag}"));
    let (green, hungry) = (green.as_str(), hungry.as_str());
    let both = format!("{green},{hungry}");
    run(
        "/usr/bin/sacctmgr",
        &["-i", "add", "account", &both, "parent=root"],
    );
    run(
        "/usr/bin/sacctmgr",
        &["-i", "add", "user", "root", &format!("account={both}")],
    );
    let sacctmgr = |args: &[&str]| run("/usr/bin/sacctmgr", args);
    for a in [green, hungry] {
        sacctmgr(&[
            "-i",
            "modify",
            "account",
            "where",
            &format!("name={a}"),
            "set",
            "fairshare=100",
        ]);
        sacctmgr(&[
            "-i",
            "modify",
            "account",
            "where",
            &format!("name={a}"),
            "set",
            "rawusage=0",
        ]);
    }
    let g = submit(&["-N1", "-w", "node1", "-A", green, "--gres=gpu:1"], 4.0);
    let h = submit(&["-N1", "-w", "node2", "-A", hungry, "--gres=gpu:4"], 4.0);
    let mut co2e = std::collections::BTreeMap::new();
    for (job, account) in [(g, green), (h, hungry)] {
        assert_eq!(wait_job(job), "COMPLETED");
        let rec = parse_rec(&wait_delivered(
            job,
            "SystemComment",
            Duration::from_secs(60),
        ))
        .unwrap();
        co2e.insert(account, rec.num("co2e_g"));
    }
    assert!(co2e[hungry] > 3.0 * co2e[green], "{co2e:?}");
    // Budgets: hungry has used 80% of its budget, green a fraction of it.
    let budget_kg = co2e[hungry] / 1000.0 / 0.8;
    let policy = dir("fairshare.toml");
    let state = dir("fairshare-state.json");
    let _ = fs::remove_file(&state);
    fs::write(
        &policy,
        format!(
            "half_life_days = 7\nfloor = 0.1\nstate = \"{}\"\n[budget_kg]\n{green} = {budget_kg}\n{hungry} = {budget_kg}\n",
            state.display()
        ),
    )
    .unwrap();
    let fairshare = |extra: &[&str]| {
        let mut args = vec!["fairshare", "--config", policy.to_str().unwrap()];
        args.extend(extra);
        run(BIN, &args)
    };
    // Both accounts fill the cluster (Slurm's usage accrues while jobs run): green on
    // three nodes, hungry on one. Two more jobs, one per account, wait behind them.
    let bg = submit(&["-N3", "--exclusive", "-A", green], 600.0);
    let bh = submit(&["-N1", "--exclusive", "-A", hungry], 600.0);
    wait_running(bg);
    wait_running(bh);
    let pg = submit(&["-N1", "-A", green], 1.0);
    let ph = submit(&["-N1", "-A", hungry], 1.0);
    let outcome = std::panic::catch_unwind(|| {
        // Before: equal shares; green uses three times the CPUs, so hungry goes first.
        let (fg, fh) = wait_for_order(pg, ph, false);
        println!("before: fair-share factor green {fg}, hungry {fh}");
        let plan = fairshare(&[]);
        println!("{plan}");
        assert!(plan.contains("dry run"), "{plan}");
        assert_eq!(
            (sshare_raw(green), sshare_raw(hungry)),
            (100, 100),
            "a dry run changes nothing"
        );
        let applied = fairshare(&["--apply"]);
        let want_green = (100.0 * (1.0 - co2e[green] / 1000.0 / budget_kg)).round() as u32;
        assert_eq!(sshare_raw(hungry), 20, "{applied}");
        assert_eq!(sshare_raw(green), want_green, "{applied}");
        // After: hungry's shares fell with its energy; green's pending job goes first.
        let (fg, fh) = wait_for_order(pg, ph, true);
        println!("after: fair-share factor green {fg}, hungry {fh}");
        // Safe to run again: nothing changes; then the operator's shares come back.
        fairshare(&["--apply"]);
        assert_eq!(sshare_raw(hungry), 20);
        fairshare(&["--restore"]);
        assert_eq!((sshare_raw(green), sshare_raw(hungry)), (100, 100));
    });
    let _ = Command::new("/usr/bin/scancel")
        .args([bg, bh, pg, ph].map(|j| j.to_string()))
        .status();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
