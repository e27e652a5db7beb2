//! The job's epilog on one node: stop the sampler, total the node's energy and its CO2e
//! (the node's part of the record), queue the part for delivery and keep a local record;
//! and the same for a sampler whose job ended with no epilog here.

use std::fs;
use std::time::Duration;

use crate::accounting::Delivery;
use crate::core::config::Config;
use crate::core::intensity;
use crate::gpu::CounterRead;
use crate::node::courier_lock::ensure_courier;
use crate::node::job::{stop_sampler, JobError, JobInfo, Spawner};
use crate::node::job_env::JobEnv;
use crate::node::local_record::write_local_record;
use crate::node::sampler::{evaluate, NodeResult, SamplerState};
use crate::node::state::{self, JobKey, StateDir, StateError};
use crate::record::{Meta, Method, NodePart};
use crate::units::unix_now;

#[derive(Debug, Clone, PartialEq)]
pub enum EpilogOutcome {
    NoGpus,
    /// The prolog left nothing for this job on this node.
    NoProlog,
    /// Measured, but no GPU had a number: nothing is recorded.
    NothingMeasured,
    Recorded {
        part: NodePart,
    },
}

/// The configured intensity series for a node of a partition (the part of it that the
/// `window` needs), through the parsed copy cached in the state directory
/// (`intensity_cache`): the CSV is parsed once per change of the file, not in every
/// epilog. A missing or broken file is logged and the fixed intensity used (the record
/// then says `src:fallback`).
fn load_series(
    config: &Config,
    state_dir: Option<&StateDir>,
    node: &str,
    partition: Option<&str>,
    window: Option<(f64, f64)>,
) -> Option<intensity::Steps> {
    let path = config.intensity_series.as_ref()?;
    let dir = state_dir.map(StateDir::root);
    crate::node::intensity_cache::steps_for(path, dir, node, partition, window)
        .map_err(|e| {
            log::error!(
                "intensity_series {}: {e}; using intensity={}",
                path.display(),
                config.intensity.0
            )
        })
        .ok()
        .flatten()
}

/// Builds the node's part of the record from a finished sampler state.
pub fn node_part(
    config: &Config,
    node: &str,
    partition: Option<&str>,
    state: &SamplerState,
    result: &NodeResult,
    state_dir: Option<&StateDir>,
) -> Option<NodePart> {
    let method: Method = result.method?;
    let mut flags: Vec<String> = result.flags.iter().map(|f| f.to_string()).collect();
    flags.retain(|f| !f.is_empty());
    let energy = intensity::EnergyInTime {
        wh: result.wh,
        start: result.start_unix,
        end: result.end_unix,
        bucket_s: state.series.bucket_s,
        bucket_mj: &state.series.mj,
    };
    let steps = load_series(config, state_dir, node, partition, energy.span());
    let (co2e_g, source, _) = intensity::co2e_over_time(
        &energy,
        config.pue,
        config.intensity,
        steps.as_ref(),
        config.intensity_series.is_some(),
        config.intensity_max_age_s as f64,
    );
    if source == intensity::Source::Fallback {
        log::warn!(
            "intensity series does not cover {node}'s window: fixed intensity {} used",
            config.intensity.0
        );
    }
    let hours = (result.end_unix - result.start_unix).max(0.0) / 3600.0;
    let embodied_g = (config.embodied_kg_per_gpu_hour > 0.0)
        .then_some(config.embodied_kg_per_gpu_hour * 1000.0 * result.gpu_equivalents * hours);
    Some(
        NodePart {
            node: node.to_string(),
            wh: result.wh,
            gpus: result.measured,
            co2e_g,
            method,
            start: result.start_unix,
            end: result.end_unix,
            coverage: result.coverage,
            flags,
            peak_w: result.peak_w,
            intensity_src: Some(source.as_str().to_string()),
            embodied_g,
            share: result
                .share_rule
                .as_ref()
                .map(|rule| crate::record::ShareRule {
                    rule: rule.clone(),
                    gpus: result.gpu_equivalents,
                }),
        }
        .rounded(),
    )
}

/// Opens the host's GPUs (NVML, from `nvml_lib` when configured).
pub type OpenGpus = crate::gpu::OpenHost;

