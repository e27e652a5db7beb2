//! `spank-carbon measure`: the plugin's counter and sampler code on a workstation or a
//! login node, around a command.

use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use spank_carbon::core::config::Config;
use spank_carbon::gpu::{GpuHost, NvmlHost};
use spank_carbon::logging::chain;
use spank_carbon::node::sampler::{self, SamplerOptions, Stop};
use spank_carbon::record::num;
use spank_carbon::units::co2e_grams;

/// Stops when the measured command exits (or at a deadline).
struct StopWhen {
    done: mpsc::Receiver<()>,
    deadline: Option<Instant>,
}

impl Stop for StopWhen {
    fn wait(&self, timeout: Duration) -> bool {
        let timeout = match self.deadline {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        match self.done.recv_timeout(timeout) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.deadline.is_some_and(|d| Instant::now() >= d)
            }
        }
    }
}

pub fn run(
    interval_ms: u64,
    seconds: Option<f64>,
    json: bool,
    set: &[String],
    command: &[String],
) -> ExitCode {
    let config = match Config::from_args(set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spank-carbon: {e}");
            return ExitCode::from(2);
        }
    };
    if command.is_empty() && seconds.is_none() {
        eprintln!("spank-carbon measure: give a command after `--`, or --seconds N");
        return ExitCode::from(2);
    }
    let host = match NvmlHost::open(config.nvml_lib.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("spank-carbon: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let minors: Vec<u32> = match host.open_all() {
        Ok(gpus) => gpus.iter().map(|g| g.minor()).collect(),
        Err(e) => {
            eprintln!("spank-carbon: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    if minors.is_empty() {
        eprintln!("spank-carbon: NVML sees no GPU");
        return ExitCode::FAILURE;
    }
    let (tx, rx) = mpsc::channel();
    // Without a command nothing sends: keep a sender so the channel stays open.
    let _hold = tx.clone();
    let mut status = None;
    let child = if command.is_empty() {
        None
    } else {
        match Command::new(&command[0]).args(&command[1..]).spawn() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("spank-carbon: {}: {e}", command[0]);
                return ExitCode::from(127);
            }
        }
    };
    let waiter = child.map(|mut c| {
        std::thread::spawn(move || {
            let s = c.wait();
            let _ = tx.send(());
            s
        })
    });
    let stop = StopWhen {
        done: rx,
        deadline: seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0))),
    };
    let opts = SamplerOptions {
        job: 0,
        node: "local".into(),
        interval: Duration::from_millis(interval_ms.max(10)),
        checkpoint_every: Duration::from_secs(config.checkpoint_s),
        max_runtime: Duration::from_secs(config.max_job_s),
        job_alive: None,
        liveness_every: Duration::from_secs(3600),
    };
    let state = match sampler::run(&host, &minors, &opts, &stop, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("spank-carbon: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    if let Some(w) = waiter {
        status = w.join().ok().and_then(|r| r.ok());
    }
    let result = sampler::evaluate(&state);
    let co2e = co2e_grams(result.wh, config.pue, config.intensity);
    let seconds = result.end_unix - result.start_unix;
    if json {
        let out = serde_json::json!({
            "driver": state.driver,
            "seconds": seconds,
            "interval_ms": interval_ms,
            "gpu_wh": result.wh,
            "co2e_g": co2e,
            "intensity": config.intensity.0,
            "pue": config.pue,
            "method": result.method.map(|m| m.as_str()),
            "gpus": result.gpus,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        println!(
            "{:>5}  {:<24} {:>12} {:>12} {:>8} {:>9} {:>9}  flags",
            "minor", "name", "counter Wh", "sampled Wh", "cover", "mean W", "max W"
        );
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| num(v, d));
        for g in &result.gpus {
            println!(
                "{:>5}  {:<24} {:>12} {:>12} {:>8} {:>9} {:>9}  {}",
                g.minor,
                g.name.chars().take(24).collect::<String>(),
                opt(g.counter_wh, 5),
                opt(g.sampled_wh, 5),
                opt(g.coverage, 3),
                opt(g.mean_w, 1),
                opt(g.max_w, 1),
                g.flags.join(",")
            );
        }
        println!(
            "{} GPU(s), {} s: {} Wh ({}), {} gCO2e at {} gCO2e/kWh and PUE {}",
            result.measured,
            num(seconds, 2),
            num(result.wh, 5),
            result.method.map_or("none", |m| m.as_str()),
            num(co2e, 4),
            num(config.intensity.0, 3),
            num(config.pue, 3)
        );
    }
    match status.and_then(|s| s.code()) {
        Some(0) | None if command.is_empty() => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
        None => ExitCode::FAILURE,
    }
}
