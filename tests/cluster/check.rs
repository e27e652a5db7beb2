//! End-to-end tests of `spank-carbon check` and of the plugin's word at slurmd's start, on the
//! local cluster (scripts/test.sh runs them on every Slurm release): the check passes on the
//! test cluster and maps each gres file to the GPU the fake NVML has at its minor; then each
//! thing it checks is broken once, and it must say so (and exit non-zero); under
//! `PrologFlags=RunInJob` (24.05+), where Slurm never calls the plugin's prolog and epilog,
//! slurmd's log says the plugin cannot measure and a GPU job indeed gets no record.

use crate::common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = "/usr/local/sbin/spank-carbon";

/// Runs `spank-carbon check --json --node <node>` with extra arguments: (exit code, findings).
fn check(node: &str, extra: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(BIN)
        .args(["check", "--json", "--node", node])
        .args(extra)
        .output()
        .unwrap();
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), findings)
}

fn with_status<'a>(findings: &'a [Value], status: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["status"] == status).collect()
}

/// The check named `name` reported an error whose detail or fix contains `needle`, and the
/// command exited non-zero.
fn assert_error(what: &str, (code, findings): &(i32, Vec<Value>), name: &str, needle: &str) {
    assert_ne!(*code, 0, "{what}: check exited 0: {findings:#?}");
    let hit = with_status(findings, "error").into_iter().any(|f| {
        f["check"] == name
            && (f["detail"].as_str().unwrap_or("").contains(needle)
                || f["fix"].as_str().unwrap_or("").contains(needle))
    });
    assert!(
        hit,
        "{what}: no error `{name}` mentioning `{needle}`: {findings:#?}"
    );
}

