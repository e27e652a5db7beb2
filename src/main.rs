//! `spank-carbon`: the sampler the plugin starts, record delivery, and tools.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod fairshare_cli;
mod measure;
mod pending_cli;
mod report_cli;

use spank_carbon::accounting::{self, AcctError, Item, SlurmTools, Step, Timing};
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
            node,
            args,
        } => deliver(key.as_deref(), foreground, node.as_deref(), &args),
        Cmd::Pending { json, node, args } => match config_on(&args, operator_node(node.as_deref()))
        {
            Ok(config) => pending_cli::run(&config, json),
            Err(code) => code,
        },
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

/// The configuration of the node slurmd names in SLURMD_NODENAME (the sampler and the
/// courier the plugin starts get it), for `%n` in state_dir.
fn config_or_exit(args: &[String]) -> Result<Config, ExitCode> {
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
fn log_to_state_dir(config: &Config) {
    let path = config.state_dir.join(spank_carbon::retention::LOG_NAME);
    match spank_carbon::retention::LogFile::open(&path) {
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
    let state = match StateDir::existing(&config.state_dir) {
        Ok(Some(state)) => state,
        Ok(None) => {
            log::error!(
                "job {key}: sampler: no state directory {}",
                config.state_dir.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            log::error!("job {key}: sampler: {e}");
            return ExitCode::FAILURE;
        }
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

/// How long a courier with nothing left to deliver stays for the next record.
const COURIER_LINGER: Duration = Duration::from_secs(10);

/// The most records one round of a courier reads and writes.
const ROUND_MAX: usize = 200;

/// The node's courier: delivers every pending record of the state directory (or only
/// `only`) in rounds, one sacct read for all the records due in a round, until none is
/// left. In the background (started by an epilog) it is the node's only courier (a
/// lock in the state directory decides), picks up records that later epilogs leave, and
/// keeps retrying those it gave up on every `retry_s`; in the foreground (the operator's
/// `spank-carbon deliver`) it stops when each record is delivered or given up on.
/// Returns the number of records not delivered.
fn courier(state: &StateDir, config: &Config, only: Option<&JobKey>, foreground: bool) -> usize {
    let tools = SlurmTools {
        sacct: config.sacct.clone(),
        sacctmgr: config.sacctmgr.clone(),
        squeue: config.squeue.clone(),
        timeout: Duration::from_secs(config.write_timeout_s),
    };
    let timing = Timing {
        stagger: Duration::from_millis(config.stagger_ms),
        settle: Duration::from_millis(config.settle_ms),
        give_up: Duration::from_secs(config.deliver_timeout_s),
        flight: Duration::from_secs(config.write_timeout_s)
            + Duration::from_millis(config.settle_ms / 2),
    };
    let retry = Duration::from_secs(config.retry_s);
    let mut lock = None;
    if !foreground {
        lock = spank_carbon::job::try_courier_lock(state);
        if lock.is_none() {
            return 0; // the node's courier runs and will pick the records up
        }
    }
    let mut items: BTreeMap<JobKey, Item> = BTreeMap::new();
    // Records only a change of the field's content can help, and unreadable files.
    let mut stuck: BTreeSet<JobKey> = BTreeSet::new();
    // Records given up on, waiting `retry_s` for their next try.
    let mut given_up: BTreeSet<JobKey> = BTreeSet::new();
    let mut failed = 0;
    let mut idle_since = Instant::now();
    loop {
        spank_carbon::retention::maybe_sweep(state, config, std::time::SystemTime::now());
        // `--key <job>.<node>` names every run's record of that job on this node;
        // `<job>.<node>@<run>` one of them.
        let keys: BTreeSet<JobKey> = state
            .pending_keys()
            .into_iter()
            .filter(|k| {
                only.map_or(true, |o| {
                    o.job == k.job && o.node == k.node && o.run.map_or(true, |r| k.run == Some(r))
                })
            })
            .collect();
        items.retain(|k, _| keys.contains(k));
        given_up.retain(|k| keys.contains(k));
        for key in keys {
            if items.contains_key(&key) || stuck.contains(&key) {
                continue;
            }
            match state::load_pending(state, &key) {
                Ok(Some(d)) => {
                    items.insert(key, Item::new(d, &timing));
                }
                Ok(None) => {} // delivered meanwhile
                Err(e) => {
                    log::error!("job {key}: not delivered: {}", chain(&e));
                    stuck.insert(key);
                    failed += 1;
                }
            }
        }
        if items.is_empty() {
            if foreground {
                return failed;
            }
            if idle_since.elapsed() < COURIER_LINGER {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            // Leave, unless a record arrived after the last look: the epilog that left
            // it saw the lock held and counted on this courier.
            drop(lock.take());
            let fresh = state.pending_keys().iter().any(|k| !stuck.contains(k));
            if fresh {
                lock = spank_carbon::job::try_courier_lock(state);
                if lock.is_some() {
                    idle_since = Instant::now();
                    continue;
                }
            }
            log::info!("courier: nothing left to deliver");
            return failed;
        }
        idle_since = Instant::now();
        let now = Instant::now();
        // Claim the due records' files, so that an operator's `spank-carbon deliver`
        // and this courier never work on one record at once.
        // A round takes at most ROUND_MAX records, oldest due first, to keep its read
        // and writes short; the others stay due for the next round.
        let mut claims = Vec::new();
        let mut due: Vec<(&JobKey, &mut Item)> =
            items.iter_mut().filter(|(_, i)| i.is_due(now)).collect();
        due.sort_by_key(|(_, i)| i.not_before);
        for (key, item) in due {
            match (claims.len() < ROUND_MAX)
                .then(|| claim(&state.pending_path(key)))
                .flatten()
            {
                Some(file) => claims.push(file),
                None => item.not_before = now + timing.poll(),
            }
        }
        let keys: Vec<JobKey> = items.keys().cloned().collect();
        let steps = {
            let mut refs: Vec<&mut Item> = items.values_mut().collect();
            accounting::round(
                &tools,
                &mut refs,
                &timing,
                spank_carbon::SACCTMGR_LOWERCASES,
            )
        };
        let mut delivered_any = false;
        for (key, step) in keys.into_iter().zip(steps) {
            let path = state.pending_path(&key);
            match step {
                Step::Wait => {}
                Step::Done(done) => {
                    let _ = std::fs::remove_file(&path);
                    state::clear_stuck(state, &key);
                    if let Some(item) = items.remove(&key) {
                        log::info!(
                            "job {key}: record in {} ({} write(s), {} read(s))",
                            item.delivery.field.slurm_name(),
                            done.writes,
                            done.reads
                        );
                    }
                    delivered_any = true;
                }
                Step::Refused(e) | Step::GaveUp(e) => {
                    log::error!(
                        "job {key}: not delivered yet, kept in {}: {}",
                        path.display(),
                        chain(&e)
                    );
                    state::note_stuck(state, &key, &chain(&e));
                    let retry_later = matches!(e, AcctError::GaveUp { .. }) && !foreground;
                    match items.get_mut(&key) {
                        Some(item) if retry_later => {
                            // A record whose job accounting does not have (ended) is
                            // not hurried by other deliveries: it would only be polled.
                            let hurry = !item.waits_for_job;
                            item.restart(&timing);
                            item.not_before += retry;
                            item.deadline += retry;
                            if hurry {
                                given_up.insert(key);
                            }
                        }
                        _ => {
                            items.remove(&key);
                            stuck.insert(key);
                            failed += 1;
                        }
                    }
                }
            }
        }
        drop(claims);
        if delivered_any {
            // Accounting takes records again: those waiting for their retry go now.
            for key in std::mem::take(&mut given_up) {
                if let Some(item) = items.get_mut(&key) {
                    item.restart(&timing);
                }
            }
        }
        let next = items
            .values()
            .map(|i| i.not_before)
            .min()
            .unwrap_or(now)
            .saturating_duration_since(Instant::now());
        // At most two rounds a second: records that end close together share a read.
        std::thread::sleep(next.clamp(Duration::from_millis(500), Duration::from_secs(1)));
    }
}

/// An exclusive lock on a pending record's file; `None` if it is gone or taken.
fn claim(path: &std::path::Path) -> Option<std::fs::File> {
    let file = OpenOptions::new().read(true).open(path).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(file)
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
    if courier(&state, &config, only.as_ref(), foreground) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
