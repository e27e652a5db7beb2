//! The job's prolog on one node: select the job's GPUs, start the sampler for them, and
//! see that the node's courier and job directories are looked after.

use std::fs;

use crate::core::config::Config;
use crate::gpu::map as gpu_map;
use crate::node::courier_lock::ensure_courier;
use crate::node::job::{sampler_alive, sweep_stale_jobs, JobError, JobInfo, Spawner};
use crate::node::job_env::JobEnv;
use crate::node::selection::job_selection;
use crate::node::state::{self, JobKey, StateDir};
use crate::slurm::gres;
use crate::units::unix_now;

#[derive(Debug, Clone, PartialEq)]
pub enum PrologOutcome {
    NoGpus,
    Started { minors: Vec<u32>, pid: u32 },
    AlreadyRunning,
}

pub fn prolog(
    config: &Config,
    args: &[String],
    env: &JobEnv,
    spawner: &dyn Spawner,
) -> Result<PrologOutcome, JobError> {
    let Some(gpus) = env.gpus.as_deref() else {
        return Ok(PrologOutcome::NoGpus);
    };
    let indices = gres::parse_indices(gpus)?;
    if indices.is_empty() {
        return Ok(PrologOutcome::NoGpus);
    }
    let selection = job_selection(
        config,
        env,
        &indices,
        &gpu_map::ProcFiles::system(),
        &gpu_map::stat_char_device,
    )?;
    let minors: Vec<u32> = selection
        .as_ref()
        .map(|sel| match sel {
            gpu_map::Selection::Known(sel) => sel
                .iter()
                .filter_map(|s| match s.key {
                    gpu_map::Key::Minor(m) => Some(m),
                    _ => None,
                })
                .collect(),
            // The sampler learns the boards from slurmctld.
            gpu_map::Selection::Ask(_) => Vec::new(),
        })
        .unwrap_or_default();
    let state = StateDir::open(&config.state_dir)?;
    let key = JobKey::new(env.job, &env.node)?;
    let dir = state.create_job_dir(&key)?;
    let info_path = dir.join("job.json");
    if let Ok(Some(old)) = state::read_json::<JobInfo>(&info_path) {
        if old.sampler_pid.is_some_and(|pid| sampler_alive(pid, &key)) {
            return Ok(PrologOutcome::AlreadyRunning);
        }
    }
    let _ = fs::remove_file(dir.join("sampler.json"));
    let mut info = JobInfo {
        job: env.job,
        node: key.node.clone(),
        gres_indices: indices,
        minors: minors.clone(),
        nodes: env.nodes.clone(),
        prolog_unix: unix_now(),
        sampler_pid: None,
        gpus: None,
        refused: None,
    };
    let selection = match selection {
        Ok(sel) => sel,
        Err(refusal) => {
            // Never another board: no sampler, and the epilog says why.
            log::error!(
                "job {}: {}: {refusal}; no record for this node",
                env.job,
                env.node
            );
            info.refused = Some(refusal.0);
            state::write_json(&info_path, &info)?;
            return Ok(PrologOutcome::NoGpus);
        }
    };
    let spec = gpu_map::format_selection(&selection);
    info.gpus = Some(spec.clone());
    let mut argv = vec![
        "sample".to_string(),
        "--key".into(),
        key.to_string(),
        "--gpus".into(),
        spec,
        "--".into(),
    ];
    // The plugstack arguments, so that the binary reads the plugin's configuration.
    argv.extend(args.iter().cloned());
    let child_env = vec![
        ("SLURMD_NODENAME".to_string(), env.node.clone()),
        ("SLURM_JOB_ID".to_string(), env.job.to_string()),
    ];
    let pid = spawner
        .spawn_detached(&config.bin, &argv, &child_env)
        .map_err(|source| JobError::Spawn {
            what: "the sampler",
            source,
        })?;
    info.sampler_pid = Some(pid);
    state::write_json(&info_path, &info)?;
    ensure_courier(config, &state, args, &env.node, spawner, true);
    sweep_stale_jobs(config, &state);
    Ok(PrologOutcome::Started { minors, pid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::job::NoSpawn;
    use crate::node::job_env::env_of;
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// A node whose gres.conf is `gres_conf` (under a directory of its own, `tag`), with
    /// its state directory there too.
    fn node_with(tag: &str, gres_conf: &str) -> (PathBuf, Config) {
        let root = std::env::temp_dir().join(format!("sc-job-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let path = root.join("gres.conf");
        fs::write(&path, gres_conf).unwrap();
        let config = Config {
            state_dir: root.join("state"),
            gres_conf: Some(path),
            ..Config::default()
        };
        (root, config)
    }

    /// The prolog of a job with the environment `vars`: its outcome and what it started.
    fn prolog_with(config: &Config, vars: &[(&str, &str)]) -> (PrologOutcome, Vec<String>) {
        let env = JobEnv::from_env(None, env_of(vars)).unwrap();
        let spawner = NoSpawn(Mutex::new(Vec::new()));
        let out = prolog(config, &[], &env, &spawner).unwrap();
        let started = spawner.0.lock().unwrap().clone();
        (out, started)
    }

    #[test]
    fn the_prolog_passes_its_selection_or_records_its_refusal() {
        // /dev/null is 1:3, a character device on every Linux host.
        let (root, config) = node_with("prolog", "Name=gpu File=/dev/null\n");
        let (out, started) = prolog_with(
            &config,
            &[
                ("SLURM_JOB_ID", "81"),
                ("SLURMD_NODENAME", "n1"),
                ("SLURM_JOB_GPUS", "0"),
                ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "40"),
            ],
        );
        // An MPS job: the percentage is rounded, so the sampler asks slurmctld for the
        // job's count (the board, minor 3, is in the table it passes).
        assert!(
            matches!(&out, PrologOutcome::Started { minors, .. } if minors.is_empty()),
            "{out:?}"
        );
        assert!(
            started[0].starts_with("sample --key 81.n1 --gpus ask:0:m3 --"),
            "{started:?}"
        );
        // An index gres.conf does not have: refused, nothing started, the reason kept.
        let (out, started) = prolog_with(
            &config,
            &[
                ("SLURM_JOB_ID", "82"),
                ("SLURMD_NODENAME", "n1"),
                ("SLURM_JOB_GPUS", "1"),
            ],
        );
        assert_eq!(out, PrologOutcome::NoGpus);
        assert!(started.is_empty());
        let state = StateDir::existing(&config.state_dir).unwrap().unwrap();
        let key = JobKey::new(82, "n1").unwrap();
        let info: JobInfo = state::read_json(&state.job_dir(&key).join("job.json"))
            .unwrap()
            .unwrap();
        assert!(
            info.refused
                .as_deref()
                .is_some_and(|r| r.contains("gres index 1")),
            "{info:?}"
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn on_a_shard_node_the_prolog_leaves_the_question_to_the_sampler() {
        // /dev/null is 1:3, a character device on every Linux host.
        let (root, config) = node_with(
            "ask",
            "Name=gpu File=/dev/null\nName=shard Count=4 File=/dev/null\n",
        );
        let (out, started) = prolog_with(
            &config,
            &[
                ("SLURM_JOB_ID", "83"),
                ("SLURMD_NODENAME", "n1"),
                ("SLURM_JOB_GPUS", "0"),
            ],
        );
        // Started, with no board known yet: the sampler asks slurmctld.
        assert!(
            matches!(&out, PrologOutcome::Started { minors, .. } if minors.is_empty()),
            "{out:?}"
        );
        assert!(
            started[0].starts_with("sample --key 83.n1 --gpus ask:0:m3#4 --"),
            "{started:?}"
        );
        let _ = fs::remove_dir_all(&root);
    }
}
