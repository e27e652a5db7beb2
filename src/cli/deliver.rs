//! `spank-carbon deliver`: writes the records waiting in the state directory into the
//! accounting database (the courier, `spank_carbon::node::courier`).

use std::process::ExitCode;

use spank_carbon::logging;
use spank_carbon::node::state::JobKey;

use super::{config_on, existing_state, log_to_state_dir, operator_node};

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: Args) -> ExitCode {
    let Args {
        key,
        foreground,
        node,
        args,
    } = a;
    if !foreground {
        // Background work: let the job and Slurm's daemons go first.
        let _ = rustix::process::setpriority_process(None, 19);
    }
    let config = match config_on(&args, operator_node(node.as_deref())) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if foreground {
        logging::init_writer(Box::new(std::io::stderr()), log::LevelFilter::Info);
    } else {
        log_to_state_dir(&config);
    }
    let state = match existing_state(
        &config,
        |dir| {
            log::info!("nothing to deliver: no state directory {}", dir.display());
            ExitCode::SUCCESS
        },
        |e| log::error!("deliver: {e}"),
    ) {
        Ok(state) => state,
        Err(code) => return code,
    };
    let only = match key.as_deref().map(JobKey::parse) {
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
