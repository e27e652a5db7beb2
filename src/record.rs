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

use std::collections::BTreeMap;
use std::fmt::Write as _;

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
    /// The node's measurement window, unix seconds (0.1 s precision in the record).
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
    /// from the field compares equal to the one written.
    pub fn rounded(mut self) -> NodePart {
        self.wh = round(self.wh, 4);
        self.co2e_g = round(self.co2e_g, 4);
        self.coverage = self.coverage.map(|c| round(c, 3));
        self.start = round(self.start, 1);
        self.end = round(self.end, 1);
        self.peak_w = self.peak_w.map(|p| round(p, 1));
        self.embodied_g = self.embodied_g.map(|e| round(e, 4));
        self
    }

    fn format_value(&self) -> String {
        let mut s = format!(
            "wh:{},gpus:{},co2e:{},m:{},t:{}-{}",
            num(self.wh, 4),
            self.gpus,
            num(self.co2e_g, 4),
            self.method.as_str(),
            num(self.start, 1),
            num(self.end, 1)
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
                "f" => {
                    part.flags = v
                        .split('+')
                        .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_lowercase()))
                        .map(str::to_string)
                        .collect()
                }
                _ => {} // a later version's detail: ignored, not fatal
            }
        }
        (part.wh.is_finite() && part.co2e_g.is_finite() && seen_method).then_some(part)
    }
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
];

impl Segment {
    pub fn gpu_wh(&self) -> f64 {
        self.parts.values().map(|p| p.wh).sum()
    }
    pub fn co2e_g(&self) -> f64 {
        self.parts.values().map(|p| p.co2e_g).sum()
    }
    pub fn gpus(&self) -> u32 {
        // Saturating: parts read from a field may be anyone's.
        self.parts
            .values()
            .fold(0u32, |sum, p| sum.saturating_add(p.gpus))
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
        let mut s = format!(
            "{MARKER} gpu_wh={} co2e_g={} intensity={} pue={} gpus={} nodes={} of={}",
            num(self.gpu_wh(), 4),
            num(self.co2e_g(), 4),
            num(self.shown_intensity(), 3),
            num(self.meta.pue, 3),
            self.gpus(),
            self.parts.len(),
            self.meta.expected_nodes.max(self.parts.len() as u32),
        );
        if let Some(m) = self.method() {
            let _ = write!(s, " method={}", m.as_str());
        }
        if let Some(e) = self.embodied_g() {
            let _ = write!(s, " embodied_g={}", num(e, 4));
        }
        for part in self.parts.values() {
            let _ = write!(s, " node.{}={}", part.node, part.format_value());
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
}

fn token_is_ours(token: &str) -> bool {
    match token.split_once('=') {
        Some((k, v)) => {
            !v.is_empty()
                && (TOP_KEYS.contains(&k) || (k.starts_with("node.") && k.len() > 5))
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b",:.+-_".contains(&b))
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
    };
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
    Some(found)
}

/// Parses the segment in `field` into a record, if there is one.
pub fn parse(field: &str) -> Option<Segment> {
    Some(segment_of(find(field)?))
}

fn segment_of(found: Found) -> Segment {
    Segment {
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
    merge_found(field, find(field), part, meta, allowed, None)
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
    merge_found(field, find_run(field, run), part, meta, allowed, Some(run))
}

fn merge_found(
    field: &str,
    found: Option<Found>,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: Option<u64>,
) -> String {
    let mut parts = found.as_ref().map(|f| f.parts.clone()).unwrap_or_default();
    if let Some(allowed) = allowed {
        parts.retain(|node, _| allowed.iter().any(|a| a == node));
    }
    parts.insert(part.node.clone(), part.clone());
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
    let mut segment = Segment { meta, parts }.format();
    if let Some(run) = run {
        segment.insert_str(MARKER.len(), &format!(" run={run}"));
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
}

/// Checks that sacctmgr stores `value` exactly as given. Slurm before 23.02 lower-cases
/// every comment value it sets (`lowercases`); every version turns quotes into backticks.
pub fn check_writable(value: &str, lowercases: bool) -> Result<(), Unwritable> {
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
    if lowercases && value.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Unwritable::UpperCase);
    }
    Ok(())
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
        }
        .rounded()
    }

    #[test]
    fn format_has_the_promised_prefix() {
        let f = merge("", &part("node1", 12.3456), &meta(1), None);
        assert!(
            f.starts_with("spank-carbon/1 gpu_wh=12.3456 co2e_g=9.2654 intensity=475 pue=1.58 gpus=2 nodes=1 of=1 method=counter node.node1=wh:12.3456,gpus:2,co2e:9.2654,m:counter,t:1700000000-1700000060"),
            "{f}"
        );
        assert_eq!(f, f.to_lowercase());
        assert!(check_writable(&f, true).is_ok());
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
        assert_eq!(check_writable("Site", true), Err(Unwritable::UpperCase));
        assert!(check_writable("Site", false).is_ok());
        assert_eq!(check_writable("it's", false), Err(Unwritable::Quote));
        assert_eq!(check_writable("a\\b", false), Err(Unwritable::Quote));
        assert_eq!(check_writable("a\u{7}b", false), Err(Unwritable::Control));
        assert!(check_writable("a\nb", false).is_ok());
        assert!(check_writable("Ünïcode", true).is_ok());
        assert_eq!(check_writable("=x", false), Err(Unwritable::Quote));
        assert_eq!(
            check_writable(&"x".repeat(70_000), false),
            Err(Unwritable::TooLong)
        );
        assert!(check_writable("quota: 5% ok", true).is_ok());
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
