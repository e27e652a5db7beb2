//! The sampler: reads each GPU's energy counter at the start, samples power at a fixed
//! interval, integrates it, checkpoints to the state directory, and on stop reads the
//! end counters. It runs detached from the job (started by the prolog) or in-process
//! (`spank-carbon measure`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::energy::{gpu_energy, GpuEnergy, GpuReadings, Integrator};
use crate::gpu::map::Charge;
use crate::gpu::{Gpu, GpuError, GpuHost, PowerKind};
use crate::node::state::{write_json, StateError};
use crate::record::Method;
use crate::units::{unix_now, Millijoules, Milliwatts};

/// Node-level sampled energy in time buckets from the window's start, for intensity
/// that varies over time and for plots. Buckets double in width past `MAX_BUCKETS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub bucket_s: f64,
    pub mj: Vec<f64>,
}

const MAX_BUCKETS: usize = 2048;

impl Default for Series {
    fn default() -> Self {
        Series {
            bucket_s: 10.0,
            mj: Vec::new(),
        }
    }
}

impl Series {
    pub fn add(&mut self, t_s: f64, mj: f64) {
        let mut idx = (t_s.max(0.0) / self.bucket_s) as usize;
        while idx >= MAX_BUCKETS {
            self.mj = self.mj.chunks(2).map(|c| c.iter().sum()).collect();
            self.bucket_s *= 2.0;
            idx = (t_s.max(0.0) / self.bucket_s) as usize;
        }
        if self.mj.len() <= idx {
            self.mj.resize(idx + 1, 0.0);
        }
        self.mj[idx] += mj;
    }

