//! Which boards a job's GPUs are, and what share of each the job is charged: the
//! prolog's *selection* (cheap: gres.conf, slurm.conf, the environment slurmd gives the
//! prolog and small files under /proc, no NVML) and the sampler's *resolution* of it
//! against what NVML says ([`BoardInfo`]).
//!
//! # What slurmd gives the job prolog (read in Slurm's source)
//!
//! The user's own SPANK job environment reaches the prolog only with a `SPANK_` prefix
//! (slurm_protocol_defs.c:5421 `valid_spank_job_env`), so the variables below are
//! slurmd's. slurmd builds the prolog/epilog environment from scratch (prep_script_slurmd.c:243-246
//! in 24.11: the SPANK job env, then `gres_job_env`), and `gres_job_env` comes from
//! `gres_g_prep_set_env` (24.11 src/interfaces/gres.c:7879, 26.05 gres.c:8183; named
//! `gres_g_epilog_set_env` in 22.05, src/common/gres.c:6776, same logic), which calls
//! each allocated gres's `prep_set_env` (22.05: `epilog_set_env`, gres_gpu.c:1022,
//! gres_shard.c:338, gres_mps.c:379, gres_common.c:635) in turn, so a later one
//! *overwrites* what an earlier one set. Line numbers below are 24.11's:
//! - gres/gpu (gres_gpu.c:982) and gres/shard (gres_shard.c:309) call
//!   `gres_common_prep_set_env` (gres_common.c:336): `SLURM_JOB_GPUS` = the allocated
//!   devices' gres indices, and, where gres.conf asks for NVIDIA env (the default),
//!   `CUDA_VISIBLE_DEVICES` = each device's `unique_id` when it has one (MIG devices
//!   from AutoDetect, `UniqueId=`, 26.05's `Flags=env_uuid`: gres_common.c:141 in
//!   26.05) else the same gres index. A shard job gets exactly what a GPU job gets
//!   (shard devices are aligned to the GPU records: gres_c_s.c:450): **no shard count**
//!   reaches the prolog (`SLURM_SHARDS_ON_NODE` is set only in the job's and steps'
//!   environment, gres_shard.c:145), so the prolog cannot tell a shard job from a
//!   whole-GPU job on a board that has shards.
//! - gres/mps (gres_mps.c:329) sets the same two, then
//!   `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` = MAX(job's MPS count on the node x 100 / the
//!   first allocated device's MPS count, 1), in integers: `mps:1` of 1000 says 1 (for
//!   0.1%), `mps:1` of 3 says 33. It is set whenever the job has MPS on the node, so its
//!   presence marks an MPS job (its absence, a whole-GPU job), but its value is not the
//!   share: the job's count comes from slurmctld ([`Ask`]), the board's from slurmctld
//!   (24.05+) or gres.conf as slurmd shares it out.
//! - With several gres entries (typed requests `gpu:a100:1,gpu:h100:1`, or a typed node
//!   whose allocation slurmctld split by type) each overwrites `SLURM_JOB_GPUS`: the
//!   prolog sees only the last one's indices (read in the source; untested on a
//!   cluster). Where the UUIDs in `CUDA_VISIBLE_DEVICES` name the boards they are used
//!   (they too would be the last entry's only, so the record can miss GPUs, never name
//!   another job's); without them, the sampler asks slurmctld ([`Ask`]).
//! - For these (gres/mps jobs, nodes with gres/shard or several GPU types) only, the
//!   prolog passes an [`Ask`] and the sampler reads the node's allocation in slurmctld's
//!   JSON (`scontrol --json show job`, 22.05 `squeue --json`), never in the text of
//!   `scontrol show job -d`, where the owner's job name, comment, directories print raw
//!   (newlines kept: tried on 22.05) and can forge `JobId=`/`Nodes=`/`GRES=` lines; no
//!   other job costs slurmctld a call.
//!
//! # How slurmd numbers a node's GPUs
//!
//! Without AutoDetect: gres.conf's records in Slurm's order (see `gres`). With AutoDetect
//! (gres_gpu.c `_merge_system_gres_conf`, 22.05-26.05): detected GPUs are sorted by
//! device file (strnatcmp) and then by `links`, which for `AutoDetect=nvml`
//! (gpu_nvml.c) puts each GPU at its NVML index: the order is NVML's. The prolog does
//! not open NVML, so it passes "the i-th of n boards in NVML order" and the sampler
//! resolves it (deriving PCI order from /proc/driver/nvidia/gpus/* would be a second
//! guess at NVML's enumeration). `AutoDetect=nvidia` (24.11+, gpu_nvidia.c) reads
//! /proc/driver/nvidia/gpus/*/information (`Device Minor:`), sets no links, so the
//! order is the files' `/dev/nvidiaN` order: by minor. 26.05's `AutoDetect=full` tries
//! NVML first, then nvidia (interfaces/gpu.c:313): the prolog cannot know which one
//! slurmd got, so the sampler accepts it only where both orders name the same board.
//!
//! MIG records (`MultipleFiles=/dev/nvidia0,/dev/nvidia-caps/nvidia-cap21,...`): the
//! board is the one file that is not an nvidia-caps device (major of `nvidia-caps` in
//! /proc/devices); each caps device's minor is looked up in
//! /proc/driver/nvidia-caps/mig-minors (`gpu0/gi1/access 21`, `gpu0/gi1/ci0/access
//! 22`) for the GPU and compute instance.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::gpu::BoardInfo;

/// How a board of the job is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The device minor of its /dev/nvidiaN.
    Minor(u32),
    /// `GPU-...` (a board) or `MIG-...` (an instance).
    Uuid(String),
    /// A MIG instance: the board's minor, GPU instance, compute instance (`None`: the
    /// whole GPU instance).
    Mig {
        minor: u32,
        gi: u32,
        ci: Option<u32>,
    },
    /// The i-th of `of` boards in NVML's order (AutoDetect=nvml).
    Nvml { index: u32, of: u32 },
    /// The i-th of `of` boards in NVML's order, which must also be the i-th by minor
    /// (AutoDetect=full: NVML or nvidia, whichever slurmd found).
    Either { index: u32, of: u32 },
}

/// The job's share of a board, as Slurm tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Whole,
    /// The job's MPS on the board, of the board's (slurmctld's counts, exact).
    Mps {
        n: u64,
        of: u64,
    },
    /// The job's shards on the board, of the board's.
    Shard {
        n: u64,
        of: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sel {
    pub key: Key,
    pub share: Share,
}

/// Why a job's GPUs on a node are not measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GPUs not identified for certain, not measured: {}",
            self.0
        )
    }
}

impl std::error::Error for Refusal {}

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

