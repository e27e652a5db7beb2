//! `spank-carbon pending`: the records of this node that wait for delivery, and why.

use std::process::ExitCode;
use std::time::SystemTime;

use spank_carbon::accounting::Delivery;
use spank_carbon::node::state;

use super::{config_on, existing_state, operator_node};

#[derive(clap::Args)]
pub struct Args {
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
}

#[derive(serde::Serialize)]
struct Entry {
    key: String,
    job: u32,
    node: String,
    field: &'static str,
    age_s: u64,
    gpu_wh: f64,
    why: String,
}

pub fn run(a: Args) -> ExitCode {
    let config = match config_on(&a.args, operator_node(a.node.as_deref())) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let state = match existing_state(
        &config,
        |dir| {
            println!("no record waits: no state directory {}", dir.display());
            ExitCode::SUCCESS
        },
        |e| eprintln!("spank-carbon: {e}"),
    ) {
        Ok(state) => state,
        Err(code) => return code,
    };
    let mut entries = Vec::new();
    for key in state.pending_keys() {
        let path = state.pending_path(&key);
        let age_s = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or(0, |d| d.as_secs());
        let why = state::stuck_reason(&state, &key)
            .unwrap_or_else(|| "on its way (no failure reported)".into());
        let (field, gpu_wh) = match state::read_json::<Delivery>(&path) {
            Ok(Some(d)) => (d.field.slurm_name(), d.part.wh),
            _ => ("?", f64::NAN),
        };
        entries.push(Entry {
            key: key.to_string(),
            job: key.job,
            node: key.node.clone(),
            field,
            age_s,
            gpu_wh,
            why: why.trim().replace('\n', " "),
        });
    }
    if a.json {
        match serde_json::to_string_pretty(&entries) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("spank-carbon: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if entries.is_empty() {
        println!(
            "no record waits for delivery in {}",
            state.pending_dir().display()
        );
    } else {
        println!("{:<28} {:>8} {:>10}  why", "record", "age s", "energy Wh");
        for e in &entries {
            println!("{:<28} {:>8} {:>10.4}  {}", e.key, e.age_s, e.gpu_wh, e.why);
        }
    }
    ExitCode::SUCCESS
}
