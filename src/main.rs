//! `spank-carbon`: the sampler the plugin starts, record delivery, and tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cli;

use spank_carbon::core::config::Config;
use spank_carbon::logging::{self};
use spank_carbon::node::state::{JobKey, StateDir};

#[derive(Parser)]
#[command(
    name = "spank-carbon",
    version,
    about = "GPU energy and CO2e of Slurm jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
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

#[derive(Subcommand)]
enum Cmd {
    /// Sample a job's GPUs until stopped (started by the plugin's prolog).
    Sample {
        /// <job>.<node>
        #[arg(long)]
        key: String,
        /// Device minor numbers of the job's GPUs, comma-separated.
        #[arg(long, value_delimiter = ',')]
        minors: Vec<u32>,
        /// The prolog's selection of the job's GPUs (UUIDs, minors, MIG instances,
        /// NVML positions, with the job's share; see gpu_map::format_selection), or
        /// `ask:...` (gres/shard or several GPU types: the sampler asks slurmctld).
        /// Overrides --minors.
        #[arg(long)]
        gpus: Option<String>,
        /// The plugin's plugstack.conf arguments (key=value).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write records waiting in the state directory into the accounting database.
    Deliver {
        /// Deliver only this job's records on this node (<job>.<node>, or
        /// <job>.<node>@<run> for one run's; `spank-carbon pending` lists them); default:
        /// every pending record.
        #[arg(long)]
        key: Option<String>,
        /// Log to standard error instead of the state directory's log file.
        #[arg(long)]
        foreground: bool,
        /// The node whose records to deliver, for `%n` in state_dir (default:
        /// SLURMD_NODENAME, else the short host name).
        #[arg(long)]
        node: Option<String>,
        /// The plugin's plugstack.conf arguments (key=value).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List this node's records that wait for delivery, with the reason each is not
    /// delivered yet (a job that never ended in accounting, a field that cannot be
    /// rewritten, accounting down).
    Pending {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The node whose records to list, for `%n` in state_dir (default:
        /// SLURMD_NODENAME, else the short host name).
        #[arg(long)]
        node: Option<String>,
        /// The plugin's plugstack.conf arguments (key=value), for its state_dir.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command (or wait --seconds) and measure the energy of this host's GPUs with
    /// the plugin's counter and sampler code; prints energy and CO2e.
    Measure {
        /// Power sampling interval.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Measure for this long instead of running a command.
        #[arg(long)]
        seconds: Option<f64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A configuration key (intensity, pue, nvml_lib, config...), as in plugstack.conf.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The command to run.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Energy and CO2e from accounting: one job (-j), or totals per user, account or
    /// partition over a time range (-S/-E, as sacct).
    Report {
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
    },
    /// Energy-aware fair-share: scale accounts' shares by the CO2e budget they have
    /// left (dry run unless --apply; --restore puts the operator's shares back).
    Fairshare {
        /// The policy file (TOML: half_life_days, lookback_days, floor, state, field,
        /// sacct_timeout_s and a [budget_kg] table of accounts).
        #[arg(long, default_value = "/etc/spank-carbon/fairshare.toml")]
        config: PathBuf,
        /// Set the planned shares (without it: print the plan only).
        #[arg(long, conflicts_with = "restore")]
        apply: bool,
        /// Put the operator's shares back.
        #[arg(long)]
        restore: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Slurm's sacct.
        #[arg(long, default_value = "/usr/bin/sacct")]
        sacct: PathBuf,
        /// Slurm's sacctmgr.
        #[arg(long, default_value = "/usr/bin/sacctmgr")]
        sacctmgr: PathBuf,
    },
    /// Check this node's setup (Slurm version, slurm.conf, plugstack.conf, GPUs, state
    /// directory, accounting): one line per item, with the fix; fails on any error.
    Check(cli::check::Options),
    /// Print the Slurm version this build targets.
    SlurmVersion,
    /// Jobs whose energy TRES differs from their record (Slurm 25.11+); --fix writes it back.
    Tres(cli::tres::Args),
    /// Write this node's Prometheus textfile (node_exporter's textfile collector).
    Metrics(cli::metrics::Args),
    /// Slurm's MailProg wrapper: adds the job's GPU footprint to its end mail, then runs
    /// mail_prog (also run as `spank-carbon-mail`, a link to this program).
    Mail(cli::mail::Args),
    /// Write the man pages, the example configuration and the shell completions
    /// (scripts/package.sh).
    #[command(hide = true)]
    Docs(cli::docs::Options),
}

fn main() -> ExitCode {
    if let Some(code) = cli::mail::multicall() {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sample {
            key,
            minors,
            gpus,
            args,
        } => cli::sample::sample(&key, &minors, gpus.as_deref(), &args),
        Cmd::Deliver {
            key,
            foreground,
            node,
            args,
        } => deliver(key.as_deref(), foreground, node.as_deref(), &args),
        Cmd::Pending { json, node, args } => match config_on(&args, operator_node(node.as_deref()))
        {
            Ok(config) => cli::pending::run(&config, json),
            Err(code) => code,
        },
        Cmd::Measure {
            interval_ms,
            seconds,
            json,
            set,
            command,
        } => cli::measure::run(interval_ms, seconds, json, &set, &command),
        Cmd::Report {
            job,
            by,
            starttime,
            endtime,
            json,
            csv,
            field,
            sacct,
            sacct_output,
        } => cli::report::run(cli::report::Options {
            job,
            by: by.map(|b| match b {
                By::User => spank_carbon::core::report::GroupBy::User,
                By::Account => spank_carbon::core::report::GroupBy::Account,
                By::Partition => spank_carbon::core::report::GroupBy::Partition,
            }),
            starttime,
            endtime,
            json,
            csv,
            field: match field {
                FieldArg::System => spank_carbon::core::config::Field::System,
                FieldArg::Admin => spank_carbon::core::config::Field::Admin,
                FieldArg::Job => spank_carbon::core::config::Field::Job,
            },
            sacct,
            sacct_output,
        }),
        Cmd::Fairshare {
            config,
            apply,
            restore,
            json,
            sacct,
            sacctmgr,
        } => cli::fairshare::run(cli::fairshare::Options {
            config,
            apply,
            restore,
            json,
            sacct,
            sacctmgr,
        }),
        Cmd::Check(options) => cli::check::run(options),
        Cmd::Tres(a) => cli::tres::run(a),
        Cmd::Metrics(a) => cli::metrics::run(a),
        Cmd::Mail(a) => cli::mail::run(a),
        Cmd::Docs(o) => cli::docs::run(&Cli::command(), o),
        Cmd::SlurmVersion => {
            println!("{}", spank_carbon::SLURM_VERSION);
            ExitCode::SUCCESS
        }
    }
}

/// The configuration of the node slurmd names in SLURMD_NODENAME (the sampler and the
/// courier the plugin starts get it), for `%n` in state_dir.
pub(crate) fn config_or_exit(args: &[String]) -> Result<Config, ExitCode> {
    config_on(args, std::env::var("SLURMD_NODENAME").ok())
}

fn config_on(args: &[String], node: Option<String>) -> Result<Config, ExitCode> {
    Config::from_args_on(args, node.as_deref()).map_err(|e| {
        eprintln!("spank-carbon: configuration: {e}");
        ExitCode::from(2)
    })
}

/// The node an operator's command acts for: `--node`, else SLURMD_NODENAME, else the
/// short host name.
fn operator_node(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("SLURMD_NODENAME").ok())
        .or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
            let short = host.trim().split('.').next()?.to_string();
            (!short.is_empty()).then_some(short)
        })
}

/// Logs of the detached processes go to `<state_dir>/spank-carbon.log`.
pub(crate) fn log_to_state_dir(config: &Config) {
    let path = config
        .state_dir
        .join(spank_carbon::node::retention::LOG_NAME);
    match spank_carbon::node::retention::LogFile::open(&path) {
        Ok(f) => logging::init_writer(Box::new(f), log::LevelFilter::Info),
        Err(_) => logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info),
    }
}

fn deliver(key: Option<&str>, foreground: bool, node: Option<&str>, args: &[String]) -> ExitCode {
    if !foreground {
        // Background work: let the job and Slurm's daemons go first.
        let _ = rustix::process::setpriority_process(None, 19);
    }
    let config = match config_on(args, operator_node(node)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if foreground {
        logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info);
    } else {
        log_to_state_dir(&config);
    }
    let state = match StateDir::existing(&config.state_dir) {
        Ok(Some(state)) => state,
        Ok(None) => {
            log::info!(
                "nothing to deliver: no state directory {}",
                config.state_dir.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            log::error!("deliver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let only = match key.map(JobKey::parse) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            log::error!("deliver: {e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    if spank_carbon::node::courier::courier(&state, &config, only.as_ref(), foreground) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
