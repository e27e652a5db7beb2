//! The compact form of the per-node detail.
//!
//! A job on more than [`super::COMPACT_ABOVE_NODES`] nodes gets the compact form, from its first
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
//! A number is one
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
                flags: f.flags,
                intensity_src: f.src,
                embodied_g: f.rate.map(|r| r * f64::from(f.gpus) * seconds / 3600.0),
                share: f.share,
                ..NodePart::new(
                    name,
                    wh,
                    f.gpus,
                    wh * f.factor,
                    f.method,
                    (end - seconds, end),
                )
            })
        })
        .collect();
    Some(parts)
}
