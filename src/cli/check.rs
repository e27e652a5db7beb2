//! `check`: the operator's first command on a node. Gathers the facts (see
//! `spank_carbon::check::gather`), prints the diagnosis, fails on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use spank_carbon::check::{self, gather};
use spank_carbon::gpu::open_nvml;

#[derive(clap::Args)]
pub struct Options {
    /// Print a JSON array of {check, status, detail, fix}.
    #[arg(long)]
    pub json: bool,
    /// plugstack.conf (default: slurm.conf's PlugStackConfig, else beside slurm.conf).
    #[arg(long)]
    pub plugstack: Option<PathBuf>,
    /// slurm.conf (default: SLURM_CONF, else /etc/slurm/slurm.conf).
    #[arg(long)]
    pub slurm_conf: Option<PathBuf>,
    /// slurmd (default: the first of /usr/sbin/slurmd, /usr/local/sbin/slurmd,
    /// /opt/slurm/sbin/slurmd).
    #[arg(long)]
    pub slurmd: Option<PathBuf>,
    /// The node to check for, for `%n` in state_dir and gres.conf's NodeName lines
    /// (default: SLURMD_NODENAME, else the short host name).
    #[arg(long)]
    pub node: Option<String>,
}

pub fn run(o: Options) -> ExitCode {
    if let Some(conf) = &o.slurm_conf {
        // sacctmgr and slurmd -V read the same slurm.conf (no thread runs yet).
        std::env::set_var("SLURM_CONF", conf);
    }
    let node = super::operator_node(o.node.as_deref());
    if let Some(node) = &node {
        // As the sampler sees it: the plugin gives it SLURMD_NODENAME.
        std::env::set_var("SLURMD_NODENAME", node);
    }
    let facts = gather::gather(
        &gather::Options {
            slurm_conf: o.slurm_conf,
            plugstack: o.plugstack,
            slurmd: o.slurmd,
            node,
        },
        &open_nvml,
    );
    let findings = check::diagnose(&facts);
    if o.json {
        println!("{}", check::render_json(&findings));
    } else {
        print!("{}", check::render_text(&findings));
    }
    if check::failed(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
