//! Reports from accounting (sacct), so they work wherever sacct does: one job like
//! seff, and totals per user, account or partition over a time range. sacct's output
//! is streamed, line by line.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Serialize;

use crate::record::{self, Segment};

/// sacct fields read for each job, in this order; the comment field comes last because
/// foreign text in it may hold newlines.
pub const FIELDS: &str = "JobIDRaw,User,Account,Partition,State,ElapsedRaw,AllocTRES,NodeList";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub job: u32,
    pub user: String,
    pub account: String,
    pub partition: String,
    pub state: String,
    pub elapsed_s: u64,
    pub gpus: u32,
    pub nodelist: String,
    pub field: String,
}

impl JobRow {
    pub fn record(&self) -> Option<Segment> {
        record::parse(&self.field)
    }
    pub fn gpu_hours(&self) -> f64 {
        self.gpus as f64 * self.elapsed_s as f64 / 3600.0
    }
}

fn gpus_of(alloc_tres: &str) -> u32 {
    alloc_tres
        .split(',')
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| *k == "gres/gpu")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn parse_line(line: &str) -> Option<JobRow> {
    let mut f = line.splitn(9, '|');
    let job = f.next()?.parse().ok()?;
    let user = f.next()?.to_string();
    let account = f.next()?.to_string();
    let partition = f.next()?.to_string();
    let state = f.next()?.to_string();
    let elapsed_s = f.next()?.parse().ok()?;
    let gpus = gpus_of(f.next()?);
    let nodelist = f.next()?.to_string();
    let field = f.next()?.to_string();
    Some(JobRow {
        job,
        user,
        account,
        partition,
        state,
        elapsed_s,
        gpus,
        nodelist,
        field,
    })
}

