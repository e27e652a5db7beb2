//! Reports from accounting (sacct), so they work wherever sacct does: one job like
//! seff, and totals per user, account or partition over a time range. sacct's output
//! is streamed, row by row, framed by a per-call delimiter ([`crate::slurm::sacct_rows`]).

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;

use crate::core::config::Field;
use crate::record::{self, Segment};
use crate::slurm::sacct_rows::{self, RowError};

pub mod text;

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
    /// GPUs allocated, from where [`JobRow::gpus_from`] says.
    pub gpus: u32,
    pub nodelist: String,
    pub field: String,
    /// What AllocTRES says about GPUs, whole and shared.
    #[serde(skip)]
    pub tres: GpuTres,
    /// Where `gpus` (and the count in [`JobRow::gpu_hours`]) comes from.
    #[serde(skip)]
    pub gpus_from: GpusFrom,
    /// The GPU count GPU-hours are made of: `gpus`, but GPU-equivalents where the count
    /// comes from a record whose boards were shared (MPS, shards, MIG).
    #[serde(skip)]
    pub gpu_equiv: f64,
}

impl JobRow {
    pub fn record(&self) -> Option<Segment> {
        record::parse(&self.field)
    }
    /// Whether this row is a run of a job that was requeued afterwards (`sacct -D`).
    pub fn requeued(&self) -> bool {
        self.state.starts_with("REQUEUED")
    }
    pub fn gpu_hours(&self) -> f64 {
        self.gpu_equiv * self.elapsed_s as f64 / 3600.0
    }
}

/// Where a row's GPU count comes from. AllocTRES holds GPUs only for the GRES that
/// slurm.conf's `AccountingStorageTRES` lists (`gres/gpu` is not among Slurm's defaults;
/// `spank-carbon check` warns), so the row's record stands in where it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum GpusFrom {
    /// `gres/gpu=N` in AllocTRES (the count every report showed before).
    #[default]
    Tres,
    /// No `gres/gpu` in AllocTRES: the sum of its `gres/gpu:TYPE=N` (a site that tracks
    /// GPU types only; Slurm then accounts each GPU job under one of the types).
    TypedTres,
    /// No GPU in AllocTRES: the row's record, its newest run's GPUs (`gpus=`, the sum of
    /// its parts'; a row may also hold an older run's parts, never a newer one's).
    Record,
    /// None anywhere: 0.
    Nothing,
}

/// What AllocTRES says about GPUs: `gres/gpu`, the sum of `gres/gpu:TYPE`, and the shared
/// GRES (`gres/shard`, `gres/mps`, each plain or else the sum of its types). Only what
/// `AccountingStorageTRES` lists is there; `gres/gpumem` and `gres/gpuutil` are not GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuTres {
    pub gpu: Option<u64>,
    pub gpu_typed: u64,
    pub shard: u64,
    pub mps: u64,
}

impl GpuTres {
    pub fn parse(alloc_tres: &str) -> GpuTres {
        let mut t = GpuTres::default();
        // (plain, typed sum) per shared GRES.
        let (mut shard, mut mps) = ((None, 0u64), (None, 0u64));
        for (k, v) in alloc_tres.split(',').filter_map(|t| t.split_once('=')) {
            if k == "gres/gpu" {
                // The first one, a u32 or 0: what the report always read.
                t.gpu
                    .get_or_insert(u64::from(v.parse::<u32>().unwrap_or(0)));
                continue;
            }
            let Ok(n) = v.parse::<u64>() else { continue };
            let (name, typed) = match k.split_once(':') {
                Some((name, _)) => (name, true),
                None => (k, false),
            };
            let slot = match name {
                "gres/gpu" => {
                    t.gpu_typed = t.gpu_typed.saturating_add(n);
                    continue;
                }
                "gres/shard" => &mut shard,
                "gres/mps" => &mut mps,
                _ => continue,
            };
            if typed {
                slot.1 = slot.1.saturating_add(n);
            } else {
                slot.0 = Some(n);
            }
        }
        t.shard = shard.0.unwrap_or(shard.1);
        t.mps = mps.0.unwrap_or(mps.1);
        t
    }
    /// Whole GPUs: `gres/gpu`, else the sum of its types; `None` when neither is there
    /// (or both are 0).
    pub fn whole(&self) -> Option<u64> {
        self.gpu
            .filter(|&n| n > 0)
            .or((self.gpu_typed > 0).then_some(self.gpu_typed))
    }
    /// Shards or MPS shares and no whole GPU.
    pub fn shared_only(&self) -> bool {
        self.whole().is_none() && (self.shard > 0 || self.mps > 0)
    }
    /// Any GPU, whole or shared.
    pub fn any(&self) -> bool {
        self.whole().is_some() || self.shard > 0 || self.mps > 0
    }
}

