//! `spank-carbon sample`: the sampler the plugin's prolog starts, one per job and node,
//! until the epilog stops it (or its job is gone).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use spank_carbon::accounting::{self};
use spank_carbon::gpu::map::{self as gpu_map, Charge};
use spank_carbon::gpu::{GpuHost, NvmlHost};
use spank_carbon::logging::chain;
use spank_carbon::node::sampler::{self, SamplerOptions, Stop};
use spank_carbon::node::state::{self, JobKey};
use spank_carbon::slurm::run::run_tool;

use super::{config_or_exit, existing_state, log_to_state_dir};

/// Stops on SIGTERM/SIGINT (through a self-pipe, so waiting costs no wake-ups) or when
/// the job's state directory disappears.
struct SignalStop {
    pipe: UnixStream,
    job_dir: PathBuf,
}

impl Stop for SignalStop {
    fn wait(&self, timeout: Duration) -> bool {
        let _ = self
            .pipe
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        let mut buf = [0u8; 16];
        if matches!((&self.pipe).read(&mut buf), Ok(n) if n > 0) {
            return true;
        }
        !self.job_dir.is_dir()
    }
}

pub fn sample(key: &str, minors: &[u32], gpus: Option<&str>, args: &[String]) -> ExitCode {
    // First of all, so that an early SIGTERM from the epilog is not lost.
    let (reader, writer) = match UnixStream::pair() {
        Ok(p) => p,
        Err(_) => return ExitCode::FAILURE,
    };
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if signal_hook::low_level::pipe::register(sig, writer.try_clone().expect("clone")).is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    let config = match config_or_exit(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    log_to_state_dir(&config);
    let key = match JobKey::parse(key) {
        Ok(k) => k,
        Err(e) => {
            log::error!("sampler: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match existing_state(
        &config,
        |dir| {
            log::error!("job {key}: sampler: no state directory {}", dir.display());
            ExitCode::FAILURE
        },
        |e| log::error!("job {key}: sampler: {e}"),
    ) {
        Ok(state) => state,
        Err(code) => return code,
    };
    let job_dir = state.job_dir(&key);
    let host = match NvmlHost::open(config.nvml_lib.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            let why = chain(&e);
            log::error!("job {key}: no measurement on this node: {why}");
            // For the epilog to report in slurmd's log.
            let _ = state::write_atomic(&job_dir.join("sampler.error"), why.as_bytes());
            return ExitCode::FAILURE;
        }
    };
    let ask = |ask: &gpu_map::Ask| ask_slurmctld(&config.scontrol, &key, ask);
    let charges = match charges(&host, minors, gpus, &ask) {
        Ok(c) => c,
        Err(why) => {
            log::error!("job {key}: no measurement on this node: {why}");
            let _ = state::write_atomic(&job_dir.join("sampler.error"), why.as_bytes());
            return ExitCode::FAILURE;
        }
    };
    for c in &charges {
        if c.rule != "whole" {
            log::info!(
                "job {key}: GPU minor {}: charged {:.4} of the board ({})",
                c.minor,
                c.share,
                c.rule
            );
        }
        if let Some(u) = c.unallocated.filter(|&u| u > 0.0) {
            log::info!(
                "job {key}: MIG board minor {}: {:.4} of its SMs are in no instance; that share of its energy is charged to no job",
                c.minor,
                u
            );
        }
    }
    let squeue = config.squeue.clone();
    let job_s = key.job.to_string();
    let job_alive = move || job_still_running(&squeue, &job_s);
    let opts = SamplerOptions {
        job: key.job,
        node: key.node.clone(),
        interval: config.sample_interval(),
        checkpoint_every: Duration::from_secs(config.checkpoint_s),
        max_runtime: Duration::from_secs(config.max_job_s),
        job_alive: Some(&job_alive),
        liveness_every: Duration::from_secs(config.liveness_s),
    };
    let stop = SignalStop {
        pipe: reader,
        job_dir: job_dir.clone(),
    };
    match sampler::run_charged(
        &host,
        &charges,
        &opts,
        &stop,
        Some(&job_dir.join("sampler.json")),
    ) {
        Ok(end) if end.stop_reason.as_deref() == Some(sampler::ORPHANED) => {
            log::warn!(
                "job {key}: {}; sampler stopped, measurement kept as a local record only",
                sampler::ORPHANED
            );
            if let Err(e) = spank_carbon::node::epilog::finish_orphan(&config, &state, &key, &end) {
                log::error!("job {key}: {}", chain(&e));
            }
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("job {key}: sampler: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// How long the one `scontrol show job -d` of an [`gpu_map::Ask`] may take.
const SCONTROL_TIMEOUT: Duration = Duration::from_secs(20);

/// The job's boards on this node from slurmctld (`scontrol show job -d JOB`), for a
/// selection the prolog's environment could not make (gres/shard, several GPU types).
fn ask_slurmctld(
    scontrol: &std::path::Path,
    key: &JobKey,
    ask: &gpu_map::Ask,
) -> Result<Vec<gpu_map::Sel>, String> {
    let job = key.job.to_string();
    let out = run_tool(
        &scontrol.to_path_buf(),
        &["show", "job", "-d", &job],
        SCONTROL_TIMEOUT,
    )
    .map_err(|e| format!("asking slurmctld for the job's GPUs: {}", chain(&e)))?;
    if !out.status.success() {
        return Err(format!(
            "asking slurmctld for the job's GPUs: {} show job -d {job}: {}: {}",
            scontrol.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    let n = out.stdout.len().min(gpu_map::SCONTROL_MAX);
    let text = String::from_utf8_lossy(&out.stdout[..n]);
    let answer = gpu_map::node_gres(&text, key.job, &key.node)
        .and_then(|g| gpu_map::parse_gres(&g))
        .and_then(|entries| gpu_map::from_slurmctld(ask, &entries))
        .map_err(|r| r.to_string())?;
    log::info!(
        "job {key}: slurmctld gives the job {} on this node",
        gpu_map::format_spec(&answer)
    );
    Ok(answer)
}

type AskFn<'a> = &'a dyn Fn(&gpu_map::Ask) -> Result<Vec<gpu_map::Sel>, String>;

/// The boards to sample and the job's share of each: the prolog's `--gpus` selection
/// (asking slurmctld where the prolog could not tell) resolved against what NVML says
/// (`gpu_map::resolve`), else `--minors`, whole.
fn charges(
    host: &dyn GpuHost,
    minors: &[u32],
    gpus: Option<&str>,
    ask: AskFn,
) -> Result<Vec<Charge>, String> {
    let Some(spec) = gpus else {
        return Ok(minors.iter().copied().map(Charge::whole).collect());
    };
    let sel = match gpu_map::parse_selection(spec) {
        Some(gpu_map::Selection::Known(sel)) => sel,
        Some(gpu_map::Selection::Ask(a)) => ask(&a)?,
        None => return Err(format!("bad --gpus `{spec}`")),
    };
    let boards = host.boards().map_err(|e| chain(&e))?;
    gpu_map::resolve(&sel, &boards).map_err(|r| r.to_string())
}

/// Whether Slurm still lists the job as active. An unanswered question counts as yes:
/// the sampler never stops on uncertainty.
fn job_still_running(squeue: &std::path::Path, job: &str) -> bool {
    let out = match run_tool(
        &squeue.to_path_buf(),
        &["-h", "-t", "all", "-j", job, "-o", "%T"],
        Duration::from_secs(20),
    ) {
        Ok(out) => out,
        Err(_) => return true,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "Invalid job id specified": slurmctld no longer knows the job.
        return !String::from_utf8_lossy(&out.stderr).contains("Invalid job id");
    }
    let state = text.trim();
    !(state.is_empty() || accounting::ENDED.contains(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake scontrol that answers only `show job -d 42`, as Slurm 24.11 does.
    fn fake_scontrol(dir: &std::path::Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("scontrol");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// `ask_slurmctld`, retried while the fresh script is busy (another test's fork may
    /// hold it open for a moment).
    fn ask(scontrol: &std::path::Path, a: &gpu_map::Ask) -> Result<Vec<gpu_map::Sel>, String> {
        let key = JobKey::parse("42.node2").unwrap();
        for _ in 0..20 {
            match ask_slurmctld(scontrol, &key, a) {
                Err(e) if e.contains("busy") => std::thread::sleep(Duration::from_millis(50)),
                other => return other,
            }
        }
        ask_slurmctld(scontrol, &key, a)
    }

    #[test]
    fn the_sampler_asks_scontrol_for_this_node_and_refuses_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("sc-ask-{}", std::process::id()));
        let Some(gpu_map::Selection::Ask(a)) = gpu_map::parse_selection("ask:0:m0#2;m1#2") else {
            panic!("spec");
        };
        let scontrol = fake_scontrol(
            &dir.join("ok"),
            r#"[ "$*" = "show job -d 42" ] || { echo "bad args: $*" >&2; exit 3; }
echo 'JobId=42 JobName=wrap'
echo '   JOB_GRES=shard:3'
echo '     Nodes=node1 CPU_IDs=1 Mem=0 GRES=shard:2(0/2,2/2)'
echo '     Nodes=node2 CPU_IDs=0 Mem=0 GRES=shard:1(1/2,0/2)'"#,
        );
        let sel = ask(&scontrol, &a).unwrap();
        assert_eq!(
            sel,
            vec![gpu_map::Sel {
                key: gpu_map::Key::Minor(0),
                share: gpu_map::Share::Shard { n: 1, of: 2 }
            }]
        );
        // scontrol fails: refused, with its message.
        let failing = fake_scontrol(
            &dir.join("fail"),
            "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1",
        );
        let e = ask(&failing, &a).unwrap_err();
        assert!(e.contains("Unable to contact"), "{e}");
        // An answer without this node's GRES: refused.
        let empty = fake_scontrol(
            &dir.join("empty"),
            "echo 'JobId=42 JobName=wrap'; echo '     Nodes=node2 CPU_IDs=0 Mem=0 GRES='",
        );
        let e = ask(&empty, &a).unwrap_err();
        assert!(e.contains("GRES="), "{e}");
        // No scontrol at all.
        assert!(ask(&dir.join("none"), &a).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
