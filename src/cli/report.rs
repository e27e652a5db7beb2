//! `spank-carbon report`: one job like seff, or totals per user, account or partition.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use spank_carbon::core::config::Field;
use spank_carbon::core::report::{self, text, GroupBy, JobRow, Totals};
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

/// Runs `read` over sacct's output (or a file's), streamed, with the delimiter that frames
/// its rows: a fresh nonce per sacct call; a file (tests, benchmarks) uses sacct's default
/// `|`. A failed sacct is an error, never an empty report.
fn with_sacct<T>(
    a: &Args,
    args: Vec<String>,
    read: impl FnOnce(&mut dyn Read, &str) -> Result<T, String>,
) -> Result<T, String> {
    if let Some(path) = &a.sacct_output {
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return read(&mut f, "|");
    }
    let call = SacctCall {
        sacct: &a.sacct,
        args: &args,
        timeout: None,
        clear_env: false,
    };
    sacct_rows::run_streamed(&call, read)
}

pub fn run(a: Args) -> ExitCode {
    let field = match a.field {
        FieldArg::System => Field::System,
        FieldArg::Admin => Field::Admin,
        FieldArg::Job => Field::Job,
    };
    let result = match a.job {
        Some(job) => with_sacct(&a, report::job_sacct_args(job, field), |r, delim| {
            report::rows(r, delim).map_err(|e| e.to_string())
        })
        .and_then(|rows| one_job(&a, field, job, rows)),
        None => {
            let args =
                report::range_sacct_args(a.starttime.as_deref(), a.endtime.as_deref(), field);
            let by = match a.by {
                None | Some(By::User) => GroupBy::User,
                Some(By::Account) => GroupBy::Account,
                Some(By::Partition) => GroupBy::Partition,
            };
            with_sacct(&a, args, |r, delim| {
                report::totals(r, delim, by).map_err(|e| e.to_string())
            })
            .and_then(|t| totals(&a, by, t))
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

fn one_job(a: &Args, field: Field, job: u32, rows: Vec<JobRow>) -> Result<(), String> {
    let own =
        text::own_runs(job, &rows).ok_or_else(|| format!("job {job} is not in accounting"))?;
    let seg = report::job_record(&own);
    if a.json {
        let row = own.last().expect("own_runs has the latest row");
        let out = text::job_json(row, seg.as_ref());
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else if a.csv {
        print!("{}", text::job_csv(job, seg.as_ref()));
    } else {
        let imperial = report::imperial_locale(|k| std::env::var(k).ok());
        print!("{}", text::job_page(&own, seg.as_ref(), field, imperial));
    }
    Ok(())
}

fn totals(a: &Args, by: GroupBy, t: Vec<Totals>) -> Result<(), String> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t).expect("json"));
    } else if a.csv {
        print!("{}", text::totals_csv(by, &t));
    } else {
        let imperial = report::imperial_locale(|k| std::env::var(k).ok());
        print!("{}", text::totals_table(by, &t, imperial));
    }
    Ok(())
}
