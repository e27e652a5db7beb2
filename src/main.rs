//! `spank-carbon`: the sampler the plugin starts, record delivery, and tools.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod fairshare_cli;
mod measure;
mod report_cli;

use spank_carbon::accounting::{self, Delivery, SlurmTools, Timing};
use spank_carbon::config::Config;
use spank_carbon::gpu::NvmlHost;
use spank_carbon::logging::{self, chain};
use spank_carbon::sampler::{self, SamplerOptions, Stop};
use spank_carbon::state::{self, JobKey, StateDir};

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
        /// The plugin's plugstack.conf arguments (key=value).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write records waiting in the state directory into the accounting database.
    Deliver {
        /// Deliver only this record (<job>.<node>); default: every pending record.
        #[arg(long)]
        key: Option<String>,
        /// Log to standard error instead of the state directory's log file.
        #[arg(long)]
        foreground: bool,
        /// The plugin's plugstack.conf arguments (key=value).
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
        #[arg(short = 'S', long)]
        starttime: Option<String>,
        #[arg(short = 'E', long)]
        endtime: Option<String>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
        /// The comment field the plugin writes to.
        #[arg(long, value_enum, default_value = "system")]
        field: FieldArg,
        #[arg(long, default_value = "/usr/bin/sacct")]
        sacct: PathBuf,
        /// Read sacct's output from this file instead of running sacct (tests, benchmarks).
        #[arg(long, hide = true)]
        sacct_output: Option<PathBuf>,
    },
    /// Energy-aware fair-share: scale accounts' shares by the CO2e budget they have
    /// left (dry run unless --apply; --restore puts the operator's shares back).
    Fairshare {
        #[arg(long, default_value = "/etc/spank-carbon/fairshare.toml")]
        config: PathBuf,
        #[arg(long, conflicts_with = "restore")]
        apply: bool,
        #[arg(long)]
        restore: bool,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "/usr/bin/sacct")]
        sacct: PathBuf,
        #[arg(long, default_value = "/usr/bin/sacctmgr")]
        sacctmgr: PathBuf,
    },
    /// Print the Slurm version this build targets.
    SlurmVersion,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sample { key, minors, args } => sample(&key, &minors, &args),
        Cmd::Deliver {
            key,
            foreground,
            args,
        } => deliver(key.as_deref(), foreground, &args),
        Cmd::Measure {
            interval_ms,
            seconds,
            json,
            set,
            command,
        } => measure::run(interval_ms, seconds, json, &set, &command),
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
        } => report_cli::run(report_cli::Options {
            job,
            by: by.map(|b| match b {
                By::User => spank_carbon::report::GroupBy::User,
                By::Account => spank_carbon::report::GroupBy::Account,
                By::Partition => spank_carbon::report::GroupBy::Partition,
            }),
            starttime,
            endtime,
            json,
            csv,
            field: match field {
                FieldArg::System => spank_carbon::config::Field::System,
                FieldArg::Admin => spank_carbon::config::Field::Admin,
                FieldArg::Job => spank_carbon::config::Field::Job,
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
        } => fairshare_cli::run(fairshare_cli::Options {
            config,
            apply,
            restore,
            json,
            sacct,
            sacctmgr,
        }),
        Cmd::SlurmVersion => {
            println!("{}", spank_carbon::SLURM_VERSION);
            ExitCode::SUCCESS
        }
    }
}

fn config_or_exit(args: &[String]) -> Result<Config, ExitCode> {
    Config::from_args(args).map_err(|e| {
        eprintln!("spank-carbon: configuration: {e}");
        ExitCode::from(2)
    })
}

/// Logs of the detached processes go to `<state_dir>/spank-carbon.log`.
fn log_to_state_dir(config: &Config) {
    let path = config.state_dir.join("spank-carbon.log");
    match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => logging::init_writer(Box::new(f), log::LevelFilter::Info),
        Err(_) => logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info),
    }
}