fn valid_uuid(u: &str) -> bool {
    (u.starts_with("GPU-") || u.starts_with("MIG-"))
        && u.len() <= 96
        && u[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
}

/// The sampler's `--gpus` argument: entries `m3`, `u:GPU-...`, `g3.1.0`/`g3.1`,
/// `n2/4`, `e2/4`, each optionally followed by `~mps1/1000` (MPS) or `~sh2/8` (shards),
/// comma-separated. (`~mps25`, a percentage, is what an older prolog passed: read as
/// 25/100.)
pub fn format_spec(sel: &[Sel]) -> String {
    sel.iter()
        .map(|s| {
            let mut out = key_token(&s.key);
            match s.share {
                Share::Whole => {}
                Share::Mps { n, of } => out.push_str(&format!("~mps{n}/{of}")),
                Share::Shard { n, of } => out.push_str(&format!("~sh{n}/{of}")),
            }
            out
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn key_token(key: &Key) -> String {
    match key {
        Key::Minor(m) => format!("m{m}"),
        Key::Uuid(u) => format!("u:{u}"),
        Key::Mig { minor, gi, ci } => match ci {
            Some(ci) => format!("g{minor}.{gi}.{ci}"),
            None => format!("g{minor}.{gi}"),
        },
        Key::Nvml { index, of } => format!("n{index}/{of}"),
        Key::Either { index, of } => format!("e{index}/{of}"),
    }
}

fn parse_key(key: &str) -> Option<Key> {
    fn pair(s: &str) -> Option<(u32, u32)> {
        let (a, b) = s.split_once('/')?;
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        (a < b).then_some((a, b))
    }
    Some(if let Some(u) = key.strip_prefix("u:") {
        valid_uuid(u).then(|| Key::Uuid(u.to_string()))?
    } else if let Some(m) = key.strip_prefix('m') {
        Key::Minor(m.parse().ok()?)
    } else if let Some(g) = key.strip_prefix('g') {
        let mut it = g.split('.');
        let minor = it.next()?.parse().ok()?;
        let gi = it.next()?.parse().ok()?;
        let ci = match it.next() {
            Some(c) => Some(c.parse().ok()?),
            None => None,
        };
        if it.next().is_some() {
            return None;
        }
        Key::Mig { minor, gi, ci }
    } else if let Some(n) = key.strip_prefix('n') {
        let (index, of) = pair(n)?;
        Key::Nvml { index, of }
    } else if let Some(n) = key.strip_prefix('e') {
        let (index, of) = pair(n)?;
        Key::Either { index, of }
    } else {
        return None;
    })
}

/// Parses [`format_spec`]'s text; `None` on anything else.
pub fn parse_spec(spec: &str) -> Option<Vec<Sel>> {
    if spec.len() > 16 * 1024 || spec.starts_with(ASK) {
        return None;
    }
    let mut out = Vec::new();
    for item in spec.split(',').filter(|i| !i.is_empty()) {
        let (key, share) = match item.split_once('~') {
            Some((k, s)) => (k, Some(s)),
            None => (item, None),
        };
        let key = parse_key(key)?;
        let share = match share {
            None => Share::Whole,
            Some(s) => {
                let fraction = |t: &str| -> Option<(u64, u64)> {
                    let (n, of) = t.split_once('/')?;
                    let (n, of): (u64, u64) = (n.parse().ok()?, of.parse().ok()?);
                    (n >= 1 && n <= of).then_some((n, of))
                };
                if let Some(p) = s.strip_prefix("mps") {
                    let (n, of) = if p.contains('/') {
                        fraction(p)?
                    } else {
                        // An older prolog's CUDA_MPS_ACTIVE_THREAD_PERCENTAGE.
                        let p: u64 = p.parse().ok()?;
                        (1..=100).contains(&p).then_some((p, 100))?
                    };
                    Share::Mps { n, of }
                } else if let Some(sh) = s.strip_prefix("sh") {
                    let (n, of) = fraction(sh)?;
                    Share::Shard { n, of }
                } else {
                    return None;
                }
            }
        };
        out.push(Sel { key, share });
    }
    Some(out)
}

/// The prefix of a selection that asks slurmctld (see [`Ask`]).
pub const ASK: &str = "ask:";

/// A selection the prolog's environment cannot make, on a node with gres/shard (a shard
/// job gets the same `SLURM_JOB_GPUS` as a whole-GPU job, and no shard count), for a
/// gres/mps job (the environment has only an integer percentage, not the job's MPS
/// count) or on a node with several GPU types (each typed entry overwrites
/// `SLURM_JOB_GPUS`): the sampler asks slurmctld once for the job's structure as JSON
/// ([`job_query`]), takes this node's GRES string from it ([`node_gres_json`],
/// [`parse_gres`]) and decides with [`from_slurmctld`]. No text the job's owner writes
/// (name, comment, directories) is read.
///
/// As a `--gpus` argument: `ask:J:T`, J the indices of `SLURM_JOB_GPUS` joined by `.`,
/// T the node's gres indices 0, 1, ... in order, joined by `;`, each its board's key as
/// in [`format_spec`] followed by `#N` where gres.conf gives that board N shards and
/// `%M` where it gives it M MPS, e.g. `ask:1:m0#4;m1#4;m2%1000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// `SLURM_JOB_GPUS` as the prolog saw it.
    pub job_indices: Vec<usize>,
    /// Per gres index of the node: its board, and the board's shards and MPS in gres.conf.
    pub table: Vec<Slot>,
}

/// One gres index of the node in an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub key: Key,
    /// The board's shards in gres.conf (`None`: none, or not known).
    pub shards: Option<u64>,
    /// The board's MPS count in gres.conf (`None`: none, or not known).
    pub mps: Option<u64>,
}

impl Slot {
    /// A board with no shared gres in gres.conf.
    pub fn plain(key: Key) -> Slot {
        Slot {
            key,
            shards: None,
            mps: None,
        }
    }
}

/// What the prolog hands the sampler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Known(Vec<Sel>),
    Ask(Ask),
}

/// The sampler's `--gpus` argument for a selection.
pub fn format_selection(sel: &Selection) -> String {
    match sel {
        Selection::Known(s) => format_spec(s),
        Selection::Ask(a) => format!(
            "{ASK}{}:{}",
            a.job_indices
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("."),
            a.table
                .iter()
                .map(|slot| {
                    let mut t = key_token(&slot.key);
                    if let Some(n) = slot.shards {
                        t.push_str(&format!("#{n}"));
                    }
                    if let Some(m) = slot.mps {
                        t.push_str(&format!("%{m}"));
                    }
                    t
                })
                .collect::<Vec<_>>()
                .join(";")
        ),
    }
}

/// Parses [`format_selection`]'s text; `None` on anything else.
pub fn parse_selection(spec: &str) -> Option<Selection> {
    let Some(rest) = spec.strip_prefix(ASK) else {
        return parse_spec(spec).map(Selection::Known);
    };
    if spec.len() > 16 * 1024 {
        return None;
    }
    let (job, table) = rest.split_once(':')?;
    let job_indices = job
        .split('.')
        .map(|i| i.parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()?;
    let table = table
        .split(';')
        .map(|e| {
            let count = |n: &str| n.parse::<u64>().ok().filter(|&n| n > 0);
            let (e, mps) = match e.split_once('%') {
                Some((e, m)) => (e, Some(count(m)?)),
                None => (e, None),
            };
            let (k, shards) = match e.split_once('#') {
                Some((k, n)) => (k, Some(count(n)?)),
                None => (e, None),
            };
            Some(Slot {
                key: parse_key(k)?,
                shards,
                mps,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    if job_indices.iter().any(|&i| i >= table.len()) {
        return None;
    }
    Some(Selection::Ask(Ask { job_indices, table }))
}

/// How many bytes of slurmctld's JSON answer are read at most (22.05's `squeue --json`
/// dumps every job slurmctld holds); a longer answer is a refusal.
pub const JOB_JSON_MAX: usize = 256 << 20;

/// The Slurm tool that gives the job's structure as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobTool {
    Scontrol,
    Squeue,
}

/// The tool and arguments that give slurmctld's structure of job `job` as JSON on the
/// release `diffs` describes: 23.02+ `scontrol --json show job JOB` (SHOW_DETAIL is
/// forced with `--json`), 22.05 `squeue --json` (every job: 22.05's squeue applies no
/// filter in JSON mode, so the job is picked by `job_id` in [`node_gres_json`]). Before
/// 22.05 none: a refusal, never the text of `scontrol show job`, which prints the
/// owner's name, comment and directories raw, newlines and all.
pub fn job_query(
    diffs: &crate::slurm::Differences,
    job: u32,
) -> Result<(JobTool, Vec<String>), Refusal> {
    use crate::slurm::JobJson;
    match diffs.job_json {
        JobJson::Scontrol => Ok((
            JobTool::Scontrol,
            vec!["--json".into(), "show".into(), "job".into(), job.to_string()],
        )),
        JobJson::SqueueAll => Ok((JobTool::Squeue, vec!["--json".into()])),
        JobJson::None => refuse(format!(
            "Slurm {} gives the job's GRES per node as JSON neither in scontrol nor in squeue; its text (which prints the owner's job name and comment raw) is not read",
            diffs.version
        )),
    }
}

/// A job of slurmctld's JSON, each field kept as JSON until the job is picked: another
/// job's odd shape cannot fail the answer.
#[derive(serde::Deserialize)]
struct JsonJob {
    #[serde(default)]
    job_id: Option<serde_json::Value>,
    #[serde(default)]
    gres_detail: Option<serde_json::Value>,
    #[serde(default)]
    job_resources: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct JsonJobs {
    jobs: Vec<JsonJob>,
}

/// `job_resources`: 22.05-23.11 list the nodes in `allocated_nodes[].nodename`, 24.05+
/// in `nodes.allocation[].name` (with `index`); `nodes` was the host list string before.
#[derive(serde::Deserialize)]
struct JsonResources {
    #[serde(default)]
    allocated_nodes: Option<Vec<JsonNodeOld>>,
    #[serde(default)]
    nodes: Option<JsonNodes>,
}

#[derive(serde::Deserialize)]
struct JsonNodeOld {
    nodename: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonNodes {
    Obj {
        allocation: Option<Vec<JsonNodeNew>>,
    },
    Other(serde::de::IgnoredAny),
}

#[derive(serde::Deserialize)]
struct JsonNodeNew {
    index: Option<u64>,
    name: Option<String>,
}

/// This node's GRES string in slurmctld's JSON answer (`scontrol --json show job` or
/// 22.05's `squeue --json`): the one job whose `job_id` is `job`, its `gres_detail`
/// entry at the position of `node` among the job's nodes (`job_resources`' per-node list,
/// which is slurmctld's node order, the order of `gres_detail`; never the sorted `nodes`
/// string). Only `job_id`, `gres_detail` and `job_resources` are read: the owner's job
/// name, comment, directories and other text are skipped unread. Bytes that are not
/// UTF-8 (Slurm prints an owner's name as given) are replaced before parsing, so they
/// cannot make the answer unreadable.
pub fn node_gres_json(json: &[u8], job: u32, node: &str) -> Result<String, Refusal> {
    let not_understood = |why: String| Refusal(format!("slurmctld's JSON for job {job}: {why}"));
    if json.len() > JOB_JSON_MAX {
        return Err(not_understood(format!(
            "{} bytes, more than the {JOB_JSON_MAX} read",
            json.len()
        )));
    }
    let text = String::from_utf8_lossy(json);
    let all: JsonJobs =
        serde_json::from_str(&text).map_err(|e| not_understood(format!("not understood: {e}")))?;
    let mut mine: Vec<JsonJob> = all
        .jobs
        .into_iter()
        .filter(|j| j.job_id.as_ref().and_then(|v| v.as_u64()) == Some(u64::from(job)))
        .collect();
    let record = match mine.len() {
        1 => mine.remove(0),
        0 => return Err(not_understood("no record of the job".into())),
        n => return Err(not_understood(format!("{n} records of the job"))),
    };
    let detail: Vec<Option<String>> = match record.gres_detail {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| not_understood(format!("gres_detail not understood: {e}")))?,
    };
    let resources: JsonResources = match record.job_resources {
        None | Some(serde_json::Value::Null) => {
            return Err(not_understood("no job_resources (no allocation)".into()))
        }
        Some(v) => serde_json::from_value(v)
            .map_err(|e| not_understood(format!("job_resources not understood: {e}")))?,
    };
    let names: Vec<Option<String>> = match (resources.allocated_nodes, resources.nodes) {
        (Some(old), _) if !old.is_empty() => old.into_iter().map(|n| n.nodename).collect(),
        (
            _,
            Some(JsonNodes::Obj {
                allocation: Some(list),
            }),
        ) => {
            let mut names = Vec::with_capacity(list.len());
            for (i, n) in list.into_iter().enumerate() {
                if n.index.is_some_and(|x| x != i as u64) {
                    return Err(not_understood(format!(
                        "job_resources node {i} has index {:?}",
                        n.index
                    )));
                }
                names.push(n.name);
            }
            names
        }
        _ => Vec::new(),
    };
    if names.is_empty() {
        return Err(not_understood(
            "job_resources lists no nodes of the job".into(),
        ));
    }
    if detail.len() != names.len() {
        return Err(not_understood(format!(
            "gres_detail has {} entries for the job's {} nodes",
            detail.len(),
            names.len()
        )));
    }
    let at: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.as_deref() == Some(node))
        .map(|(i, _)| i)
        .collect();
    let i = match at.as_slice() {
        [i] => *i,
        [] => return Err(not_understood(format!("node {node} is not the job's"))),
        more => {
            return Err(not_understood(format!(
                "node {node} is listed {} times",
                more.len()
            )))
        }
    };
    match detail[i].as_deref() {
        Some(g) if !g.is_empty() => Ok(g.to_string()),
        _ => Err(not_understood(format!("no GRES for node {node}"))),
    }
}

/// How slurmctld gives one gres entry's devices on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GresAlloc {
    /// `(IDX:0-1,3)`: the gres indices (gpu; shard and mps before 24.05).
    Indices(Vec<usize>),
    /// `(1/2,0/2)`: per gres index of the node, allocated / the board's (shard and mps,
    /// 24.05+).
    PerIndex(Vec<(u64, u64)>),
}

/// One entry of a node's `GRES=` value, e.g. `gpu:aa:1(IDX:0)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GresEntry {
    pub name: String,
    pub kind: Option<String>,
    pub count: u64,
    pub alloc: GresAlloc,
}

/// Parses a node's `GRES=` value: comma-separated entries `name[:type]:count(alloc)`
/// (commas inside the parentheses belong to the entry). Anything else, an empty value
/// included, is a refusal.
pub fn parse_gres(value: &str) -> Result<Vec<GresEntry>, Refusal> {
    let bad = |why: String| {
        Refusal(format!(
            "GRES=`{}`: {why}",
            value.chars().take(200).collect::<String>()
        ))
    };
    if value.is_empty() {
        return Err(bad(
            "empty: the job's devices on the node are not given".into()
        ));
    }
    let mut entries = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| bad("unbalanced parentheses".into()))?
            }
            ',' if depth == 0 => {
                entries.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad("unbalanced parentheses".into()));
    }
    entries.push(&value[start..]);
    let mut out = Vec::new();
    for e in entries {
        let (head, alloc) = e
            .strip_suffix(')')
            .and_then(|e| e.split_once('('))
            .ok_or_else(|| bad(format!("entry `{e}` gives no devices")))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (name, kind, count) = match parts.as_slice() {
            [n, c] => (*n, None, *c),
            [n, t, c] if !t.is_empty() => (*n, Some(t.to_string()), *c),
            _ => return Err(bad(format!("entry `{e}` not understood"))),
        };
        let count: u64 = count
            .parse()
            .map_err(|_| bad(format!("entry `{e}`: count not a number")))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad(format!("entry `{e}` not understood")));
        }
        let alloc = if let Some(list) = alloc.strip_prefix("IDX:") {
            let mut idx = Vec::new();
            for item in list.split(',') {
                let (a, b) = item.split_once('-').unwrap_or((item, item));
                let (a, b): (usize, usize) = match (a.parse(), b.parse()) {
                    (Ok(a), Ok(b)) if a <= b && b < 1 << 16 => (a, b),
                    _ => return Err(bad(format!("entry `{e}`: index list not understood"))),
                };
                idx.extend(a..=b);
            }
            GresAlloc::Indices(idx)
        } else {
            let per = alloc
                .split(',')
                .map(|p| {
                    let (a, t) = p.split_once('/')?;
                    Some((a.parse::<u64>().ok()?, t.parse::<u64>().ok()?))
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("entry `{e}`: devices not understood")))?;
            GresAlloc::PerIndex(per)
        };
        out.push(GresEntry {
            name: name.to_string(),
            kind,
            count,
            alloc,
        });
    }
    Ok(out)
}

