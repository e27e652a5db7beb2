//! Helpers for the end-to-end tests on the local Slurm cluster that scripts/cluster.sh
//! starts (scripts/test.sh does it all). The tests compare what lands in sacct with the
//! truth of the fake GPUs: each fake GPU's scripted power and the energy counter
//! readings the fake library logs, per job, node and device.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const CLUSTER_DIR: &str = "/var/lib/spank-carbon-cluster";
pub const PLUGIN: &str = "/usr/local/lib/spank-carbon/libspank_carbon.so";

pub fn dir(sub: &str) -> PathBuf {
    Path::new(CLUSTER_DIR).join(sub)
}

/// The nodes of the running cluster (scripts/cluster.sh: node1..node$SC_NODES), in
/// numeric order: from `sinfo`, else (slurmctld down) from the slurm.conf the cluster
/// script wrote.
pub fn nodes() -> Vec<String> {
    let listed = try_run("/usr/bin/sinfo", &["-h", "-N", "-o", "%N"])
        .map(|out| {
            out.lines()
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let conf = fs::read_to_string("/etc/slurm/slurm.conf").unwrap_or_default();
            conf.lines()
                .filter_map(|l| l.strip_prefix("NodeName="))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| *n != "DEFAULT")
                .map(str::to_string)
                .collect()
        });
    let nodes = node_order(listed);
    assert!(!nodes.is_empty(), "no nodes: is the cluster up?");
    nodes
}

/// Node names sorted by their number (node2 before node10), duplicates removed (sinfo
/// lists a node once per partition).
pub fn node_order(mut names: Vec<String>) -> Vec<String> {
    let number = |n: &str| -> u64 {
        n.trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or(u64::MAX)
    };
    names.sort_by(|a, b| number(a).cmp(&number(b)).then(a.cmp(b)));
    names.dedup();
    names
}

/// Where the nodes' state directories are: the test plugstack's `state_dir` is
/// `<this>/%n`, one directory per node (several slurmd on one host, one courier each).
pub fn state_root() -> PathBuf {
    dir("state")
}

/// One node's state directory.
pub fn node_state_dir(node: &str) -> PathBuf {
    state_root().join(node)
}

/// Every node's state directory that exists, in node order.
pub fn state_dirs() -> Vec<PathBuf> {
    let names = fs::read_dir(state_root())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    node_order(names)
        .into_iter()
        .map(|n| node_state_dir(&n))
        .collect()
}

