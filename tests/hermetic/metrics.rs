//! The Prometheus textfile as `spank-carbon metrics` writes it, checked by the
//! Prometheus project's own linter (`promtool check metrics`), and the Grafana dashboard
//! checked against the metrics the exporter writes.
//!
//! promtool comes with Debian's `prometheus` package (`/usr/bin/promtool`; `scripts/cluster.sh
//! install` installs it). Without it the promtool test fails, unless `SC_ALLOW_SKIP=1` is set
//! (a developer machine), when it says so and passes. `SC_PROMTOOL=PATH` names another one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use spank_carbon::node::metrics::{self, METRICS};
use spank_carbon::node::state::StateDir;
use spank_carbon::record::{Method, NodePart};

const BIN: &str = env!("CARGO_BIN_EXE_spank-carbon");

/// The Slurm release the binary was built for: scripts/test.sh builds every release into
/// one target directory, so while one release's suite runs, the binary at BIN may be
/// another release's build (the test executables are kept per release, the binary not).
fn bin_slurm() -> String {
    let out = Command::new(BIN).arg("slurm-version").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sc-metrics-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn part(node: &str, wh: f64, co2e_g: f64, method: Method) -> NodePart {
    NodePart {
        embodied_g: Some(0.5),
        ..NodePart::new(node, wh, 1, co2e_g, method, (1.0, 2.0))
    }
}

fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SC_PROMTOOL") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

/// A state directory with totals: two parts and a delivery.
fn state_with_totals(root: &Path) -> StateDir {
    let state = StateDir::open(root).unwrap();
    metrics::count_part(&state, "gpu-01", &part("gpu-01", 2.0, 1.5, Method::Counter));
    metrics::count_part(
        &state,
        "gpu-01",
        &part("gpu-01", 1.0, 0.75, Method::Sampled),
    );
    metrics::count_delivery(&state, true);
    metrics::count_delivery(&state, false);
    state
}

#[test]
fn textfile_passes_promtool() {
    let root = temp_dir("promtool");
    state_with_totals(&root.join("state"));
    let textdir = root.join("textfile");
    std::fs::create_dir_all(&textdir).unwrap();
    let state_arg = format!("state_dir={}", root.join("state").display());
    let out = Command::new(BIN)
        .args(["metrics", "--node", "gpu-01", "--dir"])
        .arg(&textdir)
        .args(["--", &state_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = textdir.join("spank-carbon-gpu-01.prom");
    let text = std::fs::read_to_string(&file).unwrap();
    // The totals written above, in base units: 3 Wh = 10800 J.
    assert!(
        text.contains("spank_carbon_gpu_energy_joules_total{node=\"gpu-01\"} 10800\n"),
        "{text}"
    );
    assert!(text.contains("spank_carbon_delivery_failures_total{node=\"gpu-01\"} 1\n"));
    assert!(
        text.contains(&format!("slurm=\"{}\"", bin_slurm())),
        "{text}"
    );
    // Only the .prom file: the temporary is gone.
    let names: Vec<_> = std::fs::read_dir(&textdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("spank-carbon-gpu-01.prom")]
    );
    let Some(promtool) = promtool() else {
        if std::env::var("SC_ALLOW_SKIP").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: promtool not found (Debian: apt-get install prometheus); SC_ALLOW_SKIP=1"
            );
            return;
        }
        panic!("promtool not found (Debian package `prometheus`; or SC_PROMTOOL=PATH); set SC_ALLOW_SKIP=1 to skip on a developer machine");
    };
    let check = |input: &str| {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = check(&text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    // promtool is not a rubber stamp: a counter without `_total` is reported.
    let bad = text.replace("spank_carbon_deliveries_total", "spank_carbon_deliveries");
    let (ok, said) = check(&bad);
    assert!(!ok || !said.trim().is_empty(), "promtool accepted:\n{bad}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn metrics_stdout_equals_the_file() {
    let root = temp_dir("stdout");
    state_with_totals(&root.join("state"));
    let state_arg = format!("state_dir={}", root.join("state").display());
    let out = Command::new(BIN)
        .args(["metrics", "--stdout", "--node", "gpu-01", "--", &state_arg])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let state = StateDir::existing(&root.join("state")).unwrap().unwrap();
    let own = format!("slurm=\"{}\"", spank_carbon::slurm::SlurmVersion::built());
    let want = metrics::snapshot(&state, "gpu-01")
        .unwrap()
        .replace(&own, &format!("slurm=\"{}\"", bin_slurm()));
    assert_eq!(text, want);
    std::fs::remove_dir_all(&root).unwrap();
}

/// The metric names a PromQL expression uses: identifiers starting with `spank_carbon_`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if cur.starts_with("spank_carbon_") {
                names.push(cur.clone());
            }
            cur.clear();
        }
    }
    names
}

fn walk<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if k == key => out.push(s),
                    _ => walk(v, key, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_name_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/spank-carbon.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exported: BTreeSet<&str> = METRICS.iter().map(|d| d.name).collect();
    let mut exprs = Vec::new();
    walk(&dash, "expr", &mut exprs);
    assert!(exprs.len() >= 7, "{} queries", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no spank-carbon metric in `{e}`");
        for n in names {
            assert!(
                exported.contains(n.as_str()),
                "`{n}` in `{e}` is not written by the exporter"
            );
            used.insert(n);
        }
    }
    // Every metric has a panel.
    let unused: Vec<_> = exported.iter().filter(|n| !used.contains(**n)).collect();
    assert!(unused.is_empty(), "no panel for {unused:?}");
    // The variables' queries too, and the datasource is a variable of type prometheus.
    let mut defs = Vec::new();
    walk(&dash["templating"], "definition", &mut defs);
    for d in defs {
        for n in metric_names(d) {
            assert!(exported.contains(n.as_str()), "`{n}` in variable `{d}`");
        }
    }
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
    // Power is rate() of the joules counter.
    assert!(exprs
        .iter()
        .any(|e| e.contains("rate(spank_carbon_gpu_energy_joules_total")));
    // And the check itself can fail: a renamed metric is caught.
    assert!(
        metric_names("rate(spank_carbon_gpu_energy_joule_total[5m])")
            .iter()
            .any(|n| !exported.contains(n.as_str()))
    );
}
