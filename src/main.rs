//! `spank-carbon`: the sampler the plugin starts, record delivery, and tools.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cli;

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
    Deliver(cli::deliver::Args),
    /// List this node's records that wait for delivery, with the reason each is not
    /// delivered yet (a job that never ended in accounting, a field that cannot be
    /// rewritten, accounting down).
    Pending(cli::pending::Args),
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
    Report(cli::report::Args),
    /// Energy-aware fair-share: scale accounts' shares by the CO2e budget they have
    /// left (dry run unless --apply; --restore puts the operator's shares back).
    Fairshare(cli::fairshare::Args),
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
        Cmd::Deliver(a) => cli::deliver::run(a),
        Cmd::Pending(a) => cli::pending::run(a),
        Cmd::Measure {
            interval_ms,
            seconds,
            json,
            set,
            command,
        } => cli::measure::run(interval_ms, seconds, json, &set, &command),
        Cmd::Report(a) => cli::report::run(a),
        Cmd::Fairshare(o) => cli::fairshare::run(o),
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