/// The files in `sub` (jobs, pending...) of every node's state directory.
pub fn state_entries(sub: &str) -> Vec<PathBuf> {
    state_dirs()
        .iter()
        .filter_map(|d| fs::read_dir(d.join(sub)).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
        .collect()
}

/// A node's local record of a job (in `records/`, a day file or an old per-job file).
pub fn local_record(job: u32, node: &str) -> Option<serde_json::Value> {
    spank_carbon::node::retention::find_record(&node_state_dir(node).join("records"), job, node)
}

pub fn fake_dir() -> PathBuf {
    dir("fake-nvml")
}

/// The device minor of gres file nvidia<i> on every node (scripts/cluster.sh makes them
/// so: neither the gres index nor NVML's PCI order).
pub fn minor_of_file(i: usize) -> u32 {
    [2, 0, 3, 1][i]
}

/// The PCI bus of the fake GPU with a minor: NVML enumerates in this order.
pub fn pci_bus_of_minor(m: u32) -> u32 {
    [0x81, 0x01, 0xc1, 0x41][m as usize]
}

/// Scripted power of each fake GPU, in milliwatts: all different, so a GPU measured in
/// place of another shows.
pub fn power_mw(node: &str, minor: u32) -> u64 {
    let n: u64 = node.trim_start_matches("node").parse().unwrap();
    (100 + 30 * n + 7 * minor as u64) * 1000
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn try_run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Extra GPU options per (node, minor), e.g. `counter=0`.
pub type GpuOptions = BTreeMap<(String, u32), String>;

/// Writes the fake NVML's configuration: 4 GPUs on each of the cluster's nodes.
pub fn write_fake_config(options: &GpuOptions) {
    let mut text = format!(
        "epoch {:.3}\nlog {}\n",
        now() - 100_000.0,
        fake_dir().join("reads.log").display()
    );
    for node in nodes() {
        for minor in 0..4u32 {
            let extra = options
                .get(&(node.clone(), minor))
                .cloned()
                .unwrap_or_default();
            text.push_str(&format!(
                "gpu {node} {minor} {:#04x} {} {extra}\n",
                pci_bus_of_minor(minor),
                power_mw(&node, minor)
            ));
        }
    }
    fs::write(fake_dir().join("fake-nvml.conf"), text).unwrap();
}

/// The plugstack.conf line, with the test defaults and `extra` arguments.
pub fn plugstack_line(extra: &[&str]) -> String {
    let mut args = vec![
        format!(
            "nvml_lib={}",
            fake_dir().join("libnvidia-ml.so.1").display()
        ),
        format!("state_dir={}/%n", state_root().display()),
        "sample_ms=200".into(),
        "settle_ms=1500".into(),
        "stagger_ms=300".into(),
        "intensity=400".into(),
        "pue=1.2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    format!("optional {PLUGIN} {}\n", args.join(" "))
}

/// Installs a plugstack.conf. Arguments are read by every prolog/epilog afresh, so
/// slurmd needs no restart while the plugin itself stays listed.
pub fn set_plugstack(extra: &[&str]) {
    let path = Path::new("/etc/slurm/plugstack.conf");
    let line = plugstack_line(extra);
    if fs::read_to_string(path).ok().as_deref() != Some(line.as_str()) {
        fs::write(path, line).unwrap();
    }
}

/// Sets up the standard scene for a test: fake GPUs without quirks, default plugstack.
pub fn standard_setup() {
    write_fake_config(&GpuOptions::new());
    set_plugstack(&[]);
    wait_cluster_idle();
    // Nothing of an earlier test may act in this one: let couriers finish, then stop
    // any courier and drop records an earlier test left pending on purpose.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_named("spank-carbon").is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    let _ = Command::new("/usr/bin/pkill")
        .args(["-x", "spank-carbon"])
        .status();
    for pending in state_entries("pending") {
        let _ = fs::remove_file(pending);
    }
}

pub fn wait_cluster_idle() {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let q = run("/usr/bin/squeue", &["-h", "-o", "%i"]);
        let states = run("/usr/bin/sinfo", &["-h", "-N", "-o", "%N %T"]);
        if q.trim().is_empty() && states.lines().all(|l| l.ends_with(" idle")) {
            return;
        }
        assert!(Instant::now() < deadline, "cluster not idle: {q} {states}");
        sleep(Duration::from_millis(200));
    }
}

/// Asserts no node is drained or down.
pub fn assert_no_node_drained() {
    let states = run("/usr/bin/sinfo", &["-h", "-N", "-o", "%N %T"]);
    for l in states.lines() {
        assert!(
            !(l.contains("drain") || l.contains("down") || l.contains("fail")),
            "node state: {l}\n{states}"
        );
    }
}

/// Submits a batch job; its script records Slurm's own view of the allocation
/// (`scontrol show job -d`: GRES IDX per node) before sleeping `secs`.
pub fn submit(args: &[&str], secs: f64) -> u32 {
    let jobs_dir = dir("jobs");
    fs::create_dir_all(&jobs_dir).unwrap();
    let script = format!(
        "/usr/bin/scontrol show job -d $SLURM_JOB_ID > {}/$SLURM_JOB_ID.show; sleep {secs}",
        jobs_dir.display()
    );
    let mut full: Vec<&str> = vec!["--parsable", "-o", "/dev/null", "-e", "/dev/null"];
    full.extend(args);
    full.extend(["--wrap", &script]);
    let out = run("/usr/bin/sbatch", &full);
    out.trim().split(';').next().unwrap().parse().unwrap()
}

pub fn job_state(job: u32) -> String {
    sacct_field(job, "State")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A field of the job's own accounting row; `None` if sacct fails.
fn sacct_field(job: u32, name: &str) -> Option<String> {
    let format = format!("JobIDRaw,{name}");
    let out = try_run(
        "/usr/bin/sacct",
        &["-n", "-P", "-X", "-j", &job.to_string(), "-o", &format],
    )?;
    Some(own_row(job, &out))
}

/// The job's own row of `sacct -n -P -o JobIDRaw,...` output, without the id: `sacct -j N`
/// also lists every task of an array whose id is N.
fn own_row(job: u32, out: &str) -> String {
    let prefix = format!("{job}|");
    let mut rows = out.split('\n').skip_while(|l| !l.starts_with(&prefix));
    let Some(first) = rows.next() else {
        return String::new();
    };
    // A field may hold newlines: lines that do not start another job's row are its own.
    let mut text = first[prefix.len()..].to_string();
    for line in rows {
        let starts_row = line
            .split_once('|')
            .is_some_and(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        if starts_row {
            break;
        }
        text.push('\n');
        text.push_str(line);
    }
    text.strip_suffix('\n').map(str::to_string).unwrap_or(text)
}

/// Whether slurmctld still has the job queued, running or completing.
pub fn in_queue(job: u32) -> bool {
    // squeue fails ("Invalid job id") once slurmctld has forgotten the job.
    try_run(
        "/usr/bin/squeue",
        &["-h", "-j", &job.to_string(), "-o", "%T"],
    )
    .is_some_and(|q| !q.trim().is_empty())
}

/// Waits for a job to end; returns its final state.
pub fn wait_job(job: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if !in_queue(job) {
            let s = job_state(job);
            if !s.is_empty() && !s.starts_with("RUNNING") && !s.starts_with("PENDING") {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "job {job} did not end");
        sleep(Duration::from_millis(200));
    }
}

/// Pending deliveries of a job left in the nodes' state directories (file names).
pub fn pending_of(job: u32) -> Vec<String> {
    let prefix = format!("{job}.");
    state_entries("pending")
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Removes a job's pending records (left pending on purpose by a test); returns their
/// names (`<job>.<node>@<run>.json`).
pub fn remove_pending(job: u32) -> Vec<String> {
    let prefix = format!("{job}.");
    let mut names = Vec::new();
    for path in state_entries("pending") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            fs::remove_file(&path).unwrap();
            names.push(name);
        }
    }
    names
}

pub fn field(job: u32, name: &str) -> String {
    sacct_field(job, name).unwrap_or_else(|| panic!("sacct failed for job {job}"))
}

/// Waits until the job's nodes have finished delivering (no pending record left), then
/// returns the field.
pub fn wait_delivered(job: u32, field_name: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if pending_of(job).is_empty() {
            // The epilog may not have run yet on every node: wait for a record first.
            let v = field(job, field_name);
            if v.contains("spank-carbon/1") || Instant::now() >= deadline {
                return v;
            }
        }
        if Instant::now() >= deadline {
            return field(job, field_name);
        }
        sleep(Duration::from_millis(250));
    }
}

/// Waits until `job` has ended and delivery gave up on it (or refused it), leaving the record pending.
pub fn wait_given_up(job: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = format!("job {job}.");
    while in_queue(job)
        || pending_of(job).is_empty()
        || !spank_log()
            .lines()
            .any(|l| l.contains(&line) && l.contains("not delivered yet"))
    {
        assert!(
            Instant::now() < deadline,
            "job {job}: delivery did not give up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A record as a test reads it: its own parse, independent of the crate's parser.
#[derive(Debug, Clone, Default)]
pub struct Rec {
    pub top: BTreeMap<String, String>,
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
    pub before: String,
    pub after: String,
}

impl Rec {
    pub fn num(&self, k: &str) -> f64 {
        self.top
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {self:?}"))
            .parse()
            .unwrap()
    }
    pub fn node_num(&self, node: &str, k: &str) -> f64 {
        self.nodes[node][k].parse().unwrap()
    }
}

pub fn parse_rec(field: &str) -> Option<Rec> {
    let start = field.find("spank-carbon/1 ")?;
    let mut rec = Rec {
        before: field[..start].to_string(),
        ..Rec::default()
    };
    let rest = &field[start + "spank-carbon/1 ".len()..];
    let mut consumed = start + "spank-carbon/1".len();
    for tok in rest.split(' ') {
        let Some((k, v)) = tok.split_once('=') else {
            break;
        };
        let known = [
            "gpu_wh",
            "co2e_g",
            "intensity",
            "pue",
            "gpus",
            "nodes",
            "of",
            "method",
            "embodied_g",
            "run",
            // 25.11+: the run's SLUID, the segment's last token.
            "sluid",
            // The compact form's (jobs over 32 nodes): kept in `top`, decoded below.
            "window",
            "hostlist",
            "part-defaults",
            "parts",
        ];
        if let Some(node) = k.strip_prefix("node.") {
            let fields = v
                .split(',')
                .filter_map(|f| f.split_once(':'))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            rec.nodes.insert(node.to_string(), fields);
        } else if known.contains(&k) {
            rec.top.insert(k.to_string(), v.to_string());
        } else {
            break;
        }
        consumed += 1 + tok.len();
    }
    rec.after = field[consumed..].to_string();
    if rec.top.contains_key("parts") {
        // The compact form has no `node.` tokens: its per-node parts (energy in base 36,
        // GPUs, method...) are decoded by the crate; the head above is read here.
        let seg = spank_carbon::record::parse(&field[start..consumed])
            .unwrap_or_else(|| panic!("compact record the crate cannot read: {field}"));
        assert!(seg.compact, "parts= without a compact form: {field}");
        for (name, p) in seg.parts {
            let fields = [
                ("wh", p.wh.to_string()),
                ("gpus", p.gpus.to_string()),
                ("co2e", p.co2e_g.to_string()),
                ("m", p.method.as_str().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain((!p.flags.is_empty()).then(|| ("f".to_string(), p.flags.join("+"))))
            .collect();
            rec.nodes.insert(name, fields);
        }
    }
    Some(rec)
}

/// One energy-counter reading the fake NVML logged.
#[derive(Debug, Clone)]
pub struct Reading {
    pub ns: u128,
    pub node: String,
    pub job: String,
    pub minor: u32,
    pub mj: u64,
}

pub fn readings() -> Vec<Reading> {
    let text = fs::read_to_string(fake_dir().join("reads.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 7 && f[5] == "energy").then(|| Reading {
                ns: f[0].parse().unwrap(),
                node: f[1].to_string(),
                job: f[2].to_string(),
                minor: f[4].parse().unwrap(),
                mj: f[6].parse().unwrap(),
            })
        })
        .collect()
}

/// Truth per node and GPU minor for a job: (first reading, last reading) of the energy
/// counter made on behalf of that job, as the fake GPU logged them.
pub fn truth(job: u32) -> BTreeMap<String, BTreeMap<u32, (Reading, Reading)>> {
    let job_s = job.to_string();
    let mut out: BTreeMap<String, BTreeMap<u32, (Reading, Reading)>> = BTreeMap::new();
    for r in readings().into_iter().filter(|r| r.job == job_s) {
        let e = out
            .entry(r.node.clone())
            .or_default()
            .entry(r.minor)
            .or_insert_with(|| (r.clone(), r.clone()));
        if r.ns < e.0.ns {
            e.0 = r.clone();
        }
        if r.ns > e.1.ns {
            e.1 = r;
        }
    }
    out
}

/// The device minors Slurm allocated to the job on each node, from `scontrol show
/// job -d` recorded by the job itself (GRES=gpu:2(IDX:0-1)) and the cluster's files.
pub fn allocated_minors(job: u32) -> BTreeMap<String, Vec<u32>> {
    let text = fs::read_to_string(dir("jobs").join(format!("{job}.show"))).unwrap();
    // `scontrol show job N` shows every task of array N, and N is also one task's id:
    // only the job's own block counts.
    let own = format!("JobId={job} ");
    let block = text
        .split("\n\n")
        .find(|b| b.trim_start().starts_with(&own))
        .unwrap_or_else(|| panic!("job {job}: not in its own scontrol output"));
    let mut out = BTreeMap::new();
    for line in block.lines() {
        let line = line.trim();
        let (Some(nodes), Some(idx)) = (
            line.strip_prefix("Nodes=")
                .map(|r| r.split_whitespace().next().unwrap()),
            line.split("IDX:").nth(1).map(|r| r.trim_end_matches(')')),
        ) else {
            continue;
        };
        let mut minors: Vec<u32> = Vec::new();
        for part in idx.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            for i in a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap() {
                minors.push(minor_of_file(i));
            }
        }
        minors.sort();
        for node in spank_carbon::slurm::hostlist::expand(nodes).unwrap() {
            out.insert(node, minors.clone());
        }
    }
    out
}

/// Energy in Wh of a node's share per the fake GPUs' truth; asserts the plugin read
/// exactly the GPUs Slurm allocated and that each counter moved as the GPU's scripted
/// power says over the read window.
pub fn truth_wh(job: u32, node: &str) -> f64 {
    let t = truth(job);
    let alloc = allocated_minors(job);
    let read: Vec<u32> = t
        .get(node)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    assert_eq!(
        read, alloc[node],
        "job {job} on {node}: GPUs read by the plugin vs allocated by Slurm"
    );
    let mut wh = 0.0;
    for (minor, (first, last)) in &t[node] {
        let mj = (last.mj - first.mj) as f64;
        let secs = (last.ns - first.ns) as f64 / 1e9;
        let expect = power_mw(node, *minor) as f64 * secs;
        assert!(
            (mj - expect).abs() <= 2.0 + expect * 1e-6,
            "fake GPU {node}/{minor}: counter moved {mj} mJ, power x time says {expect}"
        );
        wh += mj / 3.6e6;
    }
    wh
}

pub fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    let err = if want == 0.0 {
        got.abs()
    } else {
        ((got - want) / want).abs()
    };
    assert!(
        err <= rel,
        "{what}: got {got}, want {want} (error {:.4}%)",
        err * 100.0
    );
}

/// Checks a delivered record against the truth on every node of the job.
pub fn check_record(job: u32, rec: &Rec, nodes: &[&str], gpus_per_node: u32) {
    assert_eq!(rec.num("nodes") as usize, nodes.len(), "{rec:?}");
    assert_eq!(rec.num("of") as usize, nodes.len(), "{rec:?}");
    assert_eq!(
        rec.num("gpus") as u32,
        gpus_per_node * nodes.len() as u32,
        "{rec:?}"
    );
    let mut total = 0.0;
    for node in nodes {
        let part = rec
            .nodes
            .get(*node)
            .unwrap_or_else(|| panic!("job {job}: no part of {node} in {rec:?}"));
        let wh: f64 = part["wh"].parse().unwrap();
        let want = truth_wh(job, node);
        assert_close(&format!("job {job} {node} wh"), wh, want, 0.01);
        assert_eq!(part["gpus"], gpus_per_node.to_string());
        total += want;
    }
    assert_close(&format!("job {job} gpu_wh"), rec.num("gpu_wh"), total, 0.01);
    // The record rounds each part's CO2e to 0.1 mg and gpu_wh to 0.1 mWh, and CO2e comes
    // from the unrounded energy: allow both roundings, nothing more.
    let g_per_wh = rec.num("pue") * rec.num("intensity") / 1000.0;
    let co2e = rec.num("gpu_wh") * g_per_wh;
    let slack = (0.00005 + 0.00005 * g_per_wh) * nodes.len() as f64 + 1e-9;
    assert!(
        (rec.num("co2e_g") - co2e).abs() <= slack + co2e * 1e-3,
        "job {job} co2e_g: got {}, want {co2e}",
        rec.num("co2e_g")
    );
}

/// The detached processes' logs of every node, one after the other.
pub fn spank_log() -> String {
    state_dirs()
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("spank-carbon.log")).ok())
        .collect()
}

pub fn slurmd_log(node: &str) -> String {
    fs::read_to_string(dir("log").join(format!("{node}.log"))).unwrap_or_default()
}

/// Waits until the job is running.
pub fn wait_running(job: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = run(
            "/usr/bin/squeue",
            &["-h", "-j", &job.to_string(), "-o", "%T"],
        );
        if q.trim() == "RUNNING" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} never ran (squeue: {q:?})"
        );
        sleep(Duration::from_millis(100));
    }
}

