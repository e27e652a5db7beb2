//! `spank-carbon metrics`: writes the node's Prometheus textfile (see
//! `spank_carbon::node::metrics` for what it holds and how the counters are kept).

use std::path::PathBuf;
use std::process::ExitCode;

use spank_carbon::node::metrics;

use super::{config_on, existing_state, operator_node};

#[derive(clap::Args)]
pub struct Args {
    /// node_exporter's textfile directory (default: the `metrics_dir` key, else
    /// /var/lib/prometheus/node-exporter).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the textfile instead of writing it.
    #[arg(long)]
    stdout: bool,
    /// The node whose state directory to read, for `%n` in state_dir (default:
    /// SLURMD_NODENAME, else the short host name).
    #[arg(long)]
    node: Option<String>,
    /// The plugin's plugstack.conf arguments (key=value).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(a: Args) -> ExitCode {
    let node = operator_node(a.node.as_deref());
    let config = match config_on(&a.args, node.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let state = match existing_state(
        &config,
        |dir| {
            eprintln!(
                "spank-carbon: metrics: no state directory {} (no job measured here yet)",
                dir.display()
            );
            ExitCode::FAILURE
        },
        |e| eprintln!("spank-carbon: metrics: {e}"),
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(node) = metrics::node_of(&state, node.as_deref()) else {
        eprintln!("spank-carbon: metrics: the node's name is not known; give --node NAME");
        return ExitCode::from(2);
    };
    let text = match metrics::snapshot(&state, &node) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("spank-carbon: metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    if a.stdout {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    let dir = a
        .dir
        .or(config.metrics_dir)
        .unwrap_or_else(|| PathBuf::from(metrics::DEFAULT_DIR));
    match metrics::write_textfile(&dir, &node, &text) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spank-carbon: metrics: {e}");
            ExitCode::FAILURE
        }
    }
}