/// The job's boards on the node from slurmctld's allocation (`entries`, this node's) and
/// the prolog's [`Ask`]: gpu entries' indices are whole boards; shard and mps entries
/// the job's shards or MPS of each board (`a/t` per index, 24.05+; before, the entry's
/// count on its one index, of the board's count in gres.conf). `SLURM_JOB_GPUS` must be
/// what slurmctld allocated (one entry) or a part of it (several entries: it is the last
/// one's), else a refusal.
pub fn from_slurmctld(ask: &Ask, entries: &[GresEntry]) -> Result<Vec<Sel>, Refusal> {
    let n = ask.table.len();
    let mut by_index: BTreeMap<usize, Share> = BTreeMap::new();
    let mut add = |i: usize, share: Share, e: &GresEntry| -> Result<(), Refusal> {
        if i >= n {
            return refuse(format!(
                "slurmctld gives gres index {i} ({}), the node has {n}",
                e.name
            ));
        }
        if by_index.insert(i, share).is_some() {
            return refuse(format!(
                "slurmctld gives gres index {i} in two entries (gpu, shard or mps)"
            ));
        }
        Ok(())
    };
    // A shared gres's share of a board, and the board's count in gres.conf.
    let shared = |name: &str, a: u64, of: u64| match name {
        "mps" => Share::Mps { n: a, of },
        _ => Share::Shard { n: a, of },
    };
    let conf_count = |name: &str, i: usize| {
        ask.table.get(i).and_then(|slot| match name {
            "mps" => slot.mps,
            _ => slot.shards,
        })
    };
    let mut used = 0;
    for e in entries {
        let name = e.name.as_str();
        match (name, &e.alloc) {
            ("gpu", GresAlloc::Indices(idx)) => {
                if idx.len() as u64 != e.count {
                    return refuse(format!(
                        "slurmctld gives gpu count {} with {} indices",
                        e.count,
                        idx.len()
                    ));
                }
                for &i in idx {
                    add(i, Share::Whole, e)?;
                }
            }
            ("shard" | "mps", GresAlloc::PerIndex(per)) => {
                if per.len() != n {
                    return refuse(format!(
                        "slurmctld lists {name} of {} gres indices, the prolog's gres.conf {n}",
                        per.len()
                    ));
                }
                if per.iter().map(|(a, _)| a).sum::<u64>() != e.count {
                    return refuse(format!(
                        "slurmctld's {name} per index do not add up to {name}:{}",
                        e.count
                    ));
                }
                for (i, &(a, of)) in per.iter().enumerate() {
                    if a == 0 {
                        continue;
                    }
                    if a > of {
                        return refuse(format!("slurmctld gives gres index {i} {a}/{of} {name}"));
                    }
                    if let Some(conf) = conf_count(name, i).filter(|&c| c != of) {
                        return refuse(format!(
                            "slurmctld gives gres index {i} {of} {name}, gres.conf {conf}"
                        ));
                    }
                    add(i, shared(name, a, of), e)?;
                }
            }
            ("shard" | "mps", GresAlloc::Indices(idx)) => {
                let &[i] = idx.as_slice() else {
                    return refuse(format!(
                        "slurmctld gives {name}:{} on {} gres indices without a count per index (Slurm before 24.05): the job's share of each board is unknown",
                        e.count,
                        idx.len()
                    ));
                };
                let Some(of) = conf_count(name, i) else {
                    return refuse(format!(
                        "slurmctld gives {name} on gres index {i}, gres.conf gives its board no {name} count"
                    ));
                };
                if e.count == 0 || e.count > of {
                    return refuse(format!(
                        "slurmctld gives {name}:{} on gres index {i}, its board has {of}",
                        e.count
                    ));
                }
                add(i, shared(name, e.count, of), e)?;
            }
            ("gpu", _) => return refuse(format!("slurmctld's {} entry not understood", e.name)),
            _ => continue,
        }
        used += 1;
    }
    if by_index.is_empty() {
        return refuse("slurmctld gives the job no gpu, shard or mps on this node");
    }
    let prolog: std::collections::BTreeSet<usize> = ask.job_indices.iter().copied().collect();
    let missing: Vec<usize> = prolog
        .iter()
        .filter(|i| !by_index.contains_key(i))
        .copied()
        .collect();
    if !missing.is_empty() {
        return refuse(format!(
            "SLURM_JOB_GPUS has gres index(es) {missing:?} that slurmctld did not allocate to the job"
        ));
    }
    if used == 1 && prolog.len() != by_index.len() {
        return refuse(format!(
            "SLURM_JOB_GPUS has {} gres index(es), slurmctld's one entry {}",
            prolog.len(),
            by_index.len()
        ));
    }
    let mut out: Vec<Sel> = Vec::new();
    for (i, share) in by_index {
        let key = ask.table[i].key.clone();
        match out.iter().find(|s| s.key == key) {
            Some(s) if s.share == Share::Whole && share == Share::Whole => {}
            Some(_) => {
                return refuse(format!(
                    "gres index {i} is a board already named with another share"
                ))
            }
            None => out.push(Sel { key, share }),
        }
    }
    Ok(out)
}