/// Sets an accounting field of a running job through sacctmgr, retrying until the
/// job's start record has reached slurmdbd.
pub fn sacctmgr_set(job: u32, field_name: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let cond = format!("jobid={job}");
    let set = format!("{field_name}={value}");
    while try_run(
        "/usr/bin/sacctmgr",
        &["-i", "modify", "job", "where", &cond, "set", &set],
    )
    .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "sacctmgr could not set {field_name} of job {job}"
        );
        sleep(Duration::from_millis(200));
    }
}

/// The pid of the sampler of job `job` on `node`, once it runs.
pub fn sampler_pid(job: u32, node: &str) -> u32 {
    let key = format!("{job}.{node}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for e in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(c) = fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = c
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "sample")
                && args.windows(2).any(|w| w[0] == "--key" && w[1] == key)
            {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no sampler for {key}");
        sleep(Duration::from_millis(100));
    }
}

pub fn processes_named(name: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.split(' ').next().is_some_and(|a| a.ends_with(name)))
        .collect()
}

pub fn cluster(args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster.sh {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Truth for a GPU measured by samples: scripted power x the span of the power
/// readings the fake logged for that job (first to last).
pub fn sampled_truth_wh(job: u32, node: &str) -> f64 {
    let text = fs::read_to_string(fake_dir().join("reads.log")).unwrap_or_default();
    let job_s = job.to_string();
    let mut spans: BTreeMap<u32, (u128, u128)> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 7 && f[5] == "power" && f[1] == node && f[2] == job_s {
            let ns: u128 = f[0].parse().unwrap();
            let minor: u32 = f[4].parse().unwrap();
            let e = spans.entry(minor).or_insert((ns, ns));
            e.0 = e.0.min(ns);
            e.1 = e.1.max(ns);
        }
    }
    assert!(
        !spans.is_empty(),
        "no power readings for job {job} on {node}"
    );
    spans
        .iter()
        .map(|(m, (a, b))| power_mw(node, *m) as f64 * (b - a) as f64 / 1e9 / 3.6e6)
        .sum()
}

pub fn node_flags(rec: &Rec, node: &str) -> Vec<String> {
    rec.nodes[node]
        .get("f")
        .map(|f| f.split('+').map(str::to_string).collect())
        .unwrap_or_default()
}

/// A cluster configuration (gres, slurm.conf lines, the fake driver) in force for as long
/// as it lives; the standard one comes back when it is dropped (also when the test fails).
pub struct Scene {
    name: &'static str,
}

impl Scene {
    /// Starts the cluster with `env` (SC_GRES_CONF, SC_NODE_GRES, ...); `driver`: the fake
    /// driver's files first (SC_FAKE_GPUS, SC_FAKE_MIG), when the scene needs them.
    pub fn new(name: &'static str, env: &[(&str, &str)], driver: Option<&[(&str, &str)]>) -> Scene {
        standard_setup();
        if let Some(d) = driver {
            cluster(&["fake-driver"], d);
        }
        cluster(&["start"], env);
        wait_cluster_idle();
        Scene { name }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/scancel")
            .args(["-u", "root"])
            .status();
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .arg("start")
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!(
                "scene {}: restoring the standard cluster failed: {out:?}",
                self.name
            );
        }
        write_fake_config(&GpuOptions::new());
    }
}
