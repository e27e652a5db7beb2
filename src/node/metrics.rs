//! Node metrics for Prometheus' node_exporter textfile collector.
//!
//! **Where the numbers come from.** The counters are running totals kept in a root-owned
//! file of the state directory (`metrics.json`), updated where the events happen: the
//! epilog adds a node's part when it is final (right after its pending record is
//! written; a sampler whose job ended without an epilog adds its orphan part when it
//! keeps the local record), and the courier counts each delivery and each failed one.
//! They are not derived from the local records: retention removes old records, and a
//! sum over what is left would go backwards. A total only ever grows: every update adds
//! a non-negative, finite amount under a lock (`metrics.lock`) and replaces the file
//! atomically and durably (fsync before the rename), so a crash leaves the old or the
//! new totals, never a shorter file. A part is counted once per job, node and run: an
//! epilog run again for a part already queued (slurmd's TERMINATE_JOB retries) adds
//! nothing. If the totals file is damaged it is set aside (`metrics.json.bad`), the
//! error is logged and counting starts again from zero, which Prometheus' `rate()` and
//! `increase()` read as a counter reset.
//!
//! **The textfile.** `spank-carbon-<node>.prom` in `metrics_dir` (several slurmd on one
//! host, `state_dir=...%n`, each have their own file and `node` label), written as the
//! collector's documentation asks: a new file `spank-carbon-<node>.prom.<pid>` in the
//! same directory (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0644), renamed over the old one. No
//! timestamps; no per-job or per-user labels (`node` is one value per file, `method`
//! one of three). Written by `spank-carbon metrics`, and after each record and each
//! courier round when `metrics_dir` is set.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node::state::{self, StateDir};
use crate::record::{Method, NodePart};

/// The running totals' file in the state directory.
pub const TOTALS_FILE: &str = "metrics.json";
/// The lock that serialises updates of the totals (epilogs of several jobs, the courier).
pub const LOCK_FILE: &str = "metrics.lock";
/// node_exporter's textfile directory on Debian (`prometheus-node-exporter`).
pub const DEFAULT_DIR: &str = "/var/lib/prometheus/node-exporter";

/// How long an update waits for the lock before it gives up (and logs).
const LOCK_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric the exporter writes.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

pub const GPU_ENERGY: &str = "spank_carbon_gpu_energy_joules_total";
pub const CO2E: &str = "spank_carbon_co2e_grams_total";
pub const EMBODIED: &str = "spank_carbon_embodied_co2e_grams_total";
pub const JOBS: &str = "spank_carbon_jobs_measured_total";
pub const PENDING: &str = "spank_carbon_records_pending";
pub const DELIVERIES: &str = "spank_carbon_deliveries_total";
pub const FAILURES: &str = "spank_carbon_delivery_failures_total";
pub const LAST_SUCCESS: &str = "spank_carbon_courier_last_success_timestamp_seconds";
pub const BUILD_INFO: &str = "spank_carbon_build_info";

/// Every metric the exporter writes, in the order it writes them. The dashboard's test
/// checks its queries against this list.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: GPU_ENERGY,
        kind: Kind::Counter,
        help: "GPU energy of the jobs measured on this node, joules (rate() is power in watts).",
    },
    MetricDef {
        name: CO2E,
        kind: Kind::Counter,
        help: "Operational CO2e of that energy (energy x PUE x grid intensity), grams.",
    },
    MetricDef {
        name: EMBODIED,
        kind: Kind::Counter,
        help: "Embodied CO2e of the GPUs' allocation (embodied_kg_per_gpu_hour), grams.",
    },
    MetricDef {
        name: JOBS,
        kind: Kind::Counter,
        help: "Jobs (one per job, run and node) measured on this node, by how the energy was measured.",
    },
    MetricDef {
        name: PENDING,
        kind: Kind::Gauge,
        help: "Records of this node waiting to be written into accounting.",
    },
    MetricDef {
        name: DELIVERIES,
        kind: Kind::Counter,
        help: "Records this node's courier wrote into accounting.",
    },
    MetricDef {
        name: FAILURES,
        kind: Kind::Counter,
        help: "Failed deliveries: a record not written when its courier gave up (it stays pending and is retried).",
    },
    MetricDef {
        name: LAST_SUCCESS,
        kind: Kind::Gauge,
        help: "When this node's courier last wrote a record into accounting, seconds since the epoch.",
    },
    MetricDef {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        help: "Always 1: spank-carbon's version and the Slurm version it was built for.",
    },
];