/// Whether this Slurm has PrologFlags=RunInJob (24.05+), for the version the build targets.
fn has_run_in_job() -> bool {
    spank_carbon::slurm::Differences::built().run_in_job
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn check_passes_on_the_test_cluster_and_maps_every_gpu() {
    standard_setup();
    for node in ["node1", "node3"] {
        let (code, findings) = check(node, &[]);
        assert_eq!(code, 0, "{findings:#?}");
        assert!(with_status(&findings, "error").is_empty(), "{findings:#?}");
        // Every gres file, by index, maps to the fake GPU at the file's minor (the files
        // are deliberately neither in index nor in PCI order).
        let gpus: Vec<&Value> = findings.iter().filter(|f| f["check"] == "gpu").collect();
        assert_eq!(gpus.len(), 4, "{findings:#?}");
        for (i, f) in gpus.iter().enumerate() {
            let d = f["detail"].as_str().unwrap();
            let minor = minor_of_file(i);
            assert!(
                d.starts_with(&format!("gres index {i}:"))
                    && d.contains(&format!("nvidia{i} minor {minor} "))
                    && d.contains(&format!("GPU-fake-{node}-{minor}")),
                "{d}"
            );
            assert_eq!(f["status"], "ok", "{d}");
        }
        let version = findings
            .iter()
            .find(|f| f["check"] == "slurm version")
            .unwrap();
        assert!(
            version["detail"]
                .as_str()
                .unwrap()
                .contains(spank_carbon::SLURM_VERSION),
            "{version}"
        );
    }
    // slurmd said at its start that the plugin is loaded and configured to measure.
    let log = slurmd_log("node1");
    assert!(
        log.contains(&format!(
            "spank-carbon: loaded (built for Slurm {})",
            spank_carbon::SLURM_VERSION
        )),
        "no start line in node1's slurmd log"
    );
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn check_reports_each_thing_it_checks_when_broken() {
    standard_setup();

    // A bad key in plugstack.conf: named, and slurmd says so when it starts.
    set_plugstack(&["intensty=300"]);
    assert_error(
        "bad key",
        &check("node1", &[]),
        "plugin arguments",
        "intensty",
    );
    let mark = slurmd_log("node1").len();
    cluster(&["restart-slurmd", "node1"], &[]);
    assert!(
        slurmd_log("node1")[mark..].contains("unknown key `intensty`"),
        "slurmd's log does not name the bad key"
    );
    set_plugstack(&[]);
    cluster(&["restart-slurmd", "node1"], &[]);

    // No plugin line at all.
    let plugstack = Path::new("/etc/slurm/plugstack.conf");
    let saved = fs::read_to_string(plugstack).unwrap();
    fs::write(plugstack, "# nothing here\n").unwrap();
    let got = check("node1", &[]);
    fs::write(plugstack, &saved).unwrap();
    assert_error(
        "no plugin line",
        &got,
        "plugstack.conf",
        "libspank_carbon.so",
    );

    // The plugin library writable by others.
    let lib = Path::new(PLUGIN);
    let mode = fs::metadata(lib).unwrap().permissions().mode() & 0o7777;
    fs::set_permissions(lib, fs::Permissions::from_mode(0o777)).unwrap();
    let got = check("node1", &[]);
    fs::set_permissions(lib, fs::Permissions::from_mode(mode)).unwrap();
    assert_error("library mode", &got, "plugin library", "go-w");

    // NVML cannot be loaded.
    let nvml = fake_dir().join("libnvidia-ml.so.1");
    let moved = fake_dir().join("libnvidia-ml.so.1.away");
    fs::rename(&nvml, &moved).unwrap();
    let got = check("node1", &[]);
    fs::rename(&moved, &nvml).unwrap();
    assert_error("NVML missing", &got, "gpus", "NVML");

    // The state directory writable by others.
    let state = node_state_dir("node1");
    if !state.exists() {
        // The first prolog on the node creates it (check only looks).
        let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 0.1);
        assert_eq!(wait_job(job), "COMPLETED");
    }
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o7777;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let got = check("node1", &[]);
    fs::set_permissions(&state, fs::Permissions::from_mode(mode)).unwrap();
    assert_error("state_dir mode", &got, "state_dir", "writable");

    // slurmd of another release than the plugin was built for.
    let fake_slurmd = std::env::temp_dir().join("sc-check-old-slurmd");
    fs::write(&fake_slurmd, "#!/bin/sh\necho 'slurm 21.08.8'\n").unwrap();
    fs::set_permissions(&fake_slurmd, fs::Permissions::from_mode(0o755)).unwrap();
    let got = check("node1", &["--slurmd", fake_slurmd.to_str().unwrap()]);
    let _ = fs::remove_file(&fake_slurmd);
    assert_error("version mismatch", &got, "slurm version", "21.08");

    // A gres file whose minor no GPU has.
    cluster(&["start"], &[("SC_GPU_MINORS", "2 0 3 9")]);
    let got = check("node1", &[]);
    cluster(&["start"], &[]);
    assert_error("unknown minor", &got, "gpu", "9");

    // slurmdbd down: accounting cannot be written.
    cluster(&["stop-dbd"], &[]);
    let got = check("node1", &[]);
    cluster(&["start-dbd"], &[]);
    assert_error("slurmdbd down", &got, "slurmdbd", "");

    // PrologFlags without Alloc: the prolog would not run at allocation.
    let mark = slurmd_log("node1").len();
    cluster(&["start"], &[("SC_PROLOG_FLAGS", "")]);
    let got = check("node1", &[]);
    let log = slurmd_log("node1")[mark..].to_string();
    cluster(&["start"], &[]);
    assert_error("no Alloc", &got, "PrologFlags", "Alloc");
    assert!(
        log.contains("spank-carbon: PrologFlags: PrologFlags=(not set): without Alloc"),
        "slurmd's log does not say that Alloc is missing"
    );

    // Everything restored: the check passes again.
    let (code, findings) = check("node1", &[]);
    assert_eq!(code, 0, "{findings:#?}");
}

#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn under_run_in_job_slurmd_says_the_plugin_cannot_measure() {
    if !has_run_in_job() {
        eprintln!(
            "Slurm {} has no PrologFlags=RunInJob (24.05+): nothing to test",
            spank_carbon::SLURM_VERSION
        );
        return;
    }
    standard_setup();
    let mark = slurmd_log("node1").len();
    cluster(&["start"], &[("SC_PROLOG_FLAGS", "Alloc,RunInJob")]);
    let outcome = std::panic::catch_unwind(|| {
        let got = check("node1", &[]);
        assert_error("RunInJob", &got, "PrologFlags", "RunInJob");
        let log = slurmd_log("node1")[mark..].to_string();
        let line = "spank-carbon: PrologFlags: PrologFlags=Alloc,RunInJob: under RunInJob slurmd never runs SPANK job_prolog/job_epilog";
        // Once per start of slurmd (cluster.sh's restart and 24.05+'s re-exec on
        // reconfigure are starts too), not once per job.
        let said = log.matches(line).count();
        let starts = log.matches("slurmd version ").count();
        assert!(
            said >= 1 && said <= starts,
            "said {said} times in {starts} starts of slurmd"
        );
        // And it is true: a GPU job runs and ends well, and no record comes.
        let job = submit(&["-N1", "-w", "node1", "--gres=gpu:1"], 2.0);
        assert_eq!(wait_job(job), "COMPLETED");
        std::thread::sleep(Duration::from_secs(8));
        assert_eq!(field(job, "SystemComment"), "", "a record under RunInJob?");
    });
    cluster(&["start"], &[]);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
