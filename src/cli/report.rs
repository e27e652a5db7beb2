//! `spank-carbon report`: one job like seff, or totals per user, account or partition.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use spank_carbon::core::config::Field;
use spank_carbon::core::report::{self, everyday, mass, GroupBy, JobRow, Totals, FIELDS};
use spank_carbon::record::{num, Segment};
use spank_carbon::slurm::hostlist;
use spank_carbon::slurm::sacct_rows::{self, SacctCall};

#[derive(clap::Args)]
pub struct Args {
    /// One job, like seff.
    #[arg(short = 'j', long)]
    job: Option<u32>,
    /// Totals per user (default), account or partition.
    #[arg(long, value_enum)]
    by: Option<By>,
    /// Start of the time range, as sacct's -S.
    #[arg(short = 'S', long)]
    starttime: Option<String>,
    /// End of the time range, as sacct's -E.
    #[arg(short = 'E', long)]
    endtime: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    csv: bool,
    /// The comment field the plugin writes to.
    #[arg(long, value_enum, default_value = "system")]
    field: FieldArg,
    /// Slurm's sacct.
    #[arg(long, default_value = "/usr/bin/sacct")]
    sacct: PathBuf,
    /// Read sacct's output from this file instead of running sacct (tests, benchmarks).
    #[arg(long, hide = true)]
    sacct_output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum By {
    User,
    Account,
    Partition,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FieldArg {
    System,
    Admin,
    Job,
}

struct Options {
    job: Option<u32>,
    by: Option<GroupBy>,
    starttime: Option<String>,
    endtime: Option<String>,
    json: bool,
    csv: bool,
    field: Field,
    sacct: PathBuf,
    sacct_output: Option<PathBuf>,
}

/// Runs `read` over sacct's output (or a file's), streamed, with the delimiter that frames
/// its rows: a fresh nonce per sacct call; a file (tests, benchmarks) uses sacct's default
/// `|`. A failed sacct is an error, never an empty report.
fn with_sacct<T>(
    o: &Options,
    args: Vec<String>,
    read: impl FnOnce(&mut dyn Read, &str) -> Result<T, String>,
) -> Result<T, String> {
    if let Some(path) = &o.sacct_output {
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return read(&mut f, "|");
    }
    let call = SacctCall {
        sacct: &o.sacct,
        args: &args,
        timeout: None,
        clear_env: false,
    };
    sacct_rows::run_streamed(&call, read)
}

pub fn run(a: Args) -> ExitCode {
    let o = Options {
        job: a.job,
        by: a.by.map(|b| match b {
            By::User => GroupBy::User,
            By::Account => GroupBy::Account,
            By::Partition => GroupBy::Partition,
        }),
        starttime: a.starttime,
        endtime: a.endtime,
        json: a.json,
        csv: a.csv,
        field: match a.field {
            FieldArg::System => Field::System,
            FieldArg::Admin => Field::Admin,
            FieldArg::Job => Field::Job,
        },
        sacct: a.sacct,
        sacct_output: a.sacct_output,
    };
    let format = format!("{FIELDS},{}", o.field.slurm_name());
    let result = match (o.job, o.by) {
        (Some(job), _) => {
            let args = vec![
                "-n".into(),
                "-D".into(),
                "-X".into(),
                "-j".into(),
                job.to_string(),
                "-o".into(),
                format,
            ];
            with_sacct(&o, args, |r, delim| {
                let mut rows: Vec<JobRow> = Vec::new();
                report::stream(r, delim, |row| rows.push(row)).map_err(|e| e.to_string())?;
                Ok(rows)
            })
            .and_then(|rows| one_job(&o, job, rows))
        }
        (None, by) => {
            let mut args: Vec<String> = vec!["-a".into(), "-n".into(), "-D".into(), "-X".into()];
            if let Some(s) = &o.starttime {
                args.extend(["-S".into(), s.clone()]);
            }
            if let Some(e) = &o.endtime {
                args.extend(["-E".into(), e.clone()]);
            }
            args.extend(["-o".into(), format]);
            let by = by.unwrap_or(GroupBy::User);
            with_sacct(&o, args, |r, delim| {
                report::totals(r, delim, by).map_err(|e| e.to_string())
            })
            .and_then(|t| totals(&o, by, t))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spank-carbon report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn one_job(o: &Options, job: u32, rows: Vec<JobRow>) -> Result<(), String> {
    // Every run's row (sacct -D, oldest first): the latest, and the requeued runs just
    // before it (an older row that was not requeued is another job that had the id).
    let all: Vec<&JobRow> = rows.iter().filter(|r| r.job == job).collect();
    let row = *all
        .last()
        .ok_or_else(|| format!("job {job} is not in accounting"))?;
    let earlier = all[..all.len() - 1]
        .iter()
        .rev()
        .take_while(|r| r.requeued())
        .count();
    let own: Vec<&JobRow> = all[all.len() - 1 - earlier..].to_vec();
    let seg = report::job_record(&own);
    let imperial = report::imperial_locale(|k| std::env::var(k).ok());
    if o.json {
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
        let out = serde_json::json!({
            "job": row.job, "user": row.user, "account": row.account,
            "partition": row.partition, "state": row.state, "elapsed_s": row.elapsed_s,
            "gpus_allocated": row.gpus,
            "gpu_wh": seg.as_ref().map(|s| s.gpu_wh()),
            "co2e_g": seg.as_ref().map(|s| s.co2e_g()),
            "embodied_g": seg.as_ref().and_then(|s| s.embodied_g()),
            "intensity": seg.as_ref().map(|s| s.shown_intensity()),
            "pue": seg.as_ref().map(|s| s.meta.pue),
            "method": seg.as_ref().and_then(|s| s.method()).map(|m| m.as_str()),
            "compact_record": seg.as_ref().map(|s| s.compact),
            "nodes": nodes,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    if o.csv {
        println!("job,node,gpus,gpu_wh,co2e_g,method,avg_w,peak_w,coverage,flags");
        for p in seg.iter().flat_map(|s| s.parts.values()) {
            println!(
                "{},{},{},{},{},{},{},{},{},{}",
                row.job,
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
        return Ok(());
    }
    println!(
        "Job ID: {}   User: {}   Account: {}   Partition: {}   State: {}",
        row.job, row.user, row.account, row.partition, row.state
    );
    println!(
        "Elapsed: {}   GPUs allocated: {}   GPU-hours: {}",
        hms(row.elapsed_s),
        row.gpus,
        num(row.gpu_hours(), 3)
    );
    if own.len() > 1 {
        println!(
            "Runs: {} (requeued {} time(s)); energy and CO2e below are of every run, the table's nodes say which",
            own.len(),
            own.len() - 1
        );
    }
    let Some(seg) = seg else {
        println!(
            "No spank-carbon record in {} for this job.",
            o.field.slurm_name()
        );
        return Ok(());
    };
    println!(
        "GPU energy: {} Wh   CO2e: {} (intensity {} gCO2e/kWh x PUE {})   Method: {}",
        num(seg.gpu_wh(), 4),
        mass(seg.co2e_g(), imperial),
        num(seg.shown_intensity(), 1),
        num(seg.meta.pue, 3),
        seg.method().map_or("-", |m| m.as_str())
    );
    if let Some(e) = seg.embodied_g() {
        println!(
            "Embodied emissions of the GPUs' allocation (not included above): {}",
            mass(e, imperial)
        );
    }
    if (seg.parts.len() as u64) < u64::from(seg.meta.expected_nodes) {
        println!(
            "Note: {} of the job's {} nodes reported a measurement.",
            seg.parts.len(),
            seg.meta.expected_nodes
        );
    }
    println!();
    print!("{}", node_table(&seg));
    println!();
    println!("In everyday terms (Strubell et al., ACL 2019), this job's CO2e is");
    for line in everyday(seg.co2e_g(), imperial) {
        println!("  {line}");
    }
    Ok(())
}

/// The per-node table of one job's record, in host-list order.
fn node_table(seg: &Segment) -> String {
    use std::fmt::Write as _;
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

fn totals(o: &Options, by: GroupBy, t: Vec<Totals>) -> Result<(), String> {
    let label = match by {
        GroupBy::User => "user",
        GroupBy::Account => "account",
        GroupBy::Partition => "partition",
    };
    if o.json {
        println!("{}", serde_json::to_string_pretty(&t).expect("json"));
        return Ok(());
    }
    if o.csv {
        println!("{label},jobs,measured_jobs,gpu_hours,gpu_kwh,co2e_kg,embodied_kg");
        for r in &t {
            println!(
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
        return Ok(());
    }
    let imperial = report::imperial_locale(|k| std::env::var(k).ok());
    println!(
        "{:<20} {:>8} {:>9} {:>10} {:>12} {:>12} {:>12}",
        label, "jobs", "measured", "GPU-hours", "energy kWh", "CO2e", "embodied"
    );
    let row = |r: &Totals| {
        let embodied = if r.embodied_g > 0.0 {
            mass(r.embodied_g, imperial)
        } else {
            "-".into()
        };
        println!(
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
    for r in &t {
        row(r);
        sum.jobs = sum.jobs.saturating_add(r.jobs);
        sum.measured_jobs = sum.measured_jobs.saturating_add(r.measured_jobs);
        sum.gpu_hours += r.gpu_hours;
        sum.gpu_wh += r.gpu_wh;
        sum.co2e_g += r.co2e_g;
        sum.embodied_g += r.embodied_g;
    }
    row(&sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spank_carbon::record::{self, Meta, Method, NodePart};
    use spank_carbon::units::GramsPerKwh;

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