/// GPU-equivalents of a record: shared boards count their share, others whole.
pub fn gpu_equivalents(seg: &Segment) -> f64 {
    seg.parts
        .values()
        .map(|p| p.share.as_ref().map_or(f64::from(p.gpus), |s| s.gpus))
        .sum()
}

/// The row's GPU count, where it comes from, and the count for GPU-hours (see
/// [`GpusFrom`]).
fn gpus_of(tres: &GpuTres, field: &str) -> (u32, GpusFrom, f64) {
    // As always where `gres/gpu` is there: its first value, 0 if not a u32.
    if let Some(n) = tres.gpu {
        let n = u32::try_from(n).unwrap_or(0);
        return (n, GpusFrom::Tres, f64::from(n));
    }
    if tres.gpu_typed > 0 {
        let n = u32::try_from(tres.gpu_typed).unwrap_or(u32::MAX);
        return (n, GpusFrom::TypedTres, f64::from(n));
    }
    let newest = record::parse_all(field)
        .into_iter()
        .max_by_key(|(run, _)| *run)
        .map(|(_, seg)| seg)
        .filter(|seg| seg.gpus() > 0);
    match newest {
        Some(seg) => (seg.gpus(), GpusFrom::Record, gpu_equivalents(&seg)),
        None => (0, GpusFrom::Nothing, 0.0),
    }
}

/// Columns of a row: [`FIELDS`] and the comment field.
pub const NCOLS: usize = 9;

/// One row of sacct's output (its [`NCOLS`] columns); a job id or elapsed time that is
/// not a number is an error, never a row skipped in silence.
pub fn parse_row(cols: &[&str]) -> Result<JobRow, String> {
    let [job, user, account, partition, state, elapsed, tres, nodelist, field] = cols else {
        return Err(format!("{} columns, not {NCOLS}", cols.len()));
    };
    let short = |s: &str| s.chars().take(40).collect::<String>();
    let gpu_tres = GpuTres::parse(tres);
    let (gpus, gpus_from, gpu_equiv) = gpus_of(&gpu_tres, field);
    Ok(JobRow {
        job: job
            .parse()
            .map_err(|_| format!("JobIDRaw `{}` is not a job id", short(job)))?,
        user: user.to_string(),
        account: account.to_string(),
        partition: partition.to_string(),
        state: state.to_string(),
        elapsed_s: elapsed
            .parse()
            .map_err(|_| format!("ElapsedRaw `{}` is not a number", short(elapsed)))?,
        gpus,
        nodelist: nodelist.to_string(),
        field: field.to_string(),
        tres: gpu_tres,
        gpus_from,
        gpu_equiv,
    })
}

/// Reads sacct's `-n -P --delimiter=<delim> -o FIELDS,<comment>` output, calling `each`
/// per job. Rows are framed by the delimiter (see [`crate::slurm::sacct_rows`]): no text in a
/// comment can make a row.
pub fn stream(input: impl Read, delim: &str, mut each: impl FnMut(JobRow)) -> Result<(), RowError> {
    sacct_rows::stream_rows(input, delim, NCOLS, |cols| {
        each(parse_row(cols)?);
        Ok(())
    })
    .map(|_| ())
}

/// Every row of sacct's output (see [`stream`]).
pub fn rows(input: impl Read, delim: &str) -> Result<Vec<JobRow>, RowError> {
    let mut rows = Vec::new();
    stream(input, delim, |row| rows.push(row))?;
    Ok(rows)
}

/// sacct's arguments (but `-P` and the delimiter) for one job's rows, a row per run
/// (`-D`), with [`FIELDS`] and the comment field `field`.
pub fn job_sacct_args(job: u32, field: Field) -> Vec<String> {
    vec![
        "-n".into(),
        "-D".into(),
        "-X".into(),
        "-j".into(),
        job.to_string(),
        "-o".into(),
        format!("{FIELDS},{}", field.slurm_name()),
    ]
}

