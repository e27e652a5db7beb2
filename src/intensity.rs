//! Carbon intensity that changes over time: a CSV time series (a grid operator's or
//! Electricity Maps' export), optionally different series per partition or node set,
//! integrated against the job's sampled power.
//!
//! CSV lines: `timestamp,gco2e_per_kwh[,scope]`. The timestamp is unix seconds or
//! RFC 3339 UTC (`2026-11-22T08:00:00Z`); a value holds until the next timestamp (a
//! step function). `scope` is empty (the default series), `partition=NAME` or
//! `nodes=HOSTLIST`. A header line and `#` comments are skipped.

use std::collections::BTreeMap;

use crate::hostlist;
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

/// Days from 1970-01-01 to a civil date (proleptic Gregorian), after H. Hinnant.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    let (y, mo, da): (i64, i64, i64) = (
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
        self.by_scope
            .iter()
            .find(|(s, _)| matches!(s, Scope::Nodes(n) if n.iter().any(|x| x.eq_ignore_ascii_case(node))))
            .or_else(|| {
                self.by_scope
                    .iter()
                    .find(|(s, _)| matches!((s, partition), (Scope::Partition(p), Some(q)) if p == q))
            })
            .or_else(|| self.by_scope.iter().find(|(s, _)| **s == Scope::Default))
            .map(|(_, steps)| steps)
    }
}

impl Steps {
    /// Time-average intensity over [a, b], or `None` when the series does not cover it:
    /// it must start at or before `a`, and its last point be no older than `max_age_s`
    /// at `b` (a stale series is not extrapolated).
    pub fn average(&self, a: f64, b: f64, max_age_s: f64) -> Option<f64> {
        let first = self.points.first()?;
        let last = self.points.last()?;
        if first.0 > a || b - last.0 > max_age_s {
            return None;
        }
        if b <= a {
            return self.at(a);
        }
        let mut total = 0.0;
        for (i, &(t, v)) in self.points.iter().enumerate() {
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
        self.points.iter().rev().find(|p| p.0 <= t).map(|p| p.1)
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
        for (i, mj) in bucket_mj.iter().enumerate() {
            let a = start + i as f64 * bucket_s;
            let b = (a + bucket_s).min(end.max(a));
            match steps.average(a, b, max_age_s) {
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
}