/// The end counters of a sampler that died, read here within `nvml_timeout_ms`: a GPU
/// that NVML does not answer for in time (a wedged driver) gets none, and its energy
/// comes from the samples the sampler saved.
fn read_end_counters(
    config: &Config,
    key: &JobKey,
    minors: &[u32],
    open_gpus: &'static OpenGpus,
) -> Vec<Option<u64>> {
    let limit = config.nvml_timeout();
    let read =
        crate::gpu::end_counters_within(open_gpus, config.nvml_lib.clone(), minors.to_vec(), limit);
    match read {
        CounterRead::Done(counters) => counters,
        CounterRead::Failed(why) => {
            log::error!("job {key}: reading end counters: {why}; using the sampler's samples");
            vec![None; minors.len()]
        }
        CounterRead::TimedOut { counters, stuck_in } => {
            log::error!(
                "job {key}: NVML timeout: no answer within nvml_timeout_ms={} ms while {stuck_in}; {} of {} GPU(s) without an end counter use the sampler's samples",
                limit.as_millis(),
                counters.iter().filter(|c| c.is_none()).count(),
                counters.len()
            );
            counters
        }
    }
}

pub fn epilog(
    config: &Config,
    args: &[String],
    env: &JobEnv,
    spawner: &dyn Spawner,
    open_gpus: &'static OpenGpus,
) -> Result<EpilogOutcome, JobError> {
    let key = JobKey::new(env.job, &env.node)?;
    let Some(state) = StateDir::existing(&config.state_dir)? else {
        return Ok(if env.gpus.is_some() {
            log::warn!(
                "job {}: no measurement on {}: the prolog did not run here (set PrologFlags=Alloc)",
                env.job,
                env.node
            );
            EpilogOutcome::NoProlog
        } else {
            EpilogOutcome::NoGpus
        });
    };
    let dir = state.job_dir(&key);
    let info: Option<JobInfo> = match state::read_json(&dir.join("job.json")) {
        Ok(info) => info,
        Err(e) => {
            log::error!("job {key}: {e}; no record for this node");
            let _ = fs::remove_dir_all(&dir);
            return Ok(EpilogOutcome::NoProlog);
        }
    };
    let Some(info) = info else {
        if state
            .pending_keys()
            .iter()
            .any(|k| k.job == key.job && k.node == key.node)
        {
            log::info!(
                "job {key}: epilog again; this node's record is queued already, nothing done"
            );
            return Ok(EpilogOutcome::NoProlog);
        }
        if env.gpus.is_some() {
            log::warn!(
                "job {}: no measurement on {}: the prolog did not run here (set PrologFlags=Alloc so it runs at allocation); no record for this node",
                env.job,
                env.node
            );
            return Ok(EpilogOutcome::NoProlog);
        }
        return Ok(EpilogOutcome::NoGpus);
    };
    if let Some(why) = &info.refused {
        log::warn!("job {key}: no measurement on this node: {why}; no record for this node");
        let _ = fs::remove_dir_all(&dir);
        return Ok(EpilogOutcome::NothingMeasured);
    }
    if let Some(pid) = info.sampler_pid {
        stop_sampler(pid, &key, Duration::from_secs(5));
    }
    let sampler_path = dir.join("sampler.json");
    let sampled: Option<SamplerState> = state::read_json(&sampler_path).unwrap_or_else(|e| {
        log::error!("job {key}: {e}");
        None
    });
    let mut sampler_lost = false;
    let final_state = match sampled {
        Some(s) if s.finished => s,
        Some(mut s) => {
            // The sampler is gone (killed, crashed): its start counters and samples so
            // far are on disk; read the end counters here.
            log::warn!("job {key}: the sampler ended early; reading end counters in the epilog");
            // The boards the sampler opened (the prolog may have known them only by
            // UUID or NVML position).
            let minors: Vec<u32> = s.gpus.iter().map(|g| g.minor).collect();
            let counters = read_end_counters(config, &key, &minors, open_gpus);
            for (c, st) in counters.into_iter().zip(s.gpus.iter_mut()) {
                st.end_counter = c;
            }
            s.end_unix = Some(unix_now());
            s.finished = true;
            s.stop_reason = Some("sampler gone; end counters read by the epilog".into());
            sampler_lost = true;
            s
        }
        None => {
            let why = fs::read_to_string(dir.join("sampler.error"))
                .unwrap_or_else(|_| "the sampler never recorded a start".into());
            log::warn!(
                "job {key}: no measurement on this node: {}; no record for this node",
                why.trim()
            );
            let _ = fs::remove_dir_all(&dir);
            return Ok(EpilogOutcome::NothingMeasured);
        }
    };
    let mut result = evaluate(&final_state);
    if sampler_lost {
        result.flags.push("samplerlost");
    }
    let part = node_part(
        config,
        &key.node,
        env.partition.as_deref(),
        &final_state,
        &result,
        Some(&state),
    );
    let meta = Meta {
        intensity: config.intensity,
        pue: config.pue,
        expected_nodes: info.nodes.len().max(1) as u32,
    };
    // The pending record first (small, synced): it is the accounting record. The local
    // audit record (KBs) comes second and is optional: on a full disk the record that
    // matters has the space.
    if let Some(part) = &part {
        let delivery = Delivery {
            job: env.job,
            field: config.field,
            part: part.clone(),
            meta,
            nodes: info.nodes.clone(),
            sluid: env.sluid.clone(),
        };
        let pending = state.pending_path(&key.with_run(part.start));
        // A part already queued (an epilog run again) was counted when it was queued.
        let fresh = !pending.exists();
        state::write_json_durable(&pending, &delivery)?;
        if fresh {
            crate::node::metrics::count_part(&state, &key.node, part);
        }
    }
    if let Err(e) = write_local_record(
        config,
        &state,
        &key,
        &info.nodes,
        &final_state,
        &result,
        part.as_ref(),
        env.sluid.as_deref(),
        info.gpus.as_deref(),
    ) {
        log::error!("job {key}: local audit record not kept: {e}");
    }
    let Some(part) = part else {
        log::warn!("job {key}: no GPU of this node could be measured; nothing recorded");
        let _ = fs::remove_dir_all(&dir);
        return Ok(EpilogOutcome::NothingMeasured);
    };
    let _ = fs::remove_dir_all(&dir);
    crate::node::metrics::refresh(config, &state, Some(&key.node));
    // The node's courier takes it from here; start one if none runs.
    ensure_courier(config, &state, args, &env.node, spawner, false);
    Ok(EpilogOutcome::Recorded { part })
}

