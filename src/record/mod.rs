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
//! # The compact form
//!
//! A job on more than [`COMPACT_ABOVE_NODES`] nodes gets the compact form, from its first
//! part on (the choice depends on the job's node count, never on the text, so every
//! merge of a job uses the same form). The full form costs about 150-250 bytes a node:
//! 32 nodes with 32-character names and every optional field stay under about 8 KiB,
//! while 4,096 would need 600 KiB of a 64 KiB column. The compact form keeps the same
//! head (`gpu_wh= co2e_g= intensity= pue= gpus= nodes= of= method= embodied_g=`) and
//! replaces the `node.*` tokens with four:
//!
//! ```text
//! window=1800000002.934-1800003605.934   latest end less the longest window, latest end
//! hostlist=gpu[0001-4096]                the reporting nodes, Slurm host-list syntax
//! part-defaults=we:g8:mcounter:f:sfixed:eeyq:cag338           the most common fields
//! parts=bvrv1:mmixed,aw7lm,bz8fk,b30pp:fshared,...  one entry a node, host-list order
//! ```
//!
//! An entry is the node's energy as 4 base-36 digits (the mantissa; its exponent is the
//! `w` field), then how much shorter than the job's window the node's window was (0.1 s
//! units, base 36; nothing when 0), then `:`-tagged fields that differ from
//! `part-defaults`: `w` energy exponent, `g` GPUs, `m` method, `f` flags (`+`-joined),
//! `s` intensity source, `e` embodied emissions as grams per GPU-hour of the node's
//! window (empty: none), `c` CO2e as grams per Wh of the node's energy, `h` the sharing
//! rule of the full form's `sh` (empty: whole boards; records written before it have
//! no `h` and read as whole boards).
//!
//! # Shared boards
//!
//! A node whose boards the job shared (MIG instances, MPS, shards) carries
//! `sh:RULE_GPUS` in its part: the rule (`mig-sm` the instances' share of the board's
//! SMs, `mps` CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, `shard` the job's shards of the
//! board's, `mixed`) and the GPU-equivalents charged, e.g. `sh:mig-sm_0.4286`; its
//! energy is the boards' energy times the shares, and its flags include `estimate`.
//! The whole boards' energy stays in the node's local record. A number is one
//! base-36 exponent digit (power of ten + 16) and a base-36 mantissa: energy with 6
//! significant digits (never finer than 0.1 mWh, the full form's precision), the CO2e
//! factor with 6, the embodied rate with 4.
//!
//! What the compact form keeps of a node: energy (6 significant digits), GPUs, method,
//! flags, intensity source, CO2e (energy x the factor), embodied (rate x GPUs x window),
//! and the window's length (0.1 s), placed to end at the job's latest end. It drops the
//! node's own start and end, coverage (`cov`) and peak power (`pk`): those stay in the
//! node's local record. A 4,096-node job with 32-character names over 64 racks, flags
//! and embodied emissions on every node takes 33 KiB (see the tests), about 6 bytes a
//! node plus the host list; names that no host list can shorten cost their full length.
//! Readers need no outside knowledge: the host list names the entries.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::slurm::Differences;
use crate::units::{co2e_grams, GramsPerKwh};

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

    fn format_value(&self) -> String {
        let mut s = format!(
            "wh:{},gpus:{},co2e:{},m:{},t:{}-{}",
            num(self.wh, 4),
            self.gpus,
            num(self.co2e_g, 4),
            self.method.as_str(),
            num(self.start, 3),
            num(self.end, 3)
        );
        if let Some(c) = self.coverage {
            let _ = write!(s, ",cov:{}", num(c, 3));
        }
        if !self.flags.is_empty() {
            let _ = write!(s, ",f:{}", self.flags.join("+"));
        }
        if let Some(p) = self.peak_w {
            let _ = write!(s, ",pk:{}", num(p, 1));
        }
        if let Some(src) = &self.intensity_src {
            let _ = write!(s, ",src:{src}");
        }
        if let Some(e) = self.embodied_g {
            let _ = write!(s, ",emb:{}", num(e, 4));
        }
        if let Some(sh) = self
            .share
            .as_ref()
            .filter(|sh| ShareRule::valid_rule(&sh.rule))
        {
            let _ = write!(s, ",sh:{}", sh.format());
        }
        s
    }

    fn parse(node: &str, value: &str) -> Option<NodePart> {
        if !valid_node_name(node) {
            return None;
        }
        let mut part = NodePart {
            node: node.to_string(),
            wh: f64::NAN,
            gpus: 0,
            co2e_g: f64::NAN,
            method: Method::Counter,
            start: 0.0,
            end: 0.0,
            coverage: None,
            flags: Vec::new(),
            peak_w: None,
            intensity_src: None,
            embodied_g: None,
            share: None,
        };
        let mut seen_method = false;
        for field in value.split(',') {
            let (k, v) = field.split_once(':')?;
            match k {
                "wh" => part.wh = parse_nonneg(v)?,
                "co2e" => part.co2e_g = parse_nonneg(v)?,
                "gpus" => part.gpus = v.parse().ok()?,
                "m" => {
                    part.method = Method::parse(v)?;
                    seen_method = true;
                }
                "t" => {
                    let (a, b) = v.split_once('-')?;
                    part.start = parse_nonneg(a)?;
                    part.end = parse_nonneg(b)?;
                }
                "cov" => part.coverage = Some(parse_nonneg(v)?),
                "pk" => part.peak_w = Some(parse_nonneg(v)?),
                "emb" => part.embodied_g = Some(parse_nonneg(v)?),
                "src" if !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase()) => {
                    part.intensity_src = Some(v.to_string())
                }
                "f" => part.flags = parse_flags(v),
                "sh" => part.share = Some(ShareRule::parse(v)?),
                _ => {} // a later version's detail: ignored, not fatal
            }
        }
        (part.wh.is_finite() && part.co2e_g.is_finite() && seen_method).then_some(part)
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
    /// are not kept there; see the module docs).
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

const TOP_KEYS: &[&str] = &[
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
    "sluid",
    "window",
    "hostlist",
    "part-defaults",
    "parts",
];

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

    pub fn format(&self) -> String {
        if self.is_big() {
            if let Some(c) = compact::Compact::build(self.parts.values()) {
                let kept = Segment {
                    meta: self.meta,
                    parts: c.parts,
                    compact: true,
                };
                let mut s = kept.head();
                let _ = write!(
                    s,
                    " window={} hostlist={} part-defaults={} parts={}",
                    c.window, c.hostlist, c.defaults, c.entries
                );
                return s;
            }
        }
        let mut s = self.head();
        for part in self.parts.values() {
            let _ = write!(s, " node.{}={}", part.node, part.format_value());
        }
        s
    }

    /// The record's totals and metadata: the tokens before the per-node detail.
    fn head(&self) -> String {
        let mut s = format!(
            "{MARKER} gpu_wh={} co2e_g={} intensity={} pue={} gpus={} nodes={} of={}",
            num(self.gpu_wh(), 4),
            num(self.co2e_g(), 4),
            num(self.shown_intensity(), 3),
            num(self.meta.pue, 3),
            self.gpus(),
            self.node_count(),
            self.meta.expected_nodes.max(self.node_count()),
        );
        if let Some(m) = self.method() {
            let _ = write!(s, " method={}", m.as_str());
        }
        if let Some(e) = self.embodied_g() {
            let _ = write!(s, " embodied_g={}", num(e, 4));
        }
        s
    }
}