/// Reads sacct's `-n -P -o FIELDS,<comment>` output, calling `each` per job. A line that
/// does not start a job continues the previous job's comment (a newline in it).
pub fn stream(input: impl BufRead, mut each: impl FnMut(JobRow)) -> std::io::Result<()> {
    let mut pending: Option<JobRow> = None;
    for line in input.lines() {
        let line = line?;
        match parse_line(&line) {
            Some(row) => {
                if let Some(prev) = pending.replace(row) {
                    each(prev);
                }
            }
            None => {
                if let Some(p) = pending.as_mut() {
                    p.field.push('\n');
                    p.field.push_str(&line);
                }
            }
        }
    }
    if let Some(prev) = pending {
        each(prev);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Account,
    Partition,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub name: String,
    pub jobs: u64,
    pub measured_jobs: u64,
    pub gpu_hours: f64,
    pub gpu_wh: f64,
    pub co2e_g: f64,
    pub embodied_g: f64,
}

/// Totals per group, sorted by CO2e (largest first).
pub fn totals(input: impl BufRead, by: GroupBy) -> std::io::Result<Vec<Totals>> {
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    stream(input, |row| {
        let key = match by {
            GroupBy::User => &row.user,
            GroupBy::Account => &row.account,
            GroupBy::Partition => &row.partition,
        };
        let t = groups.entry(key.clone()).or_insert_with(|| Totals {
            name: key.clone(),
            ..Totals::default()
        });
        t.jobs += 1;
        t.gpu_hours += row.gpu_hours();
        if let Some(seg) = row.record() {
            t.measured_jobs += 1;
            t.gpu_wh += seg.gpu_wh();
            t.co2e_g += seg.co2e_g();
            t.embodied_g += seg.embodied_g().unwrap_or(0.0);
        }
    })?;
    let mut out: Vec<Totals> = groups.into_values().collect();
    out.sort_by(|a, b| b.co2e_g.total_cmp(&a.co2e_g).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Everyday comparisons, in lbs CO2e (Strubell, Ganesh and McCallum, ACL 2019, Table 1).
pub const EVERYDAY_LBS: [(&str, f64); 4] = [
    (
        "a New York-San Francisco round-trip flight, one passenger",
        1984.0,
    ),
    ("a year of an average human life", 11_023.0),
    ("a year of an American life", 36_156.0),
    ("a US car's lifetime, fuel included", 126_000.0),
];
pub const GRAMS_PER_LB: f64 = 453.592_37;
/// Great-circle distance JFK-SFO and back, km: the flight of the comparison above.
pub const NY_SF_ROUND_TRIP_KM: f64 = 8_300.0;

/// Whether the locale expects pounds and miles (the United States, Liberia, Myanmar).
pub fn imperial_locale(get: impl Fn(&str) -> Option<String>) -> bool {
    let loc = ["LC_ALL", "LC_MEASUREMENT", "LANG"]
        .iter()
        .find_map(|k| get(k).filter(|v| !v.is_empty()))
        .unwrap_or_default();
    ["en_US", "en_LR", "my_MM"]
        .iter()
        .any(|p| loc.starts_with(p))
}

/// The footprint in everyday terms: lines of text.
pub fn everyday(co2e_g: f64, imperial: bool) -> Vec<String> {
    let lbs = co2e_g / GRAMS_PER_LB;
    let mut out = Vec::new();
    let km = lbs / EVERYDAY_LBS[0].1 * NY_SF_ROUND_TRIP_KM;
    let (dist, unit) = if imperial {
        (km / 1.609_344, "miles")
    } else {
        (km, "km")
    };
    out.push(format!(
        "like flying {} {unit} as an airline passenger ({} of {})",
        sig(dist),
        percent(lbs / EVERYDAY_LBS[0].1),
        EVERYDAY_LBS[0].0
    ));
    for (what, l) in &EVERYDAY_LBS[1..] {
        out.push(format!("{} of {what}", percent(lbs / l)));
    }
    out
}

/// A mass in the locale's unit.
pub fn mass(g: f64, imperial: bool) -> String {
    if imperial {
        format!("{} lbs", sig(g / GRAMS_PER_LB))
    } else if g >= 1000.0 {
        format!("{} kg", sig(g / 1000.0))
    } else {
        format!("{} g", sig(g))
    }
}

fn sig(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = (3 - x.abs().log10().floor() as i32 - 1).max(0) as usize;
    record::num(x, digits.min(12))
}

fn percent(fraction: f64) -> String {
    format!("{}%", sig(fraction * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SACCT: &str = "\
10|alice|research|gpu|COMPLETED|3600|billing=4,cpu=4,gres/gpu=2,node=1|node1|spank-carbon/1 gpu_wh=500 co2e_g=375 intensity=475 pue=1.58 gpus=2 nodes=1 of=1 method=counter node.node1=wh:500,gpus:2,co2e:375,m:counter,t:1-3601
11|bob|heavy|gpu|COMPLETED|1800|cpu=1,gres/gpu=4,node=1|node2|note: line one
line two spank-carbon/1 gpu_wh=1000 co2e_g=750 intensity=475 pue=1.58 gpus=4 nodes=1 of=1 embodied_g=20 node.node2=wh:1000,gpus:4,co2e:750,m:counter,t:1-1801,emb:20
12|alice|research|cpu|COMPLETED|60|cpu=1,node=1|node3|
";

    #[test]
    fn streams_jobs_with_multiline_comments() {
        let mut rows = Vec::new();
        stream(SACCT.as_bytes(), |r| rows.push(r)).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].field.lines().count(), 2);
        assert_eq!(rows[1].record().unwrap().gpu_wh(), 1000.0);
        assert_eq!(rows[0].gpus, 2);
        assert_eq!(rows[0].gpu_hours(), 2.0);
        assert!(rows[2].record().is_none());
    }

    #[test]
    fn totals_per_group_sorted_by_co2e() {
        let t = totals(SACCT.as_bytes(), GroupBy::User).unwrap();
        assert_eq!(t[0].name, "bob");
        assert_eq!(t[0].co2e_g, 750.0);
        assert_eq!(t[0].embodied_g, 20.0);
        assert_eq!(t[1].name, "alice");
        assert_eq!(t[1].jobs, 2);
        assert_eq!(t[1].measured_jobs, 1);
        assert_eq!(t[1].gpu_hours, 2.0);
        let p = totals(SACCT.as_bytes(), GroupBy::Partition).unwrap();
        assert_eq!(
            p.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["gpu", "cpu"]
        );
    }

    #[test]
    fn everyday_terms_and_units() {
        // One flight's worth of CO2e is the flight, 8300 km.
        let g = 1984.0 * GRAMS_PER_LB;
        let lines = everyday(g, false);
        assert!(lines[0].starts_with("like flying 8300 km"), "{lines:?}");
        assert!(lines[0].contains("(100% of"), "{lines:?}");
        assert!(everyday(g, true)[0].starts_with("like flying 5157 miles"));
        assert_eq!(mass(1500.0, false), "1.5 kg");
        assert_eq!(mass(12.0, false), "12 g");
        assert_eq!(mass(GRAMS_PER_LB, true), "1 lbs");
        let env = |k: &str| (k == "LANG").then(|| "en_US.UTF-8".to_string());
        assert!(imperial_locale(env));
        assert!(!imperial_locale(|_| Some("de_DE.UTF-8".into())));
        assert!(!imperial_locale(|_| None));
    }
}
