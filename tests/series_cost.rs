//! What an epilog pays for a time-varying intensity series (issue 8, item 7): a two-year,
//! five-minute series (210,240 points) and a 30-day job. Ignored by default; run it in
//! release mode (what the epilog runs), one test thread so the timings do not overlap:
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-helpers-rel cargo test --release --test series_cost \
//!     -- --ignored --nocapture --test-threads=1
//! ```
//!
//! It times `epilog::node_part` (load the series, integrate the energy against it), the
//! epilog's whole intensity work, (a) with no cache: parse the CSV, write the cache,
//! integrate; (b) with the cache: read the node's scope, integrate. Each is the median of
//! several runs. The energy comes in 10 s buckets over the 30 days (259,200 buckets, the
//! issue's case), and also as the sampler really keeps them (it doubles the bucket width
//! past 2048 buckets: 2025 buckets of 1280 s for 30 days). For comparison it also times
//! the parse alone, the old way once (parse, then scan every point for every bucket: what
//! every epilog paid before), the cached scope read whole instead of the job's window, and
//! the epilog's read (and a write, like the local record's) of the sampler's JSON state
//! holding those buckets.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use spank_carbon::core::config::Config;
use spank_carbon::core::intensity::Series;
use spank_carbon::node::epilog::node_part;
use spank_carbon::node::intensity_cache::{steps_for, CACHE_FILE};
use spank_carbon::node::sampler::{NodeResult, SamplerState, Series as Buckets};
use spank_carbon::node::state::{self, StateDir};
use spank_carbon::record::Method;

const POINTS: u32 = 2 * 365 * 288;
const STEP_S: f64 = 300.0;
const JOB_S: f64 = 30.0 * 86_400.0;
/// 2026-12-01T00:00:00Z minus two years: the series starts here.
const T0: f64 = 1_701_388_800.0;