    /// Adds `mj` drawn evenly over [t0, t1], split across the buckets it spans.
    pub fn add_interval(&mut self, t0: f64, t1: f64, mj: f64) {
        if t1 <= t0 {
            self.add(t1, mj);
            return;
        }
        let mut a = t0;
        while a < t1 {
            let edge = ((a / self.bucket_s).floor() + 1.0) * self.bucket_s;
            let b = edge.min(t1);
            // A point inside [a, b): its bucket, even after the buckets widen.
            self.add((a + b) / 2.0, mj * (b - a) / (t1 - t0));
            a = b;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuState {
    pub minor: u32,
    pub uuid: String,
    pub name: String,
    pub shared: bool,
    pub start_counter: Option<u64>,
    pub last_counter: Option<u64>,
    pub end_counter: Option<u64>,
    pub reset_seen: bool,
    pub integ: Integrator,
    pub errors: u64,
    /// What the power samples were (`None` before the first one).
    #[serde(default)]
    pub power: Option<PowerKind>,
    /// Fraction of the board's energy charged to the job (`None`: the whole board).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// The rule that gave `share`: `mig-sm`, `mps`, `shard` (`None`: whole board).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// MIG boards: the fraction of the board's SMs in no instance (never charged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unallocated: Option<f64>,
}

impl GpuState {
    /// The fraction of the board charged to the job.
    pub fn charged(&self) -> f64 {
        self.share.unwrap_or(1.0)
    }
}

/// What the sampler knows, checkpointed to `sampler.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    pub job: u32,
    pub node: String,
    pub pid: u32,
    pub interval_ms: u64,
    pub driver: String,
    pub start_unix: f64,
    pub end_unix: Option<f64>,
    pub updated_unix: f64,
    pub finished: bool,
    pub stop_reason: Option<String>,
    pub gpus: Vec<GpuState>,
    pub series: Series,
    /// Highest sampled power of all the GPUs together.
    #[serde(default)]
    pub peak_node_mw: Option<f64>,
}

/// Tells the sampler to stop. `wait` sleeps up to `timeout` and returns true once a
/// stop was asked for.
pub trait Stop {
    fn wait(&self, timeout: Duration) -> bool;
}

/// The stop reason of a sampler whose job ended without an epilog on this node.
pub const ORPHANED: &str = "the job ended without an epilog on this node";

/// Stops after a fixed time (for `measure` with no command and for tests).
pub struct StopAfter(pub Instant);

impl Stop for StopAfter {
    fn wait(&self, timeout: Duration) -> bool {
        let now = Instant::now();
        if now >= self.0 {
            return true;
        }
        std::thread::sleep(timeout.min(self.0 - now));
        Instant::now() >= self.0
    }
}

pub struct SamplerOptions<'a> {
    pub job: u32,
    pub node: String,
    pub interval: Duration,
    pub checkpoint_every: Duration,
    pub max_runtime: Duration,
    /// Asked every `liveness_every` whether the job still runs; two noes in a row stop
    /// the sampler (its epilog never came: node lost, slurmd restarted at a bad time).
    pub job_alive: Option<&'a dyn Fn() -> bool>,
    pub liveness_every: Duration,
}

fn read_counter(g: &dyn Gpu, errors: &mut u64) -> Option<u64> {
    match g.energy() {
        Ok(v) => v,
        Err(e) => {
            *errors += 1;
            log::debug!("{e}");
            None
        }
    }
}

/// Runs the sampler until `stop` says so or `max_runtime` passes; checkpoints to
/// `state_path` (when given) at the start, every `checkpoint_every`, and at the end.
pub fn run(
    host: &dyn GpuHost,
    minors: &[u32],
    opts: &SamplerOptions,
    stop: &dyn Stop,
    state_path: Option<&Path>,
) -> Result<SamplerState, SamplerError> {
    let whole: Vec<Charge> = minors.iter().copied().map(Charge::whole).collect();
    run_charged(host, &whole, opts, stop, state_path)
}

/// [`run`] for boards of which the job is charged a share (MIG, MPS, shards): each
/// board is sampled whole, its share kept in the state.
pub fn run_charged(
    host: &dyn GpuHost,
    charges: &[Charge],
    opts: &SamplerOptions,
    stop: &dyn Stop,
    state_path: Option<&Path>,
) -> Result<SamplerState, SamplerError> {
    let minors: Vec<u32> = charges.iter().map(|c| c.minor).collect();
    let gpus = host.open_minors(&minors)?;
    let t0 = Instant::now();
    let start_unix = unix_now();
    let mut state = SamplerState {
        job: opts.job,
        node: opts.node.clone(),
        pid: std::process::id(),
        interval_ms: opts.interval.as_millis() as u64,
        driver: host.driver(),
        start_unix,
        end_unix: None,
        updated_unix: start_unix,
        finished: false,
        stop_reason: None,
        gpus: gpus
            .iter()
            .zip(charges)
            .map(|(g, c)| GpuState {
                minor: g.minor(),
                uuid: g.uuid().to_string(),
                name: g.name().to_string(),
                shared: g.shared(),
                start_counter: None,
                last_counter: None,
                end_counter: None,
                reset_seen: false,
                integ: Integrator::default(),
                errors: 0,
                power: None,
                share: (c.rule != "whole").then_some(c.share),
                rule: (c.rule != "whole").then(|| c.rule.to_string()),
                unallocated: c.unallocated,
            })
            .collect(),
        series: Series::default(),
        peak_node_mw: None,
    };
    for (g, s) in gpus.iter().zip(state.gpus.iter_mut()) {
        s.start_counter = read_counter(g.as_ref(), &mut s.errors);
        s.last_counter = s.start_counter;
    }
    let mut last_node_mw: Option<(f64, f64)> = None;
    sample(&gpus, &mut state, 0.0, &mut last_node_mw);
    checkpoint(&mut state, state_path)?;

    let mut next_tick = opts.interval;
    let mut next_checkpoint = opts.checkpoint_every;
    let mut next_liveness = opts.liveness_every;
    let mut job_gone = 0;
    loop {
        let elapsed = t0.elapsed();
        let stopped = stop.wait(next_tick.saturating_sub(elapsed));
        let t = t0.elapsed();
        if stopped {
            state.stop_reason = Some("stopped".into());
            break;
        }
        if t < next_tick {
            continue;
        }
        // Skip ticks missed while the host was busy rather than bunching up.
        while next_tick <= t {
            next_tick += opts.interval;
        }
        sample(&gpus, &mut state, t.as_secs_f64(), &mut last_node_mw);
        if t >= next_checkpoint {
            next_checkpoint = t + opts.checkpoint_every;
            for (g, s) in gpus.iter().zip(state.gpus.iter_mut()) {
                let c = read_counter(g.as_ref(), &mut s.errors);
                note_counter(s, c);
            }
            checkpoint(&mut state, state_path)?;
        }
        if let Some(alive) = opts.job_alive {
            if t >= next_liveness {
                next_liveness = t + opts.liveness_every;
                job_gone = if alive() { 0 } else { job_gone + 1 };
                if job_gone >= 2 {
                    state.stop_reason = Some(ORPHANED.into());
                    break;
                }
            }
        }
        if t >= opts.max_runtime {
            state.stop_reason = Some("max_job_s reached".into());
            log::warn!(
                "job {} on {}: sampler stopped after {} s without an epilog",
                opts.job,
                opts.node,
                t.as_secs()
            );
            break;
        }
    }
    // The end: a last power sample and the end counters, at one moment.
    let t = t0.elapsed().as_secs_f64();
    sample(&gpus, &mut state, t, &mut last_node_mw);
    for (g, s) in gpus.iter().zip(state.gpus.iter_mut()) {
        let c = read_counter(g.as_ref(), &mut s.errors);
        note_counter(s, c);
        s.end_counter = c;
    }
    state.end_unix = Some(start_unix + t);
    state.finished = true;
    checkpoint(&mut state, state_path)?;
    Ok(state)
}

fn note_counter(s: &mut GpuState, c: Option<u64>) {
    if let (Some(prev), Some(now)) = (s.last_counter, c) {
        if now < prev {
            s.reset_seen = true;
        }
    }
    if c.is_some() {
        s.last_counter = c;
    }
}

fn sample(
    gpus: &[Box<dyn Gpu + '_>],
    state: &mut SamplerState,
    t_s: f64,
    last_node: &mut Option<(f64, f64)>,
) {
    let mut node_mw = 0.0;
    let mut complete = true;
    for (g, s) in gpus.iter().zip(state.gpus.iter_mut()) {
        match g.power() {
            Ok(p) => {
                s.integ.add(t_s, p.mw);
                // The node's power as charged to the job (its share of shared boards).
                node_mw += p.mw.0 * s.charged();
                s.power = Some(s.power.map_or(p.kind, |k| k.combine(p.kind)));
            }
            Err(e) => {
                s.errors += 1;
                complete = false;
                log::debug!("{e}");
            }
        }
    }
    if complete {
        state.peak_node_mw = Some(state.peak_node_mw.map_or(node_mw, |p: f64| p.max(node_mw)));
        if let Some((t_prev, p_prev)) = *last_node {
            state
                .series
                .add_interval(t_prev, t_s, (p_prev + node_mw) / 2.0 * (t_s - t_prev));
        }
        *last_node = Some((t_s, node_mw));
    }
}

fn checkpoint(state: &mut SamplerState, path: Option<&Path>) -> Result<(), SamplerError> {
    state.updated_unix = unix_now();
    if let Some(path) = path {
        write_json(path, state)?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// One GPU's result over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuResult {
    pub minor: u32,
    pub uuid: String,
    pub name: String,
    pub shared: bool,
    /// Energy charged to the job: the board's times `share`.
    pub wh: Option<f64>,
    /// The whole board's energy (the exact figure).
    pub board_wh: Option<f64>,
    /// Fraction of the board charged to the job, and the rule that gave it.
    pub share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// MIG boards: the fraction of SMs in no instance, reported, never charged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unallocated: Option<f64>,
    pub method: Option<Method>,
    pub counter_wh: Option<f64>,
    pub sampled_wh: Option<f64>,
    pub coverage: Option<f64>,
    pub flags: Vec<&'static str>,
    pub samples: u64,
    pub mean_w: Option<f64>,
    pub min_w: Option<f64>,
    pub max_w: Option<f64>,
    /// What the power samples were: one-second means (`avg`), instant (`inst`), or
    /// both (`mixed`); absent without samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerKind>,
}

/// The node's result over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeResult {
    pub start_unix: f64,
    pub end_unix: f64,
    pub gpus: Vec<GpuResult>,
    /// Energy of the GPUs that have a number.
    pub wh: f64,
    /// GPUs with a number.
    pub measured: u32,
    pub method: Option<Method>,
    pub coverage: Option<f64>,
    pub flags: Vec<&'static str>,
    pub peak_w: Option<f64>,
    /// GPU-equivalents charged: the sum of the measured boards' shares.
    pub gpu_equivalents: f64,
    /// The sharing rule of the node's boards (`None`: whole boards only; `mixed`).
    pub share_rule: Option<String>,
}

/// Evaluates a finished sampler state: per GPU, counter or sampled energy.
pub fn evaluate(state: &SamplerState) -> NodeResult {
    let end = state.end_unix.unwrap_or(state.updated_unix);
    let window_s = (end - state.start_unix).max(0.0);
    let edge_s = 2.0 * state.interval_ms as f64 / 1000.0 + 0.5;
    let mut node = NodeResult {
        start_unix: state.start_unix,
        end_unix: end,
        gpus: Vec::new(),
        wh: 0.0,
        measured: 0,
        method: None,
        coverage: None,
        flags: Vec::new(),
        peak_w: state.peak_node_mw.map(|mw| mw / 1000.0),
        gpu_equivalents: 0.0,
        share_rule: None,
    };
    for g in &state.gpus {
        let readings = GpuReadings {
            start_counter: g.start_counter,
            end_counter: g.end_counter,
            reset_seen: g.reset_seen,
            sampled: g.integ.over_window(window_s, edge_s),
        };
        let e: Option<GpuEnergy> = gpu_energy(&readings);
        let w = |mw: Option<f64>| mw.map(|v| Milliwatts(v).watts());
        let mut flags: Vec<&'static str> = e.as_ref().map(|e| e.flags.clone()).unwrap_or_default();
        if g.shared {
            flags.push("shared");
        }
        // Where samples make the energy, what they were (a counter needs no word).
        if let (Some(e), Some(k)) = (&e, g.power) {
            if e.method == Method::Sampled {
                flags.push(k.flag());
            }
        }
        if g.rule.is_some() {
            flags.push("estimate");
        }
        let board_wh = e.as_ref().map(|e| e.energy.watt_hours());
        let result = GpuResult {
            minor: g.minor,
            uuid: g.uuid.clone(),
            name: g.name.clone(),
            shared: g.shared,
            wh: board_wh.map(|wh| wh * g.charged()),
            board_wh,
            share: g.charged(),
            rule: g.rule.clone(),
            unallocated: g.unallocated,
            method: e.as_ref().map(|e| e.method),
            counter_wh: e
                .as_ref()
                .and_then(|e| e.counter)
                .map(Millijoules::watt_hours),
            sampled_wh: e
                .as_ref()
                .and_then(|e| e.sampled)
                .map(Millijoules::watt_hours),
            coverage: e.as_ref().and_then(|e| e.coverage),
            flags,
            samples: g.integ.samples,
            mean_w: w(g.integ.mean_mw()),
            min_w: w(g.integ.min_mw),
            max_w: w(g.integ.max_mw),
            power: g.power,
        };
        if let (Some(wh), Some(m)) = (result.wh, result.method) {
            node.wh += wh;
            node.measured += 1;
            node.gpu_equivalents += result.share;
            node.method = Some(node.method.map_or(m, |n| n.combine(m)));
        } else {
            node.flags.push("missing");
        }
        if let Some(c) = result.coverage {
            node.coverage = Some(node.coverage.map_or(c, |n: f64| n.min(c)));
        }
        for f in &result.flags {
            if !node.flags.contains(f) {
                node.flags.push(f);
            }
        }
        node.gpus.push(result);
    }
    node.flags.sort();
    node.flags.dedup();
    let kinds = node.flags.iter().filter(|f| PowerKind::is_flag(f)).count();
    if kinds > 1 {
        node.flags.retain(|f| !PowerKind::is_flag(f));
        node.flags.push(PowerKind::Mixed.flag());
        node.flags.sort();
    }
    let mut rules: Vec<&str> = node
        .gpus
        .iter()
        .filter(|g| g.wh.is_some())
        .map(|g| g.rule.as_deref().unwrap_or("whole"))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    node.share_rule = match rules.as_slice() {
        [] | ["whole"] => None,
        [one] => Some(one.to_string()),
        _ => Some("mixed".to_string()),
    };
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fake::{FakeGpu, FakeHost};

    /// A GPU at work: its counter advances by 1000 mJ at every read. Its power readings
    /// are one-second means on minors 0, 3, 6..., instant on 1, 4, 7..., and each in turn
    /// on 2, 5, 8....
    fn gpu(minor: u32, power_mw: f64, counter: Option<u64>) -> FakeGpu {
        const AVG: PowerKind = PowerKind::Average1s;
        const INST: PowerKind = PowerKind::Instant;
        FakeGpu {
            counter_step: 1000,
            kinds: match minor % 3 {
                0 => &[AVG],
                1 => &[INST],
                _ => &[AVG, INST],
            },
            ..FakeGpu::new(minor, power_mw, counter)
        }
    }

    fn opts(ms: u64) -> SamplerOptions<'static> {
        SamplerOptions {
            job: 1,
            node: "n1".into(),
            interval: Duration::from_millis(ms),
            checkpoint_every: Duration::from_millis(ms * 3),
            max_runtime: Duration::from_secs(3600),
            job_alive: None,
            liveness_every: Duration::from_secs(3600),
        }
    }

    #[test]
    fn samples_and_uses_counters_in_requested_order() {
        let host = FakeHost(vec![gpu(3, 100_000.0, Some(0)), gpu(1, 50_000.0, None)]);
        let stop = StopAfter(Instant::now() + Duration::from_millis(200));
        let state = run(&host, &[1, 3], &opts(10), &stop, None).unwrap();
        assert!(state.finished);
        assert_eq!(state.gpus[0].minor, 1);
        assert_eq!(state.gpus[1].minor, 3);
        assert!(
            state.gpus[0].integ.samples >= 5,
            "{:?}",
            state.gpus[0].integ
        );
        let r = evaluate(&state);
        // minor 1 has no counter: sampled at 50 W over the window.
        assert_eq!(r.gpus[0].method, Some(Method::Sampled));
        let window = state.end_unix.unwrap() - state.start_unix;
        let expect = 50.0 * window / 3600.0;
        assert!(
            (r.gpus[0].wh.unwrap() - expect).abs() / expect < 0.01,
            "{r:?}"
        );
        // minor 3 has a counter: its difference wins.
        assert_eq!(r.gpus[1].method, Some(Method::Counter));
        let c = r.gpus[1].counter_wh.unwrap();
        assert!(c > 0.0);
        assert_eq!(r.method, Some(Method::Mixed));
        assert_eq!(r.measured, 2);
    }

    #[test]
    fn each_gpu_says_what_its_power_samples_were() {
        let mut failing = gpu(4, 1.0, None);
        failing.fail_power = true;
        let host = FakeHost(vec![
            gpu(3, 100_000.0, Some(0)),
            gpu(1, 50_000.0, None),
            gpu(2, 70_000.0, None),
            failing,
        ]);
        let stop = StopAfter(Instant::now() + Duration::from_millis(100));
        let state = run(&host, &[3, 1, 2, 4], &opts(10), &stop, None).unwrap();
        let kinds: Vec<_> = state.gpus.iter().map(|g| g.power).collect();
        assert_eq!(
            kinds,
            [
                Some(PowerKind::Average1s),
                Some(PowerKind::Instant),
                Some(PowerKind::Mixed),
                None
            ]
        );
        // It survives the checkpoint and reaches the local record (GpuResult).
        let back: SamplerState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let back: Vec<_> = back.gpus.iter().map(|g| g.power).collect();
        assert_eq!(back, kinds);
        let r = evaluate(&state);
        let json = serde_json::to_value(&r.gpus).unwrap();
        let words: Vec<_> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.get("power").and_then(|p| p.as_str()))
            .collect();
        assert_eq!(words, [Some("avg"), Some("inst"), Some("mixed"), None]);
        // The record's flag only where samples make the energy (minor 3 has a
        // counter), and one word for the node: its GPUs' samples differ, so mixed.
        let pw = |f: &[&str]| -> Vec<String> {
            f.iter()
                .filter(|f| PowerKind::is_flag(f))
                .map(|f| f.to_string())
                .collect()
        };
        assert_eq!(r.gpus[0].method, Some(Method::Counter));
        let per_gpu: Vec<_> = r.gpus.iter().map(|g| pw(&g.flags)).collect();
        assert_eq!(per_gpu, [vec![], vec!["pwinst"], vec!["pwmixed"], vec![]]);
        assert_eq!(pw(&r.flags), ["pwmixed"]);
        // A node whose sampled GPUs all read instant power says so.
        let host = FakeHost(vec![gpu(1, 50_000.0, None), gpu(4, 60_000.0, None)]);
        let stop = StopAfter(Instant::now() + Duration::from_millis(50));
        let state = run(&host, &[1, 4], &opts(10), &stop, None).unwrap();
        assert_eq!(pw(&evaluate(&state).flags), ["pwinst"]);
        // A checkpoint written before this field existed still reads.
        let mut old = serde_json::to_value(&state).unwrap();
        old["gpus"][0].as_object_mut().unwrap().remove("power");
        let old: SamplerState = serde_json::from_value(old).unwrap();
        assert_eq!(old.gpus[0].power, None);
    }

