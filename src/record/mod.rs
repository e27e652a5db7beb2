//! The record in the job's accounting comment: one segment of space-separated
//! `key=value` tokens that starts with `spank-carbon/1`, e.g.
//!
//! ```text
//! spank-carbon/1 gpu_wh=12.3457 co2e_g=9.2654 intensity=475 pue=1.58 gpus=4 nodes=2 of=2
//!   method=counter node.node1=wh:6.1728,gpus:2,co2e:4.6327,m:counter,t:1732262400-1732262460
//!   node.node2=...
//! ```
//! (one line in the field). Totals are always recomputed from the per-node parts, so
//! a merge can never double count, and whatever else is in the field is kept byte for byte.
//!
//! `text` writes and reads the record, `compact` is the form of jobs on many nodes (see
//! there), `merge` puts a node's part into a field.
//!
//! # Shared boards
//!
//! A node whose boards the job shared (MIG instances, MPS, shards) carries
//! `sh:RULE_GPUS` in its part: the rule (`mig-sm` the instances' share of the board's
//! SMs, `mps` CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, `shard` the job's shards of the
//! board's, `mixed`) and the GPU-equivalents charged, e.g. `sh:mig-sm_0.4286`; its
//! energy is the boards' energy times the shares, and its flags include `estimate`.
//! The whole boards' energy stays in the node's local record.

use std::collections::BTreeMap;

use crate::units::{co2e_grams, GramsPerKwh};

mod compact;
mod merge;
#[cfg(test)]
mod tests;
mod text;

pub use merge::{
    check_writable, merge, merge_in_run, merge_in_run_sluid, Unwritable, FIELD_MAX_BYTES,
};
pub use text::{find, find_all, find_run, parse, parse_all, Found};

pub const MARKER: &str = "spank-carbon/1";

/// How a node's (or a GPU's) energy was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// NVML's hardware energy counter: end minus start.
    Counter,
    /// The sampler's integral of power readings.
    Sampled,
    /// Some GPUs by counter, others sampled.
    Mixed,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Counter => "counter",
            Method::Sampled => "sampled",
            Method::Mixed => "mixed",
        }
    }
    fn parse(s: &str) -> Option<Method> {
        match s {
            "counter" => Some(Method::Counter),
            "sampled" => Some(Method::Sampled),
            "mixed" => Some(Method::Mixed),
            _ => None,
        }
    }
    /// The method of a whole made of parts measured by `self` and `other`.
    pub fn combine(self, other: Method) -> Method {
        if self == other {
            self
        } else {
            Method::Mixed
        }
    }
}

/// One node's share of the job's energy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodePart {
    /// Lower-case node name (Slurm 22.05's sacctmgr lower-cases what it stores).
    pub node: String,
    pub wh: f64,
    pub gpus: u32,
    pub co2e_g: f64,
    pub method: Method,
    /// The node's measurement window, unix seconds (0.001 s precision in the record).
    pub start: f64,
    pub end: f64,
    /// Fraction of the window covered by power samples, when samples were used.
    pub coverage: Option<f64>,
    /// Provenance flags: `shared` (whole-board attribution, e.g. MIG), `disagree`
    /// (counter and samples differ beyond tolerance), `reset` (counter reset), `partial`.
    pub flags: Vec<String>,
    /// Highest sampled power of the node's GPUs together, watts.
    #[serde(default)]
    pub peak_w: Option<f64>,
    /// Where the intensity came from: `fixed`, `series`, or `fallback` (a series was
    /// configured but did not cover the window).
    #[serde(default)]
    pub intensity_src: Option<String>,
    /// Embodied emissions of the GPUs' allocation, grams (kept apart from `co2e_g`).
    #[serde(default)]
    pub embodied_g: Option<f64>,
    /// Shared boards (MIG, MPS, shards): the rule that shared the boards' energy out and
    /// the GPU-equivalents charged (`sh:mig-sm_0.4286`); `None`: whole boards.
    #[serde(default)]
    pub share: Option<ShareRule>,
}

/// How a node's shared boards were charged: `rule` is `mig-sm` (the instances' share of
/// the board's SMs), `mps` (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), `shard` (the job's
/// shards of the board's) or `mixed`; `gpus` the GPU-equivalents charged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShareRule {
    pub rule: String,
    pub gpus: f64,
}

impl ShareRule {
    fn valid_rule(r: &str) -> bool {
        !r.is_empty()
            && r.len() <= 16
            && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            && !r.starts_with('-')
    }
    /// `rule_gpus`, as the record writes it (`_`: a character every reader's token
    /// grammar already accepts).
    pub fn format(&self) -> String {
        format!("{}_{}", self.rule, num(self.gpus, 4))
    }
    pub fn parse(v: &str) -> Option<ShareRule> {
        let (rule, gpus) = v.split_once('_')?;
        Self::valid_rule(rule).then_some(())?;
        Some(ShareRule {
            rule: rule.to_string(),
            gpus: parse_nonneg(gpus)?,
        })
    }
}

/// Values of the record as a whole that do not come from the parts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub intensity: GramsPerKwh,
    pub pue: f64,
    /// Number of nodes the job ran on.
    pub expected_nodes: u32,
}

