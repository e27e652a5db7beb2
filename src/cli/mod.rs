//! The `spank-carbon` commands, one file each: arguments and glue, the work in the library.
//! Here: what several commands share (their configuration, the node they act for, the
//! state directory, the log).

use std::path::Path;
use std::process::ExitCode;

use spank_carbon::core::config::Config;
use spank_carbon::logging;
use spank_carbon::node::retention::{LogFile, LOG_NAME};
use spank_carbon::node::state::{StateDir, StateError};

pub mod check;
pub mod deliver;
pub mod docs;
pub mod fairshare;
pub mod mail;
pub mod measure;
pub mod metrics;
pub mod pending;
pub mod report;
pub mod sample;
pub mod tres;

/// The configuration of the node slurmd names in SLURMD_NODENAME (the sampler and the
/// courier the plugin starts get it), for `%n` in state_dir.
pub fn config_or_exit(args: &[String]) -> Result<Config, ExitCode> {
    config_on(args, std::env::var("SLURMD_NODENAME").ok())
}

/// The configuration of `node` (for `%n` in state_dir); an error is said, exit code 2.
pub fn config_on(args: &[String], node: Option<String>) -> Result<Config, ExitCode> {
    Config::from_args_on(args, node.as_deref()).map_err(|e| {
        eprintln!("spank-carbon: configuration: {e}");
        ExitCode::from(2)
    })
}

/// The node an operator's command acts for: `--node`, else SLURMD_NODENAME, else the
/// short host name.
pub fn operator_node(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("SLURMD_NODENAME").ok())
        .or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
            let short = host.trim().split('.').next()?.to_string();
            (!short.is_empty()).then_some(short)
        })
}

/// Logs of the detached processes go to `<state_dir>/spank-carbon.log`.
pub fn log_to_state_dir(config: &Config) {
    let path = config.state_dir.join(LOG_NAME);
    match LogFile::open(&path) {
        Ok(f) => logging::init_writer(Box::new(f), log::LevelFilter::Info),
        Err(_) => logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info),
    }
}

/// The configuration's state directory if it exists. If it does not, `missing` says so
/// (given its path) and gives the command's exit code; if it cannot be used, `failed`
/// says why and the exit code is a failure.
pub fn existing_state(
    config: &Config,
    missing: impl FnOnce(&Path) -> ExitCode,
    failed: impl FnOnce(StateError),
) -> Result<StateDir, ExitCode> {
    match StateDir::existing(&config.state_dir) {
        Ok(Some(state)) => Ok(state),
        Ok(None) => Err(missing(&config.state_dir)),
        Err(e) => {
            failed(e);
            Err(ExitCode::FAILURE)
        }
    }
}