fn rfc3339(t: f64) -> String {
    let secs = t as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A CSV as an operator would make it from a grid export: header, RFC 3339 times.
fn write_csv(path: &Path) -> usize {
    let mut text = String::from("timestamp,gco2e_per_kwh\n");
    for i in 0..POINTS {
        let t = T0 + f64::from(i) * STEP_S;
        let v = 250.0 + 150.0 * ((f64::from(i) / 288.0) * std::f64::consts::TAU).sin();
        text.push_str(&format!("{},{v:.1}\n", rfc3339(t)));
    }
    fs::write(path, &text).unwrap();
    text.len()
}

fn sampler_state(start: f64, bucket_s: f64, n: usize) -> SamplerState {
    SamplerState {
        job: 1,
        node: "node1".into(),
        pid: 1,
        interval_ms: 1000,
        driver: String::new(),
        start_unix: start,
        end_unix: Some(start + JOB_S),
        updated_unix: start + JOB_S,
        finished: true,
        stop_reason: None,
        gpus: Vec::new(),
        series: Buckets {
            bucket_s,
            mj: (0..n).map(|i| 1.0e6 + (i % 97) as f64 * 1234.5).collect(),
        },
        peak_node_mw: None,
    }
}

/// The integration as it was before the merge walk (every bucket scans every point).
fn scan_co2e(points: &[(f64, f64)], s: &SamplerState, r: &NodeResult, pue: f64) -> f64 {
    let average = |a: f64, b: f64| -> f64 {
        let mut total = 0.0;
        for (i, &(t, v)) in points.iter().enumerate() {
            let next = points.get(i + 1).map_or(f64::INFINITY, |p| p.0);
            let (lo, hi) = (t.max(a), next.min(b));
            if hi > lo {
                total += v * (hi - lo);
            }
        }
        total / (b - a)
    };
    let mut weighted = 0.0;
    for (i, mj) in s.series.mj.iter().enumerate() {
        let a = r.start_unix + i as f64 * s.series.bucket_s;
        let b = (a + s.series.bucket_s).min(r.end_unix.max(a));
        weighted += mj * average(a, b);
    }
    r.wh / 1000.0 * pue * weighted / s.series.mj.iter().sum::<f64>()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "a measurement: run it in release mode, see the file's comment"]
fn epilog_cost_of_a_two_year_series() {
    let dir = std::env::temp_dir().join(format!("sc-series-cost-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let state = StateDir::open(&dir.join("state")).unwrap();
    let csv = dir.join("series.csv");
    let csv_bytes = write_csv(&csv);
    let config = Config {
        intensity_series: Some(csv.clone()),
        ..Config::default()
    };
    // The job is the series' last 30 days; the series' last point is 5 minutes old.
    let series_end = T0 + f64::from(POINTS) * STEP_S;
    let start = series_end - JOB_S;
    println!(
        "series: {POINTS} points, CSV {:.1} MB; job {} days",
        csv_bytes as f64 / 1e6,
        JOB_S / 86_400.0
    );

    let t = Instant::now();
    let parsed = Series::parse(&fs::read_to_string(&csv).unwrap()).unwrap();
    println!("parse alone, once:            {}", ms(t.elapsed()));
    assert_eq!(parsed.by_scope.len(), 1);
    let steps = parsed.for_job("node1", None).unwrap();
    assert_eq!(steps.points.len(), POINTS as usize);
    assert_eq!(steps.points[0].0, T0);
    assert_eq!(steps.points.last().unwrap().0, series_end - STEP_S);

    for (what, bucket_s, n) in [
        ("10 s buckets (259,200)", 10.0, (JOB_S / 10.0) as usize),
        (
            "sampler's buckets (1280 s)",
            1280.0,
            (JOB_S / 1280.0).ceil() as usize,
        ),
    ] {
        let s = sampler_state(start, bucket_s, n);
        let result = NodeResult {
            start_unix: start,
            end_unix: start + JOB_S,
            gpus: Vec::new(),
            wh: s.series.mj.iter().sum::<f64>() / 3.6e6,
            measured: 1,
            method: Some(Method::Counter),
            coverage: Some(1.0),
            flags: Vec::new(),
            peak_w: None,
            gpu_equivalents: 1.0,
            share_rule: None,
        };
        let part = || node_part(&config, "node1", None, &s, &result, Some(&state)).unwrap();
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        let mut co2e = None;
        for _ in 0..7 {
            let _ = fs::remove_file(state.root().join(CACHE_FILE));
            let t = Instant::now();
            let p = part();
            cold.push(t.elapsed());
            assert_eq!(p.intensity_src.as_deref(), Some("series"));
            co2e = Some(p.co2e_g);
        }
        for _ in 0..21 {
            let t = Instant::now();
            let p = part();
            warm.push(t.elapsed());
            assert_eq!(Some(p.co2e_g), co2e, "cached and fresh parse agree");
        }
        let mut before = None;
        if bucket_s > 10.0 {
            // Before the cache and the merge walk: parse, then scan every point per bucket.
            let t = Instant::now();
            let series = Series::parse(&fs::read_to_string(&csv).unwrap()).unwrap();
            let steps = series.for_job("node1", None).unwrap();
            let g = scan_co2e(&steps.points, &s, &result, config.pue);
            assert!((g - co2e.unwrap()).abs() <= 1e-3 * g, "{g} vs {co2e:?}");
            before = Some(t.elapsed());
        }
        // The epilog's read of the sampler state that carries these buckets.
        let path = dir.join("sampler.json");
        state::write_json(&path, &s).unwrap();
        let size = fs::metadata(&path).unwrap().len();
        let mut read = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let back: SamplerState = state::read_json(&path).unwrap().unwrap();
            read.push(t.elapsed());
            assert_eq!(back.series.mj.len(), n);
        }
        let mut write = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            state::write_json(&path, &s).unwrap();
            write.push(t.elapsed());
        }
        println!("{what}:");
        if let Some(before) = before {
            println!(
                "  before (parse + scan of every point per bucket), once: {}",
                ms(before)
            );
        }
        println!(
            "  (a) no cache: parse + cache + integrate, median of 7: {}",
            ms(median(cold))
        );
        println!(
            "  (b) cached: read window + integrate, median of 21:    {}",
            ms(median(warm))
        );
        println!(
            "  sampler JSON state ({:.1} MB): read {}, write {} (median of 7)",
            size as f64 / 1e6,
            ms(median(read)),
            ms(median(write))
        );
    }
    // The cached scope read whole, without a window: what the window saves.
    let mut whole = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let steps = steps_for(&csv, Some(state.root()), "node1", None, None).unwrap();
        whole.push(t.elapsed());
        assert_eq!(steps.unwrap().points.len(), POINTS as usize);
    }
    println!(
        "cached scope read whole (no window), median of 21: {}",
        ms(median(whole))
    );
    println!(
        "cache file: {:.1} MB",
        fs::metadata(state.root().join(CACHE_FILE)).unwrap().len() as f64 / 1e6
    );
    fs::remove_dir_all(&dir).unwrap();
}

struct NoSpawn;
impl spank_carbon::node::job::Spawner for NoSpawn {
    fn spawn_detached(
        &self,
        _: &Path,
        _: &[String],
        _: &[(String, String)],
    ) -> std::io::Result<u32> {
        Ok(1)
    }
}