/// Whether `name` can be a node name in the record.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Formats `x` with at most `decimals` decimals and no trailing zeros.
pub fn num(x: f64, decimals: usize) -> String {
    let mut s = format!("{x:.decimals$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

impl NodePart {
    /// The part of `node` with its measurement alone: no coverage, flags, peak, intensity
    /// source, embodied emissions or sharing (`NodePart { flags, ..NodePart::new(...) }`
    /// adds them). `window`: the measurement's start and end, unix seconds.
    pub fn new(
        node: impl Into<String>,
        wh: f64,
        gpus: u32,
        co2e_g: f64,
        method: Method,
        window: (f64, f64),
    ) -> NodePart {
        NodePart {
            node: node.into(),
            wh,
            gpus,
            co2e_g,
            method,
            start: window.0,
            end: window.1,
            coverage: None,
            flags: Vec::new(),
            peak_w: None,
            intensity_src: None,
            embodied_g: None,
            share: None,
        }
    }

    /// Rounds the part to the precision the record keeps, so that a part read back
    /// from the field compares equal to the one written. The window is rounded outward
    /// and the peak up, so that figures derived from them stay honest: the average
    /// power (energy over the window) of a constant load never shows above its peak.
    pub fn rounded(mut self) -> NodePart {
        self.wh = round(self.wh, 4);
        self.co2e_g = round(self.co2e_g, 4);
        self.coverage = self.coverage.map(|c| round(c, 3));
        self.start = round_down(self.start, 3);
        self.end = round_up(self.end, 3);
        self.peak_w = self.peak_w.map(|p| round_up(p, 1));
        self.embodied_g = self.embodied_g.map(|e| round(e, 4));
        if let Some(sh) = &mut self.share {
            sh.gpus = round(sh.gpus, 4);
        }
        self
    }
}

fn valid_word(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())
}

fn parse_flags(v: &str) -> Vec<String> {
    v.split('+')
        .filter(|f| valid_word(f))
        .map(str::to_string)
        .collect()
}

/// `x` rounded down to `decimals`, ignoring float noise below a thousandth of the last
/// digit (so that a value already rounded stays as it is).
fn round_down(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f + 1e-3).floor() / f
}

/// `x` rounded up to `decimals`, like [`round_down`].
fn round_up(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f - 1e-3).ceil() / f
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn parse_nonneg(v: &str) -> Option<f64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let x: f64 = v.parse().ok()?;
    (0.0..1e15).contains(&x).then_some(x)
}

/// The record: per-node parts plus the whole's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub meta: Meta,
    pub parts: BTreeMap<String, NodePart>,
    /// Whether the parts came from the compact form (per-node start, coverage and peak
    /// are not kept there; see compact.rs).
    pub compact: bool,
}

/// Jobs on more nodes than this get the compact form: 32 full-form parts with
/// 32-character names and every optional field stay within about 8 KiB, an eighth of
/// the column, so small jobs keep the readable form and big ones leave room for others.
pub const COMPACT_ABOVE_NODES: u32 = 32;

/// The sum of the parts' GPU counts, `None` when it overflows.
fn gpus_checked<'a>(parts: impl IntoIterator<Item = &'a NodePart>) -> Option<u32> {
    parts
        .into_iter()
        .try_fold(0u32, |sum, p| sum.checked_add(p.gpus))
}

impl Segment {
    pub fn gpu_wh(&self) -> f64 {
        self.parts.values().map(|p| p.wh).sum()
    }
    pub fn co2e_g(&self) -> f64 {
        self.parts.values().map(|p| p.co2e_g).sum()
    }
    /// GPUs measured (saturating: [`parse`] refuses a record whose sum overflows).
    pub fn gpus(&self) -> u32 {
        gpus_checked(self.parts.values()).unwrap_or(u32::MAX)
    }
    fn node_count(&self) -> u32 {
        u32::try_from(self.parts.len()).unwrap_or(u32::MAX)
    }
    /// Whether this record is written in the compact form (by the job's node count).
    pub fn is_big(&self) -> bool {
        self.meta.expected_nodes.max(self.node_count()) > COMPACT_ABOVE_NODES
    }
    pub fn method(&self) -> Option<Method> {
        self.parts
            .values()
            .map(|p| p.method)
            .reduce(Method::combine)
    }

    /// Embodied emissions, when any part reports them.
    pub fn embodied_g(&self) -> Option<f64> {
        self.parts
            .values()
            .filter_map(|p| p.embodied_g)
            .reduce(|a, b| a + b)
    }

    /// The intensity to show for the whole record: the configured one, or, when a part
    /// used a time series, the energy-weighted intensity its CO2e amounts to.
    pub fn shown_intensity(&self) -> f64 {
        let wh = self.gpu_wh();
        let series = self
            .parts
            .values()
            .any(|p| p.intensity_src.as_deref() == Some("series"));
        if series && wh > 0.0 && self.meta.pue > 0.0 {
            round(self.co2e_g() / (wh / 1000.0 * self.meta.pue), 1)
        } else {
            self.meta.intensity.0
        }
    }
}

/// Computes a node part's CO2e from its energy.
pub fn part_co2e(wh: f64, meta: &Meta) -> f64 {
    co2e_grams(wh, meta.pue, meta.intensity)
}