/// Where the segment sits in a field, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    /// Node parts that parsed (a corrupted part is dropped, not fatal).
    pub parts: BTreeMap<String, NodePart>,
    pub intensity: Option<f64>,
    pub pue: Option<f64>,
    pub expected_nodes: Option<u32>,
    /// The job run the segment belongs to (`run=`: the run's start, unix seconds, as
    /// accounting has it); `None` in records written before runs were told apart.
    pub run: Option<u64>,
    /// Whether parts came from the compact form.
    pub compact: bool,
    /// The run's SLUID (`sluid=`, Slurm 25.11+), lower case.
    pub sluid: Option<String>,
    /// The parts' GPU counts overflow a `u32`: the record is invalid and its parts
    /// were dropped.
    pub counts_overflow: bool,
}

fn token_is_ours(token: &str) -> bool {
    match token.split_once('=') {
        Some((k, v)) => {
            !v.is_empty()
                && (TOP_KEYS.contains(&k) || (k.starts_with("node.") && k.len() > 5))
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b",:.+-_".contains(&b)
                        || (k == "hostlist" && b"[]".contains(&b))
                })
        }
        None => false,
    }
}

/// Finds the first segment in `field`: the marker at the start or after whitespace,
/// followed by the `key=value` tokens that belong to the record.
pub fn find(field: &str) -> Option<Found> {
    find_from(field, 0)
}

/// Every segment in `field`, in order: one per job run (a requeued job's earlier runs
/// have their own segments, see [`merge_in_run`]).
pub fn find_all(field: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut from = 0;
    while let Some(f) = find_from(field, from) {
        from = f.end.max(f.start + MARKER.len());
        out.push(f);
    }
    out
}

/// The segment of job run `run` in `field`.
pub fn find_run(field: &str, run: u64) -> Option<Found> {
    find_all(field).into_iter().find(|f| f.run == Some(run))
}

/// Parses every segment of `field`, with the run each belongs to.
pub fn parse_all(field: &str) -> Vec<(Option<u64>, Segment)> {
    find_all(field)
        .into_iter()
        .filter(|f| !f.counts_overflow)
        .map(|f| (f.run, segment_of(f)))
        .collect()
}

fn find_from(field: &str, from: usize) -> Option<Found> {
    let mut search_from = from;
    let start = loop {
        let at = search_from + field[search_from..].find(MARKER)?;
        let after = at + MARKER.len();
        let boundary_before = at == 0 || field[..at].ends_with(|c: char| c.is_whitespace());
        let boundary_after = after == field.len() || field[after..].starts_with(' ');
        if boundary_before && boundary_after {
            break at;
        }
        search_from = after;
    };
    let mut end = start + MARKER.len();
    let mut found = Found {
        start,
        end,
        parts: BTreeMap::new(),
        intensity: None,
        pue: None,
        expected_nodes: None,
        run: None,
        compact: false,
        sluid: None,
        counts_overflow: false,
    };
    // The compact form's tokens: window, hostlist, part-defaults, parts.
    let mut compact_tokens: [Option<&str>; 4] = [None; 4];
    while field[end..].starts_with(' ') {
        let token_start = end + 1;
        let token_end = field[token_start..]
            .find(|c: char| c.is_whitespace())
            .map_or(field.len(), |i| token_start + i);
        let token = &field[token_start..token_end];
        if !token_is_ours(token) {
            break;
        }
        let (k, v) = token.split_once('=').expect("checked by token_is_ours");
        match k {
            "intensity" => found.intensity = parse_nonneg(v),
            "pue" => found.pue = parse_nonneg(v),
            "of" => found.expected_nodes = v.parse().ok(),
            "run" => found.run = v.parse().ok(),
            "sluid" => found.sluid = crate::slurm::sluid_record_form(v).filter(|f| f == v),
            "window" => compact_tokens[0] = Some(v),
            "hostlist" => compact_tokens[1] = Some(v),
            "part-defaults" => compact_tokens[2] = Some(v),
            "parts" => compact_tokens[3] = Some(v),
            _ => {
                if let Some(node) = k.strip_prefix("node.") {
                    if let Some(part) = NodePart::parse(node, v) {
                        found.parts.insert(part.node.clone(), part);
                    }
                }
            }
        }
        end = token_end;
    }
    found.end = end;
    if let [Some(w), Some(h), Some(d), Some(p)] = compact_tokens {
        if let Some(parts) = compact::decode(w, h, d, p) {
            found.compact = true;
            for part in parts {
                // A `node.` token of the same node (not written with this form) wins.
                found.parts.entry(part.node.clone()).or_insert(part);
            }
        }
    }
    if gpus_checked(found.parts.values()).is_none() {
        found.counts_overflow = true;
        found.parts.clear();
    }
    Some(found)
}

/// Parses the segment in `field` into a record, if there is one (and its counts do
/// not overflow).
pub fn parse(field: &str) -> Option<Segment> {
    let found = find(field)?;
    if found.counts_overflow {
        return None;
    }
    Some(segment_of(found))
}

fn segment_of(found: Found) -> Segment {
    Segment {
        compact: found.compact,
        meta: Meta {
            intensity: GramsPerKwh(found.intensity.unwrap_or(f64::NAN)),
            pue: found.pue.unwrap_or(f64::NAN),
            expected_nodes: found.expected_nodes.unwrap_or(found.parts.len() as u32),
        },
        parts: found.parts,
    }
}

/// Returns `field` with `part` merged into its record: other nodes' parts are kept
/// (those of nodes outside `allowed`, when given, are dropped), this node's part is
/// replaced, totals recomputed, and every byte outside the segment left as it was.
/// A field without a record gets one appended, after a space if it has text.
pub fn merge(field: &str, part: &NodePart, meta: &Meta, allowed: Option<&[String]>) -> String {
    merge_found(field, find(field), part, meta, allowed, None, None)
}

/// Like [`merge`], into the segment of job run `run` (`run=<start>`), which holds only
/// that run's parts: a requeued job keeps one segment per run in its row, each bound to
/// the run it measured, and other runs' segments are left byte for byte like any other
/// text. A field without that run's segment gets one appended.
pub fn merge_in_run(
    field: &str,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: u64,
) -> String {
    merge_in_run_sluid(field, part, meta, allowed, run, None)
}

/// [`merge_in_run`] that also names the run by its SLUID (`sluid=`, the last token of
/// the segment, in lower case; a SLUID the segment has already is kept). A `sluid` that
/// is not a SLUID is left out.
pub fn merge_in_run_sluid(
    field: &str,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: u64,
    sluid: Option<&str>,
) -> String {
    let sluid = sluid.and_then(crate::slurm::sluid_record_form);
    merge_found(
        field,
        find_run(field, run),
        part,
        meta,
        allowed,
        Some(run),
        sluid.as_deref(),
    )
}

