//! Needs a machine with an NVIDIA GPU and its driver (CI has none; scripts/test.sh leaves
//! this binary out). Run it there with
//! `cargo test --release --test real_gpu -- --ignored --nocapture`: it measures the idle
//! GPUs with `spank-carbon measure` at several sampling intervals and checks that the
//! hardware counter and the sampled integral agree.

use std::process::Command;

fn measure(interval_ms: u64, seconds: f64) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_spank-carbon"))
        .args([
            "measure",
            "--json",
            "--interval-ms",
            &interval_ms.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn idle_gpus_counter_and_samples_agree() {
    for interval in [100, 1000] {
        let m = measure(interval, 20.0);
        println!("{}", serde_json::to_string_pretty(&m).unwrap());
        for g in m["gpus"].as_array().unwrap() {
            let (Some(c), Some(s)) = (g["counter_wh"].as_f64(), g["sampled_wh"].as_f64()) else {
                continue; // no energy counter (before Volta): nothing to compare
            };
            assert!(c > 0.0, "an idle GPU still draws power: {g}");
            assert!(
                (c - s).abs() / c < 0.15,
                "interval {interval} ms: counter {c} Wh, samples {s} Wh"
            );
        }
    }
}