/// The node's running totals (the state directory's `metrics.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// The node these totals are of (its `node` label).
    #[serde(default)]
    pub node: Option<String>,
    pub gpu_energy_j: f64,
    pub co2e_g: f64,
    pub embodied_g: f64,
    pub jobs_counter: u64,
    pub jobs_sampled: u64,
    pub jobs_mixed: u64,
    pub deliveries: u64,
    pub delivery_failures: u64,
    #[serde(default)]
    pub last_success_unix: Option<f64>,
}

fn add(total: &mut f64, v: f64) {
    if v.is_finite() && v > 0.0 {
        *total += v;
    }
}

impl Totals {
    /// Adds a node's final part.
    pub fn add_part(&mut self, part: &NodePart) {
        add(&mut self.gpu_energy_j, part.wh * 3600.0);
        add(&mut self.co2e_g, part.co2e_g);
        add(&mut self.embodied_g, part.embodied_g.unwrap_or(0.0));
        match part.method {
            Method::Counter => self.jobs_counter += 1,
            Method::Sampled => self.jobs_sampled += 1,
            Method::Mixed => self.jobs_mixed += 1,
        }
    }

    /// Counts one delivery (`ok`) or one failed delivery at `now_unix`.
    pub fn add_delivery(&mut self, ok: bool, now_unix: f64) {
        if ok {
            self.deliveries += 1;
            if now_unix.is_finite() {
                self.last_success_unix =
                    Some(self.last_success_unix.map_or(now_unix, |t| t.max(now_unix)));
            }
        } else {
            self.delivery_failures += 1;
        }
    }
}

/// Escapes a label value as the text exposition format asks: `\`, `"` and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, others in Rust's shortest round-trip
/// form (never an exponent, never NaN: the totals only hold finite values).
fn value(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// What the textfile says beyond the totals.
#[derive(Debug, Clone)]
pub struct Extra<'a> {
    pub node: &'a str,
    pub pending: usize,
    pub version: &'a str,
    pub slurm: &'a str,
}

/// The textfile: for each metric of [`METRICS`] its HELP and TYPE lines, then its
/// samples, each labelled with the node.
pub fn render(t: &Totals, x: &Extra) -> String {
    let node = format!("node=\"{}\"", escape_label(x.node));
    let mut out = String::new();
    for def in METRICS {
        let samples: Vec<(String, String)> = match def.name {
            GPU_ENERGY => vec![(node.clone(), value(t.gpu_energy_j))],
            CO2E => vec![(node.clone(), value(t.co2e_g))],
            EMBODIED => vec![(node.clone(), value(t.embodied_g))],
            JOBS => [
                (Method::Counter, t.jobs_counter),
                (Method::Sampled, t.jobs_sampled),
                (Method::Mixed, t.jobs_mixed),
            ]
            .iter()
            .map(|(m, n)| (format!("{node},method=\"{}\"", m.as_str()), n.to_string()))
            .collect(),
            PENDING => vec![(node.clone(), x.pending.to_string())],
            DELIVERIES => vec![(node.clone(), t.deliveries.to_string())],
            FAILURES => vec![(node.clone(), t.delivery_failures.to_string())],
            // Unknown until the first delivery: no sample rather than a false 1970.
            LAST_SUCCESS => t
                .last_success_unix
                .map(|s| (node.clone(), value(s)))
                .into_iter()
                .collect(),
            BUILD_INFO => vec![(
                format!(
                    "{node},version=\"{}\",slurm=\"{}\"",
                    escape_label(x.version),
                    escape_label(x.slurm)
                ),
                "1".into(),
            )],
            _ => Vec::new(),
        };
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", def.name, def.help);
        let _ = writeln!(out, "# TYPE {} {}", def.name, def.kind.as_str());
        for (labels, v) in samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", def.name);
        }
    }
    out
}

/// The metric name of a sample line (`name{...} v` or `name v`); `None` for comments.
pub fn sample_name(line: &str) -> Option<&str> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    line.split(['{', ' ']).next()
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The totals of the state directory (zero if there are none yet).
pub fn load(state: &StateDir) -> Result<Totals, state::StateError> {
    Ok(state::read_json(&state.root().join(TOTALS_FILE))?.unwrap_or_default())
}

