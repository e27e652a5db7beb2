//! `spank-carbon tres`: jobs whose energy TRES differs from their record (Slurm 25.11+);
//! `--fix` writes the record's value back (see `spank_carbon::accounting::tres_audit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use spank_carbon::accounting::tres_audit::{self as tres, refusal};
use spank_carbon::accounting::{Policy, SlurmTools};
use spank_carbon::core::config::{EnergyTres, Field};
use spank_carbon::slurm::Differences;

use super::{config_on, operator_node};

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
    /// The comment field the plugin writes to (default: the configuration's `field`).
    #[arg(long, value_parser = ["system", "admin", "job"])]
    field: Option<String>,
    /// Slurm's sacct.
    #[arg(long, default_value = "/usr/bin/sacct")]
    sacct: PathBuf,
    /// Slurm's sacctmgr.
    #[arg(long, default_value = "/usr/bin/sacctmgr")]
    sacctmgr: PathBuf,
    /// The plugin's plugstack.conf arguments (key=value; e.g.
    /// config=/etc/spank-carbon/spank-carbon.toml), for `energy_tres` and `field`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(a: Args) -> ExitCode {
    let diffs = Differences::built();
    if let Some(why) = refusal(&diffs) {
        eprintln!("spank-carbon tres: {why}");
        return ExitCode::from(2);
    }
    let config = match config_on(&a.args, operator_node(None)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let field = match a.field.as_deref() {
        Some("admin") => Field::Admin,
        Some("job") => Field::Job,
        Some(_) => Field::System,
        None => config.field,
    };
    if config.energy_tres == EnergyTres::Off {
        println!("energy_tres=off: the courier does not set the energy TRES; nothing to check");
        return ExitCode::SUCCESS;
    }
    // Decided once, from slurm.conf: whether Slurm measures energy itself.
    let policy = Policy {
        diffs,
        energy: config.energy_tres,
        slurm_energy: spank_carbon::slurm::gres::slurm_measures_energy(),
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
    let mismatches = match tres::mismatches(&a.sacct, &args, &policy) {
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
            "{:<14} {:<12} {:<11} {:>14} {:>14}{}",
            m.id,
            m.user,
            m.state,
            m.record_j,
            m.tres_j.map_or("-".into(), |j| j.to_string()),
            if m.kept {
                "  kept: may be Slurm's own"
            } else {
                ""
            }
        );
    }
    let (kept, wrong): (Vec<_>, Vec<_>) = mismatches.iter().partition(|m| m.kept);
    println!(
        "{} job(s) whose energy TRES is not their record's",
        wrong.len()
    );
    if !kept.is_empty() {
        println!(
            "{} job(s) kept: Slurm measures energy itself (AcctGatherEnergyType), so a value that is not the record's may be its own (energy_tres=overwrite replaces it)",
            kept.len()
        );
    }
    if !a.fix || wrong.is_empty() {
        return if wrong.is_empty() {
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
    for m in wrong {
        match tres::fix(&tools, m, field) {
            // To standard error: the journal, under the packaged timer.
            Ok(()) => eprintln!("spank-carbon tres: {}", tres::restored_line(m)),
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