/// What a caps minor gives access to: (GPU minor, GPU instance, compute instance; `None`:
/// the GPU instance itself).
pub type MigMinor = (u32, u32, Option<u32>);

/// The files the prolog reads, under a root that tests replace (`/proc` on a node).
#[derive(Debug, Clone)]
pub struct ProcFiles {
    pub root: PathBuf,
}

impl ProcFiles {
    pub fn system() -> ProcFiles {
        ProcFiles {
            root: PathBuf::from("/proc"),
        }
    }
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }
    /// The character-device major of `nvidia-caps` (/proc/devices).
    pub fn caps_major(&self) -> Option<u32> {
        let text = self.read("devices")?;
        let mut in_char = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("Character devices") {
                in_char = true;
            } else if line.starts_with("Block devices") {
                in_char = false;
            } else if in_char {
                if let Some((major, name)) = line.split_once(char::is_whitespace) {
                    if name.trim() == "nvidia-caps" {
                        return major.parse().ok();
                    }
                }
            }
        }
        None
    }
    /// /proc/driver/nvidia-caps/mig-minors: caps minor -> (GPU minor, gi, ci).
    pub fn mig_minors(&self) -> Option<BTreeMap<u32, MigMinor>> {
        let text = self.read("driver/nvidia-caps/mig-minors")?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some((path, minor)) = line.trim().split_once(char::is_whitespace) else {
                continue;
            };
            let Ok(minor) = minor.trim().parse::<u32>() else {
                continue;
            };
            let parts: Vec<&str> = path.split('/').collect();
            let num = |s: &str, p: &str| s.strip_prefix(p).and_then(|n| n.parse::<u32>().ok());
            let entry = match parts.as_slice() {
                [g, gi, "access"] => (num(g, "gpu"), num(gi, "gi"), None, true),
                [g, gi, ci, "access"] => (num(g, "gpu"), num(gi, "gi"), num(ci, "ci"), false),
                _ => continue,
            };
            match entry {
                (Some(g), Some(gi), None, true) => {
                    out.insert(minor, (g, gi, None));
                }
                (Some(g), Some(gi), Some(ci), false) => {
                    out.insert(minor, (g, gi, Some(ci)));
                }
                _ => {}
            }
        }
        Some(out)
    }
    /// The device minors of /proc/driver/nvidia/gpus/*/information (`Device Minor:`),
    /// sorted; `None` when the directory cannot be read or a file has no minor.
    pub fn nvidia_minors(&self) -> Option<Vec<u32>> {
        let dir = std::fs::read_dir(self.root.join("driver/nvidia/gpus")).ok()?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.ok()?;
            let text = std::fs::read_to_string(entry.path().join("information")).ok()?;
            let minor = text.lines().find_map(|l| {
                l.strip_prefix("Device Minor:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })?;
            out.push(minor);
        }
        out.sort_unstable();
        Some(out)
    }
}

/// (major, minor) of a character device; `None` for anything else.
pub type DevStat<'a> = &'a dyn Fn(&Path) -> Option<(u32, u32)>;

/// The real stat of a character device.
pub fn stat_char_device(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    meta.file_type().is_char_device().then(|| {
        (
            rustix::fs::major(meta.rdev()),
            rustix::fs::minor(meta.rdev()),
        )
    })
}

/// What the prolog knows about the job's GPUs on this node.
#[derive(Debug, Clone, Default)]
pub struct JobGpus {
    /// SLURM_JOB_GPUS, parsed.
    pub indices: Vec<usize>,
    pub cuda_visible_devices: Option<String>,
    pub mps_percentage: Option<String>,
    /// SLURM_SHARDS_ON_NODE: not given to the prolog by Slurm 22.05-26.05; used where
    /// present.
    pub shards_on_node: Option<String>,
}

/// The node's GPU configuration as the prolog reads it.
pub struct NodeGres<'a> {
    /// gres index -> device files (gres.conf without AutoDetect).
    pub files: Vec<Vec<PathBuf>>,
    pub conf: crate::slurm::gres::NodeConf,
    /// slurm.conf's GPU types for the node (type, count).
    pub types: Option<Vec<(Option<String>, usize)>>,
    pub proc: &'a ProcFiles,
    pub stat: DevStat<'a>,
}

