//! `spank-carbon pending`: the records of this node that wait for delivery, and why.

use std::process::ExitCode;
use std::time::SystemTime;

use spank_carbon::accounting::Delivery;
use spank_carbon::core::config::Config;
use spank_carbon::node::state::{self, StateDir};

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

pub fn run(config: &Config, json: bool) -> ExitCode {
    let state = match StateDir::existing(&config.state_dir) {
        Ok(Some(state)) => state,
        Ok(None) => {
            println!(
                "no record waits: no state directory {}",
                config.state_dir.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("spank-carbon: {e}");
            return ExitCode::FAILURE;
        }
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
    if json {
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
