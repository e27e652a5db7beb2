//! The job's environment: what slurmd tells the prolog and epilog (SLURM_* variables and
//! the spank job id), and the configuration files it points to.

use std::path::PathBuf;

use crate::core::config::Config;
use crate::gpu::map as gpu_map;
use crate::node::job::JobError;
use crate::node::state;
use crate::slurm::hostlist;

/// What slurmd tells the job_script context (its environment and spank items).
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnv {
    pub job: u32,
    pub node: String,
    /// SLURM_JOB_GPUS: gres indices of this node's GPUs.
    pub gpus: Option<String>,
    /// SLURM_NODELIST, expanded.
    pub nodes: Vec<String>,
    pub slurm_conf: Option<PathBuf>,
    /// SLURM_JOB_PARTITION, for per-partition intensity series.
    pub partition: Option<String>,
    /// SLURM_JOB_SLUID (Slurm 25.11+), when it is one (see `slurm::parse_sluid`).
    pub sluid: Option<String>,
    /// CUDA_VISIBLE_DEVICES as slurmd set it for the prolog (UUIDs where Slurm has them).
    pub cuda_visible_devices: Option<String>,
    /// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (gres/mps jobs).
    pub mps_percentage: Option<String>,
    /// SLURM_SHARDS_ON_NODE (not given to the prolog by Slurm 22.05-26.05).
    pub shards_on_node: Option<String>,
}

impl JobEnv {
    /// Builds the job's description from `get` (the process environment) and the job id
    /// Slurm gave through spank_get_item, when it did.
    pub fn from_env(
        job_item: Option<u32>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<JobEnv, JobError> {
        let job = match job_item {
            Some(id) if id > 0 => id,
            _ => {
                let raw =
                    get("SLURM_JOB_ID").ok_or_else(|| JobError::Env("no SLURM_JOB_ID".into()))?;
                state::parse_job_id(&raw)?
            }
        };
        let node =
            get("SLURMD_NODENAME").ok_or_else(|| JobError::Env("no SLURMD_NODENAME".into()))?;
        let nodes = match get("SLURM_NODELIST").or_else(|| get("SLURM_JOB_NODELIST")) {
            Some(list) => hostlist::expand(&list)
                .map_err(|e| JobError::Env(e.to_string()))?
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            None => vec![node.to_ascii_lowercase()],
        };
        Ok(JobEnv {
            job,
            node,
            gpus: get("SLURM_JOB_GPUS").filter(|g| !g.trim().is_empty()),
            nodes,
            slurm_conf: get("SLURM_CONF")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute()),
            partition: get("SLURM_JOB_PARTITION"),
            sluid: get("SLURM_JOB_SLUID").and_then(|s| {
                let sluid = crate::slurm::parse_sluid(&s);
                if sluid.is_none() {
                    log::warn!("job {job}: SLURM_JOB_SLUID is not a SLUID; not kept");
                }
                sluid
            }),
            cuda_visible_devices: get("CUDA_VISIBLE_DEVICES").filter(|v| !v.trim().is_empty()),
            mps_percentage: get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"),
            shards_on_node: get("SLURM_SHARDS_ON_NODE"),
        })
    }

    /// The slurm.conf slurmd read (SLURM_CONF), else the default one.
    pub fn slurm_conf(&self) -> PathBuf {
        self.slurm_conf
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/slurm/slurm.conf"))
    }

    pub fn gres_conf(&self, config: &Config) -> PathBuf {
        gpu_map::gres_conf_path(config.gres_conf.as_deref(), &self.slurm_conf())
    }
}

/// A process environment holding `vars` only.
#[cfg(test)]
pub(crate) fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn job_env_from_environment() {
        let vars = [
            ("SLURM_JOB_ID", "77"),
            ("SLURMD_NODENAME", "Node2"),
            ("SLURM_NODELIST", "Node[1-3]"),
            ("SLURM_JOB_GPUS", "0,3"),
            ("SLURM_CONF", "/etc/slurm/slurm.conf"),
        ];
        let e = JobEnv::from_env(None, env_of(&vars)).unwrap();
        assert_eq!(e.job, 77);
        assert_eq!(e.nodes, ["node1", "node2", "node3"]);
        assert_eq!(e.gpus.as_deref(), Some("0,3"));
        assert_eq!(
            e.gres_conf(&Config::default()),
            Path::new("/etc/slurm/gres.conf")
        );
        // The spank item wins over the environment.
        assert_eq!(JobEnv::from_env(Some(78), env_of(&vars)).unwrap().job, 78);
        let bad = [("SLURM_JOB_ID", "../../x"), ("SLURMD_NODENAME", "n")];
        assert!(JobEnv::from_env(None, env_of(&bad)).is_err());
        let no_gpus = [
            ("SLURM_JOB_ID", "5"),
            ("SLURMD_NODENAME", "n"),
            ("SLURM_JOB_GPUS", ""),
        ];
        assert_eq!(JobEnv::from_env(None, env_of(&no_gpus)).unwrap().gpus, None);
        assert_eq!(
            JobEnv::from_env(None, env_of(&no_gpus)).unwrap().sluid,
            None
        );
    }

    #[test]
    fn sluid_is_read_only_when_it_is_one() {
        let with = |sluid: &'static str| {
            let vars = [
                ("SLURM_JOB_ID", "5"),
                ("SLURMD_NODENAME", "n"),
                ("SLURM_JOB_SLUID", sluid),
            ];
            JobEnv::from_env(None, env_of(&vars)).unwrap().sluid
        };
        assert_eq!(with("s0123456789ABC").as_deref(), Some("s0123456789ABC"));
        for bad in [
            "",
            "s0123456789AB",
            "s0123456789ABC/..",
            "s 123456789ABC",
            "sZ123456789ABC",
        ] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
    }
}