/// Stops on SIGTERM/SIGINT (through a self-pipe, so waiting costs no wake-ups) or when
/// the job's state directory disappears.
struct SignalStop {
    pipe: UnixStream,
    job_dir: PathBuf,
}

impl Stop for SignalStop {
    fn wait(&self, timeout: Duration) -> bool {
        let _ = self
            .pipe
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        let mut buf = [0u8; 16];
        if matches!((&self.pipe).read(&mut buf), Ok(n) if n > 0) {
            return true;
        }
        !self.job_dir.is_dir()
    }
}

fn sample(key: &str, minors: &[u32], args: &[String]) -> ExitCode {
    // First of all, so that an early SIGTERM from the epilog is not lost.
    let (reader, writer) = match UnixStream::pair() {
        Ok(p) => p,
        Err(_) => return ExitCode::FAILURE,
    };
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if signal_hook::low_level::pipe::register(sig, writer.try_clone().expect("clone")).is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    let config = match config_or_exit(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    log_to_state_dir(&config);
    let key = match JobKey::parse(key) {
        Ok(k) => k,
        Err(e) => {
            log::error!("sampler: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(state) = StateDir::existing(&config.state_dir) else {
        log::error!(
            "job {key}: sampler: no state directory {}",
            config.state_dir.display()
        );
        return ExitCode::FAILURE;
    };
    let job_dir = state.job_dir(&key);
    let host = match NvmlHost::open(config.nvml_lib.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            let why = chain(&e);
            log::error!("job {key}: no measurement on this node: {why}");
            // For the epilog to report in slurmd's log.
            let _ = state::write_atomic(&job_dir.join("sampler.error"), why.as_bytes());
            return ExitCode::FAILURE;
        }
    };
    let squeue = config.squeue.clone();
    let job_s = key.job.to_string();
    let job_alive = move || job_still_running(&squeue, &job_s);
    let opts = SamplerOptions {
        job: key.job,
        node: key.node.clone(),
        interval: config.sample_interval(),
        checkpoint_every: Duration::from_secs(config.checkpoint_s),
        max_runtime: Duration::from_secs(config.max_job_s),
        job_alive: Some(&job_alive),
        liveness_every: Duration::from_secs(config.liveness_s),
    };
    let stop = SignalStop {
        pipe: reader,
        job_dir: job_dir.clone(),
    };
    match sampler::run(
        &host,
        minors,
        &opts,
        &stop,
        Some(&job_dir.join("sampler.json")),
    ) {
        Ok(end) if end.stop_reason.as_deref() == Some(sampler::ORPHANED) => {
            log::warn!(
                "job {key}: {}; sampler stopped, measurement kept as a local record only",
                sampler::ORPHANED
            );
            if let Err(e) = spank_carbon::job::finish_orphan(&config, &state, &key, &end) {
                log::error!("job {key}: {}", chain(&e));
            }
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("job {key}: sampler: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Whether Slurm still lists the job as active. An unanswered question counts as yes:
/// the sampler never stops on uncertainty.
fn job_still_running(squeue: &std::path::Path, job: &str) -> bool {
    let out = match accounting::run_tool(
        &squeue.to_path_buf(),
        &["-h", "-t", "all", "-j", job, "-o", "%T"],
        Duration::from_secs(20),
    ) {
        Ok(out) => out,
        Err(_) => return true,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "Invalid job id specified": slurmctld no longer knows the job.
        return !String::from_utf8_lossy(&out.stderr).contains("Invalid job id");
    }
    let state = text.trim();
    !(state.is_empty() || accounting::ENDED.contains(&state))
}

/// Why a record was not delivered.
enum NotYet {
    /// Accounting did not answer in time: try again later.
    Later(String),
    /// Only a change of the field's content can help (text sacctmgr would alter), or
    /// the pending file is unreadable: retrying on a timer is pointless.
    Stuck(String),
}

/// Delivers one pending record, holding an exclusive lock on its file so that two
/// deliverers never work on the same record. `Ok(false)`: nothing to do here.
fn deliver_one(state: &StateDir, key: &JobKey, config: &Config) -> Result<bool, NotYet> {
    let path = state.pending_path(key);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(NotYet::Stuck(format!("{}: {e}", path.display()))),
    };
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(false); // another deliverer has it
    }
    let delivery: Delivery = match state::read_json(&path) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(false),
        Err(e) => return Err(NotYet::Stuck(chain(&e))),
    };
    let tools = SlurmTools {
        sacct: config.sacct.clone(),
        sacctmgr: config.sacctmgr.clone(),
        timeout: Duration::from_secs(config.write_timeout_s),
    };
    let timing = Timing {
        stagger: Duration::from_millis(config.stagger_ms),
        settle: Duration::from_millis(config.settle_ms),
        give_up: Duration::from_secs(config.deliver_timeout_s),
    };
    match accounting::deliver(
        &tools,
        &delivery,
        &timing,
        spank_carbon::SACCTMGR_LOWERCASES,
        &std::thread::sleep,
    ) {
        Ok(done) => {
            let _ = std::fs::remove_file(&path);
            log::info!(
                "job {key}: record in {} ({} write(s), {} read(s))",
                delivery.field.slurm_name(),
                done.writes,
                done.reads
            );
            Ok(true)
        }
        Err(e) => {
            let text = format!(
                "job {key}: not delivered yet, kept in {}: {}",
                path.display(),
                chain(&e)
            );
            Err(if e.is_permanent() {
                NotYet::Stuck(text)
            } else {
                NotYet::Later(text)
            })
        }
    }
}

/// After a delivery left records pending because accounting did not answer, the
/// process becomes the node's one keeper (a lock in the state directory decides) and
/// retries every `retry_s` until nothing deliverable is left; if a keeper already
/// runs, it will pick these records up.
fn keep_retrying(state: &StateDir, config: &Config, mut stuck: std::collections::BTreeSet<JobKey>) {
    let lock_path = state.root().join("keeper.lock");
    let Ok(lock) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
    else {
        return;
    };
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return;
    }
    log::info!(
        "keeper: retrying pending records every {} s",
        config.retry_s
    );
    loop {
        std::thread::sleep(Duration::from_secs(config.retry_s));
        let keys: Vec<JobKey> = state
            .pending_keys()
            .into_iter()
            .filter(|k| !stuck.contains(k))
            .collect();
        if keys.is_empty() {
            log::info!("keeper: nothing left to deliver");
            return;
        }
        for key in keys {
            match deliver_one(state, &key, config) {
                Ok(_) => {}
                Err(NotYet::Later(e)) => log::warn!("{e}"),
                Err(NotYet::Stuck(e)) => {
                    log::error!("{e}");
                    stuck.insert(key);
                }
            }
        }
    }
}

fn deliver(key: Option<&str>, foreground: bool, args: &[String]) -> ExitCode {
    if !foreground {
        // Background work: let the job and Slurm's daemons go first.
        let _ = rustix::process::setpriority_process(None, 19);
    }
    let config = match config_or_exit(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if foreground {
        logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info);
    } else {
        log_to_state_dir(&config);
    }
    let Some(state) = StateDir::existing(&config.state_dir) else {
        log::info!(
            "nothing to deliver: no state directory {}",
            config.state_dir.display()
        );
        return ExitCode::SUCCESS;
    };
    let keys = match key {
        Some(k) => match JobKey::parse(k) {
            Ok(k) => vec![k],
            Err(e) => {
                log::error!("deliver: {e}");
                return ExitCode::from(2);
            }
        },
        None => state.pending_keys(),
    };
    let mut failed = 0;
    let mut later = false;
    let mut stuck = std::collections::BTreeSet::new();
    for key in &keys {
        match deliver_one(&state, key, &config) {
            Ok(_) => {}
            Err(NotYet::Later(e)) => {
                log::error!("{e}");
                later = true;
                failed += 1;
            }
            Err(NotYet::Stuck(e)) => {
                log::error!("{e}");
                stuck.insert(key.clone());
                failed += 1;
            }
        }
    }
    if later && !foreground {
        keep_retrying(&state, &config, stuck);
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
