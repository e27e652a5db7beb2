//! Carbon intensity that changes over time: a CSV time series (a grid operator's or
//! Electricity Maps' export), optionally different series per partition or node set,
//! integrated against the job's sampled power.
//!
//! CSV lines: `timestamp,gco2e_per_kwh[,scope]`. The timestamp is unix seconds or
//! RFC 3339 UTC (`2026-11-22T08:00:00Z`); a value holds until the next timestamp (a
//! step function). `scope` is empty (the default series), `partition=NAME` or
//! `nodes=HOSTLIST`. A header line and `#` comments are skipped.

use std::collections::BTreeMap;

use crate::core::calendar::days_from_civil;
use crate::slurm::hostlist;
use crate::units::GramsPerKwh;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("intensity series line {line}: {why}")]
pub struct SeriesError {
    pub line: usize,
    pub why: String,
}

/// A step function of intensity over time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Steps {
    /// (unix seconds, g/kWh), sorted by time.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Default,
    Partition(String),
    Nodes(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub by_scope: BTreeMap<Scope, Steps>,
}

/// Parses unix seconds or an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM[:SS[.fff]](Z|+00:00)`).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next().map_or(Some(0.0), |v| v.parse().ok())?;
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || h > 23
        || mi > 59
        || !(0.0..61.0).contains(&sec)
    {
        return None;
    }
    Some((days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

impl Series {
    pub fn parse(text: &str) -> Result<Series, SeriesError> {
        let mut series = Series::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let err = |why: &str| SeriesError {
                line: i + 1,
                why: why.to_string(),
            };
            let Some(t) = parse_time(cols[0]) else {
                if i == 0
                    || series.by_scope.is_empty() && !cols[0].chars().any(|c| c.is_ascii_digit())
                {
                    continue; // a header
                }
                return Err(err("bad timestamp"));
            };
            let value: f64 = cols
                .get(1)
                .and_then(|v| v.parse().ok())
                .filter(|v: &f64| v.is_finite() && (0.0..=5000.0).contains(v))
                .ok_or_else(|| err("bad intensity (g/kWh, 0 to 5000)"))?;
            let scope = match cols.get(2).copied().unwrap_or("") {
                "" => Scope::Default,
                s => {
                    if let Some(p) = s.strip_prefix("partition=") {
                        Scope::Partition(p.to_string())
                    } else if let Some(n) = s.strip_prefix("nodes=") {
                        // Host lists contain commas only inside brackets in this column.
                        Scope::Nodes(hostlist::expand(n).map_err(|_| err("bad host list"))?)
                    } else {
                        return Err(err("scope must be empty, partition=NAME or nodes=HOSTLIST"));
                    }
                }
            };
            series
                .by_scope
                .entry(scope)
                .or_default()
                .points
                .push((t, value));
        }
        for steps in series.by_scope.values_mut() {
            steps.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(series)
    }

    /// The series that applies to a node of a partition: node set, then partition,
    /// then the default.
    pub fn for_job(&self, node: &str, partition: Option<&str>) -> Option<&Steps> {
        let i = pick_scope(self.by_scope.keys(), node, partition)?;
        self.by_scope.values().nth(i)
    }
}

/// Which of the scopes (in the series' order) applies to a node of a partition: the
/// first node set naming the node, else the partition's, else the default.
pub fn pick_scope<'a, I>(scopes: I, node: &str, partition: Option<&str>) -> Option<usize>
where
    I: Iterator<Item = &'a Scope> + Clone,
{
    scopes
        .clone()
        .position(
            |s| matches!(s, Scope::Nodes(n) if n.iter().any(|x| x.eq_ignore_ascii_case(node))),
        )
        .or_else(|| {
            scopes
                .clone()
                .position(|s| matches!((s, partition), (Scope::Partition(p), Some(q)) if p == q))
        })
        .or_else(|| scopes.clone().position(|s| *s == Scope::Default))
}

/// The points needed for every interval within [lo, hi], as an index range of a sorted
/// series of `n` points whose `i`th time `time(i)` gives: from the last point at or
/// before `lo` (the first point when there is none) to the first point after `hi` (the
/// last point when there is none). Over intervals within [lo, hi], and for a maximum
/// age of 0 or more, the points of this range give the same averages and staleness as
/// the whole series. `time` is called O(log n) times (a bisection), so a series on disk
/// can be read by positioned reads. `None` for an empty series.
pub fn window_range<E>(
    n: usize,
    lo: f64,
    hi: f64,
    mut time: impl FnMut(usize) -> Result<f64, E>,
) -> Result<Option<std::ops::RangeInclusive<usize>>, E> {
    let mut at_or_before = |t: f64| -> Result<usize, E> {
        let (mut a, mut b) = (0, n);
        while a < b {
            let mid = a + (b - a) / 2;
            if time(mid)? <= t {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        Ok(a)
    };
    if n == 0 {
        return Ok(None);
    }
    let first = at_or_before(lo)?.saturating_sub(1);
    let last = at_or_before(hi)?.min(n - 1);
    Ok(Some(first..=last.max(first)))
}

impl Steps {
    /// The part of the series that intervals within [lo, hi] need (see `window_range`).
    pub fn window(&self, lo: f64, hi: f64) -> Steps {
        let range = window_range(self.points.len(), lo, hi, |i| {
            Ok::<_, std::convert::Infallible>(self.points[i].0)
        });
        Steps {
            points: match range {
                Ok(Some(r)) => self.points[r].to_vec(),
                _ => Vec::new(),
            },
        }
    }

    /// Time-average intensity over [a, b], or `None` when the series does not cover it:
    /// it must start at or before `a`, and its last point be no older than `max_age_s`
    /// at `b` (a stale series is not extrapolated).
    pub fn average(&self, a: f64, b: f64, max_age_s: f64) -> Option<f64> {
        self.average_at(self.seek(None, a), a, b, max_age_s)
    }

    /// The index of the last point at or before `t` (0 when there is none), searched
    /// forward from `hint` when the hint is at or before `t`, by bisection otherwise: a
    /// walk over increasing times costs O(points) in all.
    fn seek(&self, hint: Option<usize>, t: f64) -> usize {
        let pts = &self.points;
        match hint {
            Some(mut k) if k < pts.len() && pts[k].0 <= t => {
                while k + 1 < pts.len() && pts[k + 1].0 <= t {
                    k += 1;
                }
                k
            }
            _ => pts.partition_point(|p| p.0 <= t).saturating_sub(1),
        }
    }

    /// `average` with `k` the index of the last point at or before `a` (from `seek`).
    /// Sums the same segments in the same order as a scan of every point would, so
    /// the result is the same to the last bit.
    fn average_at(&self, k: usize, a: f64, b: f64, max_age_s: f64) -> Option<f64> {
        let first = self.points.first()?;
        let last = self.points.last()?;
        if first.0 > a || b - last.0 > max_age_s {
            return None;
        }
        if b <= a {
            return self.at(a);
        }
        let mut total = 0.0;
        // Points before k end at or before `a`; points from `b` on start at or after it.
        for (i, &(t, v)) in self.points.iter().enumerate().skip(k) {
            if t >= b {
                break;
            }
            let next = self.points.get(i + 1).map_or(f64::INFINITY, |p| p.0);
            let lo = t.max(a);
            let hi = next.min(b);
            if hi > lo {
                total += v * (hi - lo);
            }
        }
        Some(total / (b - a))
    }

    fn at(&self, t: f64) -> Option<f64> {
        let n = self.points.partition_point(|p| p.0 <= t);
        n.checked_sub(1).map(|i| self.points[i].1)
    }
}

/// Where a node's CO2e intensity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Fixed,
    Series,
    /// A series was configured but is missing, stale or does not cover the window.
    Fallback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Fixed => "fixed",
            Source::Series => "series",
            Source::Fallback => "fallback",
        }
    }
}

/// A node's energy over its window, with its distribution in time (the sampled energy
/// per bucket of `bucket_s` seconds from `start`).
#[derive(Debug, Clone, Copy)]
pub struct EnergyInTime<'a> {
    pub wh: f64,
    pub start: f64,
    pub end: f64,
    pub bucket_s: f64,
    pub bucket_mj: &'a [f64],
}

