//! The parsed intensity series, cached in the root-owned state directory: an epilog is
//! a fresh process each time, and parsing a two-year, five-minute CSV in every one cost
//! more than the rest of the epilog together.
//!
//! The cache (`<state_dir>/intensity-series.bin`) holds the parse of one CSV, keyed by
//! that file's identity as opened (device, inode, size, mtime and ctime in ns, path):
//! replacing the CSV (a new inode) or writing to it makes the cache stale. A missing,
//! stale, unreadable or malformed cache is rebuilt from the CSV, never trusted as it
//! is: the header must parse to its stated length, the scopes must be in the series'
//! order, the file length must be exactly what the header says, and the points read
//! must be finite, in range and sorted. A CSV that does not parse is cached too (its
//! error), so that a broken file is not parsed again by every epilog.
//!
//! Layout, little-endian:
//!
//! ```text
//! "SCSERIES" u32:version u64:header_len
//! identity: u64 dev, u64 ino, u64 size, i64 mtime_s, i64 mtime_ns, i64 ctime_s, i64 ctime_ns
//! str:path  u8:status
//!   status 1 (the CSV does not parse): u64 line, str why
//!   status 0: u32 scopes, per scope: u8 kind (0 default, 1 partition, 2 nodes),
//!             u32 names, str name..., u64 points
//! points from header_len on, scope after scope: f64 unix seconds, f64 g/kWh
//! ```
//! (`str` is a u32 length and UTF-8 bytes.) An epilog reads the header and then, in the
//! one scope that applies to its node, only the points its job's window needs: found by
//! bisection with positioned reads, then read in one piece. What it reads is checked to
//! be in order (the window, the bisection's probes, the scope's first and last times).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::core::intensity::{pick_scope, window_range, Scope, Series, SeriesError, Steps};
use crate::node::state;

/// The cache's file name in the state directory.
pub const CACHE_FILE: &str = "intensity-series.bin";

const MAGIC: &[u8; 8] = b"SCSERIES";
const VERSION: u32 = 1;
/// Magic, version and header length.
const PREFIX: usize = 20;
const POINT: u64 = 16;
/// A header (scopes and their node names) larger than this is not read.
const MAX_HEADER: u64 = 64 << 20;
/// The values `Series::parse` accepts.
const MAX_G_PER_KWH: f64 = 5000.0;

/// The CSV as opened: an atomic replacement or any write changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity([u64; 7]);

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity([
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ])
    }
}

/// Why the cache was not used (logged, then rebuilt).
#[derive(Debug, PartialEq)]
enum Miss {
    /// No cache, or one for another version of the CSV: the usual case after a change.
    Stale,
    /// The cache is there but cannot be read or is malformed.
    Bad(String),
}

fn bad(why: impl Into<String>) -> Miss {
    Miss::Bad(why.into())
}