/// Applies `f` to the totals under the lock and writes them back durably. Errors are
/// logged, never returned: metrics must not stop an epilog or a courier.
pub fn update(state: &StateDir, f: impl FnOnce(&mut Totals)) {
    if let Err(e) = try_update(state, f) {
        log::error!("metrics: totals not updated: {e}");
    }
}

fn try_update(state: &StateDir, f: impl FnOnce(&mut Totals)) -> io::Result<()> {
    let lock_path = state.root().join(LOCK_FILE);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(io_at(&lock_path))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{}: held for {LOCK_WAIT:?}: {e}", lock_path.display()),
                ))
            }
        }
    }
    let path = state.root().join(TOTALS_FILE);
    let mut totals = match state::read_json::<Totals>(&path) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            let aside = state.root().join(format!("{TOTALS_FILE}.bad"));
            log::error!(
                "metrics: {e}; set aside as {}, counting from zero",
                aside.display()
            );
            let _ = fs::rename(&path, &aside);
            Totals::default()
        }
    };
    f(&mut totals);
    let bytes = serde_json::to_vec_pretty(&totals).map_err(io::Error::other)?;
    state::write_durable(&path, &bytes).map_err(io::Error::other)?;
    drop(lock);
    Ok(())
}

/// Counts a node's final part (the epilog; an orphaned sampler's record).
pub fn count_part(state: &StateDir, node: &str, part: &NodePart) {
    update(state, |t| {
        t.node = Some(node.to_string());
        t.add_part(part);
    });
}

/// Counts a delivery or a failed one (the courier).
pub fn count_delivery(state: &StateDir, ok: bool) {
    let now = crate::units::unix_now();
    update(state, |t| t.add_delivery(ok, now));
}

/// The textfile's name for `node`.
pub fn file_name(node: &str) -> String {
    format!("spank-carbon-{node}.prom")
}

/// Writes `text` as `dir/spank-carbon-<node>.prom`: a new file beside it (O_EXCL,
/// O_NOFOLLOW, mode 0644), fsynced, renamed over it. The directory is opened once
/// (O_DIRECTORY|O_NOFOLLOW) and everything after goes through that descriptor (openat,
/// renameat), so a directory swapped for a symbolic link after the check (Debian's
/// textfile directory and its parent belong to `prometheus`) cannot send root's file
/// elsewhere. Refuses a `dir` that is a symbolic link or not a directory, or that others
/// can write without the sticky bit, and a node name that is not one.
pub fn write_textfile(dir: &Path, node: &str, text: &str) -> io::Result<PathBuf> {
    write_textfile_with(dir, node, text, || ())
}