    #[test]
    fn shared_boards_are_sampled_whole_and_charged_their_share() {
        let host = FakeHost(vec![gpu(0, 200_000.0, Some(0)), gpu(4, 100_000.0, None)]);
        let charges = [
            Charge {
                minor: 4,
                share: 0.25,
                rule: "mps",
                unallocated: None,
            },
            Charge {
                minor: 0,
                share: 3.0 / 7.0,
                rule: "mig-sm",
                unallocated: Some(1.0 / 7.0),
            },
        ];
        let stop = StopAfter(Instant::now() + Duration::from_millis(200));
        let state = run_charged(&host, &charges, &opts(10), &stop, None).unwrap();
        assert_eq!(state.gpus[0].share, Some(0.25));
        assert_eq!(state.gpus[1].unallocated, Some(1.0 / 7.0));
        let r = evaluate(&state);
        let window = state.end_unix.unwrap() - state.start_unix;
        // The whole board's energy is kept; the job is charged its share of it.
        let board = r.gpus[0].board_wh.unwrap();
        let expect = 100.0 * window / 3600.0;
        assert!((board - expect).abs() / expect < 0.01, "{r:?}");
        assert!((r.gpus[0].wh.unwrap() - 0.25 * board).abs() < 1e-12);
        let board0 = r.gpus[1].board_wh.unwrap();
        assert!((r.gpus[1].wh.unwrap() - board0 * 3.0 / 7.0).abs() < 1e-12);
        assert!((r.wh - (0.25 * board + board0 * 3.0 / 7.0)).abs() < 1e-12);
        assert!((r.gpu_equivalents - (0.25 + 3.0 / 7.0)).abs() < 1e-12);
        assert_eq!(r.share_rule.as_deref(), Some("mixed"));
        assert!(r.flags.contains(&"estimate"), "{:?}", r.flags);
        // The node's peak is the charged power: 25 W + 3/7 of 200 W.
        let peak = r.peak_w.unwrap();
        assert!((peak - (25.0 + 200.0 * 3.0 / 7.0)).abs() < 1e-9, "{peak}");
        // Whole boards: no rule, no estimate.
        let stop = StopAfter(Instant::now() + Duration::from_millis(30));
        let state = run(&host, &[0], &opts(10), &stop, None).unwrap();
        let r = evaluate(&state);
        assert_eq!((r.share_rule, r.gpu_equivalents), (None, 1.0));
        assert!(!r.flags.contains(&"estimate"));
        assert_eq!(r.gpus[0].wh, r.gpus[0].board_wh);
    }

