//! The node's GPUs as the plugin maps them: for each gres index, a job holding it alone
//! (`SLURM_JOB_GPUS=i`, and where the node has gres/mps or gres/shard, a job with one
//! MPS unit or one shard of it) is put through the prolog's own [`gpu_map::select`]
//! (an MPS job: [`gpu_map::choose`] and the sampler's [`gpu_map::from_slurmctld`] on the
//! answer slurmctld gives, `mps:1(IDX:i)`)
//! (done by [`super::gather`], which reads gres.conf, slurm.conf and /proc) and the
//! sampler's own [`gpu_map::resolve`] against the boards NVML lists (done here, pure).
//! No second implementation: what the check prints is what the plugin would do, a
//! refusal included, with its reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::finding::{error, ok, warning, Finding, GpuMapping, MappedBoard, Status};
use crate::gpu::map::{self as gpu_map, Charge, Key, Refusal, Sel};
use crate::gpu::{BoardInfo, MigInstance};
use crate::slurm::gres::NodeConf;

#[derive(Debug, Clone, PartialEq)]
pub enum Nvml {
    Opened {
        driver: String,
        gpus: Vec<NvmlGpu>,
        /// What the sampler resolves the job's GPUs against (`GpuHost::boards`).
        boards: Result<Vec<crate::gpu::BoardInfo>, String>,
    },
    Failed(String),
    /// NVML did not answer within nvml_timeout_ms; what it was doing.
    TimedOut(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NvmlGpu {
    pub minor: u32,
    pub uuid: String,
    pub name: String,
    pub counter: Result<Option<u64>, String>,
    pub shared: bool,
}

/// The node's GPUs as gathered.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpus {
    pub gres_conf: PathBuf,
    /// The node's configuration and the simulated jobs, or why gres.conf could not be read.
    pub map: Result<NodeMap, String>,
    pub nvml: Nvml,
}

/// A job the check simulates on one gres index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A job given the whole GPU (what slurmd gives a gpu job; a shard job looks the same
    /// to the prolog).
    Gpu,
    /// A gres/mps job holding this many MPS of the board (slurmctld's count).
    Mps(u64),
    /// A gres/shard job holding this many shards, were the count given to the prolog.
    Shard(u64),
}

impl JobKind {
    pub fn describe(self) -> String {
        match self {
            JobKind::Gpu => "gpu job".into(),
            JobKind::Mps(n) => format!("mps job holding {n} MPS"),
            JobKind::Shard(n) => format!("shard job, {n} shard(s) known to the prolog"),
        }
    }
}

/// One simulated job and the prolog's selection for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimJob {
    /// The gres index; `None` for a job known to the prolog by a UUID alone.
    pub index: Option<usize>,
    pub kind: JobKind,
    /// The gres index's device files with their (major, minor) (`None`: not a character
    /// device). Empty under AutoDetect.
    pub files: Vec<(PathBuf, Option<(u32, u32)>)>,
    pub selection: Result<Vec<Sel>, Refusal>,
}

/// What the prolog reads about the node's GPUs, and the jobs simulated on it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMap {
    pub conf: NodeConf,
    /// slurm.conf's GPU types of the node (type, count).
    pub types: Option<Vec<(Option<String>, usize)>>,
    /// gres devices from gres.conf's File=/MultipleFiles= lists (none under AutoDetect).
    pub devices: usize,
    /// The character-device major of nvidia-caps (/proc/devices).
    pub caps_major: Option<u32>,
    /// gres.conf settings that make Slurm put UUIDs in CUDA_VISIBLE_DEVICES
    /// (`Flags=env_uuid`, `UniqueId=`), as written.
    pub uuid_settings: Vec<String>,
    /// The minors of /proc/driver/nvidia/gpus (what AutoDetect=nvidia finds).
    pub detected: Option<Vec<u32>>,
    /// Per board minor: gres.conf's shard and MPS counts, or the prolog's refusal.
    pub shards: Result<BTreeMap<u32, u64>, String>,
    pub mps: Result<BTreeMap<u32, u64>, String>,
    /// Slurm gives every job of the node UUIDs (AutoDetect with `Flags=env_uuid`): the
    /// jobs by index alone are what the prolog would do without them.
    pub uuids_given: bool,
    pub jobs: Vec<SimJob>,
}