impl EnergyInTime<'_> {
    /// The times `co2e_over_time` looks at: every bucket's interval and the window.
    /// `None` when one is not finite.
    pub fn span(&self) -> Option<(f64, f64)> {
        let (mut lo, mut hi) = (self.start.min(self.end), self.start.max(self.end));
        for i in 0..self.bucket_mj.len() {
            let a = self.start + i as f64 * self.bucket_s;
            let b = (a + self.bucket_s).min(self.end.max(a));
            if !a.is_finite() || !b.is_finite() {
                return None;
            }
            lo = lo.min(a).min(b);
            hi = hi.max(a).max(b);
        }
        (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
    }
}

/// Operational CO2e in grams of the energy, distributed in time like the sampled energy,
/// against the series; the fixed intensity when there is no usable series. Returns the
/// grams, the source, and the effective intensity.
pub fn co2e_over_time(
    e: &EnergyInTime,
    pue: f64,
    fixed: GramsPerKwh,
    steps: Option<&Steps>,
    configured: bool,
    max_age_s: f64,
) -> (f64, Source, f64) {
    let EnergyInTime {
        wh,
        start,
        end,
        bucket_s,
        bucket_mj,
    } = *e;
    let fixed_result = |src| (wh / 1000.0 * pue * fixed.0, src, fixed.0);
    let Some(steps) = steps else {
        return fixed_result(if configured {
            Source::Fallback
        } else {
            Source::Fixed
        });
    };
    let sampled: f64 = bucket_mj.iter().sum();
    let effective = if sampled > 0.0 {
        let mut weighted = 0.0;
        // One walk over both sorted sequences: O(buckets + points).
        let mut k = None;
        for (i, mj) in bucket_mj.iter().enumerate() {
            let a = start + i as f64 * bucket_s;
            let b = (a + bucket_s).min(end.max(a));
            let at = steps.seek(k, a);
            k = Some(at);
            match steps.average_at(at, a, b, max_age_s) {
                Some(v) => weighted += mj * v,
                None => return fixed_result(Source::Fallback),
            }
        }
        weighted / sampled
    } else {
        match steps.average(start, end, max_age_s) {
            Some(v) => v,
            None => return fixed_result(Source::Fallback),
        }
    };
    (wh / 1000.0 * pue * effective, Source::Series, effective)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0"), Some(0.0));
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Some(86_400.0));
        assert_eq!(parse_time("2026-11-22T08:00:00Z"), Some(1_795_334_400.0));
        assert_eq!(parse_time("2026-11-22 08:00"), Some(1_795_334_400.0));
        assert_eq!(
            parse_time("2024-02-29T12:30:30.5+00:00"),
            Some(1_709_209_830.5)
        );
        assert_eq!(parse_time("2026-13-01T00:00Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn series_with_scopes() {
        let s = Series::parse(
            "timestamp,g_per_kwh,scope\n100,200\n200,400 # step\n100,50,partition=green\n100,900,nodes=node[3-4]\n",
        )
        .unwrap();
        assert_eq!(
            s.for_job("node1", Some("gpu")).unwrap().points,
            [(100.0, 200.0), (200.0, 400.0)]
        );
        assert_eq!(
            s.for_job("node1", Some("green")).unwrap().points,
            [(100.0, 50.0)]
        );
        assert_eq!(
            s.for_job("node4", Some("green")).unwrap().points,
            [(100.0, 900.0)]
        );
        assert!(Series::parse("100,abc\n").is_err());
        assert!(Series::parse("100,10,rack=1\n").is_err());
        let e = Series::parse("100,1\nxx,2\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn step_averages_and_staleness() {
        let s = Steps {
            points: vec![(100.0, 200.0), (200.0, 400.0)],
        };
        assert_eq!(s.average(150.0, 250.0, 3600.0), Some(300.0));
        assert_eq!(s.average(120.0, 180.0, 3600.0), Some(200.0));
        assert_eq!(
            s.average(50.0, 150.0, 3600.0),
            None,
            "starts before the series"
        );
        assert_eq!(s.average(5000.0, 5000.0 + 10.0, 3600.0), None, "stale");
    }

    fn e(start: f64, end: f64, bucket_mj: &[f64]) -> EnergyInTime<'_> {
        EnergyInTime {
            wh: 1.0,
            start,
            end,
            bucket_s: 10.0,
            bucket_mj,
        }
    }

    #[test]
    fn energy_weighted_across_a_step() {
        let steps = Steps {
            points: vec![(0.0, 100.0), (10.0, 500.0)],
        };
        // Equal energy in each 10 s bucket: average of 100 and 500.
        let (g, src, eff) = co2e_over_time(
            &e(0.0, 20.0, &[5.0, 5.0]),
            1.0,
            GramsPerKwh(475.0),
            Some(&steps),
            true,
            3600.0,
        );
        assert_eq!(src, Source::Series);
        assert!((eff - 300.0).abs() < 1e-9);
        assert!((g - 0.3).abs() < 1e-12);
        // All energy after the step.
        let (_, _, eff) = co2e_over_time(
            &e(0.0, 20.0, &[0.0, 5.0]),
            1.0,
            GramsPerKwh(475.0),
            Some(&steps),
            true,
            3600.0,
        );
        assert_eq!(eff, 500.0);
        // A stale series falls back to the fixed value and says so.
        let (g, src, _) = co2e_over_time(
            &e(9000.0, 9020.0, &[5.0]),
            1.0,
            GramsPerKwh(475.0),
            Some(&steps),
            true,
            60.0,
        );
        assert_eq!(src, Source::Fallback);
        assert!((g - 0.475).abs() < 1e-12);
        let (_, src, _) = co2e_over_time(
            &e(0.0, 1.0, &[]),
            1.0,
            GramsPerKwh(475.0),
            None,
            false,
            60.0,
        );
        assert_eq!(src, Source::Fixed);
    }

    /// The integration as it was before the merge walk: every bucket scans every point.
    fn average_ref(s: &Steps, a: f64, b: f64, max_age_s: f64) -> Option<f64> {
        let first = s.points.first()?;
        let last = s.points.last()?;
        if first.0 > a || b - last.0 > max_age_s {
            return None;
        }
        if b <= a {
            return s.points.iter().rev().find(|p| p.0 <= a).map(|p| p.1);
        }
        let mut total = 0.0;
        for (i, &(t, v)) in s.points.iter().enumerate() {
            let next = s.points.get(i + 1).map_or(f64::INFINITY, |p| p.0);
            let lo = t.max(a);
            let hi = next.min(b);
            if hi > lo {
                total += v * (hi - lo);
            }
        }
        Some(total / (b - a))
    }

    fn co2e_ref(e: &EnergyInTime, fixed: f64, steps: &Steps, max_age_s: f64) -> (f64, Source) {
        let fallback = (e.wh / 1000.0 * fixed, Source::Fallback);
        let sampled: f64 = e.bucket_mj.iter().sum();
        let effective = if sampled > 0.0 {
            let mut weighted = 0.0;
            for (i, mj) in e.bucket_mj.iter().enumerate() {
                let a = e.start + i as f64 * e.bucket_s;
                let b = (a + e.bucket_s).min(e.end.max(a));
                match average_ref(steps, a, b, max_age_s) {
                    Some(v) => weighted += mj * v,
                    None => return fallback,
                }
            }
            weighted / sampled
        } else {
            match average_ref(steps, e.start, e.end, max_age_s) {
                Some(v) => v,
                None => return fallback,
            }
        };
        (e.wh / 1000.0 * effective, Source::Series)
    }

    /// A sorted step series with repeated times, on a coarse grid so that bucket edges
    /// and points coincide often.
    fn arb_steps() -> impl Strategy<Value = Steps> {
        prop::collection::vec((0u32..400, 0u32..5000), 0..60).prop_map(|mut pts| {
            pts.sort_by_key(|p| p.0);
            Steps {
                points: pts
                    .into_iter()
                    .map(|(t, v)| (f64::from(t) * 2.5, f64::from(v) / 4.0))
                    .collect(),
            }
        })
    }

    proptest! {
        #[test]
        fn merge_walk_matches_the_scan(
            steps in arb_steps(),
            start in 0u32..1100,
            bucket in prop_oneof![4 => 1u32..80, 1 => 0u32..1],
            backwards in any::<bool>(),
            len_extra in -300i32..300,
            mj in prop::collection::vec(prop_oneof![1 => Just(0.0), 3 => 0.0f64..1e4], 0..80),
            max_age in 0u32..600,
        ) {
            let bucket_s = if backwards { -f64::from(bucket) } else { f64::from(bucket) };
            let start = f64::from(start) * 0.5;
            let span = mj.len() as f64 * bucket_s.abs();
            let end = start + (span + f64::from(len_extra)).max(0.0);
            let e = EnergyInTime { wh: 3.7, start, end, bucket_s, bucket_mj: &mj };
            let max_age = f64::from(max_age);
            let (g, src, _) =
                co2e_over_time(&e, 1.0, GramsPerKwh(475.0), Some(&steps), true, max_age);
            let (g_ref, src_ref) = co2e_ref(&e, 475.0, &steps, max_age);
            prop_assert_eq!(src, src_ref);
            prop_assert_eq!(g.to_bits(), g_ref.to_bits(), "{} vs {}", g, g_ref);
            // The window of the series that the buckets need gives the same result.
            let (lo, hi) = e.span().unwrap();
            let window = steps.window(lo, hi);
            prop_assert!(window.points.len() <= steps.points.len());
            let (gw, srcw, _) =
                co2e_over_time(&e, 1.0, GramsPerKwh(475.0), Some(&window), true, max_age);
            prop_assert_eq!(srcw, src_ref);
            prop_assert_eq!(gw.to_bits(), g_ref.to_bits(), "window: {} vs {}", gw, g_ref);
            // And the public average over arbitrary intervals.
            let (a, b) = (start, end);
            prop_assert_eq!(
                steps.average(a, b, max_age).map(f64::to_bits),
                average_ref(&steps, a, b, max_age).map(f64::to_bits)
            );
        }
    }

    #[test]
    fn a_two_year_series_integrates_fast_and_exactly() {
        // 5-minute points over two years and a 7-day job in 10 s buckets: the scan of
        // every point per bucket took seconds; the walk must agree with it bucket by
        // bucket (checked on a sample) and on the whole.
        let points: Vec<(f64, f64)> = (0..210_240)
            .map(|i| (f64::from(i) * 300.0, f64::from(i % 97) * 5.0))
            .collect();
        let steps = Steps { points };
        let start = 200_000.0 * 300.0 + 7.0;
        let mj: Vec<f64> = (0..60_480).map(|i| f64::from(i % 13)).collect();
        let e = EnergyInTime {
            wh: 2.0,
            start,
            end: start + 604_800.0,
            bucket_s: 10.0,
            bucket_mj: &mj,
        };
        let t = std::time::Instant::now();
        let (g, src, eff) = co2e_over_time(&e, 1.0, GramsPerKwh(475.0), Some(&steps), true, 1e9);
        let took = t.elapsed();
        assert_eq!(src, Source::Series);
        assert!(eff > 0.0 && eff < 485.0, "{eff}");
        assert!((g - 2.0 / 1000.0 * eff).abs() < 1e-12);
        for i in (0..mj.len()).step_by(997) {
            let a = start + i as f64 * 10.0;
            assert_eq!(
                steps.average(a, a + 10.0, 1e9),
                average_ref(&steps, a, a + 10.0, 1e9)
            );
        }
        // Generous for a debug build on a loaded machine; the scan took over a second
        // in release.
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
    }
}