    #[test]
    fn failing_gpu_is_missing_not_invented() {
        let mut g = gpu(0, 1.0, None);
        g.fail_power = true;
        let host = FakeHost(vec![g]);
        let stop = StopAfter(Instant::now() + Duration::from_millis(50));
        let state = run(&host, &[0], &opts(10), &stop, None).unwrap();
        let r = evaluate(&state);
        assert_eq!(r.measured, 0);
        assert_eq!(r.gpus[0].wh, None);
        assert!(r.flags.contains(&"missing"));
    }

    #[test]
    fn stops_when_the_job_is_gone() {
        let host = FakeHost(vec![gpu(0, 1000.0, Some(0))]);
        let stop = StopAfter(Instant::now() + Duration::from_secs(30));
        let alive = || false;
        let o = SamplerOptions {
            job_alive: Some(&alive),
            liveness_every: Duration::from_millis(20),
            ..opts(10)
        };
        let t0 = Instant::now();
        let state = run(&host, &[0], &o, &stop, None).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(state.stop_reason.as_deref(), Some(ORPHANED));
        assert!(state.finished);
    }

    #[test]
    fn series_buckets_and_widens() {
        let mut s = Series::default();
        s.add(5.0, 1.0);
        s.add(15.0, 2.0);
        assert_eq!(s.mj, vec![1.0, 2.0]);
        s.add(10.0 * 5000.0, 4.0);
        assert!(s.mj.len() <= MAX_BUCKETS);
        assert_eq!(s.mj.iter().sum::<f64>(), 7.0);
        assert!(s.bucket_s > 10.0);
    }

    #[test]
    fn intervals_split_across_bucket_edges() {
        let mut s = Series::default();
        s.add_interval(9.8, 10.2, 4.0);
        assert_eq!(s.mj.len(), 2);
        assert!(
            (s.mj[0] - 2.0).abs() < 1e-9 && (s.mj[1] - 2.0).abs() < 1e-9,
            "{:?}",
            s.mj
        );
        s.add_interval(0.0, 25.0, 25.0);
        assert!((s.mj[0] - 12.0).abs() < 1e-9, "{:?}", s.mj);
        assert!((s.mj[2] - 5.0).abs() < 1e-9, "{:?}", s.mj);
        assert!((s.mj.iter().sum::<f64>() - 29.0).abs() < 1e-9);
    }
}