/// Item 4: the node's GPU configuration, NVML, and per gres index what the plugin does.
pub fn findings(g: &Gpus) -> Vec<Finding> {
    const C: &str = "gpus";
    let conf = g.gres_conf.display();
    let seen = nvml_count(&g.nvml);
    let map = match &g.map {
        Ok(m) => m,
        Err(e) => {
            return vec![if seen > 0 {
                error(
                    C,
                    format!("{e}; NVML sees {seen} GPU(s) here"),
                    format!(
                        "give this node's GPUs in {conf} (`Name=gpu File=` lines or AutoDetect; \
                         or set gres_conf=); --node NAME if the node is not named as the host"
                    ),
                )
            } else {
                warning(
                    C,
                    format!("{e}; no GPU seen by NVML either"),
                    "nothing to measure on this node; ignore if it has no GPUs",
                )
            }];
        }
    };
    if map.jobs.is_empty() {
        return vec![match (seen, &g.nvml) {
            (0, Nvml::Opened { .. }) => ok(
                C,
                format!("no GPU in {conf} for this node and none seen by NVML: nothing to measure"),
            ),
            (0, Nvml::Failed(e) | Nvml::TimedOut(e)) => warning(
                C,
                format!("no GPU in {conf} for this node, and NVML is not usable ({e})"),
                "nothing to measure here; ignore on a node without GPUs",
            ),
            (n, _) => warning(
                C,
                format!(
                    "{conf} gives this node no GPU, but NVML sees {n}: jobs here get no \
                     SLURM_JOB_GPUS and are not measured"
                ),
                format!("add `Name=gpu File=...` lines (or AutoDetect) for this node to {conf}"),
            ),
        }];
    }
    let gpus_n = map.jobs.iter().filter(|j| j.kind == JobKind::Gpu).count();
    let mut out = vec![ok(C, format!("{conf}: {}", config_kind(map)))];
    let boards = match &g.nvml {
        Nvml::Failed(e) => {
            out.push(error(
                C,
                format!("NVML cannot be loaded: {e}; the node has {gpus_n} GPU(s)"),
                "install the NVIDIA driver's libnvidia-ml.so.1, or give its path with nvml_lib=",
            ));
            None
        }
        Nvml::TimedOut(doing) => {
            out.push(error(
                C,
                format!("NVML did not answer within nvml_timeout_ms (while {doing})"),
                "check the driver (nvidia-smi); a wedged GPU needs a reset",
            ));
            None
        }
        Nvml::Opened {
            driver,
            boards: Err(e),
            ..
        } => {
            out.push(error(
                C,
                format!("NVML driver {driver}, but its boards cannot be described: {e}"),
                "check the driver (nvidia-smi -q); the sampler resolves the job's GPUs from this",
            ));
            None
        }
        Nvml::Opened {
            driver,
            boards: Ok(b),
            ..
        } => {
            let mig: Vec<String> = b
                .iter()
                .filter(|b| b.mig)
                .map(|b| format!("minor {} ({} instance(s))", b.minor, b.instances.len()))
                .collect();
            let mig = if mig.is_empty() {
                String::new()
            } else {
                format!("; MIG on {}", mig.join(", "))
            };
            out.push(ok(
                C,
                format!("NVML driver {driver}, {} board(s){mig}", b.len()),
            ));
            Some(b.as_slice())
        }
    };
    let counters: &[NvmlGpu] = match &g.nvml {
        Nvml::Opened { gpus, .. } => gpus,
        _ => &[],
    };
    for j in &map.jobs {
        out.push(job_finding(map, j, boards, counters));
    }
    out
}

fn nvml_count(n: &Nvml) -> usize {
    match n {
        Nvml::Opened { gpus, .. } => gpus.len(),
        _ => 0,
    }
}