/// The series that applies to a node of a partition, from the CSV at `csv`: through the
/// cache in `cache_dir` when given (rebuilt when it does not fit the CSV), by parsing the
/// CSV otherwise. With a `window` (lo, hi), only the points that intervals within it
/// need (`intensity::window_range`), found by bisection in the cache. `Ok(None)`: the
/// series has no scope for this node. `Err`: the CSV cannot be read or does not parse
/// (the message, for the log).
pub fn steps_for(
    csv: &Path,
    cache_dir: Option<&Path>,
    node: &str,
    partition: Option<&str>,
    window: Option<(f64, f64)>,
) -> Result<Option<Steps>, String> {
    let mut file = File::open(csv).map_err(|e| e.to_string())?;
    let id = Identity::of(&file.metadata().map_err(|e| e.to_string())?);
    let path = csv.as_os_str().as_bytes();
    if let Some(dir) = cache_dir {
        match read_cached(&dir.join(CACHE_FILE), id, path, node, partition, window) {
            Ok(found) => return found.map_err(|e| e.to_string()),
            Err(Miss::Stale) => {}
            Err(Miss::Bad(why)) => log::warn!(
                "intensity series cache {}: {why}; rebuilding it",
                dir.join(CACHE_FILE).display()
            ),
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let parsed = Series::parse(&text);
    if let Some(dir) = cache_dir {
        let cache = dir.join(CACHE_FILE);
        if let Err(e) = state::write_atomic(&cache, &encode(id, path, &parsed)) {
            log::warn!("intensity series cache: {e}; the next epilog parses the CSV again");
        }
    }
    let series = parsed.map_err(|e| e.to_string())?;
    Ok(series
        .for_job(node, partition)
        .map(|s| window.map_or_else(|| s.clone(), |(lo, hi)| s.window(lo, hi))))
}

/// The cache's bytes for a parse of the CSV with this identity.
fn encode(id: Identity, path: &[u8], parsed: &Result<Series, SeriesError>) -> Vec<u8> {
    let points: usize = parsed
        .as_ref()
        .map_or(0, |s| s.by_scope.values().map(|s| s.points.len()).sum());
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // header_len, set below
    for v in id.0 {
        h.extend_from_slice(&v.to_le_bytes());
    }
    put_str(&mut h, path);
    match parsed {
        Err(e) => {
            h.push(1);
            h.extend_from_slice(&(e.line as u64).to_le_bytes());
            put_str(&mut h, e.why.as_bytes());
        }
        Ok(series) => {
            h.push(0);
            h.extend_from_slice(&(series.by_scope.len() as u32).to_le_bytes());
            for (scope, steps) in &series.by_scope {
                let names: Vec<&str> = match scope {
                    Scope::Default => vec![],
                    Scope::Partition(p) => vec![p],
                    Scope::Nodes(n) => n.iter().map(String::as_str).collect(),
                };
                h.push(match scope {
                    Scope::Default => 0,
                    Scope::Partition(_) => 1,
                    Scope::Nodes(_) => 2,
                });
                h.extend_from_slice(&(names.len() as u32).to_le_bytes());
                for name in names {
                    put_str(&mut h, name.as_bytes());
                }
                h.extend_from_slice(&(steps.points.len() as u64).to_le_bytes());
            }
        }
    }
    let header_len = h.len() as u64;
    h[12..PREFIX].copy_from_slice(&header_len.to_le_bytes());
    h.reserve(points * POINT as usize);
    if let Ok(series) = parsed {
        for (t, v) in series.by_scope.values().flat_map(|s| &s.points) {
            h.extend_from_slice(&t.to_le_bytes());
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    h
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// Reads what the cache says for this CSV and node: the steps, or the CSV's parse error.
fn read_cached(
    cache: &Path,
    id: Identity,
    path: &[u8],
    node: &str,
    partition: Option<&str>,
    window: Option<(f64, f64)>,
) -> Result<Result<Option<Steps>, SeriesError>, Miss> {
    let file = match File::open(cache) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Miss::Stale),
        Err(e) => return Err(bad(e.to_string())),
    };
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut prefix = [0u8; PREFIX];
    file.read_exact_at(&mut prefix, 0)
        .map_err(|_| bad("shorter than its header"))?;
    let mut r = Reader(&prefix);
    if r.take(8) != Some(MAGIC) || r.u32() != Some(VERSION) {
        return Err(bad("not a cache of this version"));
    }
    let header_len = r.u64().ok_or_else(|| bad("no header length"))?;
    if header_len < PREFIX as u64 || header_len > len.min(MAX_HEADER) {
        return Err(bad("bad header length"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| bad(e.to_string()))?;
    let header = parse_header(&header[PREFIX..])?;
    if header.id != id || header.path != path {
        return Err(Miss::Stale);
    }
    let scopes = match header.body {
        Body::Error(e) => return Ok(Err(e)),
        Body::Scopes(s) => s,
    };
    let total = scopes
        .iter()
        .try_fold(0u64, |sum, (_, n)| sum.checked_add(*n))
        .and_then(|n| n.checked_mul(POINT))
        .and_then(|n| n.checked_add(header_len));
    if total != Some(len) {
        return Err(bad(format!("{len} bytes, its header says {total:?}")));
    }
    let Some(i) = pick_scope(scopes.iter().map(|(s, _)| s), node, partition) else {
        return Ok(Ok(None));
    };
    let before: u64 = scopes[..i].iter().map(|(_, n)| n).sum();
    let base = header_len + before * POINT;
    let count = usize::try_from(scopes[i].1).map_err(|_| bad("too many points"))?;
    // The times the bisection looked at, to check against what is read after it.
    let mut probes: Vec<(usize, f64)> = Vec::new();
    let range = match window {
        None => 0..=count.saturating_sub(1),
        Some((lo, hi)) => {
            let mut time = |i: usize| -> Result<f64, Miss> {
                let mut t = [0u8; 8];
                file.read_exact_at(&mut t, base + i as u64 * POINT)
                    .map_err(|e| bad(e.to_string()))?;
                let t = f64::from_le_bytes(t);
                probes.push((i, t));
                Ok(t)
            };
            // The scope's first and last times too: a cheap check of the whole range.
            if count > 0 {
                time(0)?;
                time(count - 1)?;
            }
            match window_range(count, lo, hi, time)? {
                Some(r) => r,
                None => 0..=0,
            }
        }
    };
    let n = if count == 0 {
        0
    } else {
        range.end() - range.start() + 1
    };
    let mut bytes = vec![0u8; n * POINT as usize];
    file.read_exact_at(&mut bytes, base + *range.start() as u64 * POINT)
        .map_err(|e| bad(e.to_string()))?;
    let points = decode_points(&bytes)?;
    // Everything read must be finite and in order (the points by `decode_points`, the
    // bisection's probes with them), so the window is the one a sorted series would give.
    probes.extend(
        points
            .iter()
            .enumerate()
            .map(|(j, p)| (range.start() + j, p.0)),
    );
    probes.sort_by_key(|p| p.0);
    if probes.iter().any(|p| !p.1.is_finite())
        || probes.windows(2).any(|w| w[1].1.total_cmp(&w[0].1).is_lt())
    {
        return Err(bad("points out of order"));
    }
    Ok(Ok(Some(Steps { points })))
}

struct Header<'a> {
    id: Identity,
    path: &'a [u8],
    body: Body,
}

enum Body {
    Error(SeriesError),
    Scopes(Vec<(Scope, u64)>),
}

/// Parses the header after its prefix; it must be consumed exactly.
fn parse_header(bytes: &[u8]) -> Result<Header<'_>, Miss> {
    let short = || bad("header cut short");
    let mut r = Reader(bytes);
    let mut id = [0u64; 7];
    for v in &mut id {
        *v = r.u64().ok_or_else(short)?;
    }
    let path = r.bytes().ok_or_else(short)?;
    let body = match r.u8().ok_or_else(short)? {
        1 => {
            let line = r.u64().ok_or_else(short)?;
            let why = r.string().ok_or_else(|| bad("bad error text"))?;
            Body::Error(SeriesError {
                line: usize::try_from(line).map_err(|_| bad("bad error line"))?,
                why,
            })
        }
        0 => {
            let n = r.u32().ok_or_else(short)?;
            let mut scopes: Vec<(Scope, u64)> = Vec::new();
            for _ in 0..n {
                let kind = r.u8().ok_or_else(short)?;
                let names = r.u32().ok_or_else(short)?;
                let mut list = Vec::new();
                for _ in 0..names {
                    list.push(r.string().ok_or_else(|| bad("bad scope name"))?);
                }
                let scope = match (kind, list.len()) {
                    (0, 0) => Scope::Default,
                    (1, 1) => Scope::Partition(list.remove(0)),
                    (2, _) => Scope::Nodes(list),
                    _ => return Err(bad("bad scope")),
                };
                // The series' own order, which decides between overlapping node sets.
                if scopes.last().is_some_and(|(last, _)| *last >= scope) {
                    return Err(bad("scopes out of order"));
                }
                scopes.push((scope, r.u64().ok_or_else(short)?));
            }
            Body::Scopes(scopes)
        }
        _ => return Err(bad("bad status")),
    };
    if !r.0.is_empty() {
        return Err(bad("header longer than its contents"));
    }
    Ok(Header {
        id: Identity(id),
        path,
        body,
    })
}

/// Points as `Series::parse` makes them: finite times in order, values 0 to 5000.
fn decode_points(bytes: &[u8]) -> Result<Vec<(f64, f64)>, Miss> {
    let mut points = Vec::with_capacity(bytes.len() / POINT as usize);
    let mut prev = f64::NEG_INFINITY;
    for rec in bytes.chunks_exact(POINT as usize) {
        let (t, v) = rec.split_at(8);
        let t = f64::from_le_bytes(t.try_into().unwrap_or_default());
        let v = f64::from_le_bytes(v.try_into().unwrap_or_default());
        if !t.is_finite() || t.total_cmp(&prev).is_lt() {
            return Err(bad("points out of order"));
        }
        if !(0.0..=MAX_G_PER_KWH).contains(&v) {
            return Err(bad("value out of range"));
        }
        prev = t;
        points.push((t, v));
    }
    Ok(points)
}

/// Reads little-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sc-icache-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const CSV: &str = "timestamp,g,scope\n100,200\n200,400\n100,50,partition=green\n\
                       100,900,nodes=node[3-4]\n150,800,nodes=node[3-4]\n100,10,nodes=node[4-5]\n";

    /// Every node/partition pair and window gets from the cache what the parsed series
    /// gives.
    fn assert_matches_parse(csv: &Path, dir: &Path, text: &str) {
        let series = Series::parse(text).unwrap();
        let windows = [
            None,
            Some((0.0, 1000.0)),
            Some((120.0, 160.0)),
            Some((150.0, 150.0)),
            Some((250.0, 300.0)),
            Some((50.0, 90.0)),
        ];
        for node in ["node1", "node3", "NODE4", "node5", "node9"] {
            for part in [None, Some("green"), Some("gpu")] {
                for w in windows {
                    let want = series
                        .for_job(node, part)
                        .map(|s| w.map_or_else(|| s.clone(), |(lo, hi)| s.window(lo, hi)));
                    let got = steps_for(csv, Some(dir), node, part, w).unwrap();
                    assert_eq!(got, want, "{node} {part:?} {w:?}");
                }
            }
        }
    }

    #[test]
    fn only_the_window_is_read_from_a_long_series() {
        let d = temp_dir("window");
        let csv = d.join("series.csv");
        let text: String = (0..5000)
            .map(|i| format!("{},{}\n", i * 300, i % 50))
            .collect();
        fs::write(&csv, &text).unwrap();
        steps_for(&csv, Some(&d), "n1", None, None).unwrap();
        let id = Identity::of(&fs::metadata(&csv).unwrap());
        let path = csv.as_os_str().as_bytes();
        let all = Series::parse(&text)
            .unwrap()
            .for_job("n1", None)
            .unwrap()
            .clone();
        for (lo, hi) in [
            (-5.0, 10.0),
            (1000.0, 2000.0),
            (299_999.0, 300_001.0),
            (2e6, 3e6),
        ] {
            let got = read_cached(&d.join(CACHE_FILE), id, path, "n1", None, Some((lo, hi)))
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(got, all.window(lo, hi));
            assert!(got.points.len() < 10, "{lo}-{hi}: {}", got.points.len());
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cache_is_built_used_and_follows_the_csv() {
        let d = temp_dir("use");
        let csv = d.join("series.csv");
        fs::write(&csv, CSV).unwrap();
        let cache = d.join(CACHE_FILE);
        // First use builds the cache; later ones read it and agree with the parse.
        assert_matches_parse(&csv, &d, CSV);
        assert!(cache.exists());
        let id = Identity::of(&fs::metadata(&csv).unwrap());
        let path = csv.as_os_str().as_bytes();
        let cached = read_cached(&cache, id, path, "node4", None, None).unwrap();
        assert_eq!(
            cached.unwrap().unwrap().points,
            [(100.0, 900.0), (150.0, 800.0)]
        );
        assert_matches_parse(&csv, &d, CSV);
        // An atomic replacement (new inode) makes it stale; it is rebuilt for the new file.
        let text2 = "100,1\n300,2\n";
        fs::write(d.join("new.csv"), text2).unwrap();
        fs::rename(d.join("new.csv"), &csv).unwrap();
        assert_eq!(
            read_cached(
                &cache,
                Identity::of(&fs::metadata(&csv).unwrap()),
                path,
                "n",
                None,
                None
            ),
            Err(Miss::Stale)
        );
        assert_matches_parse(&csv, &d, text2);
        // Another CSV path with the cache of this one: stale, not used.
        assert_eq!(
            read_cached(
                &cache,
                Identity::of(&fs::metadata(&csv).unwrap()),
                b"/x",
                "n",
                None,
                None
            )
            .unwrap_err(),
            Miss::Stale
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_broken_csv_is_cached_with_its_error() {
        let d = temp_dir("err");
        let csv = d.join("series.csv");
        fs::write(&csv, "100,1\nxx,2\n").unwrap();
        let first = steps_for(&csv, Some(&d), "n1", None, None).unwrap_err();
        assert!(first.contains("line 2"), "{first}");
        let id = Identity::of(&fs::metadata(&csv).unwrap());
        let cached = read_cached(
            &d.join(CACHE_FILE),
            id,
            csv.as_os_str().as_bytes(),
            "n1",
            None,
            None,
        );
        assert_eq!(cached.unwrap().unwrap_err().line, 2);
        assert_eq!(
            steps_for(&csv, Some(&d), "n1", None, None).unwrap_err(),
            first
        );
        // A missing CSV is an error whatever the cache says.
        fs::remove_file(&csv).unwrap();
        assert!(steps_for(&csv, Some(&d), "n1", None, None).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_cache_is_rebuilt_never_trusted() {
        let d = temp_dir("bad");
        let csv = d.join("series.csv");
        fs::write(&csv, CSV).unwrap();
        let cache = d.join(CACHE_FILE);
        steps_for(&csv, Some(&d), "n1", None, None).unwrap();
        let good = fs::read(&cache).unwrap();
        let id = Identity::of(&fs::metadata(&csv).unwrap());
        let path = csv.as_os_str().as_bytes().to_vec();
        let header_len = u64::from_le_bytes(good[12..20].try_into().unwrap()) as usize;
        let mut damaged: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("longer", [&good[..], &[0]].concat()),
            ("header cut", good[..header_len - 3].to_vec()),
        ];
        let mut magic = good.clone();
        magic[0] ^= 1;
        damaged.push(("magic", magic));
        let mut hl = good.clone();
        hl[12..20].copy_from_slice(&(good.len() as u64 + 1).to_le_bytes());
        damaged.push(("header length", hl));
        // The default scope's points come first: its second time before its first, then
        // a value that is not a number.
        let mut order = good.clone();
        order[header_len + 16..header_len + 24].copy_from_slice(&50.0f64.to_le_bytes());
        damaged.push(("order", order));
        let mut nan = good.clone();
        nan[header_len + 8..header_len + 16].copy_from_slice(&f64::NAN.to_le_bytes());
        damaged.push(("nan", nan));
        let mut nan_time = good.clone();
        nan_time[header_len..header_len + 8].copy_from_slice(&(-f64::NAN).to_le_bytes());
        damaged.push(("nan time", nan_time));
        for (what, bytes) in damaged {
            fs::write(&cache, &bytes).unwrap();
            for window in [None, Some((120.0, 160.0))] {
                assert!(
                    matches!(
                        read_cached(&cache, id, &path, "n1", None, window),
                        Err(Miss::Bad(_))
                    ),
                    "{what} {window:?}"
                );
            }
            // And the public path rebuilds it and answers right.
            assert_eq!(
                steps_for(&csv, Some(&d), "n1", None, None)
                    .unwrap()
                    .unwrap()
                    .points,
                [(100.0, 200.0), (200.0, 400.0)],
                "{what}"
            );
            assert_eq!(fs::read(&cache).unwrap(), good, "{what}: rebuilt");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn without_a_cache_dir_the_csv_is_parsed() {
        let d = temp_dir("none");
        let csv = d.join("series.csv");
        fs::write(&csv, CSV).unwrap();
        let got = steps_for(&csv, None, "node5", Some("green"), None)
            .unwrap()
            .unwrap();
        assert_eq!(got.points, [(100.0, 10.0)]);
        assert!(!d.join(CACHE_FILE).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Through the cache, cold and warm, every node gets what the parse gives.
        #[test]
        fn cache_answers_as_the_parse(
            lines in proptest::collection::vec((0u32..4, 0u32..1000, 0u32..5000), 1..40),
            node in 0u32..7,
            partition in proptest::option::of(proptest::sample::select(vec!["green", "gpu"])),
            window in proptest::option::of((0u32..1200, 0u32..400)),
        ) {
            let scopes = ["", "partition=green", "nodes=node[1-3]", "nodes=node[3-5]"];
            let text: String = lines
                .iter()
                .map(|(s, t, v)| format!("{t},{}.5,{}\n", v / 2, scopes[*s as usize]))
                .collect();
            let d = temp_dir("prop");
            let csv = d.join("series.csv");
            fs::write(&csv, &text).unwrap();
            let node = format!("node{node}");
            let window = window.map(|(lo, len)| (f64::from(lo), f64::from(lo + len)));
            let want = Series::parse(&text)
                .unwrap()
                .for_job(&node, partition)
                .map(|s| window.map_or_else(|| s.clone(), |(lo, hi)| s.window(lo, hi)));
            for _ in 0..2 {
                let got = steps_for(&csv, Some(&d), &node, partition, window).unwrap();
                proptest::prop_assert_eq!(&got, &want);
            }
            fs::remove_dir_all(&d).unwrap();
        }

        /// A damaged cache never panics the reader, and what it returns, if anything, is
        /// in order and in range.
        #[test]
        fn damaged_caches_never_panic(
            flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..4),
            cut in proptest::option::of(0usize..4096),
            window in proptest::option::of((0u32..1200, 0u32..400)),
        ) {
            let d = temp_dir("fuzz");
            let csv = d.join("series.csv");
            fs::write(&csv, CSV).unwrap();
            let cache = d.join(CACHE_FILE);
            steps_for(&csv, Some(&d), "node4", None, None).unwrap();
            let mut bytes = fs::read(&cache).unwrap();
            for (at, x) in flips {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            fs::write(&cache, &bytes).unwrap();
            let id = Identity::of(&fs::metadata(&csv).unwrap());
            let window = window.map(|(lo, len)| (f64::from(lo), f64::from(lo + len)));
            for node in ["node1", "node4", "node5"] {
                let path = csv.as_os_str().as_bytes();
                if let Ok(Ok(Some(steps))) = read_cached(&cache, id, path, node, None, window) {
                    proptest::prop_assert!(steps.points.windows(2).all(|w| w[0].0 <= w[1].0));
                    proptest::prop_assert!(steps.points.iter().all(|p| p.0.is_finite()
                        && (0.0..=MAX_G_PER_KWH).contains(&p.1)));
                }
            }
            fs::remove_dir_all(&d).unwrap();
        }
    }
}