fn merge_found(
    field: &str,
    found: Option<Found>,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: Option<u64>,
    sluid: Option<&str>,
) -> String {
    // The run's SLUID: the one the segment has (every node of a run has the same), else
    // this node's. It goes last, so that readers that do not know it (older versions)
    // still read the whole record before it.
    let sluid = found
        .as_ref()
        .and_then(|f| f.sluid.clone())
        .or(sluid.map(str::to_string));
    let mut parts = found.as_ref().map(|f| f.parts.clone()).unwrap_or_default();
    if let Some(allowed) = allowed {
        parts.retain(|node, _| allowed.iter().any(|a| a == node));
    }
    parts.insert(part.node.clone(), part.clone());
    if gpus_checked(parts.values()).is_none() {
        // Only forged parts can make the counts overflow: keep this node's alone.
        parts.retain(|node, _| *node == part.node);
    }
    // The first writer's metadata stays: nodes configured differently must not undo
    // each other's writes for ever. Each part carries its own CO2e.
    let meta = match &found {
        Some(Found {
            intensity: Some(intensity),
            pue: Some(pue),
            expected_nodes,
            ..
        }) => Meta {
            intensity: GramsPerKwh(*intensity),
            pue: *pue,
            expected_nodes: expected_nodes.unwrap_or(0).max(meta.expected_nodes),
        },
        _ => *meta,
    };
    let mut segment = Segment {
        meta,
        parts,
        compact: false,
    }
    .format();
    if let Some(run) = run {
        segment.insert_str(MARKER.len(), &format!(" run={run}"));
    }
    if let Some(sluid) = sluid {
        let _ = write!(segment, " sluid={sluid}");
    }
    match found {
        Some(f) => format!("{}{}{}", &field[..f.start], segment, &field[f.end..]),
        None if field.is_empty() => segment,
        None => format!("{field} {segment}"),
    }
}

/// Computes a node part's CO2e from its energy.
pub fn part_co2e(wh: f64, meta: &Meta) -> f64 {
    co2e_grams(wh, meta.pue, meta.intensity)
}

/// The largest value the accounting columns hold (TEXT: 64 KiB).
pub const FIELD_MAX_BYTES: usize = 65_535;

/// Why a field value cannot be written through sacctmgr without changing someone's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    #[error("it has upper-case letters, which this Slurm's sacctmgr would lower-case")]
    UpperCase,
    #[error("it has quote or backslash characters (or starts with `=`), which sacctmgr or slurmdbd would alter")]
    Quote,
    #[error("it has control characters")]
    Control,
    #[error("it would exceed the column's {FIELD_MAX_BYTES} bytes")]
    TooLong,
    #[error("it starts or ends with whitespace (other writers' text), which this Slurm's sacctmgr would trim")]
    Whitespace,
}

/// Checks that sacctmgr stores `value` exactly as given. Slurm before 23.02 lower-cases
/// every comment value it sets (`diffs.lowercases`), 25.05 and later trim leading and
/// trailing whitespace (`diffs.trims_whitespace`); every version turns quotes into
/// backticks.
pub fn check_writable(value: &str, diffs: &Differences) -> Result<(), Unwritable> {
    if value.len() > FIELD_MAX_BYTES {
        return Err(Unwritable::TooLong);
    }
    // sacctmgr turns quotes into backticks (and cuts the value at a closing quote when it
    // starts with one); slurmdbd puts the value into SQL unescaped, so MySQL would
    // interpret backslashes; a leading `=` is eaten by sacctmgr's key parser.
    if value.contains(['\'', '"', '\\']) || value.starts_with('=') {
        return Err(Unwritable::Quote);
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Unwritable::Control);
    }
    // 22.05's strip_quotes lower-cases ASCII letters only (it never sets a locale).
    if diffs.lowercases && value.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Unwritable::UpperCase);
    }
    // 25.05's sacctmgr trims what isspace() takes as whitespace at either end.
    let space = |c: char| c.is_ascii_whitespace() || c == '\u{b}';
    if diffs.trims_whitespace && (value.starts_with(space) || value.ends_with(space)) {
        return Err(Unwritable::Whitespace);
    }
    Ok(())
}

/// The compact form of the per-node detail (see the module docs).
mod compact {
    use super::{parse_flags, parse_nonneg, round, valid_node_name, valid_word, Method, NodePart};
    use crate::slurm::hostlist;
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Write as _;

    /// The exponent digit is the power of ten plus this: powers -16 to 19.
    const EXP_BIAS: i32 = 16;
    const EXP_MAX: i32 = 35 - EXP_BIAS;
    /// The fields of an entry, by tag: the energy's exponent, GPUs, method, flags,
    /// source, embodied, CO2e, sharing rule (`h`, optional: records before it have none).
    const TAGS: [u8; 8] = *b"wgmfsech";
    /// Base-36 digits of an energy's mantissa (below 10^6 < 36^4), zero-padded.
    const WH_DIGITS: usize = 4;
    const WH_SIG: u32 = 6;
    const WH_MIN_EXP: i32 = -4;
    const FACTOR_SIG: u32 = 6;
    const FACTOR_MIN_EXP: i32 = -12;
    const RATE_SIG: u32 = 4;

    fn digit36(d: u64) -> char {
        char::from_digit((d % 36) as u32, 36).unwrap_or('0')
    }

    pub(super) fn base36(mut n: u64) -> String {
        let mut digits = Vec::new();
        loop {
            digits.push(digit36(n));
            n /= 36;
            if n == 0 {
                break;
            }
        }
        digits.iter().rev().collect()
    }

    pub(super) fn parse36(s: &str) -> Option<u64> {
        if s.is_empty() || s.len() > 12 {
            return None;
        }
        s.bytes().try_fold(0u64, |n, b| {
            let d = (b as char)
                .to_digit(36)
                .filter(|_| !b.is_ascii_uppercase())?;
            n.checked_mul(36)?.checked_add(u64::from(d))
        })
    }

    fn scaled(x: f64, e: i32) -> f64 {
        if e < 0 {
            x * 10f64.powi(-e)
        } else {
            x / 10f64.powi(e)
        }
    }

    fn unscaled(m: f64, e: i32) -> f64 {
        if e < 0 {
            m / 10f64.powi(-e)
        } else {
            m * 10f64.powi(e)
        }
    }

    /// `x` with `sig` significant digits, never finer than `10^min_exp`: one base-36
    /// exponent digit and a base-36 mantissa. Negative, NaN and infinite values are 0.
    pub(super) fn enc(x: f64, sig: u32, min_exp: i32) -> String {
        let x = if x.is_finite() && x > 0.0 { x } else { 0.0 };
        let top = 10u64.pow(sig) as f64;
        let mut e = min_exp;
        let m = loop {
            let m = scaled(x, e).round();
            if m < top {
                break m;
            }
            if e >= EXP_MAX {
                break top - 1.0;
            }
            e += 1;
        };
        let mut s = String::new();
        s.push(digit36((e + EXP_BIAS) as u64));
        s.push_str(&base36(m as u64));
        s
    }