/// How the node's GPUs are configured, in a line.
pub fn config_kind(m: &NodeMap) -> String {
    let mut parts = Vec::new();
    let detected = |d: &Option<Vec<u32>>| match d {
        Some(d) => format!(
            "/proc/driver/nvidia/gpus has {} GPU(s), minors {}",
            d.len(),
            d.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
        None => "/proc/driver/nvidia/gpus cannot be read".into(),
    };
    match m.conf.autodetect.as_deref().filter(|a| *a != "off") {
        Some("nvidia") => parts.push(format!(
            "AutoDetect=nvidia (24.11+): slurmd numbers the GPUs by device minor; {}",
            detected(&m.detected)
        )),
        Some("nvml") => parts.push(format!(
            "AutoDetect=nvml: slurmd numbers the GPUs in NVML's order; {}",
            detected(&m.detected)
        )),
        Some("full") => parts.push(format!(
            "AutoDetect=full (26.05): NVML's order, else nvidia's; used where both name the same boards; {}",
            detected(&m.detected)
        )),
        Some(other) => parts.push(format!("AutoDetect={other}")),
        None => {
            let multiple = m.jobs.iter().any(|j| j.files.len() > 1);
            let caps = m.jobs.iter().any(|j| {
                j.files
                    .iter()
                    .any(|(_, d)| d.is_some_and(|(major, _)| Some(major) == m.caps_major))
            });
            parts.push(format!(
                "File= lists: {} GPU device(s){}",
                m.devices,
                match (multiple, caps) {
                    (_, true) => ", MultipleFiles with nvidia-caps files (MIG instances)",
                    (true, false) => ", MultipleFiles",
                    _ => "",
                }
            ));
        }
    }
    if m.conf.gpus_without_file > 0 {
        parts.push(format!(
            "gpu Count={} without File=",
            m.conf.gpus_without_file
        ));
    }
    if let Some(types) = &m.types {
        let list: Vec<String> = types
            .iter()
            .map(|(t, n)| match t {
                Some(t) => format!("gpu:{t}:{n}"),
                None => format!("gpu:{n}"),
            })
            .collect();
        let typed = types.iter().filter(|(t, _)| t.is_some()).count();
        parts.push(format!(
            "slurm.conf Gres={}{}",
            list.join(","),
            if typed > 1 {
                " (several GPU types)"
            } else {
                ""
            }
        ));
    }
    for (name, counts) in [("shard", &m.shards), ("mps", &m.mps)] {
        if !m.conf.shared.iter().any(|r| r.name == name) {
            continue;
        }
        parts.push(match counts {
            Ok(c) => format!(
                "gres/{name}: {}",
                c.iter()
                    .map(|(minor, n)| format!("{n} on minor {minor}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("gres/{name}: {e}"),
        });
    }
    if !m.uuid_settings.is_empty() {
        parts.push(format!(
            "{}: where Slurm has a GPU's UUID it gives it in CUDA_VISIBLE_DEVICES and the \
             plugin uses it first (the lines below simulate jobs by index)",
            m.uuid_settings.join(" ")
        ));
    }
    parts.join("; ")
}

fn key_text(k: &Key) -> String {
    match k {
        Key::Minor(m) => format!("device minor {m}"),
        Key::Uuid(u) => format!("UUID {u}"),
        Key::Mig { minor, gi, ci } => match ci {
            Some(ci) => format!("MIG minor {minor} gi {gi} ci {ci}"),
            None => format!("MIG minor {minor} gi {gi}"),
        },
        Key::Nvml { index, of } => format!("NVML position {index} of {of}"),
        Key::Either { index, of } => {
            format!("NVML position {index} of {of} (also {index}-th by minor)")
        }
    }
}

fn files_text(j: &SimJob, caps_major: Option<u32>) -> String {
    if j.files.is_empty() {
        return "(AutoDetect)".into();
    }
    j.files
        .iter()
        .map(|(p, d)| match d {
            Some((major, minor)) if Some(*major) == caps_major => {
                format!("{} nvidia-caps minor {minor}", p.display())
            }
            Some((_, minor)) => format!("{} minor {minor}", p.display()),
            None => format!("{} (not a character device)", p.display()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Status and fix for a refusal: an error where the configuration can be changed so
/// that the plugin measures, a warning where Slurm gives the prolog too little.
pub fn refusal_fix(why: &str) -> (Status, &'static str) {
    if why.contains("gres/shard") || why.contains("shards on") || why.contains("no shards") {
        (
            Status::Warning,
            "nothing to change in gres.conf: Slurm gives the prolog no shard count, so the \
             boards with shards are not measured; give them no shards to measure them",
        )
    } else if why.contains("several GPU types") {
        (
            Status::Error,
            "give the node one GPU type in slurm.conf, or have Slurm put UUIDs in \
             CUDA_VISIBLE_DEVICES (Slurm 26.05: gres.conf Flags=env_uuid with AutoDetect)",
        )
    } else if why.contains("with gres.conf File= records") {
        (
            Status::Error,
            "describe this node's GPUs either with AutoDetect or with File= lines, not both",
        )
    } else if why.contains("AutoDetect=") && why.contains("finds") {
        (
            Status::Error,
            "make slurm.conf's Gres=gpu count and gres.conf's Count= the number of GPUs \
             detected (`slurmd -G` prints slurmd's view)",
        )
    } else if why.contains("cannot be read") {
        (
            Status::Error,
            "run check (and slurmd) where the NVIDIA driver's /proc/driver/nvidia and \
             /proc/driver/nvidia-caps files are readable",
        )
    } else if why.contains("not an NVIDIA autodetection") {
        (
            Status::Error,
            "use AutoDetect=nvml, AutoDetect=nvidia (24.11+) or File= lines",
        )
    } else if why.contains("NVML has no") || why.contains("NVML sees") {
        (
            Status::Error,
            "gres.conf must name the boards NVML sees: their /dev/nvidiaN files (nvidia-smi -q \
             gives each GPU's minor) and MIG instances that exist (nvidia-smi mig -lgi)",
        )
    } else if why.contains("AutoDetect numbers MIG") {
        (
            Status::Error,
            "jobs on MIG instances come with their MIG UUIDs (the UUID lines); jobs on whole \
             GPUs of this node are not measured: list its GPUs and MIG instances with File= and \
             MultipleFiles= lines instead, or turn MIG off",
        )
    } else if why.contains("MIG") {
        (
            Status::Error,
            "list each MIG instance with MultipleFiles=/dev/nvidiaN,<its nvidia-caps files> \
             (or use AutoDetect=nvml, which gives the prolog MIG UUIDs), or turn MIG off",
        )
    } else {
        (
            Status::Error,
            "correct this node's GPU lines in gres.conf (docs/REFERENCE.md: how the GPUs are found), \
             then run check again",
        )
    }
}

/// The MIG instances a key holds on a board.
fn instances_of(k: &Key, b: &BoardInfo) -> Vec<MigInstance> {
    b.instances
        .iter()
        .filter(|i| match k {
            Key::Mig { gi, ci, .. } => i.gi == *gi && ci.map_or(true, |c| i.ci == c),
            Key::Uuid(u) => &i.uuid == u,
            _ => false,
        })
        .cloned()
        .collect()
}

fn percent(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

fn job_finding(
    m: &NodeMap,
    j: &SimJob,
    boards: Option<&[BoardInfo]>,
    counters: &[NvmlGpu],
) -> Finding {
    const C: &str = "gpu";
    let (job, job_share) = match j.kind {
        JobKind::Gpu => ("gpu", None),
        JobKind::Mps(n) => ("mps", Some(n)),
        JobKind::Shard(n) => ("shard", Some(n)),
    };
    let mut mapping = GpuMapping {
        index: j.index,
        job,
        job_share,
        files: j
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect(),
        key: None,
        boards: Vec::new(),
        refused: None,
    };
    let head = match j.index {
        Some(i) => {
            let files = files_text(j, m.caps_major);
            match j.kind {
                JobKind::Gpu => format!("gres index {i}: {files}"),
                _ => format!("gres index {i}, {}: {files}", j.kind.describe()),
            }
        }
        None => format!("{} by UUID in CUDA_VISIBLE_DEVICES", j.kind.describe()),
    };
    let refused = |mut mapping: GpuMapping, r: &Refusal, head: String| {
        let (status, fix) = refusal_fix(&r.0);
        // A refusal of a shared job alone leaves whole-GPU jobs measured; with UUIDs
        // given, a job by index alone does not happen.
        let by_index_only = m.uuids_given && j.index.is_some();
        let status = if j.kind == JobKind::Gpu && !by_index_only {
            status
        } else {
            Status::Warning
        };
        let note = if by_index_only {
            " (Slurm gives this node's jobs UUIDs: see the UUID lines)"
        } else {
            ""
        };
        mapping.refused = Some(r.0.clone());
        Finding {
            check: C,
            status,
            detail: format!("{head}: {r}{note}"),
            fix: Some(fix.to_string()),
            gpu: Some(mapping),
        }
    };
    let sel = match &j.selection {
        Ok(s) => s,
        Err(r) => return refused(mapping, r, head),
    };
    mapping.key = Some(gpu_map::format_spec(sel));
    let keys = sel
        .iter()
        .map(|s| key_text(&s.key))
        .collect::<Vec<_>>()
        .join(", ");
    let head = format!("{head} -> {keys}");
    let Some(boards) = boards else {
        return Finding {
            check: C,
            status: Status::Ok,
            detail: format!("{head}; not resolved (NVML not usable)"),
            fix: None,
            gpu: Some(mapping),
        };
    };
    let charges: Vec<Charge> = match gpu_map::resolve(sel, boards) {
        Ok(c) => c,
        Err(r) => return refused(mapping, &r, head),
    };
    let mut status = Status::Ok;
    let mut fix = None;
    let mut parts = Vec::new();
    for c in &charges {
        let Some(b) = boards.iter().find(|b| b.minor == c.minor) else {
            continue;
        };
        let instances: Vec<MigInstance> =
            sel.iter().flat_map(|s| instances_of(&s.key, b)).collect();
        let mut text = format!("NVML {}: minor {} {} {}", b.index, b.minor, b.name, b.uuid);
        for i in &instances {
            text.push_str(&format!(
                ", MIG gi {} ci {} {} ({} SMs)",
                i.gi, i.ci, i.uuid, i.sm_count
            ));
        }
        match counters
            .iter()
            .find(|g| g.minor == c.minor)
            .map(|g| &g.counter)
        {
            Some(Ok(Some(_))) => text.push_str(", energy counter"),
            Some(Ok(None)) => {
                status = status.max(Status::Warning);
                fix = Some(
                    "none needed: energy comes from sampled power (Volta and newer have a counter)",
                );
                text.push_str(", no energy counter (sampled power only)");
            }
            Some(Err(e)) => {
                status = status.max(Status::Warning);
                fix = Some("check the driver (nvidia-smi -q -d POWER)");
                text.push_str(&format!(", energy counter unreadable: {e}"));
            }
            None => {}
        }
        let board_shards = m
            .shards
            .as_ref()
            .ok()
            .and_then(|s| s.get(&c.minor))
            .copied();
        let board_mps = m.mps.as_ref().ok().and_then(|s| s.get(&c.minor)).copied();
        text.push_str(&format!(" -> {} {}", c.rule, percent(c.share)));
        if b.mig && instances.is_empty() {
            text.push_str(" (a MIG board given whole: charged whole, flagged shared)");
        }
        if let Some(u) = c.unallocated {
            text.push_str(&format!(
                " ({} of the board's SMs in no instance, never charged)",
                percent(u)
            ));
        }
        if let Some(n) = board_shards {
            text.push_str(&format!(", the board has {n} shards"));
        }
        if let Some(n) = board_mps {
            text.push_str(&format!(", the board has {n} MPS"));
        }
        parts.push(text);
        mapping.boards.push(MappedBoard {
            nvml_index: b.index,
            minor: b.minor,
            uuid: b.uuid.clone(),
            name: b.name.clone(),
            mig_instances: instances,
            rule: c.rule,
            share: c.share,
            unallocated: c.unallocated,
            board_shards,
            board_mps,
        });
    }
    Finding {
        check: C,
        status,
        detail: format!("{head} -> {}", parts.join("; ")),
        fix: fix.map(str::to_string),
        gpu: Some(mapping),
    }
}

/// Where gres.conf asks Slurm for UUIDs in CUDA_VISIBLE_DEVICES: `Flags=` with
/// `env_uuid` (26.05) and `UniqueId=` on the lines of `gres.conf` (Includes not
/// followed), as written.
pub fn uuid_settings(gres_conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in gres_conf.lines() {
        let line = line.split('#').next().unwrap_or("");
        for (k, v) in line.split_whitespace().filter_map(|t| t.split_once('=')) {
            let shown = format!("{k}={v}");
            let wanted = (k.eq_ignore_ascii_case("flags")
                && v.to_ascii_lowercase().contains("env_uuid"))
                || k.eq_ignore_ascii_case("uniqueid");
            if wanted && !out.contains(&shown) {
                out.push(shown);
            }
        }
    }
    out
}

/// Simulates on `node` a job holding each gres index alone, through the prolog's
/// [`gpu_map::select`]: the index list is gres.conf's devices, or under AutoDetect the
/// GPUs slurmd detects (/proc/driver/nvidia/gpus; slurm.conf's or gres.conf's count where
/// that cannot be read). Reads only what `select` reads (`node.proc`, `node.stat`).
/// With AutoDetect, jobs given by UUID are simulated too, one per UUID Slurm puts in
/// CUDA_VISIBLE_DEVICES ([`slurm_uuids`]).
pub fn simulate(
    node: &gpu_map::NodeGres,
    uuid_settings: Vec<String>,
    boards: Option<&[BoardInfo]>,
) -> NodeMap {
    let detected = node.proc.nvidia_minors();
    let configured = node
        .types
        .as_ref()
        .map_or(0, |t| t.iter().map(|(_, c)| c).sum::<usize>())
        .max(usize::try_from(node.conf.gpus_without_file).unwrap_or(usize::MAX));
    let n = match node.conf.autodetect.as_deref() {
        None | Some("off") => node.files.len(),
        Some("nvidia" | "nvml" | "full") => detected.as_ref().map_or(configured.max(1), Vec::len),
        Some(_) => configured.max(1),
    }
    .min(1024);
    let shards = gpu_map::board_counts(node, "shard").map_err(|r| r.0);
    let mps = gpu_map::board_counts(node, "mps").map_err(|r| r.0);
    let has = |name: &str| node.conf.shared.iter().any(|r| r.name == name);
    let mut jobs = Vec::new();
    for index in 0..n {
        let files: Vec<(PathBuf, Option<(u32, u32)>)> = node
            .files
            .get(index)
            .map(|fs| fs.iter().map(|f| (f.clone(), (node.stat)(f))).collect())
            .unwrap_or_default();
        let job = gpu_map::JobGpus {
            indices: vec![index],
            ..gpu_map::JobGpus::default()
        };
        let gpu = gpu_map::select(&job, node);
        jobs.push(SimJob {
            index: Some(index),
            kind: JobKind::Gpu,
            files: files.clone(),
            selection: gpu,
        });
        if has("mps") {
            // One MPS unit: the prolog asks slurmctld (the environment's percentage is
            // rounded), and the sampler decides on what slurmctld answers, here the form
            // of every release, `mps:1(IDX:i)`, whose board count is gres.conf's.
            let mps_job = gpu_map::JobGpus {
                mps_percentage: Some("1".into()),
                ..job.clone()
            };
            let answer = gpu_map::GresEntry {
                name: "mps".into(),
                kind: None,
                count: 1,
                alloc: gpu_map::GresAlloc::Indices(vec![index]),
            };
            let selection = match gpu_map::choose(&mps_job, node) {
                Ok(gpu_map::Selection::Ask(a)) => gpu_map::from_slurmctld(&a, &[answer]),
                Ok(gpu_map::Selection::Known(s)) => Ok(s),
                Err(r) => Err(r),
            };
            jobs.push(SimJob {
                index: Some(index),
                kind: JobKind::Mps(1),
                files: files.clone(),
                selection,
            });
        }
        if has("shard") {
            let shard_job = gpu_map::JobGpus {
                shards_on_node: Some("1".into()),
                ..job.clone()
            };
            jobs.push(SimJob {
                index: Some(index),
                kind: JobKind::Shard(1),
                files: files.clone(),
                selection: gpu_map::select(&shard_job, node),
            });
        }
    }
    let env_uuid = uuid_settings
        .iter()
        .any(|s| s.to_ascii_lowercase().contains("env_uuid"));
    let uuids_given = env_uuid
        && matches!(
            node.conf.autodetect.as_deref(),
            Some("nvidia" | "nvml" | "full")
        );
    for uuid in slurm_uuids(
        node.conf.autodetect.as_deref(),
        env_uuid,
        boards.unwrap_or(&[]),
    ) {
        let job = gpu_map::JobGpus {
            indices: vec![0],
            cuda_visible_devices: Some(uuid),
            ..gpu_map::JobGpus::default()
        };
        jobs.push(SimJob {
            index: None,
            kind: JobKind::Gpu,
            files: Vec::new(),
            selection: gpu_map::select(&job, node),
        });
    }
    NodeMap {
        conf: node.conf.clone(),
        types: node.types.clone(),
        devices: node.files.len(),
        caps_major: node.proc.caps_major(),
        uuid_settings,
        detected,
        shards,
        mps,
        uuids_given,
        jobs,
    }
}

/// The UUIDs slurmd puts in CUDA_VISIBLE_DEVICES under AutoDetect (Slurm's
/// gres_common.c: a device's unique id where its record has the UUID flag): each MIG
/// instance's under AutoDetect=nvml or full (gpu_nvml.c flags MIG devices; as NVML names
/// them, the form of recent drivers), and with `Flags=env_uuid` (26.05) each other
/// board's under any NVIDIA AutoDetect (AutoDetect=nvidia sees a MIG board whole).
pub fn slurm_uuids(autodetect: Option<&str>, env_uuid: bool, boards: &[BoardInfo]) -> Vec<String> {
    let nvml = matches!(autodetect, Some("nvml" | "full"));
    let any = nvml || autodetect == Some("nvidia");
    let mut out = Vec::new();
    for b in boards {
        if b.mig && nvml {
            out.extend(b.instances.iter().map(|i| i.uuid.clone()));
        } else if any && env_uuid {
            out.push(b.uuid.clone());
        }
    }
    out
}