/// sacct's `-S`/`-E` for a time range (sacct's own defaults where `None`).
pub fn range_args(start: Option<&str>, end: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(s) = start {
        args.extend(["-S".into(), s.to_string()]);
    }
    if let Some(e) = end {
        args.extend(["-E".into(), e.to_string()]);
    }
    args
}

/// sacct's arguments (but `-P` and the delimiter) for every user's jobs over a time range
/// (see [`range_args`]), a row per run.
pub fn range_sacct_args(start: Option<&str>, end: Option<&str>, field: Field) -> Vec<String> {
    let mut args: Vec<String> = vec!["-a".into(), "-n".into(), "-D".into(), "-X".into()];
    args.extend(range_args(start, end));
    args.extend(["-o".into(), format!("{FIELDS},{}", field.slurm_name())]);
    args
}

/// The job's record over all its runs, from every row sacct printed for it (`sacct -D`:
/// a requeued job has a row per run). Each run's segment counts once wherever it was
/// written (its own row, or the job's latest row when the run's row could no longer be
/// addressed), its parts united by node; with several runs, each part is named
/// `<node>/run<k>` (k from 1, oldest first). `None` if no run has a record.
pub fn job_record(rows: &[&JobRow]) -> Option<Segment> {
    let mut runs: BTreeMap<Option<u64>, Segment> = BTreeMap::new();
    for row in rows {
        for (run, seg) in record::parse_all(&row.field) {
            match runs.get_mut(&run) {
                Some(have) => {
                    for (node, part) in seg.parts {
                        have.parts.entry(node).or_insert(part);
                    }
                }
                None => {
                    runs.insert(run, seg);
                }
            }
        }
    }
    if runs.len() <= 1 {
        return runs.into_values().next();
    }
    let mut all: Option<Segment> = None;
    for (k, seg) in runs.into_values().enumerate() {
        let named = seg.parts.into_values().map(|mut p| {
            p.node = format!("{}/run{}", p.node, k + 1);
            (p.node.clone(), p)
        });
        match &mut all {
            Some(a) => {
                a.meta.expected_nodes = a
                    .meta
                    .expected_nodes
                    .saturating_add(seg.meta.expected_nodes);
                a.parts.extend(named);
            }
            None => {
                all = Some(Segment {
                    meta: seg.meta,
                    parts: named.collect(),
                    compact: seg.compact,
                })
            }
        }
    }
    all
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
pub fn totals(input: impl Read, delim: &str, by: GroupBy) -> Result<Vec<Totals>, RowError> {
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    // (job, run, node) already counted: with `sacct -D` a run's part may stand in two
    // rows (its own, and the requeued job's latest).
    let mut counted: std::collections::BTreeSet<(u32, Option<u64>, String)> = Default::default();
    stream(input, delim, |row| {
        let key = match by {
            GroupBy::User => &row.user,
            GroupBy::Account => &row.account,
            GroupBy::Partition => &row.partition,
        };
        let t = groups.entry(key.clone()).or_insert_with(|| Totals {
            name: key.clone(),
            ..Totals::default()
        });
        // A requeued run's row is not another job, but its GPU time and energy count.
        if !row.requeued() {
            t.jobs = t.jobs.saturating_add(1);
        }
        t.gpu_hours += row.gpu_hours();
        let segments = record::parse_all(&row.field);
        if !segments.is_empty() && !row.requeued() {
            t.measured_jobs = t.measured_jobs.saturating_add(1);
        }
        for (run, seg) in segments {
            for part in seg.parts.into_values() {
                if run.is_some() && !counted.insert((row.job, run, part.node.clone())) {
                    continue;
                }
                t.gpu_wh += part.wh;
                t.co2e_g += part.co2e_g;
                t.embodied_g += part.embodied_g.unwrap_or(0.0);
            }
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
        stream(SACCT.as_bytes(), "|", |r| rows.push(r)).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].field.lines().count(), 2);
        assert_eq!(rows[1].record().unwrap().gpu_wh(), 1000.0);
        assert_eq!(rows[0].gpus, 2);
        assert_eq!(rows[0].gpu_hours(), 2.0);
        assert!(rows[2].record().is_none());
    }

    /// Job 20 was requeued once: run 1 (from 100) wrote node1's part into its own row, and
    /// node2's, later, into the latest row; run 2 (from 300) ran on node3.
    const REQUEUED: &str = "\
20|carol|research|gpu|REQUEUED|100|gres/gpu=2,node=2|node[1-2]|spank-carbon/1 run=100 gpu_wh=1 co2e_g=1 intensity=1 pue=1 gpus=1 nodes=1 of=2 method=counter node.node1=wh:1,gpus:1,co2e:1,m:counter,t:101-200
20|carol|research|gpu|COMPLETED|50|gres/gpu=1,node=1|node3|spank-carbon/1 run=100 gpu_wh=3 co2e_g=3 intensity=1 pue=1 gpus=2 nodes=2 of=2 method=counter node.node1=wh:1,gpus:1,co2e:1,m:counter,t:101-200 node.node2=wh:2,gpus:1,co2e:2,m:counter,t:101-200 spank-carbon/1 run=300 gpu_wh=4 co2e_g=4 intensity=1 pue=1 gpus=1 nodes=1 of=1 method=counter node.node3=wh:4,gpus:1,co2e:4,m:counter,t:301-350
";

    #[test]
    fn each_run_of_a_requeued_job_counts_once() {
        let t = totals(REQUEUED.as_bytes(), "|", GroupBy::User).unwrap();
        assert_eq!(t.len(), 1);
        // node1 stands in both rows and counts once: 1 + 2 + 4.
        assert_eq!(t[0].gpu_wh, 7.0);
        assert_eq!(t[0].co2e_g, 7.0);
        assert_eq!((t[0].jobs, t[0].measured_jobs), (1, 1));
        // Both runs' GPU time: 2 GPUs x 100 s + 1 GPU x 50 s.
        assert!((t[0].gpu_hours - 250.0 / 3600.0).abs() < 1e-12);
        let mut rows = Vec::new();
        stream(REQUEUED.as_bytes(), "|", |r| rows.push(r)).unwrap();
        let refs: Vec<&JobRow> = rows.iter().collect();
        let rec = job_record(&refs).unwrap();
        assert_eq!(rec.gpu_wh(), 7.0);
        assert_eq!(
            rec.parts.keys().collect::<Vec<_>>(),
            ["node1/run1", "node2/run1", "node3/run2"]
        );
        // One run: parts keep their names.
        let one = job_record(&refs[..1]).unwrap();
        assert_eq!(one.parts.keys().collect::<Vec<_>>(), ["node1"]);
    }

    #[test]
    fn totals_per_group_sorted_by_co2e() {
        let t = totals(SACCT.as_bytes(), "|", GroupBy::User).unwrap();
        assert_eq!(t[0].name, "bob");
        assert_eq!(t[0].co2e_g, 750.0);
        assert_eq!(t[0].embodied_g, 20.0);
        assert_eq!(t[1].name, "alice");
        assert_eq!(t[1].jobs, 2);
        assert_eq!(t[1].measured_jobs, 1);
        assert_eq!(t[1].gpu_hours, 2.0);
        let p = totals(SACCT.as_bytes(), "|", GroupBy::Partition).unwrap();
        assert_eq!(
            p.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["gpu", "cpu"]
        );
    }

    #[test]
    fn a_comment_cannot_forge_jobs() {
        let d = sacct_rows::nonce().unwrap();
        // Mallory's own Comment (field=job) holds whole rows in the default format that
        // would charge bob's account, with newlines and guessed delimiters.
        let fake = "66|bob|heavy|gpu|COMPLETED|3600|gres/gpu=8|node9|spank-carbon/1 gpu_wh=1e9 \
                    co2e_g=1e9 intensity=475 pue=1.58 gpus=8 nodes=1 of=1 \
                    node.node9=wh:1e9,gpus:8,co2e:1e9,m:counter,t:1-3601";
        let comment = format!("hi\n{fake}\n{}\n{fake}|x", fake.replace('|', "|0000"));
        let text = format!(
            "{}13{d}mallory{d}evil{d}gpu{d}COMPLETED{d}60{d}cpu=1{d}node4{d}{comment}\n",
            SACCT.replace('|', &d)
        );
        let mut rows = Vec::new();
        stream(text.as_bytes(), &d, |r| rows.push(r)).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.job).collect::<Vec<_>>(),
            [10, 11, 12, 13]
        );
        assert_eq!(rows[3].field, comment);
        let t = totals(text.as_bytes(), &d, GroupBy::Account).unwrap();
        let heavy = t.iter().find(|t| t.name == "heavy").unwrap();
        assert_eq!((heavy.jobs, heavy.co2e_g), (1, 750.0));
    }

    #[test]
    fn rows_that_are_not_jobs_are_errors() {
        let e = totals("x|u|a|p|S|1|t|n|c\n".as_bytes(), "|", GroupBy::User).unwrap_err();
        assert_eq!(e.to_string(), "sacct row 1: JobIDRaw `x` is not a job id");
        let e = totals("1|u|a|p|S|-1|t|n|c\n".as_bytes(), "|", GroupBy::User).unwrap_err();
        assert!(e.to_string().contains("ElapsedRaw `-1`"), "{e}");
    }

    /// A site without `gres/gpu` in AccountingStorageTRES: AllocTRES has no GPU, and the
    /// row's record gives the count (GPU-equivalents where boards were shared); with
    /// `gres/gpu` there, the TRES count as always, whatever the record says.
    #[test]
    fn gpu_count_from_the_record_where_alloc_tres_has_none() {
        let rec = "spank-carbon/1 gpu_wh=3 co2e_g=2 intensity=475 pue=1.58 gpus=3 nodes=2 of=2 \
                   method=counter node.n1=wh:1,gpus:1,co2e:1,m:counter,t:1-3601 \
                   node.n2=wh:2,gpus:2,co2e:1,m:counter,t:1-3601";
        let shared = "spank-carbon/1 gpu_wh=1 co2e_g=1 intensity=475 pue=1.58 gpus=1 nodes=1 of=1 \
                      method=counter node.n1=wh:1,gpus:1,co2e:1,m:counter,t:1-3601,sh:shard_0.25";
        let text = format!(
            "1|u|a|p|COMPLETED|3600|cpu=2,gres/gpu=4,node=2|n[1-2]|{rec}\n\
             2|u|a|p|COMPLETED|3600|cpu=2,node=2|n[1-2]|{rec}\n\
             3|u|a|p|COMPLETED|3600|cpu=2,node=1|n1|\n\
             4|u|a|p|COMPLETED|3600|cpu=2,gres/gpu:a100=2,gres/gpu:h100=1,gres/gpumem=80G|n1|{rec}\n\
             5|u|a|p|COMPLETED|3600|cpu=2,gres/shard=2,node=1|n1|{shared}\n\
             6|u|a|p|COMPLETED|3600|gres/gpu=0|n1|{rec}\n"
        );
        let rows = rows(text.as_bytes(), "|").unwrap();
        let got: Vec<(u32, GpusFrom, f64)> = rows
            .iter()
            .map(|r| (r.gpus, r.gpus_from, r.gpu_hours()))
            .collect();
        assert_eq!(
            got,
            [
                (4, GpusFrom::Tres, 4.0),
                (3, GpusFrom::Record, 3.0),
                (0, GpusFrom::Nothing, 0.0),
                (3, GpusFrom::TypedTres, 3.0),
                (1, GpusFrom::Record, 0.25),
                (0, GpusFrom::Tres, 0.0),
            ]
        );
        assert!(rows[4].tres.shared_only() && rows[4].tres.any());
        assert!(!rows[1].tres.any() && !rows[5].tres.any());
        // The totals count them: 4 + 3 + 0 + 3 + 0.25 + 0 GPU-hours.
        let t = totals(text.as_bytes(), "|", GroupBy::User).unwrap();
        assert_eq!(t[0].gpu_hours, 10.25);
        // A requeued job's latest row holding both runs: its own (newest) run's GPUs.
        let both = REQUEUED.lines().nth(1).unwrap().replace("gres/gpu=1,", "");
        let row = &super::rows(format!("{both}\n").as_bytes(), "|").unwrap()[0];
        assert_eq!((row.gpus, row.gpus_from), (1, GpusFrom::Record));
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
