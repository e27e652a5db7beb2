//! The job's GPUs on this node as the prolog selects them: the node's GPU view
//! ([`gpu_map::read_node`], the one `spank-carbon check` simulates jobs on) with the
//! environment slurmd gave the prolog, put through [`gpu_map::choose`].

use crate::core::config::Config;
use crate::gpu::map::{self as gpu_map, DevStat, ProcFiles, Refusal, Selection};
use crate::node::job::JobError;
use crate::node::job_env::JobEnv;

/// The job's GPUs at gres `indices` (SLURM_JOB_GPUS): gres.conf, slurm.conf, the
/// environment slurmd gave the prolog and small files under `proc` (`/proc` and the real
/// `stat` on a node).
pub fn job_selection(
    config: &Config,
    env: &JobEnv,
    indices: &[usize],
    proc: &ProcFiles,
    stat: DevStat,
) -> Result<Result<Selection, Refusal>, JobError> {
    let node = gpu_map::read_node(
        &env.gres_conf(config),
        &env.slurm_conf(),
        &env.node,
        proc,
        stat,
    )?;
    let job = gpu_map::JobGpus {
        indices: indices.to_vec(),
        cuda_visible_devices: env.cuda_visible_devices.clone(),
        mps_percentage: env.mps_percentage.clone(),
        shards_on_node: env.shards_on_node.clone(),
    };
    Ok(gpu_map::choose(&job, &node))
}
