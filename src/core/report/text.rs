//! What `spank-carbon report` prints: one job's page (text, JSON or CSV, a row per node)
//! and the totals' table or CSV.

use std::fmt::Write as _;

use super::{everyday, mass, GroupBy, JobRow, Totals};
use crate::core::config::Field;
use crate::record::{num, Segment};
use crate::slurm::hostlist;

/// One job's rows among sacct's (`-D`, oldest first): its latest run's, and the requeued
/// runs' just before it (an older row that was not requeued is another job that had the
/// id). `None` if the job has no row.
pub fn own_runs(job: u32, rows: &[JobRow]) -> Option<Vec<&JobRow>> {
    let all: Vec<&JobRow> = rows.iter().filter(|r| r.job == job).collect();
    all.last()?;
    let earlier = all[..all.len() - 1]
        .iter()
        .rev()
        .take_while(|r| r.requeued())
        .count();
    Some(all[all.len() - 1 - earlier..].to_vec())
}

/// The job's page as JSON: `row` is its latest run's, `seg` its record over every run.
pub fn job_json(row: &JobRow, seg: Option<&Segment>) -> serde_json::Value {
    let nodes: Vec<_> = seg
        .iter()
        .flat_map(|s| s.parts.values())
        .map(|p| {
            serde_json::json!({
                "node": p.node, "gpus": p.gpus, "gpu_wh": p.wh, "co2e_g": p.co2e_g,
                "method": p.method.as_str(), "avg_w": avg_w(p.wh, p.start, p.end),
                "peak_w": p.peak_w, "coverage": p.coverage, "flags": p.flags,
                "intensity_source": p.intensity_src, "embodied_g": p.embodied_g,
                "start": p.start, "end": p.end,
            })
        })
        .collect();
    serde_json::json!({
        "job": row.job, "user": row.user, "account": row.account,
        "partition": row.partition, "state": row.state, "elapsed_s": row.elapsed_s,
        "gpus_allocated": row.gpus,
        "gpu_wh": seg.map(|s| s.gpu_wh()),
        "co2e_g": seg.map(|s| s.co2e_g()),
        "embodied_g": seg.and_then(|s| s.embodied_g()),
        "intensity": seg.map(|s| s.shown_intensity()),
        "pue": seg.map(|s| s.meta.pue),
        "method": seg.and_then(|s| s.method()).map(|m| m.as_str()),
        "compact_record": seg.map(|s| s.compact),
        "nodes": nodes,
    })
}

/// The job's record as CSV, a line per node.
pub fn job_csv(job: u32, seg: Option<&Segment>) -> String {
    let mut out = String::from("job,node,gpus,gpu_wh,co2e_g,method,avg_w,peak_w,coverage,flags\n");
    for p in seg.iter().flat_map(|s| s.parts.values()) {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            job,
            p.node,
            p.gpus,
            num(p.wh, 4),
            num(p.co2e_g, 4),
            p.method.as_str(),
            avg_w(p.wh, p.start, p.end).map_or(String::new(), |w| num(w, 1)),
            p.peak_w.map_or(String::new(), |w| num(w, 1)),
            p.coverage.map_or(String::new(), |c| num(c, 3)),
            p.flags.join("+")
        );
    }
    out
}

