//! A job on this node between its prolog and its epilog: the errors of both, what the
//! prolog leaves for the epilog (`job.json`), the sampler it starts, and the job
//! directories of jobs whose epilog never came.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::config::Config;
use crate::node::state::{self, JobKey, StateDir, StateError};
use crate::slurm::gres;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job environment: {0}")]
    Env(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("mapping the job's GPUs: {0}")]
    Gres(#[from] gres::GresError),
    #[error("starting {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading end counters: {0}")]
    Gpu(#[from] crate::gpu::GpuError),
}

/// Starts a program fully detached from the calling process (new session, no inherited
/// descriptors), returning its pid. Provided by the Slurm boundary.
pub trait Spawner {
    fn spawn_detached(
        &self,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> std::io::Result<u32>;
}

/// What the prolog wrote for the epilog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: u32,
    pub node: String,
    pub gres_indices: Vec<usize>,
    pub minors: Vec<u32>,
    pub nodes: Vec<String>,
    pub prolog_unix: f64,
    pub sampler_pid: Option<u32>,
    /// The sampler's `--gpus` selection (see `gpu_map::format_spec`).
    #[serde(default)]
    pub gpus: Option<String>,
    /// Why the job's GPUs here are not measured (the epilog reports it).
    #[serde(default)]
    pub refused: Option<String>,
}

/// Whether `pid` is the sampler of `key` (and not a process that reused its pid).
pub fn sampler_alive(pid: u32, key: &JobKey) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has finished its work; its parent just has not reaped it yet.
        if stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z'))
        {
            return false;
        }
    }
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let key_s = key.to_string();
    args.iter().any(|a| *a == b"sample")
        && args
            .windows(2)
            .any(|w| w[0] == b"--key" && w[1] == key_s.as_bytes())
}

/// Asks the sampler to stop and waits (up to `timeout`) for it to write its final state.
/// Bounded: the signal does not block, and the wait polls /proc until the deadline; a
/// sampler stuck in NVML is left running and the epilog reads the counters itself
/// (within `nvml_timeout_ms`).
pub fn stop_sampler(pid: u32, key: &JobKey, timeout: Duration) -> bool {
    if !sampler_alive(pid, key) {
        return false;
    }
    let Some(pid_t) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    if rustix::process::kill_process(pid_t, rustix::process::Signal::TERM).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !sampler_alive(pid, key) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    log::warn!("job {key}: sampler {pid} did not stop within {timeout:?}");
    false
}

/// Removes job directories whose sampler is gone and that are older than `max_job_s`:
/// left by a sampler that crashed on a node whose epilog never came.
pub fn sweep_stale_jobs(config: &Config, state: &StateDir) {
    let Ok(entries) = fs::read_dir(state.jobs_dir()) else {
        return;
    };
    let limit = Duration::from_secs(config.max_job_s) + Duration::from_secs(3600);
    for entry in entries.filter_map(|e| e.ok()) {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > limit));
        if !old {
            continue;
        }
        let Some(key) = entry
            .file_name()
            .to_str()
            .and_then(|n| JobKey::parse(n).ok())
        else {
            continue;
        };
        let pid = state::read_json::<JobInfo>(&entry.path().join("job.json"))
            .ok()
            .flatten()
            .and_then(|i| i.sampler_pid);
        if !pid.is_some_and(|p| sampler_alive(p, &key)) {
            log::warn!("job {key}: removing stale state (no epilog for over max_job_s)");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Counts the programs it is asked to start (arguments, then environment), starts none.
#[cfg(test)]
pub(crate) struct NoSpawn(pub std::sync::Mutex<Vec<String>>);

#[cfg(test)]
impl Spawner for NoSpawn {
    fn spawn_detached(
        &self,
        _program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> std::io::Result<u32> {
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("{} | {}", args.join(" "), env.join(" ")));
        Ok(1)
    }
}