/// [`write_textfile`], calling `between` once the directory is open and checked (tests
/// swap the directory there).
fn write_textfile_with(
    dir: &Path,
    node: &str,
    text: &str,
    between: impl FnOnce(),
) -> io::Result<PathBuf> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    if !crate::record::valid_node_name(node) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{node}` is not a valid node name"),
        ));
    }
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => io_at(dir)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory (a symbolic link is refused)",
        )),
        e => io_at(dir)(e.into()),
    })?;
    let mode = rustix::fs::fstat(&dirfd)
        .map_err(|e| io_at(dir)(e.into()))?
        .st_mode;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(io_at(dir)(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "writable by others",
        )));
    }
    between();
    let name = file_name(node);
    let target = dir.join(&name);
    let pid = std::process::id();
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for n in 0..16 {
        let tmp = if n == 0 {
            format!("{name}.{pid}")
        } else {
            format!("{name}.{pid}.{n}")
        };
        let fd = match rustix::fs::openat(
            &dirfd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => {
                last = io::Error::from(io::ErrorKind::AlreadyExists);
                continue;
            }
            Err(e) => return Err(io_at(&dir.join(&tmp))(e.into())),
        };
        let mut f = fs::File::from(fd);
        let result = (|| {
            // The umask may have taken bits away: the collector must read it.
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            drop(f);
            rustix::fs::renameat(&dirfd, tmp.as_str(), &dirfd, name.as_str())?;
            // The rename itself survives a crash once the directory is synced.
            let _ = rustix::fs::fsync(&dirfd);
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(&dirfd, tmp.as_str(), AtFlags::empty());
            return Err(io_at(&target)(e));
        }
        return Ok(target);
    }
    Err(io_at(dir)(last))
}

/// The node's textfile from its totals and pending records.
pub fn snapshot(state: &StateDir, node: &str) -> Result<String, state::StateError> {
    let totals = load(state)?;
    Ok(render(
        &totals,
        &Extra {
            node,
            pending: state.pending_keys().len(),
            version: env!("CARGO_PKG_VERSION"),
            slurm: &crate::slurm::SlurmVersion::built().to_string(),
        },
    ))
}

/// The node whose totals these are: `node`, else the one the totals name, else
/// SLURMD_NODENAME (lower-cased, as `%n` is).
pub fn node_of(state: &StateDir, node: Option<&str>) -> Option<String> {
    node.map(str::to_string)
        .or_else(|| load(state).ok().and_then(|t| t.node))
        .or_else(|| std::env::var("SLURMD_NODENAME").ok())
        .map(|n| n.to_ascii_lowercase())
}

/// Writes the node's textfile into `metrics_dir` if it is set (the epilog after a
/// record, the courier after a round). Errors are logged.
pub fn refresh(config: &crate::core::config::Config, state: &StateDir, node: Option<&str>) {
    let Some(dir) = &config.metrics_dir else {
        return;
    };
    let Some(node) = node_of(state, node) else {
        log::error!("metrics: textfile not written: the node's name is not known");
        return;
    };
    let result = snapshot(state, &node)
        .map_err(io::Error::other)
        .and_then(|text| write_textfile(dir, &node, &text));
    if let Err(e) = result {
        log::error!("metrics: textfile not written (metrics_dir): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;

    fn part(wh: f64, co2e_g: f64, method: Method, embodied: Option<f64>) -> NodePart {
        NodePart {
            embodied_g: embodied,
            ..NodePart::new("n1", wh, 2, co2e_g, method, (1.0, 2.0))
        }
    }

    fn extra(node: &str) -> Extra<'_> {
        Extra {
            node,
            pending: 3,
            version: "0.1.0",
            slurm: "26.05.5",
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for d in METRICS {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("spank_carbon_"), "{}", d.name);
            assert!(
                d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "counters and only counters end in _total: {}",
                d.name
            );
            assert!(!d.help.contains('\n') && !d.help.is_empty());
        }
    }

    #[test]
    fn every_metric_has_help_type_and_its_samples_once() {
        let mut t = Totals::default();
        t.add_part(&part(1.5, 2.0, Method::Counter, Some(0.25)));
        t.add_delivery(true, 1_800_000_000.5);
        let text = render(&t, &extra("n1"));
        for d in METRICS {
            assert_eq!(
                text.matches(&format!("# HELP {} ", d.name)).count(),
                1,
                "{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {} {}\n", d.name, d.kind.as_str())),
                "{text}"
            );
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let unique: BTreeSet<&str> = lines
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        assert_eq!(unique.len(), lines.len(), "a series twice: {text}");
        let names: BTreeSet<&str> = lines.iter().filter_map(|l| sample_name(l)).collect();
        let known: BTreeSet<&str> = METRICS.iter().map(|d| d.name).collect();
        assert_eq!(names, known);
        // 1.5 Wh is 5400 J.
        assert!(text.contains("spank_carbon_gpu_energy_joules_total{node=\"n1\"} 5400\n"));
        assert!(
            text.contains("spank_carbon_jobs_measured_total{node=\"n1\",method=\"counter\"} 1\n")
        );
        assert!(text.contains("spank_carbon_jobs_measured_total{node=\"n1\",method=\"mixed\"} 0\n"));
        assert!(text.contains("spank_carbon_records_pending{node=\"n1\"} 3\n"));
        assert!(text.contains(
            "spank_carbon_build_info{node=\"n1\",version=\"0.1.0\",slurm=\"26.05.5\"} 1\n"
        ));
        assert!(text.contains("_last_success_timestamp_seconds{node=\"n1\"} 1800000000.5\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn no_last_success_before_the_first_delivery() {
        let mut t = Totals::default();
        let text = render(&t, &extra("n1"));
        assert!(!text.contains(LAST_SUCCESS), "{text}");
        t.add_delivery(false, 5.0);
        assert_eq!(t.delivery_failures, 1);
        assert!(!render(&t, &extra("n1")).contains(LAST_SUCCESS));
        t.add_delivery(true, 7.0);
        t.add_delivery(true, 6.0); // a clock step back does not move it back
        assert_eq!(t.last_success_unix, Some(7.0));
        assert_eq!(t.deliveries, 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let x = Extra {
            node: "n1",
            pending: 0,
            version: "1\"2",
            slurm: "a\\b\nc",
        };
        let text = render(&Totals::default(), &x);
        assert!(
            text.contains(r#"version="1\"2",slurm="a\\b\nc"} 1"#),
            "{text}"
        );
        // Every sample stays on one line.
        assert!(text.lines().all(|l| l.starts_with('#')
            || l.ends_with(" 1")
            || l.ends_with(" 0")
            || l.split(' ').count() == 2));
    }

    #[test]
    fn totals_only_grow() {
        let mut t = Totals::default();
        t.add_part(&part(2.0, 3.0, Method::Sampled, None));
        let before = t.clone();
        t.add_part(&part(-1.0, f64::NAN, Method::Mixed, Some(f64::INFINITY)));
        assert_eq!(t.gpu_energy_j, before.gpu_energy_j);
        assert_eq!(t.co2e_g, before.co2e_g);
        assert_eq!(t.embodied_g, 0.0);
        assert_eq!((t.jobs_sampled, t.jobs_mixed), (1, 1));
    }

    fn temp_state(tag: &str) -> (PathBuf, StateDir) {
        let root = std::env::temp_dir().join(format!(
            "sc-metrics-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        let state = StateDir::open(&root).unwrap();
        (root, state)
    }

    #[test]
    fn updates_are_kept_and_a_damaged_file_is_set_aside() {
        let (root, state) = temp_state("upd");
        count_part(&state, "n1", &part(1.0, 1.0, Method::Counter, None));
        count_part(&state, "n1", &part(2.0, 0.5, Method::Counter, None));
        count_delivery(&state, false);
        let t = load(&state).unwrap();
        assert_eq!(t.gpu_energy_j, 3.0 * 3600.0);
        assert_eq!(t.co2e_g, 1.5);
        assert_eq!((t.jobs_counter, t.delivery_failures), (2, 1));
        assert_eq!(t.node.as_deref(), Some("n1"));
        let mode = fs::metadata(root.join(TOTALS_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(root.join(TOTALS_FILE), b"{not json").unwrap();
        count_delivery(&state, true);
        let t = load(&state).unwrap();
        assert_eq!((t.deliveries, t.jobs_counter), (1, 0));
        assert!(root.join(format!("{TOTALS_FILE}.bad")).exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn concurrent_updates_are_all_counted() {
        let (root, state) = temp_state("conc");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 {
                        count_part(&state, "n1", &part(1.0, 1.0, Method::Sampled, None));
                    }
                });
            }
        });
        assert_eq!(load(&state).unwrap().jobs_sampled, 40);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn textfile_is_written_atomically_and_never_through_a_link() {
        let (root, _state) = temp_state("txt");
        let dir = root.join("textfile");
        fs::create_dir(&dir).unwrap();
        let path = write_textfile(&dir, "n1", "a 1\n").unwrap();
        assert_eq!(path, dir.join("spank-carbon-n1.prom"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 1\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        // A link planted at the temporary name is neither followed nor replaced.
        let victim = root.join("victim");
        fs::write(&victim, "keep").unwrap();
        let planted = dir.join(format!("spank-carbon-n1.prom.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_textfile(&dir, "n1", "b 2\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "b 2\n");
        assert!(fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        // Only the final file and the planted link: no temporary left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        // A target that is a link is replaced, not written through.
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_textfile(&dir, "n1", "c 3\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        // A linked directory, a world-writable one and a bad node name are refused.
        let link = root.join("dirlink");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(write_textfile(&link, "n1", "x\n").is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(write_textfile(&dir, "n1", "x\n").is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(write_textfile(&dir, "n1", "x\n").is_ok());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(write_textfile(&dir, "../n1", "x\n").is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_directory_swapped_for_a_link_after_the_check_gets_nothing() {
        let (root, _state) = temp_state("swap");
        let dir = root.join("textfile");
        let moved = root.join("textfile.real");
        let elsewhere = root.join("etc");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        // Between the check and the write, the directory's owner swaps it for a link
        // to a directory of root's.
        write_textfile_with(&dir, "n1", "a 1\n", || {
            fs::rename(&dir, &moved).unwrap();
            std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        })
        .unwrap();
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written there"
        );
        assert_eq!(
            fs::read_to_string(moved.join("spank-carbon-n1.prom")).unwrap(),
            "a 1\n",
            "the file is in the directory that was checked"
        );
        assert_eq!(
            fs::read_dir(&moved).unwrap().count(),
            1,
            "no temporary left"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
