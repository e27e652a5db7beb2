//! The record's text: the full form's tokens (`node.NAME=wh:...`), finding segments in a
//! field and reading them back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::valid_node_name;
use super::{
    compact, gpus_checked, num, parse_flags, parse_nonneg, Meta, Method, NodePart, Segment,
    ShareRule, MARKER,
};
use crate::units::GramsPerKwh;

impl NodePart {
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
        let mut part = NodePart::new(node, f64::NAN, 0, f64::NAN, Method::Counter, (0.0, 0.0));
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
