//! End-to-end tests of the job's native energy TRES (Slurm 25.11+) and of what differs
//! between Slurm releases, on the local cluster (scripts/test.sh runs them on 22.05, 24.11
//! and 26.05; each test asserts what its release must do, from `slurm::Differences`):
//! - 25.11+: `sacct -o ConsumedEnergyRaw` is the record's GPU energy in joules, for one and
//!   for several nodes (the running total ends as the whole record's); `AllocTRES` shows it;
//!   `energy_tres=off` leaves it alone; a job's owner who rewrites it is listed by
//!   `spank-carbon tres` and `--fix` puts the record's value back (and logs it); one who
//!   sets it before the courier's first write has it overwritten with the record's (the
//!   test cluster has no energy plugin); the record's `sluid=` is Slurm's SLUID of the job.
//! - below 25.11: no energy is ever sent (ConsumedEnergyRaw stays 0) and `tres` refuses.
//! - capitals (lower-cased before 23.02) and whitespace at a field's ends (trimmed from
//!   25.05): the record is written where the release keeps the text, and kept pending,
//!   with a log line, where it would change it.

use crate::common::*;
use spank_carbon::slurm::Differences;
use std::process::Command;
use std::time::Duration;

fn diffs() -> Differences {
    Differences::built()
}

/// The record's GPU energy in joules, as the courier rounds it.
fn record_joules(rec: &Rec) -> u64 {
    let wh: f64 = rec
        .nodes
        .values()
        .map(|p| p["wh"].parse::<f64>().unwrap())
        .sum();
    (wh * 3600.0).round() as u64
}

fn consumed_energy_raw(job: u32) -> u64 {
    let v = field(job, "ConsumedEnergyRaw");
    v.trim().parse().unwrap_or(0)
}

