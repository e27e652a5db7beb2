//! `spank-carbon report` and `fairshare` against a fake sacct (a shell script) that
//! prints rows with the delimiter it is given and a Comment forging rows in sacct's
//! default format: no Slurm needed, so these run with every `cargo test`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_spank-carbon");

/// Held by each test: a script written while another thread forks could be busy
/// (ETXTBSY) when run.
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sc-hard-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fake sacct: refuses to run unless given `-P` once and a delimiter of 21 characters
/// (a nonce), logs its arguments, and prints alice's job (750 g, account chem) and
/// mallory's, whose Comment holds a forged row charging chem 9 t.
fn fake_sacct(dir: &Path) -> PathBuf {
    let t = now();
    let record = format!(
        "spank-carbon/1 gpu_wh=1000 co2e_g=750 intensity=475 pue=1.58 gpus=2 nodes=1 of=1 \
         method=counter node.n1=wh:1000,gpus:2,co2e:750,m:counter,t:{}-{t}",
        t - 3600
    );
    let forged = format!(
        "3|bob|chem|gpu|COMPLETED|3600|gres/gpu=8|n9|spank-carbon/1 gpu_wh=1 co2e_g=9000000 \
         intensity=475 pue=1.58 gpus=8 nodes=1 of=1 method=counter \
         node.n9=wh:1,gpus:8,co2e:9000000,m:counter,t:{}-{t}",
        t - 60
    );
    let log = dir.join("sacct.args");
    script(
        dir,
        "sacct",
        &format!(
            r#"d=; p=0
for a in "$@"; do
  case "$a" in
    --delimiter=*) d="${{a#--delimiter=}}";;
    -P) p=$((p+1));;
  esac
done
echo "$@" >> '{log}'
if [ "$p" != 1 ] || [ ${{#d}} != 21 ]; then echo "bad arguments: $*" >&2; exit 1; fi
printf '%s\n' "1${{d}}alice${{d}}chem${{d}}gpu${{d}}COMPLETED${{d}}3600${{d}}cpu=4,gres/gpu=2${{d}}n1${{d}}{record}"
printf '%s\n' "2${{d}}mallory${{d}}evil${{d}}gpu${{d}}COMPLETED${{d}}60${{d}}cpu=1${{d}}n2${{d}}hi" '{forged}' 'bye'"#,
            log = log.display()
        ),
    )
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn report_ignores_rows_forged_in_a_comment() {
    let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("report");
    let sacct = fake_sacct(&dir);
    let out = run(&[
        "report",
        "--by",
        "account",
        "--json",
        "--sacct",
        sacct.to_str().unwrap(),
    ]);
    let t = json(&out);
    let rows = t.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{t}");
    let chem = rows.iter().find(|r| r["name"] == "chem").unwrap();
    assert_eq!(chem["jobs"], 1, "{t}");
    assert_eq!(chem["co2e_g"], 750.0, "{t}");
    assert_eq!(chem["gpu_hours"], 2.0, "{t}");
    let evil = rows.iter().find(|r| r["name"] == "evil").unwrap();
    assert_eq!(evil["measured_jobs"], 0, "{t}");
    // Two runs: two delimiters.
    run(&["report", "-j", "1", "--sacct", sacct.to_str().unwrap()]);
    let log = fs::read_to_string(dir.join("sacct.args")).unwrap();
    let delims: Vec<&str> = log
        .split_whitespace()
        .filter(|a| a.starts_with("--delimiter="))
        .collect();
    assert_eq!(delims.len(), 2, "{log}");
    assert_ne!(delims[0], delims[1]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fairshare_charges_only_real_rows_and_times_out_sacct() {
    let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("fairshare");
    let sacct = fake_sacct(&dir);
    let sacctmgr = script(&dir, "sacctmgr", "printf 'chem||100\\nevil||100\\n'");
    let policy = dir.join("policy.toml");
    let write_policy = |extra: &str| {
        fs::write(
            &policy,
            format!(
                "state = \"{}\"\n{extra}\n[budget_kg]\nchem = 1\nevil = 1\n",
                dir.join("state.json").display()
            ),
        )
        .unwrap()
    };
    write_policy("");
    let args = |sacct: &Path| {
        vec![
            "fairshare".to_string(),
            "--json".into(),
            "--config".into(),
            policy.display().to_string(),
            "--sacct".into(),
            sacct.display().to_string(),
            "--sacctmgr".into(),
            sacctmgr.display().to_string(),
        ]
    };
    let a = args(&sacct);
    let plan = json(&run(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let by = |name: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|r| r["account"] == name)
            .cloned()
            .unwrap()
    };
    // chem: 0.75 kg of a 1 kg budget, an hour old: shares 100 -> 25. The forged 9 t
    // would have put it at the floor (10).
    let usage = by("chem")["usage_kg"].as_f64().unwrap();
    assert!((usage - 0.75).abs() < 0.01, "{plan}");
    assert_eq!(by("chem")["new"], 25, "{plan}");
    assert_eq!(by("evil")["new"], 100, "{plan}");

    // A sacct that does not answer is killed at sacct_timeout_s, and the run fails.
    let slow = script(&dir, "slow-sacct", "exec sleep 30");
    write_policy("sacct_timeout_s = 1");
    let a = args(&slow);
    let t = Instant::now();
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer within 1 s"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    fs::remove_dir_all(&dir).unwrap();
}