/// A sampler whose job ended without an epilog here: keep what it measured as a local
/// record (not delivered: its window's end is when the sampler noticed, not when the
/// job ended) and leave no state behind.
pub fn finish_orphan(
    config: &Config,
    state: &StateDir,
    key: &JobKey,
    final_state: &SamplerState,
) -> Result<(), StateError> {
    let dir = state.job_dir(key);
    let info = state::read_json::<JobInfo>(&dir.join("job.json"))
        .ok()
        .flatten();
    let found_by = info.as_ref().and_then(|i| i.gpus.clone());
    let nodes = info.map(|i| i.nodes).unwrap_or_default();
    let mut result = evaluate(final_state);
    result.flags.push("noepilog");
    let part = node_part(config, &key.node, None, final_state, &result, Some(state));
    write_local_record(
        config,
        state,
        key,
        &nodes,
        final_state,
        &result,
        part.as_ref(),
        None,
        found_by.as_deref(),
    )
    .map(drop)?;
    if let Some(part) = &part {
        crate::node::metrics::count_part(state, &key.node, part);
        crate::node::metrics::refresh(config, state, Some(&key.node));
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::energy::Integrator;
    use crate::gpu::{GpuError, GpuHost};
    use crate::node::job::NoSpawn;
    use crate::node::retention;
    use crate::node::sampler::GpuState;
    use crate::units::Milliwatts;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::{Instant, SystemTime};

    const WATTS: f64 = 100.0;
    const SECONDS: u32 = 10;

    /// A job on `node` with two GPUs (minors 0 and 1) sampled at WATTS for SECONDS,
    /// as the prolog and the sampler leave it; the sampler `finished` or died.
    fn job_in_state(tag: &str, job: u32, finished: bool) -> (PathBuf, Config, JobEnv) {
        let root = std::env::temp_dir().join(format!(
            "sc-job-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        let state = StateDir::open(&root).unwrap();
        let node = "n1";
        let key = JobKey::new(job, node).unwrap();
        let dir = state.create_job_dir(&key).unwrap();
        let nodes = vec![node.to_string()];
        let start = unix_now() - f64::from(SECONDS);
        let info = JobInfo {
            job,
            node: node.into(),
            gres_indices: vec![0, 1],
            minors: vec![0, 1],
            nodes: nodes.clone(),
            prolog_unix: start,
            sampler_pid: None,
            gpus: None,
            refused: None,
        };
        state::write_json(&dir.join("job.json"), &info).unwrap();
        let mut integ = Integrator::default();
        for t in 0..=SECONDS {
            integ.add(f64::from(t), Milliwatts(WATTS * 1000.0));
        }
        let gpu = |minor| GpuState {
            minor,
            uuid: format!("GPU-{minor}"),
            name: "Fake".into(),
            shared: false,
            start_counter: Some(5_000),
            last_counter: None,
            end_counter: finished.then_some(5_000 + (WATTS * 1000.0) as u64 * u64::from(SECONDS)),
            reset_seen: false,
            integ: integ.clone(),
            errors: 0,
            power: None,
            share: None,
            rule: None,
            unallocated: None,
        };
        let sampled = SamplerState {
            job,
            node: node.into(),
            pid: 1,
            interval_ms: 1000,
            driver: "fake".into(),
            start_unix: start,
            end_unix: finished.then_some(start + f64::from(SECONDS)),
            updated_unix: start + f64::from(SECONDS),
            finished,
            stop_reason: None,
            gpus: vec![gpu(0), gpu(1)],
            series: Default::default(),
            peak_node_mw: None,
        };
        state::write_json(&dir.join("sampler.json"), &sampled).unwrap();
        let config = Config {
            state_dir: root.clone(),
            bin: PathBuf::from("/nonexistent/spank-carbon"),
            nvml_timeout_ms: 300,
            ..Config::default()
        };
        let env = JobEnv {
            job,
            node: node.into(),
            gpus: Some("0,1".into()),
            nodes,
            slurm_conf: None,
            partition: None,
            sluid: None,
            cuda_visible_devices: None,
            mps_percentage: None,
            shards_on_node: None,
        };
        (root, config, env)
    }

    fn never_called(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        panic!("NVML opened although the sampler finished")
    }

    fn nvml_hangs(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        loop {
            std::thread::park();
        }
    }

    /// The energy the fake sampler saw on one GPU, Wh.
    fn one_gpu_wh() -> f64 {
        WATTS * f64::from(SECONDS) / 3600.0
    }

    #[test]
    fn pending_record_is_kept_when_the_audit_record_cannot_be() {
        let (root, config, env) = job_in_state("full", 41, true);
        let state = StateDir::existing(&root).unwrap().unwrap();
        let key = JobKey::new(env.job, &env.node).unwrap();
        // The day's audit file cannot be written: a directory where it should be.
        let day_file = root
            .join("records")
            .join(retention::day_file_name(retention::day_of(
                std::time::SystemTime::now(),
            )));
        fs::create_dir(&day_file).unwrap();
        let spawner = NoSpawn(Mutex::new(Vec::new()));
        let out = epilog(&config, &[], &env, &spawner, &never_called).unwrap();
        let EpilogOutcome::Recorded { part } = out else {
            panic!("{out:?}");
        };
        assert!((part.wh - 2.0 * one_gpu_wh()).abs() < 0.01, "{}", part.wh);
        let pending: Delivery = state::read_json(&state.pending_path(&key.with_run(part.start)))
            .unwrap()
            .unwrap();
        assert_eq!(pending.part, part);
        assert!(!state.job_dir(&key).exists(), "job state cleaned up");
        {
            let spawned = spawner.0.lock().unwrap();
            assert_eq!(spawned.len(), 1, "the courier is started");
            // With the node's name, so that it finds this node's `%n` state directory.
            assert!(
                spawned[0].starts_with("deliver -- ")
                    && spawned[0].ends_with("| SLURMD_NODENAME=n1"),
                "{}",
                spawned[0]
            );
        }
        // With the file writable again, the audit record is kept too, in the day's file.
        fs::remove_dir(&day_file).unwrap();
        let (root, config, env) = job_in_state("full", 42, true);
        epilog(&config, &[], &env, &spawner, &never_called).unwrap();
        let local = retention::find_record(&root.join("records"), 42, "n1").unwrap();
        assert_eq!(local["job"], 42);
        assert_eq!(local["segment_part"]["wh"], part.wh);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn orphans_keep_a_local_record() {
        let (root, config, env) = job_in_state("orphan", 43, true);
        let state = StateDir::existing(&root).unwrap().unwrap();
        let key = JobKey::new(env.job, &env.node).unwrap();
        let sampled: SamplerState = state::read_json(&state.job_dir(&key).join("sampler.json"))
            .unwrap()
            .unwrap();
        finish_orphan(&config, &state, &key, &sampled).unwrap();
        let local = retention::find_record(&root.join("records"), 43, "n1").unwrap();
        assert!(local["result"]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "noepilog"));
        assert!(state.pending_keys().is_empty());
        assert!(!state.job_dir(&key).exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn epilog_returns_in_bounded_time_when_nvml_hangs() {
        let (root, config, env) = job_in_state("hang", 44, false);
        let state = StateDir::existing(&root).unwrap().unwrap();
        let limit = config.nvml_timeout();
        let bound = limit + Duration::from_secs(2);
        // In a thread, so that an epilog that hangs fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let spawner = NoSpawn(Mutex::new(Vec::new()));
            let t0 = Instant::now();
            let out = epilog(&config, &[], &env, &spawner, &nvml_hangs);
            let _ = tx.send((out.map_err(|e| e.to_string()), t0.elapsed()));
        });
        let (out, took) = rx
            .recv_timeout(bound)
            .expect("the epilog returns within nvml_timeout_ms and some slack");
        assert!(took >= limit && took < bound, "{took:?}");
        let out = out.unwrap();
        // No end counter: the samples the sampler saved, with its flags.
        let EpilogOutcome::Recorded { part } = out else {
            panic!("{out:?}");
        };
        assert_eq!(part.method, Method::Sampled);
        assert!(
            part.flags.iter().any(|f| f == "samplerlost"),
            "{:?}",
            part.flags
        );
        assert!(
            (part.wh - 2.0 * one_gpu_wh()).abs() < 0.05 * part.wh,
            "{}",
            part.wh
        );
        assert_eq!(
            state.pending_keys(),
            vec![JobKey::new(44, "n1").unwrap().with_run(part.start)]
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sluid_is_kept_in_the_pending_and_local_records() {
        let (root, config, mut env) = job_in_state("sluid", 44, true);
        env.sluid = Some("s0123456789ABC".into());
        let state = StateDir::existing(&root).unwrap().unwrap();
        let key = JobKey::new(env.job, &env.node).unwrap();
        let spawner = NoSpawn(Mutex::new(Vec::new()));
        let EpilogOutcome::Recorded { part } =
            epilog(&config, &[], &env, &spawner, &never_called).unwrap()
        else {
            panic!("not recorded");
        };
        let pending: Delivery = state::read_json(&state.pending_path(&key.with_run(part.start)))
            .unwrap()
            .unwrap();
        assert_eq!(pending.sluid.as_deref(), Some("s0123456789ABC"));
        let local = retention::find_record(&root.join("records"), 44, "n1").unwrap();
        assert_eq!(local["sluid"], "s0123456789ABC");
        fs::remove_dir_all(&root).unwrap();
    }

    /// Before 26.05 slurmd could run a job's epilog twice (TERMINATE_JOB retries): the
    /// second finds the job's state gone and leaves the pending record as it was, or,
    /// if the first died before cleaning up, makes the same part again: never a second
    /// share, never a worse one.
    #[test]
    fn a_second_epilog_for_the_job_changes_nothing() {
        let (root, config, env) = job_in_state("twice", 45, true);
        let state = StateDir::existing(&root).unwrap().unwrap();
        let key = JobKey::new(env.job, &env.node).unwrap();
        let spawner = NoSpawn(Mutex::new(Vec::new()));
        let EpilogOutcome::Recorded { part } =
            epilog(&config, &[], &env, &spawner, &never_called).unwrap()
        else {
            panic!("not recorded");
        };
        let path = state.pending_path(&key.with_run(part.start));
        let first = fs::read(&path).unwrap();
        let second = epilog(&config, &[], &env, &spawner, &never_called).unwrap();
        assert!(matches!(second, EpilogOutcome::NoProlog), "{second:?}");
        assert_eq!(fs::read(&path).unwrap(), first);
        assert_eq!(state.pending_keys().len(), 1);
        // The first epilog died after queueing its part, before cleaning up: the second
        // makes the same part from the same sampler state (no NVML), under the same name.
        let (root2, config2, env2) = job_in_state("twice2", 46, true);
        let state2 = StateDir::existing(&root2).unwrap().unwrap();
        let key2 = JobKey::new(env2.job, &env2.node).unwrap();
        let dir = state2.job_dir(&key2);
        let copy = std::env::temp_dir().join(format!("sc-twice-copy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&copy);
        fs::create_dir_all(&copy).unwrap();
        for f in ["job.json", "sampler.json"] {
            fs::copy(dir.join(f), copy.join(f)).unwrap();
        }
        let EpilogOutcome::Recorded { part: p1 } =
            epilog(&config2, &[], &env2, &spawner, &never_called).unwrap()
        else {
            panic!("not recorded");
        };
        let pending_path = state2.pending_path(&key2.with_run(p1.start));
        let queued = fs::read(&pending_path).unwrap();
        state2.create_job_dir(&key2).unwrap();
        for f in ["job.json", "sampler.json"] {
            fs::copy(copy.join(f), dir.join(f)).unwrap();
        }
        let EpilogOutcome::Recorded { part: p2 } =
            epilog(&config2, &[], &env2, &spawner, &never_called).unwrap()
        else {
            panic!("not recorded");
        };
        assert_eq!(p1, p2);
        assert_eq!(fs::read(&pending_path).unwrap(), queued);
        assert_eq!(state2.pending_keys().len(), 1);
        // And merging the part twice into the record counts it once.
        let d: Delivery = state::read_json(&pending_path).unwrap().unwrap();
        let once = crate::record::merge("", &d.part, &d.meta, None);
        let twice = crate::record::merge(&once, &p2, &d.meta, None);
        assert_eq!(once, twice);
        for r in [root, root2, copy] {
            fs::remove_dir_all(&r).unwrap();
        }
    }

    fn finished_state(start: f64, bucket_mj: Vec<f64>) -> SamplerState {
        SamplerState {
            job: 9,
            node: "node4".into(),
            pid: 1,
            interval_ms: 1000,
            driver: String::new(),
            start_unix: start,
            end_unix: Some(start + 20.0),
            updated_unix: start + 20.0,
            finished: true,
            stop_reason: None,
            gpus: Vec::new(),
            series: crate::node::sampler::Series {
                bucket_s: 10.0,
                mj: bucket_mj,
            },
            peak_node_mw: None,
        }
    }

    /// 1 Wh on one whole board by its counter, over [start, end].
    fn counted(start: f64, end: f64) -> NodeResult {
        NodeResult {
            start_unix: start,
            end_unix: end,
            gpus: Vec::new(),
            wh: 1.0,
            measured: 1,
            method: Some(Method::Counter),
            coverage: Some(1.0),
            flags: Vec::new(),
            peak_w: None,
            gpu_equivalents: 1.0,
            share_rule: None,
        }
    }

    #[test]
    fn shared_boards_get_a_rule_token_and_embodied_by_gpu_equivalents() {
        let config = Config {
            embodied_kg_per_gpu_hour: 0.36,
            ..Config::default()
        };
        let sampler = finished_state(1000.0, vec![5.0, 5.0]);
        let result = NodeResult {
            measured: 2,
            flags: vec!["estimate", "shared"],
            gpu_equivalents: 0.5,
            share_rule: Some("mig-sm".into()),
            ..counted(1000.0, 4600.0)
        };
        let p = node_part(&config, "n1", None, &sampler, &result, None).unwrap();
        assert_eq!(
            p.share,
            Some(crate::record::ShareRule {
                rule: "mig-sm".into(),
                gpus: 0.5
            })
        );
        assert!(p.flags.contains(&"estimate".to_string()));
        // One hour of half a GPU at 0.36 kg per GPU-hour: 180 g, not 720 g for two boards.
        assert_eq!(p.embodied_g, Some(180.0));
    }

    #[test]
    fn a_refused_prolog_leaves_the_epilog_nothing_to_record() {
        let (root, config, env) = job_in_state("refused", 47, true);
        let state = StateDir::existing(&root).unwrap().unwrap();
        let key = JobKey::new(env.job, &env.node).unwrap();
        let info_path = state.job_dir(&key).join("job.json");
        let mut info: JobInfo = state::read_json(&info_path).unwrap().unwrap();
        info.refused = Some("the node has gres/shard".into());
        state::write_json(&info_path, &info).unwrap();
        let spawner = NoSpawn(Mutex::new(Vec::new()));
        let out = epilog(&config, &[], &env, &spawner, &never_called).unwrap();
        assert!(matches!(out, EpilogOutcome::NothingMeasured), "{out:?}");
        assert!(state.pending_keys().is_empty());
        assert!(!state.job_dir(&key).exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn node_part_uses_the_series_through_the_state_dir_cache() {
        let dir = std::env::temp_dir().join(format!("sc-job-series-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir.join("state")).unwrap();
        let csv = dir.join("series.csv");
        fs::write(
            &csv,
            "1000,100\n1010,500\n1000,40,partition=green\n1000,900,nodes=node[3-4]\n",
        )
        .unwrap();
        let config = Config {
            intensity_series: Some(csv.clone()),
            pue: 1.0,
            ..Config::default()
        };
        let sampler = finished_state(1000.0, vec![5.0, 5.0]);
        let result = counted(1000.0, 1020.0);
        let part = |node: &str, partition: Option<&str>| {
            node_part(&config, node, partition, &sampler, &result, Some(&state)).unwrap()
        };
        // Equal energy either side of the default series' step: (100 + 500) / 2.
        let p = part("node1", Some("gpu"));
        assert_eq!(p.intensity_src.as_deref(), Some("series"));
        assert!((p.co2e_g - 0.3).abs() < 1e-9, "{}", p.co2e_g);
        assert!(state
            .root()
            .join(crate::node::intensity_cache::CACHE_FILE)
            .exists());
        // Node sets win over partitions, partitions over the default (from the cache now).
        assert!((part("node4", Some("green")).co2e_g - 0.9).abs() < 1e-9);
        assert!((part("node1", Some("green")).co2e_g - 0.04).abs() < 1e-9);
        // A replaced CSV is read anew; a stale one falls back to the fixed intensity.
        fs::write(dir.join("new.csv"), "1000,200\n").unwrap();
        fs::rename(dir.join("new.csv"), &csv).unwrap();
        assert!((part("node4", None).co2e_g - 0.2).abs() < 1e-9);
        let late = finished_state(1_000_000.0, vec![5.0, 5.0]);
        let late_result = NodeResult {
            start_unix: 1_000_000.0,
            end_unix: 1_000_020.0,
            ..result.clone()
        };
        let p = node_part(&config, "node4", None, &late, &late_result, Some(&state)).unwrap();
        assert_eq!(p.intensity_src.as_deref(), Some("fallback"));
        assert!((p.co2e_g - config.intensity.0 / 1000.0).abs() < 1e-9);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The node's metric counters are the sum of the local records written (three jobs,
    /// one of them an orphan), count a part queued twice once, and do not go back when
    /// retention removes the records.
    #[test]
    fn metric_counters_are_the_sum_of_the_local_records() {
        let (root, mut config, env) = job_in_state("metrics", 61, true);
        let textdir = root.join("textfile");
        fs::create_dir(&textdir).unwrap();
        config.metrics_dir = Some(textdir.clone());
        config.embodied_kg_per_gpu_hour = 0.5;
        let state = StateDir::existing(&root).unwrap().unwrap();
        let spawner = NoSpawn(Mutex::new(Vec::new()));
        let key1 = JobKey::new(61, "n1").unwrap();
        let (root4, _, _) = job_in_state("metrics4", 61, true);
        let copy = root4.join("jobs").join(key1.to_string());
        for f in ["job.json", "sampler.json"] {
            fs::copy(state.job_dir(&key1).join(f), copy.join(f)).unwrap();
        }
        epilog(&config, &[], &env, &spawner, &never_called).unwrap();
        // Job 62's state, made apart, moved into this state directory.
        let (root2, _, env2) = job_in_state("metrics2", 62, true);
        let key2 = JobKey::new(62, "n1").unwrap();
        fs::rename(
            root2.join("jobs").join(key2.to_string()),
            state.job_dir(&key2),
        )
        .unwrap();
        epilog(&config, &[], &env2, &spawner, &never_called).unwrap();
        // Job 63's sampler outlived its job: an orphan record.
        let (root3, _, _) = job_in_state("metrics3", 63, true);
        let key3 = JobKey::new(63, "n1").unwrap();
        fs::rename(
            root3.join("jobs").join(key3.to_string()),
            state.job_dir(&key3),
        )
        .unwrap();
        let sampled: SamplerState = state::read_json(&state.job_dir(&key3).join("sampler.json"))
            .unwrap()
            .unwrap();
        finish_orphan(&config, &state, &key3, &sampled).unwrap();
        // The sum of what the local records say.
        let (mut wh, mut co2e, mut emb, mut n) = (0.0, 0.0, 0.0, 0u64);
        for entry in fs::read_dir(root.join("records")).unwrap() {
            let text = fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let p = &v["segment_part"];
                wh += p["wh"].as_f64().unwrap();
                co2e += p["co2e_g"].as_f64().unwrap();
                emb += p["embodied_g"].as_f64().unwrap_or(0.0);
                n += 1;
            }
        }
        assert_eq!(n, 3);
        let t = crate::node::metrics::load(&state).unwrap();
        assert!(wh > 0.0 && co2e > 0.0 && emb > 0.0, "{wh} {co2e} {emb}");
        assert!(
            (t.gpu_energy_j - wh * 3600.0).abs() < 1e-6,
            "{t:?} vs {wh} Wh"
        );
        assert!(
            (t.co2e_g - co2e).abs() < 1e-9 && (t.embodied_g - emb).abs() < 1e-9,
            "{t:?}"
        );
        assert_eq!(t.jobs_counter + t.jobs_sampled + t.jobs_mixed, n);
        assert_eq!(t.node.as_deref(), Some("n1"));
        // The textfile was written by the epilog, with these totals and the pending ones.
        let text = fs::read_to_string(textdir.join("spank-carbon-n1.prom")).unwrap();
        assert!(
            text.contains(&format!(
                "spank_carbon_gpu_energy_joules_total{{node=\"n1\"}} {}\n",
                t.gpu_energy_j
            )),
            "{text}"
        );
        assert!(
            text.contains("spank_carbon_records_pending{node=\"n1\"} 2\n"),
            "{text}"
        );
        // An epilog run again for a part already queued (the first died before cleaning
        // up: the same sampler state again) adds nothing.
        fs::rename(&copy, state.job_dir(&key1)).unwrap();
        let again = epilog(&config, &[], &env, &spawner, &never_called).unwrap();
        assert!(matches!(again, EpilogOutcome::Recorded { .. }), "{again:?}");
        assert_eq!(crate::node::metrics::load(&state).unwrap(), t);
        // Retention removes every local record: the counters stay.
        let later = SystemTime::now() + Duration::from_secs(400 * 86_400);
        retention::sweep(&state, &config, later);
        assert_eq!(fs::read_dir(root.join("records")).unwrap().count(), 0);
        assert_eq!(crate::node::metrics::load(&state).unwrap(), t);
        for r in [root, root2, root3, root4] {
            fs::remove_dir_all(&r).unwrap();
        }
    }
}