/// Waits until ConsumedEnergyRaw is `want` (the last node's write may land just after the
/// record looks whole); returns what it is at the end.
fn wait_energy(job: u32, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = consumed_energy_raw(job);
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn tres(args: &[&str]) -> (i32, String) {
    let out = Command::new("/usr/local/sbin/spank-carbon")
        .arg("tres")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn energy_tres_is_the_records_energy_where_slurm_has_it() {
    standard_setup();
    let one = submit(&["-N1", "-w", "node2", "--gres=gpu:2"], 3.0);
    let two = submit(&["-N2", "-w", "node3,node4", "--gres=gpu:1"], 3.0);
    for (job, nodes, gpus) in [(one, vec!["node2"], 2), (two, vec!["node3", "node4"], 1)] {
        assert_eq!(wait_job(job), "COMPLETED");
        let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
        check_record(job, &rec, &nodes, gpus);
        let want = record_joules(&rec);
        assert!(want > 100, "job {job}: a trivial truth ({want} J)");
        if diffs().energy_tres {
            let got = wait_energy(job, want);
            assert_eq!(
                got, want,
                "job {job}: ConsumedEnergyRaw vs the record {rec:?}"
            );
            let alloc = field(job, "AllocTRES");
            assert!(
                alloc.contains(&format!("energy={want}")),
                "job {job}: AllocTRES {alloc}"
            );
        } else {
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(
                consumed_energy_raw(job),
                0,
                "job {job}: Slurm {} has no energy TRES to set",
                spank_carbon::SLURM_VERSION
            );
        }
        if diffs().sluid {
            let sluid = field(job, "SLUID").trim().to_ascii_lowercase();
            assert!(sluid.starts_with('s') && sluid.len() == 14, "{sluid:?}");
            assert!(
                text.contains(&format!(" sluid={sluid}")),
                "job {job}: the record does not carry the SLUID {sluid}: {text}"
            );
        } else {
            assert!(!text.contains("sluid="), "{text}");
        }
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn energy_tres_off_leaves_the_energy_alone() {
    standard_setup();
    set_plugstack(&["energy_tres=off"]);
    let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 2.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    set_plugstack(&[]);
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    check_record(job, &rec, &["node1"], 1);
    assert!(record_joules(&rec) > 100);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(consumed_energy_raw(job), 0);
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn an_owner_who_rewrites_their_energy_is_listed_and_undone() {
    if !diffs().energy_tres {
        let (code, out) = tres(&[]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("no settable energy TRES"), "{out}");
        return;
    }
    standard_setup();
    let start = (now() as u64 - 5).to_string();
    let out = run(
        "/usr/sbin/runuser",
        &[
            "-u",
            "scuser",
            "--",
            "/usr/bin/sbatch",
            "--parsable",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "-N1",
            "-w",
            "node2",
            "--gres=gpu:1",
            "--wrap",
            "sleep 3",
        ],
    );
    let job: u32 = out.trim().parse().unwrap();
    assert_eq!(wait_job(job), "COMPLETED");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    let want = record_joules(&rec);
    assert!(want > 100);
    assert_eq!(wait_energy(job, want), want);
    // sacct's -S takes a date: the listing covers jobs started since then.
    let since = run(
        "/usr/bin/date",
        &["-d", &format!("@{start}"), "+%Y-%m-%dT%H:%M:%S"],
    )
    .trim()
    .to_string();
    let (code, out) = tres(&["-S", &since]);
    assert_eq!(code, 0, "nothing to list yet: {out}");

    // The job's owner rewrites their energy (26.05 lets them; SystemComment it does not).
    let cond = format!("jobid={job}");
    let owner = Command::new("/usr/sbin/runuser")
        .args([
            "-u",
            "scuser",
            "--",
            "/usr/bin/sacctmgr",
            "-i",
            "modify",
            "job",
        ])
        .args(["where", &cond, "set", "tres=energy=1"])
        .output()
        .unwrap();
    assert!(owner.status.success(), "{owner:?}");
    assert_eq!(
        consumed_energy_raw(job),
        1,
        "the owner's rewrite did not land"
    );

    let (code, out) = tres(&["-S", &since]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&job.to_string()) && l.contains(&want.to_string())),
        "job {job} not listed with its record's {want} J: {out}"
    );
    let (code, out) = tres(&["-S", &since, "--fix"]);
    assert!(code == 0 || code == 1, "{out}");
    assert_eq!(consumed_energy_raw(job), want, "--fix: {out}");
    assert!(
        out.contains(&format!("job {job} ")) && out.contains(&format!("from 1 J to {want} J")),
        "--fix does not log the value it restored: {out}"
    );
    let (code, out) = tres(&["-S", &since]);
    assert_eq!(code, 0, "still listed after --fix: {out}");
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn capitals_are_written_where_this_slurm_keeps_them() {
    // field=admin with the site's AdminComment "Site-Tag": 22.05's sacctmgr would
    // lower-case it, so the record must stay pending there; later releases keep it.
    standard_setup();
    set_plugstack(&["field=admin", "deliver_timeout_s=5"]);
    let job = submit(&["-N1", "-w", "node4", "--gres=gpu:1", "--comment=x"], 3.0);
    wait_running(job);
    run(
        "/usr/bin/scontrol",
        &["update", &format!("JobId={job}"), "AdminComment=Site-Tag"],
    );
    assert_eq!(wait_job(job), "COMPLETED");
    if diffs().lowercases {
        wait_given_up(job);
        set_plugstack(&[]);
        assert_eq!(field(job, "AdminComment"), "Site-Tag");
        assert!(spank_log().contains("upper-case"), "no log line saying why");
        let kept = remove_pending(job);
        assert!(
            kept.len() == 1 && kept[0].starts_with(&format!("{job}.node4@")),
            "{kept:?}"
        );
    } else {
        let text = wait_delivered(job, "AdminComment", Duration::from_secs(60));
        set_plugstack(&[]);
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(rec.before, "Site-Tag ", "{text}");
        check_record(job, &rec, &["node4"], 1);
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn whitespace_at_the_ends_is_written_where_this_slurm_keeps_it() {
    // field=job with the user's comment "  lead": 25.05+'s sacctmgr trims it, so the
    // record must stay pending there (the user's text kept); earlier releases keep it.
    standard_setup();
    set_plugstack(&["field=job", "deliver_timeout_s=5"]);
    let job = submit(
        &["-N1", "-w", "node3", "--gres=gpu:1", "--comment=  lead"],
        3.0,
    );
    assert_eq!(wait_job(job), "COMPLETED");
    if diffs().trims_whitespace {
        wait_given_up(job);
        set_plugstack(&[]);
        assert_eq!(field(job, "Comment"), "  lead");
        assert!(spank_log().contains("trim"), "no log line saying why");
        let kept = remove_pending(job);
        assert!(
            kept.len() == 1 && kept[0].starts_with(&format!("{job}.node3@")),
            "{kept:?}"
        );
    } else {
        let text = wait_delivered(job, "Comment", Duration::from_secs(60));
        set_plugstack(&[]);
        let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(rec.before, "  lead ", "{text}");
        check_record(job, &rec, &["node3"], 1);
    }
}

/// sreport's view of a time range for `account`, user root: the energy TRES in joules
/// (`-t seconds`: for energy sreport's "TRES seconds" are the joules themselves).
fn sreport_energy(account: &str, from: u64, to: u64) -> Option<u64> {
    sreport_energy_in(account, from, to, "seconds")
}

/// The same in sreport's unit `unit` (its default is minutes).
fn sreport_energy_in(account: &str, from: u64, to: u64, unit: &str) -> Option<u64> {
    let at = |t: u64| {
        run(
            "/usr/bin/date",
            &["-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%S"],
        )
        .trim()
        .to_string()
    };
    let out = run(
        "/usr/bin/sreport",
        &[
            "-n",
            "-P",
            "-t",
            unit,
            "-T",
            "energy",
            "cluster",
            "AccountUtilizationByUser",
            &format!("start={}", at(from)),
            &format!("end={}", at(to)),
            &format!("accounts={account}"),
        ],
    );
    out.lines()
        .filter(|l| l.contains(&format!("|{account}|root|")))
        .filter_map(|l| l.rsplit('|').next()?.trim().parse().ok())
        .next()
}

fn mariadb(sql: &str) -> String {
    run(
        "/usr/bin/mariadb",
        &["-uroot", "-N", "slurm_acct_db", "-e", sql],
    )
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn sreport_counts_the_energy_of_a_job_over_an_hour_boundary() {
    // What sreport makes of the energy the courier sets, for a job that spans an hour
    // boundary. sreport reads slurmdbd's hourly rollups, which cover completed hours only:
    // the job (run for real, record and energy TRES written by the plugin) is moved two
    // days back in the test database, across an hour boundary, the cluster's first
    // registration event moved before it (sreport's cluster reports show only hours in
    // which the cluster existed), and the rollup is made to run again from before it
    // (slurmdbd restarted, which rolls up at once), so the rollups see it as any job.
    if !diffs().energy_tres {
        eprintln!("Slurm {}: no energy TRES", spank_carbon::SLURM_VERSION);
        return;
    }
    standard_setup();
    // An account of this run's own, so that no other job (an earlier run's, on the same
    // database) counts in its hours.
    let account = format!("sreport{}", (now() as u64) % 1_000_000);
    let account = account.as_str();
    run(
        "/usr/bin/sacctmgr",
        &["-i", "add", "account", account, "parent=root"],
    );
    run(
        "/usr/bin/sacctmgr",
        &["-i", "add", "user", "root", &format!("account={account}")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        // slurmctld learns of the new association from slurmdbd a moment later.
        let out = Command::new("/usr/bin/sbatch")
            .args([
                "--parsable",
                "-o",
                "/dev/null",
                "-e",
                "/dev/null",
                "-N1",
                "-w",
                "node2",
            ])
            .args(["--gres=gpu:2", "-A", account, "--wrap", "sleep 4"])
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sbatch -A {account}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(wait_job(job), "COMPLETED");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    let joules = record_joules(&rec);
    assert!(joules > 100);
    assert_eq!(wait_energy(job, joules), joules);

    // slurmctld must have forgotten the job (MinJobAge) before slurmdbd restarts below:
    // on reconnecting it sends the completion of the jobs it still holds again, which
    // would put back the job's own times and an empty energy.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while try_run("/usr/bin/scontrol", &["show", "job", &job.to_string()]).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "slurmctld keeps job {job}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let start: u64 = mariadb(&format!(
        "SELECT time_start FROM sc_job_table WHERE id_job={job} ORDER BY job_db_inx DESC LIMIT 1"
    ))
    .trim()
    .parse()
    .unwrap();
    let boundary = (now() as u64 / 3600 - 48) * 3600;
    // The job now starts 2 s before the boundary (and ends about 2 s after it).
    let shift = start as i64 - (boundary as i64 - 2);
    mariadb(&format!(
        "UPDATE sc_job_table SET time_submit=time_submit-{shift}, time_eligible=time_eligible-{shift}, \
         time_start=time_start-{shift}, time_end=time_end-{shift} WHERE id_job={job}; \
         UPDATE sc_step_table s JOIN sc_job_table j ON s.job_db_inx=j.job_db_inx \
         SET s.time_start=s.time_start-{shift}, s.time_end=s.time_end-{shift} WHERE j.id_job={job}; \
         UPDATE sc_event_table SET time_start=LEAST(time_start, {h}) WHERE node_name='' \
         ORDER BY time_start LIMIT 1; \
         UPDATE sc_last_ran_table SET hourly_rollup={h}, daily_rollup={d}, monthly_rollup={d};",
        h = boundary - 7200,
        d = (boundary - 7200) / 86400 * 86400,
    ));
    cluster(&["stop-dbd"], &[]);
    cluster(&["start-dbd"], &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (before, after) = loop {
        let got = (
            sreport_energy(account, boundary - 3600, boundary),
            sreport_energy(account, boundary, boundary + 3600),
        );
        if got.0.is_some() && got.1.is_some() || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let both = sreport_energy(account, boundary - 3600, boundary + 3600);
    eprintln!(
        "job {job}: record {joules} J; sreport -t seconds -T energy: hour before {before:?}, \
         hour after {after:?}, both hours {both:?}"
    );
    // Slurm's rollup adds a job's energy TRES whole to every hour the job overlaps
    // (as_mysql_rollup.c: "ENERGY is already totalled for the entire job so don't
    // multiple with time"): each hour shows the whole job's energy, and a report over
    // both hours counts it twice.
    assert_eq!(before, Some(joules), "hour before the boundary");
    assert_eq!(after, Some(joules), "hour after the boundary");
    assert_eq!(both, Some(2 * joules), "both hours");
    // sreport's default unit, "TRES minutes", is the joules divided by 60 (rounded).
    let minutes = sreport_energy_in(account, boundary - 3600, boundary, "minutes");
    let want = (joules as f64 / 60.0).round() as u64;
    assert_eq!(minutes, Some(want), "{joules} J in minutes");
}

/// Runs `sacctmgr -i modify job where jobid=JOB set tres=energy=J` as the job's owner
/// (scuser), retrying until the job's row is in slurmdbd.
fn owner_sets_energy(job: u32, joules: u64) {
    let cond = format!("jobid={job}");
    let set = format!("tres=energy={joules}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("/usr/sbin/runuser")
            .args(["-u", "scuser", "--", "/usr/bin/sacctmgr", "-i", "modify"])
            .args(["job", "where", &cond, "set", &set])
            .output()
            .unwrap();
        if out.status.success() && consumed_energy_raw(job) == joules {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the owner could not set the energy of job {job}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn an_owners_energy_set_before_the_first_write_is_overwritten_without_an_energy_plugin() {
    if !diffs().energy_tres {
        return; // below 25.11 nothing sets the energy TRES
    }
    // The premise: this cluster's slurm.conf configures no energy plugin, so Slurm never
    // measures a job's energy and any other value is the owner's.
    assert_eq!(
        spank_carbon::slurm::gres::slurm_measures_energy_at(std::path::Path::new(
            "/etc/slurm/slurm.conf"
        )),
        Some(false),
        "the test cluster has an energy plugin (AcctGatherEnergyType)"
    );
    standard_setup();
    // The courier's sacctmgr waits behind a gate, so the owner writes first.
    let gate_dir = dir("tres-gate");
    let _ = std::fs::remove_dir_all(&gate_dir);
    std::fs::create_dir_all(&gate_dir).unwrap();
    let open = gate_dir.join("open");
    let gate = gate_dir.join("sacctmgr");
    std::fs::write(
        &gate,
        format!(
            "#!/bin/sh\n# Holds the courier's writes until the test opens the gate (60 s at most).\ni=0\nwhile [ ! -e {} ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done\nexec /usr/bin/sacctmgr \"$@\"\n",
            open.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gate, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    set_plugstack(&[&format!("sacctmgr={}", gate.display())]);
    let out = run(
        "/usr/sbin/runuser",
        &[
            "-u",
            "scuser",
            "--",
            "/usr/bin/sbatch",
            "--parsable",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "-N1",
            "-w",
            "node2",
            "--gres=gpu:1",
            "--wrap",
            "sleep 3",
        ],
    );
    let job: u32 = out.trim().parse().unwrap();
    assert_eq!(wait_job(job), "COMPLETED");
    // The owner's value, before any write of the courier: the row holds no record yet.
    owner_sets_energy(job, 1);
    let before = field(job, "SystemComment");
    std::fs::write(&open, "").unwrap();
    assert!(
        !before.contains("spank-carbon/"),
        "the courier wrote before the owner: {before:?}"
    );
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(90));
    set_plugstack(&[]);
    let _ = std::fs::remove_dir_all(&gate_dir);
    let rec = parse_rec(&text).unwrap_or_else(|| panic!("{text:?}"));
    let want = record_joules(&rec);
    assert!(want > 100, "a trivial truth ({want} J)");
    assert_eq!(
        wait_energy(job, want),
        want,
        "job {job}: the owner's 1 J was taken for Slurm's measurement and kept"
    );
}