/// The job's page, like seff: `own` its runs' rows (see [`own_runs`]), `seg` its record
/// over them, read from `field`.
pub fn job_page(own: &[&JobRow], seg: Option<&Segment>, field: Field, imperial: bool) -> String {
    let mut out = String::new();
    let Some(row) = own.last() else {
        return out;
    };
    let _ = writeln!(
        out,
        "Job ID: {}   User: {}   Account: {}   Partition: {}   State: {}",
        row.job, row.user, row.account, row.partition, row.state
    );
    let _ = writeln!(
        out,
        "Elapsed: {}   GPUs allocated: {}   GPU-hours: {}",
        hms(row.elapsed_s),
        row.gpus,
        num(row.gpu_hours(), 3)
    );
    if own.len() > 1 {
        let _ = writeln!(
            out,
            "Runs: {} (requeued {} time(s)); energy and CO2e below are of every run, the table's nodes say which",
            own.len(),
            own.len() - 1
        );
    }
    let Some(seg) = seg else {
        let _ = writeln!(
            out,
            "No spank-carbon record in {} for this job.",
            field.slurm_name()
        );
        return out;
    };
    let _ = writeln!(
        out,
        "GPU energy: {} Wh   CO2e: {} (intensity {} gCO2e/kWh x PUE {})   Method: {}",
        num(seg.gpu_wh(), 4),
        mass(seg.co2e_g(), imperial),
        num(seg.shown_intensity(), 1),
        num(seg.meta.pue, 3),
        seg.method().map_or("-", |m| m.as_str())
    );
    if let Some(e) = seg.embodied_g() {
        let _ = writeln!(
            out,
            "Embodied emissions of the GPUs' allocation (not included above): {}",
            mass(e, imperial)
        );
    }
    if (seg.parts.len() as u64) < u64::from(seg.meta.expected_nodes) {
        let _ = writeln!(
            out,
            "Note: {} of the job's {} nodes reported a measurement.",
            seg.parts.len(),
            seg.meta.expected_nodes
        );
    }
    out.push('\n');
    out.push_str(&node_table(seg));
    out.push('\n');
    out.push_str("In everyday terms (Strubell et al., ACL 2019), this job's CO2e is\n");
    for line in everyday(seg.co2e_g(), imperial) {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// The per-node table of one job's record, in host-list order.
pub fn node_table(seg: &Segment) -> String {
    let mut parts: Vec<_> = seg.parts.values().collect();
    parts.sort_by(|a, b| hostlist::natural_cmp(&a.node, &b.node));
    let w = parts
        .iter()
        .map(|p| p.node.len())
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = String::new();
    if seg.compact {
        out.push_str(
            "(compact record of a big job: each node's average is over its window's length, \
             to 0.1 s; peak and coverage are in the nodes' local records)\n",
        );
    }
    let _ = writeln!(
        out,
        "{:<w$} {:>4} {:>12} {:>10} {:>8} {:>8} {:>8} {:>6}  flags",
        "node", "gpus", "energy Wh", "CO2e g", "avg W", "peak W", "method", "cover"
    );
    for p in parts {
        let _ = writeln!(
            out,
            "{:<w$} {:>4} {:>12} {:>10} {:>8} {:>8} {:>8} {:>6}  {}",
            p.node,
            p.gpus,
            num(p.wh, 4),
            num(p.co2e_g, 4),
            avg_w(p.wh, p.start, p.end).map_or("-".into(), |w| num(w, 1)),
            p.peak_w.map_or("-".into(), |w| num(w, 1)),
            p.method.as_str(),
            p.coverage.map_or("-".into(), |c| num(c, 3)),
            p.flags.join(",")
        );
    }
    out
}

fn avg_w(wh: f64, start: f64, end: f64) -> Option<f64> {
    (end > start).then(|| wh * 3600.0 / (end - start))
}

fn hms(s: u64) -> String {
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn label(by: GroupBy) -> &'static str {
    match by {
        GroupBy::User => "user",
        GroupBy::Account => "account",
        GroupBy::Partition => "partition",
    }
}

/// The totals as CSV, a line per group.
pub fn totals_csv(by: GroupBy, t: &[Totals]) -> String {
    let mut out = format!(
        "{},jobs,measured_jobs,gpu_hours,gpu_kwh,co2e_kg,embodied_kg\n",
        label(by)
    );
    for r in t {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            r.name,
            r.jobs,
            r.measured_jobs,
            num(r.gpu_hours, 3),
            num(r.gpu_wh / 1000.0, 6),
            num(r.co2e_g / 1000.0, 6),
            num(r.embodied_g / 1000.0, 6)
        );
    }
    out
}

/// The totals' table, a row per group and a last row of their sum.
pub fn totals_table(by: GroupBy, t: &[Totals], imperial: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>9} {:>10} {:>12} {:>12} {:>12}",
        label(by),
        "jobs",
        "measured",
        "GPU-hours",
        "energy kWh",
        "CO2e",
        "embodied"
    );
    let mut row = |r: &Totals| {
        let embodied = if r.embodied_g > 0.0 {
            mass(r.embodied_g, imperial)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9} {:>10} {:>12} {:>12} {:>12}",
            r.name,
            r.jobs,
            r.measured_jobs,
            num(r.gpu_hours, 2),
            num(r.gpu_wh / 1000.0, 4),
            mass(r.co2e_g, imperial),
            embodied
        );
    };
    let mut sum = Totals {
        name: "total".into(),
        ..Totals::default()
    };
    for r in t {
        row(r);
        sum.jobs = sum.jobs.saturating_add(r.jobs);
        sum.measured_jobs = sum.measured_jobs.saturating_add(r.measured_jobs);
        sum.gpu_hours += r.gpu_hours;
        sum.gpu_wh += r.gpu_wh;
        sum.co2e_g += r.co2e_g;
        sum.embodied_g += r.embodied_g;
    }
    row(&sum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{self, Meta, Method, NodePart};
    use crate::units::GramsPerKwh;

    fn part(i: u32, seconds: f64) -> NodePart {
        let window = (1_800_000_000.0, 1_800_000_000.0 + seconds);
        NodePart {
            coverage: Some(1.0),
            flags: if i == 7 { vec!["reset".into()] } else { vec![] },
            peak_w: Some(7300.0),
            intensity_src: Some("fixed".into()),
            ..NodePart::new(
                format!("gpu{i}"),
                2.0 * seconds,
                4,
                1.5 * seconds,
                Method::Counter,
                window,
            )
        }
        .rounded()
    }

    #[test]
    fn node_table_of_a_compact_record() {
        let meta = Meta {
            intensity: GramsPerKwh(475.0),
            pue: 1.58,
            expected_nodes: 40,
        };
        // Node i runs 3600 + i seconds: 2 Wh a second is 7200 W whatever the length.
        let field = (1..=40).fold(String::new(), |f, i| {
            record::merge(&f, &part(i, 3600.0 + f64::from(i)), &meta, None)
        });
        let seg = record::parse(&field).unwrap();
        assert!(seg.compact);
        let table = node_table(&seg);
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("gpu")).collect();
        assert_eq!(rows.len(), 40, "{table}");
        // Host-list order (gpu2 before gpu10), and every node's own average power.
        assert!(rows[1].starts_with("gpu2 ") && rows[9].starts_with("gpu10 "));
        for row in &rows {
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols[4], "7200", "{row}");
            assert_eq!(cols[5], "-", "{row}");
        }
        assert!(rows[6].ends_with("  reset"), "{}", rows[6]);
        assert!(table.starts_with("(compact record"));
        // A small job's table has no such note and keeps its peaks.
        let small = record::parse(&record::merge(
            "",
            &part(1, 60.0),
            &Meta {
                expected_nodes: 1,
                ..meta
            },
            None,
        ))
        .unwrap();
        let table = node_table(&small);
        assert!(
            !table.contains("compact") && table.contains(" 7300 "),
            "{table}"
        );
    }
}