/// The board minor and MIG instance of one gres device's files.
fn device_key(files: &[PathBuf], node: &NodeGres) -> Result<Key, Refusal> {
    let caps_major = node.proc.caps_major();
    let mut board = None;
    let mut caps = Vec::new();
    for f in files {
        let Some((major, minor)) = (node.stat)(f) else {
            return refuse(format!("{}: not a character device", f.display()));
        };
        if Some(major) == caps_major {
            caps.push((f, minor));
        } else if board.replace(minor).is_some_and(|m| m != minor) {
            return refuse(format!(
                "gres device {} has several device files that are not nvidia-caps devices",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    let Some(minor) = board else {
        return refuse(format!(
            "gres device {} has no GPU device file",
            files
                .first()
                .map_or(String::new(), |f| f.display().to_string())
        ));
    };
    if caps.is_empty() {
        return Ok(Key::Minor(minor));
    }
    let Some(mig) = node.proc.mig_minors() else {
        return refuse(format!(
            "{} is an nvidia-caps device but {}/driver/nvidia-caps/mig-minors cannot be read",
            caps[0].0.display(),
            node.proc.root.display()
        ));
    };
    let (mut gi, mut ci) = (None, None);
    for (f, cap_minor) in caps {
        // config and monitor caps are not instances: no entry, ignored.
        let Some(&(gpu, g, c)) = mig.get(&cap_minor) else {
            continue;
        };
        if gpu != minor {
            return refuse(format!(
                "{} is a MIG instance of GPU minor {gpu}, listed with /dev/nvidia{minor}",
                f.display()
            ));
        }
        if gi.replace(g).is_some_and(|old| old != g) {
            return refuse(format!("{} names two GPU instances", f.display()));
        }
        if let Some(c) = c {
            if ci.replace(c).is_some_and(|old| old != c) {
                return refuse(format!("{} names two compute instances", f.display()));
            }
        }
    }
    match gi {
        Some(gi) => Ok(Key::Mig { minor, gi, ci }),
        None => refuse(format!(
            "gres device of /dev/nvidia{minor} has nvidia-caps files that are no MIG instance in mig-minors"
        )),
    }
}

/// Per board minor, its shard or MPS count from gres.conf, as slurmd shares a `Name=`
/// `name` count out over the GPUs (gres_c_s.c `_build_shared_list`, `_merge_lists`,
/// `_distribute_count`, the same in 22.05-26.05):
/// - one record without `File=`: over the node's GPU files in order, each taking what
///   is left over the GPUs left (`Count=100` over 3: 33, 33, 34);
/// - records with `File=`: each file `Count / files` (the remainder is lost); a board
///   named twice keeps its first count; records with and without `File=` together (or
///   two without) are a fatal error for slurmd, refused here.
///
/// A board with no count (or 0) is not in the map.
fn shared_counts(
    node: &NodeGres,
    board_files: &[PathBuf],
    name: &str,
) -> Result<BTreeMap<u32, u64>, Refusal> {
    let records: Vec<_> = node.conf.shared.iter().filter(|r| r.name == name).collect();
    let mut out = BTreeMap::new();
    let minor_of = |f: &Path| -> Result<u32, Refusal> {
        match (node.stat)(f) {
            Some((_, minor)) => Ok(minor),
            None => refuse(format!(
                "gres.conf: Name={name} file {}: not a character device",
                f.display()
            )),
        }
    };
    let without_file = records.iter().filter(|r| r.files.is_empty()).count();
    if without_file > 0 {
        if records.len() > 1 {
            return refuse(format!(
                "gres.conf: several Name={name} records, one without File= (slurmd refuses this)"
            ));
        }
        let Some(mut left) = records[0].count else {
            return refuse(format!(
                "gres.conf: Name={name} record without a valid Count="
            ));
        };
        if board_files.is_empty() {
            return refuse(format!(
                "gres.conf: Name={name} Count={left} without File=, and no GPU files to share it over"
            ));
        }
        let mut gpus_left = board_files.len() as u64;
        for f in board_files {
            let c = left / gpus_left;
            left -= c;
            gpus_left -= 1;
            let minor = minor_of(f)?;
            if c > 0 {
                out.entry(minor).or_insert(c);
            }
        }
        return Ok(out);
    }
    for r in records {
        let Some(count) = r.count else {
            return refuse(format!(
                "gres.conf: Name={name} record without a valid Count="
            ));
        };
        let per_file = count / r.files.len() as u64;
        for f in &r.files {
            let minor = minor_of(Path::new(f))?;
            if per_file > 0 {
                out.entry(minor).or_insert(per_file);
            }
        }
    }
    Ok(out)
}

/// The prolog's selection: each allocated GPU by the most direct key Slurm gives, with
/// the job's share of it; a refusal whenever that cannot be known for certain.
/// Where the environment cannot tell (gres/shard, gres/mps, several GPU types) this is a
/// refusal; [`choose`] asks slurmctld there instead.
pub fn select(job: &JobGpus, node: &NodeGres) -> Result<Vec<Sel>, Refusal> {
    match select_or_ask(job, node, false)? {
        Selection::Known(sel) => Ok(sel),
        Selection::Ask(_) => refuse("slurmctld must be asked"),
    }
}

/// The prolog's choice: [`select`], or, for a gres/mps job and on a node with gres/shard
/// or several GPU types where the environment cannot tell, an [`Ask`] for the sampler.
pub fn choose(job: &JobGpus, node: &NodeGres) -> Result<Selection, Refusal> {
    select_or_ask(job, node, true)
}

/// Each of the node's gres indices' board, and its shards and MPS in gres.conf (the MPS
/// count only where gres.conf gives it: slurmctld 24.05+ gives it per board itself).
fn ask_table(job: &JobGpus, node: &NodeGres, why: &str) -> Result<Selection, Refusal> {
    let context = |r: Refusal| Refusal(format!("{why}; the node's GPUs cannot be listed: {}", r.0));
    let n = match node.conf.autodetect.as_deref().unwrap_or("off") {
        "off" => node.files.len(),
        _ => node.proc.nvidia_minors().map_or(0, |m| m.len()),
    };
    if n == 0 {
        return Err(context(Refusal("no GPU in gres.conf or /proc".into())));
    }
    let board_files: Vec<PathBuf> = node.files.iter().flatten().cloned().collect();
    let shards = shared_counts(node, &board_files, "shard").map_err(context)?;
    let mps = shared_counts(node, &board_files, "mps").unwrap_or_default();
    let mut table = Vec::with_capacity(n);
    for i in 0..n {
        let key = keys_from_indices(&[i], node).map_err(context)?.remove(0);
        let (shards, mps) = match &key {
            Key::Minor(m) => (shards.get(m).copied(), mps.get(m).copied()),
            _ => (None, None),
        };
        table.push(Slot { key, shards, mps });
    }
    if let Some(&i) = job.indices.iter().find(|&&i| i >= n) {
        return refuse(format!(
            "{why}; SLURM_JOB_GPUS has gres index {i}, the node has {n}"
        ));
    }
    Ok(Selection::Ask(Ask {
        job_indices: job.indices.clone(),
        table,
    }))
}

fn select_or_ask(job: &JobGpus, node: &NodeGres, ask: bool) -> Result<Selection, Refusal> {
    if job.indices.is_empty() {
        return Ok(Selection::Known(Vec::new()));
    }
    let several_types = node
        .types
        .as_ref()
        .is_some_and(|t| t.iter().filter_map(|(ty, _)| ty.as_ref()).count() > 1);
    // The most direct key: UUIDs Slurm put in CUDA_VISIBLE_DEVICES.
    let uuids: Option<Vec<String>> = match job.cuda_visible_devices.as_deref() {
        Some(cvd) if cvd.contains("GPU-") || cvd.contains("MIG-") => {
            let items: Vec<&str> = cvd.split(',').map(str::trim).collect();
            if !items.iter().all(|u| valid_uuid(u)) {
                return refuse(format!(
                    "CUDA_VISIBLE_DEVICES mixes UUIDs and other entries: {}",
                    cvd.chars().take(200).collect::<String>()
                ));
            }
            if items.len() != job.indices.len() {
                return refuse(format!(
                    "CUDA_VISIBLE_DEVICES has {} UUID(s) but SLURM_JOB_GPUS {} index(es)",
                    items.len(),
                    job.indices.len()
                ));
            }
            Some(items.into_iter().map(str::to_string).collect())
        }
        _ => None,
    };
    let mut keys: Vec<Key> = match uuids {
        Some(u) => u.into_iter().map(Key::Uuid).collect(),
        None => {
            if several_types {
                let why = "the node has several GPU types in slurm.conf: Slurm gives the prolog only the last typed allocation's SLURM_JOB_GPUS (gres.c prep_set_env overwrites it), and no UUIDs";
                if ask {
                    return ask_table(job, node, why);
                }
                return refuse(why);
            }
            keys_from_indices(&job.indices, node)?
        }
    };
    // The job's share of each board. An MPS job: the environment has only
    // CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, MAX(count x 100 / the board's count, 1) in
    // integers (gres_mps.c), not the job's count: slurmctld gives it.
    if job.mps_percentage.is_some() {
        let why = "a gres/mps job: Slurm gives the prolog only CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, an integer percentage of at least 1, not the job's MPS count";
        if ask {
            return ask_table(job, node, why);
        }
        return refuse(why);
    }
    let board_files: Vec<PathBuf> = node.files.iter().flatten().cloned().collect();
    let shards = shared_counts(node, &board_files, "shard")?;
    let shared_board = |k: &Key| match k {
        Key::Minor(m) | Key::Mig { minor: m, .. } => shards.contains_key(m),
        _ => true,
    };
    if !shards.is_empty() && keys.iter().any(shared_board) {
        let on_node = match job.shards_on_node.as_deref() {
            None => {
                let why = "the node has gres/shard: Slurm gives the prolog the same SLURM_JOB_GPUS for a shard job as for a whole GPU and no shard count (gres_shard.c prep_set_env), so the job's share of the board is unknown";
                if ask {
                    return ask_table(job, node, why);
                }
                return refuse(why);
            }
            Some(n) => n
                .trim()
                .parse::<u64>()
                .map_err(|_| Refusal(format!("SLURM_SHARDS_ON_NODE `{n}` is not a number")))?,
        };
        if keys.len() != 1 {
            return refuse("shards on several GPUs: the count per GPU is unknown");
        }
        let minor = match &keys[0] {
            Key::Minor(m) => *m,
            _ => return refuse("shards on a GPU known only by UUID or NVML order"),
        };
        let Some(&of) = shards.get(&minor) else {
            return refuse(format!("gres.conf gives /dev/nvidia{minor} no shards"));
        };
        if on_node == 0 || on_node > of {
            return refuse(format!(
                "SLURM_SHARDS_ON_NODE={on_node} but the GPU has {of} shards"
            ));
        }
        return Ok(Selection::Known(vec![Sel {
            key: keys.remove(0),
            share: Share::Shard { n: on_node, of },
        }]));
    }
    Ok(Selection::Known(
        keys.into_iter()
            .map(|key| Sel {
                key,
                share: Share::Whole,
            })
            .collect(),
    ))
}

fn keys_from_indices(indices: &[usize], node: &NodeGres) -> Result<Vec<Key>, Refusal> {
    let autodetect = node.conf.autodetect.as_deref().unwrap_or("off");
    let detected = |what: &str| -> Result<Vec<u32>, Refusal> {
        node.proc.nvidia_minors().ok_or_else(|| {
            Refusal(format!(
                "AutoDetect={what} but {}/driver/nvidia/gpus cannot be read",
                node.proc.root.display()
            ))
        })
    };
    let by_index = |n: usize, what: &str| -> Result<(), Refusal> {
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return refuse(format!(
                "gres index {i} but AutoDetect={what} finds {n} GPU(s)"
            ));
        }
        // The node's configured GPU count must be what was detected.
        if let Some(types) = &node.types {
            let configured: usize = types.iter().map(|(_, c)| c).sum();
            if configured != n {
                return refuse(format!(
                    "slurm.conf gives the node {configured} GPU(s), AutoDetect={what} finds {n}"
                ));
            }
        }
        if node.conf.gpus_with_file > 0 {
            return refuse(format!(
                "AutoDetect={what} with gres.conf File= records: slurmd's merge of the two is not reproduced"
            ));
        }
        if node.conf.gpus_without_file > 0 && node.conf.gpus_without_file != n as u64 {
            return refuse(format!(
                "gres.conf gpu Count={} but AutoDetect={what} finds {n} GPU(s)",
                node.conf.gpus_without_file
            ));
        }
        Ok(())
    };
    match autodetect {
        "off" => {
            let mut keys = Vec::new();
            for &index in indices {
                let Some(files) = node.files.get(index) else {
                    return refuse(format!(
                        "gres index {index} is not among the node's {} GPU file(s) in gres.conf",
                        node.files.len()
                    ));
                };
                let key = device_key(files, node)?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            Ok(keys)
        }
        "nvidia" => {
            let minors = detected("nvidia")?;
            by_index(minors.len(), "nvidia")?;
            Ok(indices.iter().map(|&i| Key::Minor(minors[i])).collect())
        }
        "nvml" | "full" => {
            let n = detected(autodetect)?.len();
            by_index(n, autodetect)?;
            let of = n as u32;
            Ok(indices
                .iter()
                .map(|&i| {
                    let index = i as u32;
                    if autodetect == "nvml" {
                        Key::Nvml { index, of }
                    } else {
                        Key::Either { index, of }
                    }
                })
                .collect())
        }
        other => refuse(format!(
            "gres.conf AutoDetect={other}: not an NVIDIA autodetection this plugin reproduces"
        )),
    }
}

/// One board the sampler measures, and what the job is charged of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub minor: u32,
    /// Fraction of the board's energy charged to the job (0 < share <= 1).
    pub share: f64,
    /// `whole`, `mig-sm`, `mps`, `shard`.
    pub rule: &'static str,
    /// For MIG boards: the fraction of the board's SMs in no instance (never charged).
    pub unallocated: Option<f64>,
}

impl Charge {
    /// A board charged whole to the job.
    pub fn whole(minor: u32) -> Charge {
        Charge {
            minor,
            share: 1.0,
            rule: "whole",
            unallocated: None,
        }
    }
}

/// Resolves a selection against the boards NVML sees. Every board in the answer is
/// named by the selection (a UUID, minor, MIG instance or NVML position of it); any
/// doubt is a refusal.
pub fn resolve(sel: &[Sel], boards: &[BoardInfo]) -> Result<Vec<Charge>, Refusal> {
    let mut out: Vec<Charge> = Vec::new();
    let by_minor = |m: u32| boards.iter().find(|b| b.minor == m);
    let mut by_minor_order: Vec<&BoardInfo> = boards.iter().collect();
    by_minor_order.sort_by_key(|b| b.minor);
    for s in sel {
        let (board, instance_share): (&BoardInfo, Option<f64>) = match &s.key {
            Key::Minor(m) => match by_minor(*m) {
                Some(b) => (b, None),
                None => return refuse(format!("NVML has no GPU with device minor {m}")),
            },
            Key::Uuid(u) => {
                if let Some(b) = boards.iter().find(|b| &b.uuid == u) {
                    (b, None)
                } else if let Some((b, i)) = boards.iter().find_map(|b| {
                    b.instances
                        .iter()
                        .find(|i| &i.uuid == u)
                        .map(|i| (b, i.clone()))
                }) {
                    (b, Some(mig_share(b, &[i])?))
                } else {
                    return refuse(format!("NVML has no GPU or MIG instance {u}"));
                }
            }
            Key::Mig { minor, gi, ci } => {
                let Some(b) = by_minor(*minor) else {
                    return refuse(format!("NVML has no GPU with device minor {minor}"));
                };
                if !b.mig {
                    return refuse(format!(
                        "gres.conf gives a MIG instance of minor {minor}, but MIG is off there"
                    ));
                }
                let inst: Vec<_> = b
                    .instances
                    .iter()
                    .filter(|i| i.gi == *gi && ci.map_or(true, |c| i.ci == c))
                    .cloned()
                    .collect();
                if inst.is_empty() {
                    return refuse(format!(
                        "NVML has no MIG instance gi {gi} ci {ci:?} on minor {minor}"
                    ));
                }
                (b, Some(mig_share(b, &inst)?))
            }
            Key::Nvml { index, of } | Key::Either { index, of } => {
                if boards.len() != *of as usize {
                    return refuse(format!(
                        "the prolog saw {of} GPU(s) in /proc, NVML sees {}",
                        boards.len()
                    ));
                }
                let Some(b) = boards.iter().find(|b| b.index == *index) else {
                    return refuse(format!("NVML has no GPU {index}"));
                };
                if matches!(s.key, Key::Either { .. })
                    && by_minor_order.get(*index as usize).map(|o| o.minor) != Some(b.minor)
                {
                    return refuse(format!(
                        "AutoDetect=full: NVML's GPU {index} (minor {}) is not the {index}-th by minor; which one slurmd used is unknown",
                        b.minor
                    ));
                }
                // slurmd numbers a MIG board's instances as GPUs of their own: every
                // position after a MIG board shifts (gpu_nvml.c gives instances their
                // parent's links).
                if let Some(m) = boards.iter().find(|b| b.mig) {
                    return refuse(format!(
                        "AutoDetect numbers MIG instances too, and GPU minor {} is in MIG mode",
                        m.minor
                    ));
                }
                (b, None)
            }
        };
        let (share, rule) = match (instance_share, s.share) {
            (Some(f), Share::Whole) => (f, "mig-sm"),
            (None, Share::Whole) => (1.0, "whole"),
            (None, Share::Mps { n, of }) => (n as f64 / of as f64, "mps"),
            (None, Share::Shard { n, of }) => (n as f64 / of as f64, "shard"),
            (Some(_), _) => return refuse("MPS or shards on a MIG instance"),
        };
        let unallocated = instance_share.and_then(|_| unallocated_share(board));
        match out.iter_mut().find(|c| c.minor == board.minor) {
            Some(c) => {
                if c.rule != rule || rule != "mig-sm" {
                    return refuse(format!(
                        "GPU minor {} is named twice ({} and {rule})",
                        board.minor, c.rule
                    ));
                }
                c.share = (c.share + share).min(1.0);
            }
            None => out.push(Charge {
                minor: board.minor,
                share,
                rule,
                unallocated,
            }),
        }
    }
    Ok(out)
}

/// The SMs a MIG board's energy is shared out by: those MIG can hand out (the largest GPU
/// instance profile's, e.g. 98 of an A100's 108), else the board's. A fully partitioned
/// board's instances are then charged the whole board between them.
fn mig_total(b: &BoardInfo) -> Option<u32> {
    b.mig_sm_count.or(b.sm_count).filter(|&n| n > 0)
}

fn mig_share(b: &BoardInfo, inst: &[crate::gpu::MigInstance]) -> Result<f64, Refusal> {
    let Some(total) = mig_total(b) else {
        return refuse(format!(
            "NVML gives no SM count for MIG board minor {}: its energy cannot be shared out",
            b.minor
        ));
    };
    let sms: u32 = inst.iter().map(|i| i.sm_count).sum();
    if sms == 0 || sms > total {
        return refuse(format!(
            "MIG instance SMs {sms} of a board with {total} on minor {}",
            b.minor
        ));
    }
    Ok(f64::from(sms) / f64::from(total))
}

/// The fraction of a MIG board's SMs in no instance.
fn unallocated_share(b: &BoardInfo) -> Option<f64> {
    let total = mig_total(b)?;
    let used: u32 = b.instances.iter().map(|i| i.sm_count).sum();
    Some(f64::from(total.saturating_sub(used)) / f64::from(total))
}

/// The node's gres.conf: the configured one (`gres_conf`), else the one beside slurm.conf.
pub fn gres_conf_path(configured: Option<&Path>, slurm_conf: &Path) -> PathBuf {
    configured.map(Path::to_path_buf).unwrap_or_else(|| {
        slurm_conf
            .parent()
            .unwrap_or(Path::new("/etc/slurm"))
            .join("gres.conf")
    })
}

/// The node's GPU configuration as the prolog reads it: gres.conf (`File=` lists only
/// without AutoDetect) and slurm.conf's GPU types for `node`. The one view of the node's
/// GPUs: the prolog selects a job's GPUs in it (`node::selection`) and `spank-carbon
/// check` simulates jobs on it.
pub fn read_node<'a>(
    gres_conf: &Path,
    slurm_conf: &Path,
    node: &str,
    proc: &'a ProcFiles,
    stat: DevStat<'a>,
) -> Result<NodeGres<'a>, crate::slurm::gres::GresError> {
    let conf = crate::slurm::gres::node_conf(gres_conf, node)?;
    let types = crate::slurm::gres::slurm_conf_text(slurm_conf)
        .and_then(|text| crate::slurm::gres::node_gpu_types(&text, node))
        .filter(|t| !t.is_empty());
    let files = match conf.autodetect.as_deref() {
        None | Some("off") => crate::slurm::gres::gpu_files(gres_conf, Some(slurm_conf), node)?,
        Some(_) => Vec::new(),
    };
    Ok(NodeGres {
        files,
        conf,
        types,
        proc,
        stat,
    })
}

/// Per board minor, the node's `shard` or `mps` count from gres.conf, as [`select`]
/// reads it.
pub fn board_counts(node: &NodeGres, name: &str) -> Result<BTreeMap<u32, u64>, Refusal> {
    let board_files: Vec<PathBuf> = node.files.iter().flatten().cloned().collect();
    shared_counts(node, &board_files, name)
}

#[cfg(test)]
mod tests;
