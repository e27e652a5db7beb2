//! Needs a machine with an NVIDIA GPU and its driver (CI has none; scripts/test.sh leaves
//! this binary out). Run it there with
//! `cargo test --release --test real_gpu -- --ignored --nocapture`: it measures the idle
//! GPUs with `spank-carbon measure` at several sampling intervals and checks that the
//! hardware counter and the sampled integral agree; it also prints what NVML says of each
//! board (`boards()`: uuid, PCI bus, SM count, MIG instances) and what kind of power
//! reading each board gives (`avg`: one-second mean, `inst`: the power of the moment).

use std::process::Command;

use spank_carbon::gpu::{GpuHost, NvmlHost, PowerKind};

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
            println!(
                "interval {interval} ms: minor {} ({}): power samples {}",
                g["minor"], g["name"], g["power"]
            );
            assert!(
                ["avg", "inst"].contains(&g["power"].as_str().unwrap_or("")),
                "each board gives one kind of power reading: {g}"
            );
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

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn boards_and_power_kinds() {
    let host = NvmlHost::open(None).unwrap();
    let boards = host.boards().unwrap();
    println!("{}", serde_json::to_string_pretty(&boards).unwrap());
    assert!(!boards.is_empty());
    for (i, b) in boards.iter().enumerate() {
        assert_eq!(b.index as usize, i);
        assert!(b.uuid.starts_with("GPU-"), "{b:?}");
        assert!(!b.pci_bus_id.is_empty(), "{b:?}");
        if !b.mig {
            assert!(b.instances.is_empty(), "{b:?}");
        }
        let sms: u32 = b.instances.iter().map(|m| m.sm_count).sum();
        for total in [b.sm_count, b.mig_sm_count].into_iter().flatten() {
            assert!(
                sms <= total,
                "MIG instances have more SMs than the board: {b:?}"
            );
        }
        assert_eq!(b.mig, b.mig_sm_count.is_some(), "{b:?}");
        for m in &b.instances {
            assert!(m.uuid.starts_with("MIG-") && m.sm_count > 0, "{m:?}");
        }
    }
    for g in host.open_all().unwrap() {
        let first = g.power().unwrap();
        let again = g.power().unwrap();
        println!(
            "minor {} ({}): {} mW, {} (again: {} mW, {})",
            g.minor(),
            g.name(),
            first.mw.0,
            first.kind.token(),
            again.mw.0,
            again.kind.token()
        );
        assert_ne!(first.kind, PowerKind::Mixed);
        assert_eq!(first.kind, again.kind, "minor {}", g.minor());
        assert!(first.mw.0 > 0.0, "an idle GPU still draws power");
    }
}