    /// The value of an [`enc`] code.
    pub(super) fn dec(s: &str) -> Option<f64> {
        let b = s.as_bytes();
        if b.len() < 2 || b.len() > 8 {
            return None;
        }
        let e = parse36(s.get(..1)?)? as i32 - EXP_BIAS;
        let m = parse36(s.get(1..)?)?;
        let v = unscaled(m as f64, e);
        v.is_finite().then_some(v)
    }

    /// The node's window length in 0.1 s.
    fn tenths(seconds: f64) -> u64 {
        (seconds * 10.0).round().clamp(0.0, 1e16) as u64
    }

    /// An entry's fields, as read: the defaults with the entry's own on top.
    #[derive(Clone)]
    struct Fields {
        /// The energy's exponent digit.
        wh_exp: char,
        gpus: u32,
        method: Method,
        flags: Vec<String>,
        src: Option<String>,
        /// Embodied grams per GPU-hour of the window; `None`: no embodied figure.
        rate: Option<f64>,
        /// Grams CO2e per Wh.
        factor: f64,
        share: Option<super::ShareRule>,
    }

    impl Fields {
        fn apply(&mut self, field: &str) -> Option<u8> {
            let tag = *field.as_bytes().first()?;
            let v = field.get(1..)?;
            match tag {
                b'w' if v.len() == 1 && parse36(v).is_some() => self.wh_exp = v.chars().next()?,
                b'g' if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                    self.gpus = v.parse().ok()?
                }
                b'm' => self.method = Method::parse(v)?,
                b'f' => self.flags = parse_flags(v),
                b's' if v.is_empty() => self.src = None,
                b's' if valid_word(v) => self.src = Some(v.to_string()),
                b'e' if v.is_empty() => self.rate = None,
                b'e' => self.rate = Some(dec(v)?),
                b'c' => self.factor = dec(v)?,
                b'h' if v.is_empty() => self.share = None,
                b'h' => self.share = Some(super::ShareRule::parse(v)?),
                b'w' | b'g' | b's' => return None,
                _ => {} // a later version's field: ignored
            }
            Some(tag)
        }
    }

    /// The per-node detail of a compact record, as written.
    pub(super) struct Compact {
        pub window: String,
        pub hostlist: String,
        pub defaults: String,
        pub entries: String,
        /// The parts as the record keeps them: [`decode`] of the text above.
        pub parts: BTreeMap<String, NodePart>,
    }

    /// The six tagged fields of a part, as written.
    fn fields_of(p: &NodePart, wh_exp: char, wh_kept: f64, window_tenths: u64) -> [String; 8] {
        let flags: Vec<&str> = p
            .flags
            .iter()
            .map(String::as_str)
            .filter(|f| valid_word(f))
            .collect();
        let src = p.intensity_src.as_deref().filter(|s| valid_word(s));
        let factor = if wh_kept > 0.0 { p.co2e_g / p.wh } else { 0.0 };
        let embodied = match p.embodied_g {
            None => String::new(),
            Some(g) => {
                let gpu_hours = f64::from(p.gpus) * (p.end - p.start) / 3600.0;
                let rate = if window_tenths > 0 && gpu_hours > 0.0 {
                    g / gpu_hours
                } else {
                    0.0
                };
                enc(rate, RATE_SIG, FACTOR_MIN_EXP)
            }
        };
        [
            format!("w{wh_exp}"),
            format!("g{}", p.gpus),
            format!("m{}", p.method.as_str()),
            format!("f{}", flags.join("+")),
            format!("s{}", src.unwrap_or("")),
            format!("e{embodied}"),
            format!("c{}", enc(factor, FACTOR_SIG, FACTOR_MIN_EXP)),
            format!(
                "h{}",
                p.share
                    .as_ref()
                    .filter(|sh| super::ShareRule::valid_rule(&sh.rule))
                    .map(super::ShareRule::format)
                    .unwrap_or_default()
            ),
        ]
    }

    impl Compact {
        /// The compact detail of `parts`; `None` when there are none or their names
        /// make no host list (the full form is written then).
        pub fn build<'a>(parts: impl Iterator<Item = &'a NodePart>) -> Option<Compact> {
            let mut parts: Vec<&NodePart> = parts.collect();
            if parts.is_empty() {
                return None;
            }
            parts.sort_by(|a, b| hostlist::natural_cmp(&a.node, &b.node));
            let names: Vec<&str> = parts.iter().map(|p| p.node.as_str()).collect();
            let hostlist = hostlist::compress(&names)?;
            let end = round(parts.iter().map(|p| p.end).fold(0.0, f64::max), 3);
            let lengths: Vec<u64> = parts.iter().map(|p| tenths(p.end - p.start)).collect();
            let longest = lengths.iter().copied().max().unwrap_or(0);
            let start = round(end - longest as f64 / 10.0, 3).max(0.0);
            let window = format!("{}-{}", super::num(start, 3), super::num(end, 3));
            // The window as a reader gets it back.
            let longest = tenths(end - start);
            let rows: Vec<(String, u64, [String; 8])> = parts
                .iter()
                .zip(&lengths)
                .map(|(p, &len)| {
                    let wh = enc(p.wh, WH_SIG, WH_MIN_EXP);
                    let kept = dec(&wh).unwrap_or(0.0);
                    let exp = wh.chars().next().unwrap_or('0');
                    let mantissa = format!("{:0>WH_DIGITS$}", &wh[1..]);
                    let short = longest.saturating_sub(len);
                    (mantissa, short, fields_of(p, exp, kept, len.min(longest)))
                })
                .collect();
            let defaults: Vec<&str> = (0..TAGS.len())
                .map(|i| {
                    let mut count: HashMap<&str, usize> = HashMap::new();
                    for (_, _, f) in &rows {
                        *count.entry(f[i].as_str()).or_default() += 1;
                    }
                    count
                        .into_iter()
                        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                        .map_or("", |(v, _)| v)
                })
                .collect();
            let mut entries = String::new();
            for (i, (wh, short, fields)) in rows.iter().enumerate() {
                if i > 0 {
                    entries.push(',');
                }
                entries.push_str(wh);
                if *short > 0 {
                    entries.push_str(&base36(*short));
                }
                for (field, default) in fields.iter().zip(&defaults) {
                    if field != default {
                        let _ = write!(entries, ":{field}");
                    }
                }
            }
            let defaults = defaults.join(":");
            let parts = decode(&window, &hostlist, &defaults, &entries)?
                .into_iter()
                .map(|p| (p.node.clone(), p))
                .collect();
            Some(Compact {
                window,
                hostlist,
                defaults,
                entries,
                parts,
            })
        }
    }

    /// The parts of a compact record's tokens. `None` when the window, the host list or
    /// the defaults are bad or the host list and the entries differ in number; a bad
    /// entry drops only its node.
    pub(super) fn decode(
        window: &str,
        hosts: &str,
        defaults: &str,
        entries: &str,
    ) -> Option<Vec<NodePart>> {
        let (a, b) = window.split_once('-')?;
        let (start, end) = (parse_nonneg(a)?, parse_nonneg(b)?);
        if end < start {
            return None;
        }
        let longest = tenths(end - start);
        let mut base = Fields {
            wh_exp: '0',
            gpus: 0,
            method: Method::Counter,
            flags: Vec::new(),
            src: None,
            rate: None,
            factor: 0.0,
            share: None,
        };
        let mut seen = 0u8;
        for field in defaults.split(':') {
            let tag = base.apply(field)?;
            if let Some(i) = TAGS.iter().position(|&t| t == tag) {
                seen |= 1 << i;
            }
        }
        // The first seven are required; `h` came later.
        if seen & 0b111_1111 != 0b111_1111 {
            return None;
        }
        let entries: Vec<&str> = entries.split(',').collect();
        let names = hostlist::expand_max(hosts, entries.len()).ok()?;
        if names.len() != entries.len() {
            return None;
        }
        let parts = names
            .into_iter()
            .zip(entries)
            .filter_map(|(name, entry)| {
                if !valid_node_name(&name) {
                    return None;
                }
                let mut fields = entry.split(':');
                let first = fields.next()?;
                let mantissa = first.get(..WH_DIGITS)?;
                let short = match first.get(WH_DIGITS..)? {
                    "" => 0,
                    short => parse36(short)?,
                };
                let mut f = base.clone();
                for field in fields {
                    f.apply(field)?;
                }
                let wh = dec(&format!("{}{mantissa}", f.wh_exp)).filter(|&w| w < 1e15)?;
                let seconds = longest.checked_sub(short)? as f64 / 10.0;
                Some(NodePart {
                    node: name,
                    wh,
                    gpus: f.gpus,
                    co2e_g: wh * f.factor,
                    method: f.method,
                    start: end - seconds,
                    end,
                    coverage: None,
                    flags: f.flags,
                    peak_w: None,
                    intensity_src: f.src,
                    embodied_g: f.rate.map(|r| r * f64::from(f.gpus) * seconds / 3600.0),
                    share: f.share,
                })
            })
            .collect();
        Some(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: u32) -> Meta {
        Meta {
            intensity: GramsPerKwh(475.0),
            pue: 1.58,
            expected_nodes: n,
        }
    }

    fn part(node: &str, wh: f64) -> NodePart {
        NodePart {
            node: node.into(),
            wh,
            gpus: 2,
            co2e_g: part_co2e(wh, &meta(1)),
            method: Method::Counter,
            start: 1_700_000_000.0,
            end: 1_700_000_060.0,
            coverage: None,
            flags: vec![],
            peak_w: None,
            intensity_src: None,
            embodied_g: None,
            share: None,
        }
        .rounded()
    }

    /// A deterministic stream of pseudo-random numbers in [0, 1).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Node `i` of a big job: 32-character names over 64 racks, 8 GPUs, about an hour
    /// with a few seconds of jitter, flags and embodied emissions on every node.
    fn big_part(i: usize, rng: &mut Lcg) -> NodePart {
        let node = format!("h100-cluster-east-rack{:02}-node{:03}", i / 64, i % 64 + 1);
        assert_eq!(node.len(), 32);
        let start = 1_800_000_000.0 + rng.next() * 3.0;
        let end = start + 3600.0 + rng.next() * 3.0;
        let wh = 5000.0 + rng.next() * 600.0;
        let flags = match i % 50 {
            0 => vec!["shared".into(), "reset".into()],
            n if n % 10 == 0 => vec!["shared".into(), "partial".into()],
            _ => vec!["shared".into()],
        };
        NodePart {
            node,
            wh,
            gpus: 8,
            co2e_g: part_co2e(wh, &meta(1)),
            method: if i % 97 == 0 {
                Method::Mixed
            } else {
                Method::Counter
            },
            start,
            end,
            coverage: Some(0.99),
            flags,
            peak_w: Some(5600.0),
            intensity_src: Some("fixed".into()),
            embodied_g: Some(12.5 * 8.0 * (end - start) / 3600.0),
            share: None,
        }
        .rounded()
    }

    /// What the compact form promises to keep of `p` (see the module docs).
    fn assert_kept(kept: &NodePart, p: &NodePart) {
        assert_eq!(kept.node, p.node);
        assert_eq!(
            (kept.gpus, kept.method, &kept.flags, &kept.intensity_src),
            (p.gpus, p.method, &p.flags, &p.intensity_src)
        );
        let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * b.abs() + 5e-5;
        assert!(close(kept.wh, p.wh, 5e-6), "{kept:?} {p:?}");
        assert!(close(kept.co2e_g, p.co2e_g, 1e-5), "{kept:?} {p:?}");
        let (len, kept_len) = (p.end - p.start, kept.end - kept.start);
        assert!((len - kept_len).abs() <= 0.051, "{kept:?} {p:?}");
        let emb = (kept.embodied_g.unwrap(), p.embodied_g.unwrap());
        assert!(close(emb.0, emb.1, 0.06 / len + 5e-4), "{kept:?} {p:?}");
        assert_eq!((kept.coverage, kept.peak_w), (None, None));
    }

    #[test]
    fn a_4096_node_job_fits_the_column_with_room_to_spare() {
        let mut rng = Lcg(7);
        let parts: Vec<NodePart> = (0..4096).map(|i| big_part(i, &mut rng)).collect();
        let m = meta(4096);
        let first = Segment {
            meta: m,
            parts: parts[..4095]
                .iter()
                .map(|p| (p.node.clone(), p.clone()))
                .collect(),
            compact: false,
        }
        .format();
        let before = parse(&first).unwrap();
        assert!(before.compact && before.parts.len() == 4095);
        let clock = std::time::Instant::now();
        let field = merge(&first, &parts[4095], &m, None);
        let took = clock.elapsed();
        let seg = parse(&field).unwrap();
        eprintln!(
            "4096 nodes, 32-char names: {} bytes ({} before the last merge), merge took {took:?}",
            field.len(),
            first.len()
        );
        assert!(field.len() <= 40 * 1024, "{} bytes", field.len());
        let foreign = "x".repeat(16 * 1024);
        assert_eq!(
            check_writable(&format!("{foreign} {field}"), &v22()),
            Ok(())
        );
        assert!(
            field.contains(" gpus=32768 nodes=4096 of=4096 "),
            "{}",
            &field[..200]
        );
        // Every node's share is there, as kept, and the 4,095 others did not move.
        assert_eq!(seg.parts.len(), 4096);
        for p in &parts {
            assert_kept(&seg.parts[&p.node], p);
        }
        for (node, p) in &before.parts {
            assert_eq!(&seg.parts[node], p);
        }
        // The total is the sum of the shares kept, exactly, and within the kept
        // precision of the nodes' own figures.
        let kept: f64 = seg.parts.values().map(|p| p.wh).sum();
        assert_eq!(seg.gpu_wh(), kept);
        let last = seg.parts[&parts[4095].node].wh;
        assert!((seg.gpu_wh() - before.gpu_wh() - last).abs() < 1e-6);
        let truth: f64 = parts.iter().map(|p| p.wh).sum();
        assert!(
            (seg.gpu_wh() - truth).abs() <= 5e-6 * truth,
            "{} {truth}",
            seg.gpu_wh()
        );
        assert!(field.contains(&format!(" gpu_wh={} ", num(kept, 4))));
        assert_eq!(seg.gpus(), 32768);
        // Delivering the last part again changes nothing; a new figure for it replaces
        // its share and nothing else.
        assert_eq!(merge(&field, &parts[4095], &m, None), field);
        let mut again = parts[4095].clone();
        again.wh += 100.0;
        let replaced = parse(&merge(&field, &again, &m, None)).unwrap();
        assert_eq!(replaced.parts.len(), 4096);
        let diff = replaced.gpu_wh() - seg.gpu_wh();
        assert!((diff - 100.0).abs() < 0.01, "{diff}");
    }

    #[test]
    fn thirty_two_nodes_stay_readable_within_8_kib_and_33_go_compact() {
        let mut rng = Lcg(3);
        let parts: Vec<NodePart> = (0..33)
            .map(|i| {
                let mut p = big_part(i, &mut rng);
                p.flags = [
                    "shared",
                    "disagree",
                    "reset",
                    "partial",
                    "missing",
                    "samplerlost",
                ]
                .map(String::from)
                .to_vec();
                p
            })
            .collect();
        let record = |n: usize| {
            Segment {
                meta: meta(n as u32),
                parts: parts[..n]
                    .iter()
                    .map(|p| (p.node.clone(), p.clone()))
                    .collect(),
                compact: false,
            }
            .format()
        };
        let full = record(32);
        assert!(
            full.contains(" node.") && !full.contains(" parts="),
            "{full}"
        );
        assert!(full.len() <= 8 * 1024, "{} bytes", full.len());
        let seg = parse(&full).unwrap();
        assert!(!seg.compact);
        assert_eq!(seg.parts.values().cloned().collect::<Vec<_>>(), parts[..32]);
        let compact = record(33);
        assert!(compact.contains(" parts=") && !compact.contains(" node."));
        assert!(compact.len() * 4 < full.len(), "{compact}");
        // The form follows the job's size from its first part on.
        let first = merge("", &parts[0], &meta(33), None);
        assert!(
            first.contains(" hostlist=h100-cluster-east-rack00-node001 "),
            "{first}"
        );
        assert_kept(&parse(&first).unwrap().parts[&parts[0].node], &parts[0]);
    }

    #[test]
    fn compact_merges_are_idempotent_and_order_free() {
        let mut rng = Lcg(5);
        let parts: Vec<NodePart> = (0..40).map(|i| big_part(i * 3, &mut rng)).collect();
        let m = meta(40);
        let forward = parts
            .iter()
            .fold(String::new(), |f, p| merge(&f, p, &m, None));
        let backward = parts
            .iter()
            .rev()
            .fold("site=a".to_string(), |f, p| merge(&f, p, &m, None));
        assert_eq!(format!("site=a {forward}"), backward);
        for p in &parts {
            assert_eq!(merge(&forward, p, &m, None), forward);
        }
        let seg = parse(&forward).unwrap();
        assert!(seg.compact);
        for p in &parts {
            assert_kept(&seg.parts[&p.node], p);
        }
        // What a reader gets back is what a writer keeps: formatting it again is the
        // same text.
        assert_eq!(seg.format(), forward);
        // Nodes outside the job's list are dropped, as in the full form.
        let allowed: Vec<String> = parts[..39].iter().map(|p| p.node.clone()).collect();
        let filtered = parse(&merge(&forward, &parts[0], &m, Some(&allowed))).unwrap();
        assert_eq!(filtered.parts.len(), 39);
        assert!(!filtered.parts.contains_key(&parts[39].node));
    }

    #[test]
    fn hostile_compact_records_are_dropped_not_fatal() {
        let good = {
            let mut rng = Lcg(9);
            let parts: Vec<NodePart> = (0..34).map(|i| big_part(i, &mut rng)).collect();
            parts
                .iter()
                .fold(String::new(), |f, p| merge(&f, p, &meta(34), None))
        };
        assert_eq!(parse(&good).unwrap().parts.len(), 34);
        let replace = |from: &str, to: &str| {
            let i = good.find(from).unwrap();
            let end = good[i..].find(' ').map_or(good.len(), |j| i + j);
            format!("{}{to}{}", &good[..i], &good[end..])
        };
        for (bad, left) in [
            (replace("hostlist=", "hostlist=n[1-999999]"), 0),
            (replace("hostlist=", "hostlist=n[1-33]"), 0),
            (replace("window=", "window=9-1"), 0),
            (replace("part-defaults=", "part-defaults=g8:mcounter"), 0),
            (
                replace("part-defaults=", "part-defaults=wz:g8:mcounter:f:s:e:c00"),
                0,
            ),
            (replace("parts=", "parts=zzzz"), 0),
        ] {
            let seg = parse(&bad).unwrap();
            assert_eq!(seg.parts.len(), left, "{bad}");
            // Merging into it replaces the broken detail and keeps the rest.
            let merged = merge(
                &format!("keep {bad} tail"),
                &part("n1", 1.0),
                &meta(1),
                None,
            );
            assert!(merged.starts_with("keep spank-carbon/1 ") && merged.ends_with(" tail"));
        }
        // A bad entry drops its node only.
        let i = good.find("parts=").unwrap() + "parts=".len();
        let broken_entry = format!(
            "{}zz:gx{}",
            &good[..i],
            &good[i + good[i..].find(',').unwrap()..]
        );
        assert_eq!(
            parse(&broken_entry).unwrap().parts.len(),
            33,
            "{broken_entry}"
        );
    }

    #[test]
    fn a_big_job_without_parts_writes_no_detail() {
        let empty = Segment {
            meta: meta(100),
            parts: BTreeMap::new(),
            compact: false,
        }
        .format();
        assert!(
            !empty.contains("hostlist") && !empty.contains("node."),
            "{empty}"
        );
        assert_eq!(find(&empty).unwrap().end, empty.len());
    }

    #[test]
    fn gpu_counts_that_overflow_make_no_record() {
        let forged = "spank-carbon/1 gpu_wh=2 node.a=wh:1,co2e:1,gpus:4294967295,m:counter,t:1-2 \
                      node.b=wh:1,co2e:1,gpus:1,m:counter,t:1-2";
        assert!(find(forged).unwrap().counts_overflow);
        assert_eq!(parse(forged), None);
        let merged = merge(forged, &part("c", 1.0), &meta(3), None);
        let seg = parse(&merged).unwrap();
        assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["c"]);
        // Forged parts that overflow only with this node's are dropped too.
        let near = "spank-carbon/1 gpu_wh=1 node.a=wh:1,co2e:1,gpus:4294967295,m:counter,t:1-2";
        let seg = parse(&merge(near, &part("c", 1.0), &meta(2), None)).unwrap();
        assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(seg.gpus(), 2);
    }

    #[test]
    fn average_power_never_shows_above_the_peak() {
        // A constant load: its average (energy over the kept window) is its peak, and
        // the report shows both to 0.1 W. With windows to 0.1 s a 10 s job showed
        // 552.3 W on average against 550 W peak.
        let mut rng = Lcg(11);
        for _ in 0..5000 {
            let watts = 50.0 + (rng.next() * 6e6).round() / 1000.0;
            let start = 1.8e9 + (rng.next() * 1e8).round() / 1000.0 + rng.next() * 1e-3;
            let seconds = 10.0 + rng.next() * 100.0;
            let p = NodePart {
                wh: watts * seconds / 3600.0,
                start,
                end: start + seconds,
                peak_w: Some(watts),
                ..part("n1", 0.0)
            }
            .rounded();
            let back = parse(&merge("", &p, &meta(1), None)).unwrap().parts["n1"].clone();
            assert_eq!(back, p);
            let avg = back.wh * 3600.0 / (back.end - back.start);
            let peak = back.peak_w.unwrap();
            // Only the energy's 0.1 mWh rounding can lift the average above the peak.
            assert!(
                avg <= peak + 0.00005 * 3600.0 / seconds,
                "{avg} {peak} {p:?}"
            );
            let shown = |w: f64| num(w, 1).parse::<f64>().unwrap();
            assert!(shown(avg) <= shown(peak), "{avg} {peak} {p:?}");
        }
    }

    #[test]
    fn compact_numbers_keep_their_precision() {
        let mut rng = Lcg(13);
        for _ in 0..20_000 {
            let x = 10f64.powf(rng.next() * 19.0 - 4.0);
            let code = compact::enc(x, 6, -4);
            let back = compact::dec(&code).unwrap();
            assert!((back - x).abs() <= 5e-6 * x + 5e-5, "{x} {code} {back}");
            assert_eq!(compact::enc(back, 6, -4), code, "{x}");
            let code = compact::enc(x, 4, -12);
            let back = compact::dec(&code).unwrap();
            assert!((back - x).abs() <= 5e-4 * x, "{x} {code} {back}");
            assert_eq!(compact::enc(back, 4, -12), code, "{x}");
        }
        assert_eq!(compact::dec(&compact::enc(0.0, 6, -4)), Some(0.0));
        assert_eq!(compact::dec(&compact::enc(f64::NAN, 6, -4)), Some(0.0));
        for bad in ["", "a", "A1", "z!", "0zzzzzzzzzzzz"] {
            assert_eq!(compact::dec(bad), None, "{bad}");
        }
        let big = 36u64.pow(12) - 1;
        assert_eq!(compact::parse36(&compact::base36(big)), Some(big));
        assert_eq!(compact::parse36(&compact::base36(big + 1)), None);
    }

    #[test]
    fn format_has_the_promised_prefix() {
        let f = merge("", &part("node1", 12.3456), &meta(1), None);
        assert!(
            f.starts_with("spank-carbon/1 gpu_wh=12.3456 co2e_g=9.2654 intensity=475 pue=1.58 gpus=2 nodes=1 of=1 method=counter node.node1=wh:12.3456,gpus:2,co2e:9.2654,m:counter,t:1700000000-1700000060"),
            "{f}"
        );
        assert_eq!(f, f.to_lowercase());
        assert!(check_writable(&f, &v22()).is_ok());
    }

    #[test]
    fn shared_boards_say_their_rule_in_both_forms() {
        let mut p = part("n1", 1.5);
        p.flags = vec!["estimate".into(), "shared".into()];
        p.share = Some(ShareRule {
            rule: "mig-sm".into(),
            gpus: 0.10612,
        });
        let p = p.rounded();
        let field = merge("", &p, &meta(1), None);
        assert!(field.contains(",sh:mig-sm_0.1061"), "{field}");
        let back = parse(&field).unwrap().parts["n1"].clone();
        assert_eq!(back.share, p.share);
        assert_eq!(back, p);
        // The compact form keeps it as an `h` field; a part without one keeps none.
        let mut other = part("n2", 2.0);
        other.share = None;
        let big = Meta {
            expected_nodes: COMPACT_ABOVE_NODES + 1,
            ..meta(1)
        };
        let field = merge(&merge("", &p, &big, None), &other, &big, None);
        let seg = parse(&field).unwrap();
        assert!(seg.compact, "{field}");
        assert!(field.contains(":hmig-sm_0.1061"), "{field}");
        assert_eq!(seg.parts["n1"].share, p.share);
        assert_eq!(seg.parts["n2"].share, None);
        // A compact record written before `h` existed still reads.
        let old = field.replace(":hmig-sm_0.1061", "").replace(":h ", " ");
        let seg = parse(&old).unwrap_or_else(|| panic!("{old}"));
        assert_eq!(seg.parts.len(), 2);
        assert_eq!(seg.parts["n1"].share, None);
        // Bad rules are dropped, not fatal to the part.
        assert!(ShareRule::parse("MIG_1").is_none());
        assert!(ShareRule::parse("-x_1").is_none());
        assert!(ShareRule::parse("mps_-1").is_none());
        assert_eq!(
            ShareRule::parse("mps_0.25"),
            Some(ShareRule {
                rule: "mps".into(),
                gpus: 0.25
            })
        );
    }

    #[test]
    fn round_trip() {
        let mut p = part("gpu-07", 1.5);
        p.coverage = Some(0.987);
        p.flags = vec!["shared".into(), "reset".into()];
        p.method = Method::Sampled;
        let f = merge("", &p, &meta(3), None);
        let seg = parse(&f).unwrap();
        assert_eq!(seg.parts["gpu-07"], p);
        assert_eq!(seg.meta.expected_nodes, 3);
        assert_eq!(seg.meta.pue, 1.58);
    }

    #[test]
    fn merge_keeps_other_nodes_and_sums() {
        let a = merge("", &part("node1", 1.0), &meta(3), None);
        let b = merge(&a, &part("node2", 2.0), &meta(3), None);
        let c = merge(&b, &part("node3", 3.5), &meta(3), None);
        let seg = parse(&c).unwrap();
        assert_eq!(seg.parts.len(), 3);
        assert_eq!(seg.gpu_wh(), 6.5);
        assert!(c.contains(" gpu_wh=6.5 "), "{c}");
        assert!(c.contains(" nodes=3 of=3 "), "{c}");
        assert!(c.contains(" gpus=6 "), "{c}");
        // Replacing a node's part does not double count.
        let d = merge(&c, &part("node2", 2.25), &meta(3), None);
        assert_eq!(parse(&d).unwrap().gpu_wh(), 6.75);
        // Merging the same part twice changes nothing (idempotent delivery).
        assert_eq!(merge(&d, &part("node2", 2.25), &meta(3), None), d);
    }

    #[test]
    fn foreign_text_is_kept_byte_for_byte() {
        for foreign in [
            "site-tag=abc",
            "Quota: 5%  ",
            "x",
            "ends with space ",
            "ünïcode ✓",
        ] {
            let f = merge(foreign, &part("node1", 1.0), &meta(1), None);
            assert!(f.starts_with(foreign), "{f}");
            let f2 = merge(&f, &part("node2", 1.0), &meta(2), None);
            assert!(f2.starts_with(foreign));
            let found = find(&f2).unwrap();
            assert_eq!(&f2[..found.start], format!("{foreign} "));
        }
        // Text after the segment stays too.
        let seg = merge("", &part("node1", 1.0), &meta(1), None);
        let field = format!("before {seg} after=tail more");
        let merged = merge(&field, &part("node2", 2.0), &meta(2), None);
        assert!(merged.starts_with("before spank-carbon/1 "));
        assert!(merged.ends_with(" after=tail more"), "{merged}");
    }

    #[test]
    fn marker_inside_a_word_is_not_a_record() {
        assert!(find("xspank-carbon/1 gpu_wh=1").is_none());
        assert!(find("spank-carbon/10 gpu_wh=1").is_none());
        let f = merge("see spank-carbon/1x", &part("n1", 1.0), &meta(1), None);
        assert!(f.starts_with("see spank-carbon/1x spank-carbon/1 "), "{f}");
    }

    #[test]
    fn corrupted_parts_are_dropped_not_fatal() {
        let field = "spank-carbon/1 gpu_wh=zz node.n1=wh:abc,m:counter node.n2=wh:1,co2e:0.5,gpus:1,m:counter,t:1-2 node.n3=garbage";
        let found = find(field).unwrap();
        assert_eq!(found.parts.keys().collect::<Vec<_>>(), ["n2"]);
        // The corrupted segment is replaced whole: totals recomputed from the parts that
        // parsed, the broken tokens gone, nothing else touched.
        let merged = merge(
            &format!("keep {field} tail"),
            &part("n4", 1.0),
            &meta(2),
            None,
        );
        assert!(
            merged.starts_with("keep spank-carbon/1 gpu_wh=2 "),
            "{merged}"
        );
        assert!(merged.ends_with(" tail"), "{merged}");
        assert!(
            !merged.contains("zz") && !merged.contains("garbage"),
            "{merged}"
        );
    }

    #[test]
    fn allowed_nodes_filter_forged_parts() {
        let forged = "spank-carbon/1 gpu_wh=0 node.evil=wh:0,co2e:0,gpus:9,m:counter,t:1-2";
        let allowed = vec!["node1".to_string(), "node2".to_string()];
        let merged = merge(forged, &part("node1", 2.0), &meta(2), Some(&allowed));
        let seg = parse(&merged).unwrap();
        assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["node1"]);
    }

    #[test]
    fn first_writers_meta_is_kept() {
        let a = merge("", &part("n1", 1.0), &meta(2), None);
        let other = Meta {
            intensity: GramsPerKwh(100.0),
            pue: 1.1,
            expected_nodes: 2,
        };
        let b = merge(&a, &part("n2", 1.0), &other, None);
        assert!(b.contains(" intensity=475 pue=1.58 "), "{b}");
        assert_eq!(merge(&b, &part("n2", 1.0), &other, None), b);
    }

    #[test]
    fn writability() {
        assert_eq!(check_writable("Site", &v22()), Err(Unwritable::UpperCase));
        assert!(check_writable("Site", &v24()).is_ok());
        assert_eq!(check_writable("it's", &v24()), Err(Unwritable::Quote));
        assert_eq!(check_writable("a\\b", &v24()), Err(Unwritable::Quote));
        assert_eq!(check_writable("a\u{7}b", &v24()), Err(Unwritable::Control));
        assert!(check_writable("a\nb", &v24()).is_ok());
        assert!(check_writable("Ünïcode", &v22()).is_ok());
        assert_eq!(check_writable("=x", &v24()), Err(Unwritable::Quote));
        assert_eq!(
            check_writable(&"x".repeat(70_000), &v24()),
            Err(Unwritable::TooLong)
        );
        assert!(check_writable("quota: 5% ok", &v22()).is_ok());
    }

    /// The SLUID token round-trips through parse, in both forms, stays the segment's last
    /// token, is kept by later merges without one, and is writable on 25.11+.
    #[test]
    fn sluid_token() {
        let upper = "s0123456789ABC";
        let lower = "s0123456789abc";
        for n in [1u32, COMPACT_ABOVE_NODES + 2] {
            let nodes: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let m = meta(n);
            let mut f = String::from("site");
            for (i, node) in nodes.iter().enumerate() {
                // Only the first node knows it: the others keep it.
                let sl = (i == 0).then_some(upper);
                f = merge_in_run_sluid(&f, &part(node, 1.0), &m, Some(&nodes), 7, sl);
            }
            let found = find_run(&f, 7).unwrap();
            assert_eq!(found.sluid.as_deref(), Some(lower));
            assert_eq!(found.parts.len(), n as usize);
            assert_eq!(found.compact, n > COMPACT_ABOVE_NODES);
            assert!(f.ends_with(&format!(" sluid={lower}")), "{f}");
            assert_eq!(f.matches("sluid=").count(), 1);
            assert!(check_writable(&f, &v26()).is_ok());
            // A record without it reads the same otherwise.
            let plain = f.replace(&format!(" sluid={lower}"), "");
            assert_eq!(parse(&plain).unwrap(), parse(&f).unwrap());
            assert_eq!(find_run(&plain, 7).unwrap().sluid, None);
            // Text after the segment stays foreign.
            let more = format!("{f} tail");
            assert_eq!(find_run(&more, 7).unwrap().end, f.len());
        }
        // Not a SLUID: not written, not read.
        let f = merge_in_run_sluid(
            "",
            &part("n1", 1.0),
            &meta(1),
            None,
            7,
            Some("s0123456789ABI"),
        );
        assert!(!f.contains("sluid"), "{f}");
        let forged = format!("{f} sluid=sg123456789abc");
        assert_eq!(find_run(&forged, 7).unwrap().sluid, None);
    }

    fn v22() -> Differences {
        Differences::for_version(crate::slurm::SlurmVersion::new(22, 5, 8))
    }

    fn v24() -> Differences {
        Differences::for_version(crate::slurm::SlurmVersion::new(24, 11, 5))
    }

    fn v26() -> Differences {
        Differences::for_version(crate::slurm::SlurmVersion::new(26, 5, 3))
    }

    /// 25.05+ trims the value's ends: other writers' text that starts or ends with
    /// whitespace would be changed by our rewrite, so it is refused there and only there.
    #[test]
    fn whitespace_at_either_end_is_refused_from_25_05() {
        let ours = merge("", &part("n1", 1.0), &meta(1), None);
        let tail = format!("{ours} tail ");
        for foreign in ["  lead", "\tlead", "\nlead", tail.as_str()] {
            let merged = merge(foreign, &part("n1", 2.0), &meta(1), None);
            let ends_with_space =
                merged.starts_with(char::is_whitespace) || merged.ends_with(char::is_whitespace);
            assert!(ends_with_space, "{merged:?}");
            assert_eq!(check_writable(&merged, &v26()), Err(Unwritable::Whitespace));
            assert!(check_writable(&merged, &v24()).is_ok(), "{merged:?}");
            assert!(check_writable(&merged, &v22()).is_ok(), "{merged:?}");
        }
        // Inner whitespace, and a field that is only our segment, are fine everywhere.
        for v in [v22(), v24(), v26()] {
            assert!(check_writable(&ours, &v).is_ok());
            assert!(check_writable(&format!("a  b {ours}"), &v).is_ok());
        }
        assert!(Unwritable::Whitespace.to_string().contains("trim"));
    }

    #[test]
    fn numbers_format_plainly() {
        assert_eq!(num(475.0, 3), "475");
        assert_eq!(num(1.58, 3), "1.58");
        assert_eq!(num(0.00004, 4), "0");
        assert_eq!(num(-0.00001, 4), "0");
        assert_eq!(num(12.34566, 4), "12.3457");
    }
}