fn no_nvml(
    _: Option<&Path>,
) -> Result<Box<dyn spank_carbon::gpu::GpuHost>, spank_carbon::gpu::GpuError> {
    panic!("the sampler finished: the epilog must not open NVML")
}

/// The whole epilog as the plugin runs it (`epilog::epilog`: stop the sampler, read its
/// state, total the energy, the intensity series, the pending record written and synced,
/// the audit record), for a 30-day job on 8 GPUs with a two-year, five-minute series:
/// the issue's floor is 10 ms median. `EPILOG_RUNS` sets the runs (default 21).
#[test]
#[ignore = "a measurement: run it in release mode, see the file's comment"]
fn whole_epilog_with_a_two_year_series_and_a_30_day_job() {
    use spank_carbon::core::energy::Integrator;
    use spank_carbon::node::epilog::{epilog, EpilogOutcome};
    use spank_carbon::node::job::JobInfo;
    use spank_carbon::node::job_env::JobEnv;
    use spank_carbon::node::sampler::GpuState;
    let dir = std::env::temp_dir().join(format!("sc-epilog-cost-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("intensity.csv");
    write_csv(&csv);
    let root = dir.join("state");
    let state = StateDir::open(&root).unwrap();
    let config = Config {
        state_dir: root.clone(),
        intensity_series: Some(csv.clone()),
        intensity_max_age_s: 10 * 86_400,
        bin: "/nonexistent/spank-carbon".into(),
        ..Config::default()
    };
    let end = T0 + f64::from(POINTS) * STEP_S - 3600.0;
    let start = end - JOB_S;
    let runs: usize = std::env::var("EPILOG_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let mut times = Vec::new();
    for i in 0..=runs {
        let job = 5_000_000 + i as u32;
        let env = JobEnv {
            job,
            node: "node1".into(),
            gpus: Some("0-7".into()),
            nodes: vec!["node1".into()],
            slurm_conf: None,
            partition: None,
            sluid: None,
            cuda_visible_devices: None,
            mps_percentage: None,
            shards_on_node: None,
        };
        let key = spank_carbon::node::state::JobKey::new(job, "node1").unwrap();
        let jd = state.create_job_dir(&key).unwrap();
        let info = JobInfo {
            job,
            node: "node1".into(),
            gres_indices: (0..8).collect(),
            minors: (0..8).collect(),
            nodes: vec!["node1".into()],
            prolog_unix: start,
            sampler_pid: None,
            gpus: None,
            refused: None,
        };
        state::write_json(&jd.join("job.json"), &info).unwrap();
        let mut s = sampler_state(start, 1280.0, 2025);
        s.job = job;
        s.gpus = (0..8)
            .map(|m| GpuState {
                minor: m,
                uuid: format!("GPU-{m}"),
                name: "FakeH100".into(),
                shared: false,
                start_counter: Some(1_000_000),
                last_counter: Some(1_000_000 + 700_000 * JOB_S as u64),
                end_counter: Some(1_000_000 + 700_000 * JOB_S as u64),
                reset_seen: false,
                integ: Integrator {
                    mj: 700_000.0 * JOB_S,
                    samples: JOB_S as u64,
                    first_s: Some(0.0),
                    last_s: Some(JOB_S),
                    last_mw: Some(700_000.0),
                    first_mw: Some(700_000.0),
                    min_mw: Some(700_000.0),
                    max_mw: Some(700_000.0),
                },
                errors: 0,
                power: None,
                share: None,
                rule: None,
                unallocated: None,
            })
            .collect();
        state::write_json(&jd.join("sampler.json"), &s).unwrap();
        let t = Instant::now();
        let out = epilog(&config, &[], &env, &NoSpawn, &no_nvml).unwrap();
        let took = t.elapsed();
        let EpilogOutcome::Recorded { part } = out else {
            panic!("{out:?}");
        };
        assert_eq!(part.intensity_src.as_deref(), Some("series"), "{part:?}");
        assert!(part.wh > 1000.0, "a 30-day job on 8 GPUs: {part:?}");
        if i == 0 {
            println!(
                "whole epilog, first after the series changed (parse + cache): {}",
                ms(took)
            );
        } else {
            times.push(took);
        }
    }
    let med = median(times.clone());
    times.sort();
    println!(
        "whole epilog, cached series, 30-day job, 8 GPUs: median {} (min {}, max {}, {} runs)",
        ms(med),
        ms(times[0]),
        ms(*times.last().unwrap()),
        times.len()
    );
    fs::remove_dir_all(&dir).unwrap();
}
