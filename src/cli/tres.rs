//! `spank-carbon tres`: jobs whose energy TRES differs from their record (Slurm 25.11+);
//! `--fix` writes the record's value back (see `spank_carbon::accounting::tres_audit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use spank_carbon::accounting::tres_audit::{self as tres, refusal};
use spank_carbon::accounting::SlurmTools;
use spank_carbon::core::config::Field;
use spank_carbon::slurm::Differences;

#[derive(clap::Args)]
pub struct Args {
    /// As sacct's -S (default: sacct's, today from midnight).
    #[arg(short = 'S', long)]
    starttime: Option<String>,
    /// As sacct's -E.
    #[arg(short = 'E', long)]
    endtime: Option<String>,
    /// Only this user's jobs (default: every user's, as far as sacct shows them).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Write each listed job's record energy back into its energy TRES (root).
    #[arg(long)]
    fix: bool,
    /// The comment field the plugin writes to.
    #[arg(long, default_value = "system", value_parser = ["system", "admin", "job"])]
    field: String,
    /// Slurm's sacct.
    #[arg(long, default_value = "/usr/bin/sacct")]
    sacct: PathBuf,
    /// Slurm's sacctmgr.
    #[arg(long, default_value = "/usr/bin/sacctmgr")]
    sacctmgr: PathBuf,
}

pub fn run(a: Args) -> ExitCode {
    let diffs = Differences::built();
    if let Some(why) = refusal(&diffs) {
        eprintln!("spank-carbon tres: {why}");
        return ExitCode::from(2);
    }
    let field = match a.field.as_str() {
        "admin" => Field::Admin,
        "job" => Field::Job,
        _ => Field::System,
    };
    // Start as unix seconds, to find the row's own segment (`run=`). Set before any
    // thread starts.
    std::env::set_var("SLURM_TIME_FORMAT", "%s");
    let args = tres::sacct_args(
        a.user.as_deref(),
        a.starttime.as_deref(),
        a.endtime.as_deref(),
        field,
    );
    let mismatches = match tres::mismatches(&a.sacct, &args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("spank-carbon tres: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{:<14} {:<12} {:<11} {:>14} {:>14}",
        "job", "user", "state", "record J", "energy TRES J"
    );
    for m in &mismatches {
        println!(
            "{:<14} {:<12} {:<11} {:>14} {:>14}",
            m.id,
            m.user,
            m.state,
            m.record_j,
            m.tres_j.map_or("-".into(), |j| j.to_string())
        );
    }
    println!(
        "{} job(s) whose energy TRES is not their record's",
        mismatches.len()
    );
    if !a.fix || mismatches.is_empty() {
        return if mismatches.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let tools = SlurmTools {
        sacct: a.sacct.clone(),
        sacctmgr: a.sacctmgr.clone(),
        squeue: PathBuf::from("/usr/bin/squeue"),
        timeout: Duration::from_secs(30),
        diffs,
    };
    let mut failed = 0;
    for m in &mismatches {
        match tres::fix(&tools, m, field) {
            Ok(()) => println!("job {}: energy TRES set to {} J", m.id, m.record_j),
            Err(e) => {
                failed += 1;
                eprintln!("spank-carbon tres: job {}: not fixed: {e}", m.id);
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
