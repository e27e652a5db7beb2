//! `spank-carbon`: the sampler the plugin starts, record delivery, and tools.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
    let opts = SamplerOptions {
        job: key.job,
        node: key.node.clone(),
        interval: config.sample_interval(),
        checkpoint_every: Duration::from_secs(config.checkpoint_s),
        max_runtime: Duration::from_secs(config.max_job_s),
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
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("job {key}: sampler: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Delivers one pending record, holding an exclusive lock on its file so that two
/// deliverers never work on the same record.
fn deliver_one(state: &StateDir, key: &JobKey, config: &Config) -> Result<bool, String> {
    let path = state.pending_path(key);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(false); // another deliverer has it
    }
    let delivery: Delivery = match state::read_json(&path) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(false),
        Err(e) => return Err(chain(&e)),
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
        Err(e) => Err(format!(
            "job {key}: not delivered yet, kept in {}: {}",
            path.display(),
            chain(&e)
        )),
    }
}

fn deliver(key: Option<&str>, foreground: bool, args: &[String]) -> ExitCode {
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
    for key in &keys {
        if let Err(e) = deliver_one(&state, key, &config) {
            log::error!("{e}");
            failed += 1;
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
