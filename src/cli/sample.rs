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
    let diffs = spank_carbon::slurm::Differences::built();
    let tools = Tools {
        scontrol: &config.scontrol,
        squeue: &config.squeue,
    };
    let ask = |ask: &gpu_map::Ask| ask_slurmctld(&tools, &diffs, &key, ask);
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

/// How long the one question of an [`gpu_map::Ask`] may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);

/// Slurm's tools the sampler may ask slurmctld with (keys `scontrol`, `squeue`).
struct Tools<'a> {
    scontrol: &'a std::path::Path,
    squeue: &'a std::path::Path,
}

/// The job's boards on this node from slurmctld, for a selection the prolog's
/// environment could not make (gres/shard, gres/mps, several GPU types): the job's
/// structure as JSON (`scontrol --json show job JOB`; 22.05 `squeue --json`), never
/// the text of `scontrol show job`, in which the owner's name and comment can forge
/// lines.
fn ask_slurmctld(
    tools: &Tools,
    diffs: &spank_carbon::slurm::Differences,
    key: &JobKey,
    ask: &gpu_map::Ask,
) -> Result<Vec<gpu_map::Sel>, String> {
    let (tool, args) = gpu_map::job_query(diffs, key.job).map_err(|r| r.to_string())?;
    let path = match tool {
        gpu_map::JobTool::Scontrol => tools.scontrol,
        gpu_map::JobTool::Squeue => tools.squeue,
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = format!("{} {}", path.display(), args.join(" "));
    let out = run_tool(&path.to_path_buf(), &args, ASK_TIMEOUT)
        .map_err(|e| format!("asking slurmctld for the job's GPUs: {}", chain(&e)))?;
    if !out.status.success() {
        return Err(format!(
            "asking slurmctld for the job's GPUs: {shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    let answer = gpu_map::node_gres_json(&out.stdout, key.job, &key.node)
        .and_then(|g| gpu_map::parse_gres(&g))
        .and_then(|entries| gpu_map::from_slurmctld(ask, &entries))
        .map_err(|r| format!("{shown}: {r}"))?;
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

    /// A fake Slurm tool named `name` in `dir` running `body`.
    fn fake_tool(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn diffs(major: u8, minor: u8) -> spank_carbon::slurm::Differences {
        spank_carbon::slurm::Differences::for_version(spank_carbon::slurm::SlurmVersion::new(
            major, minor, 0,
        ))
    }

    /// `ask_slurmctld` for job 42 on node2, retried while the fresh script is busy
    /// (another test's fork may hold it open for a moment).
    fn ask(
        scontrol: &std::path::Path,
        squeue: &std::path::Path,
        d: &spank_carbon::slurm::Differences,
        a: &gpu_map::Ask,
    ) -> Result<Vec<gpu_map::Sel>, String> {
        let key = JobKey::parse("42.node2").unwrap();
        let tools = Tools { scontrol, squeue };
        for _ in 0..20 {
            match ask_slurmctld(&tools, d, &key, a) {
                Err(e) if e.contains("busy") => std::thread::sleep(Duration::from_millis(50)),
                other => return other,
            }
        }
        ask_slurmctld(&tools, d, &key, a)
    }

    /// 24.11's `scontrol --json show job 42`: shards on node1 and node2, the job's name
    /// and comment forging text detail lines.
    const SCONTROL_JSON: &str = r#"{"jobs":[{"job_id":42,"name":"x\n     Nodes=node2 CPU_IDs=0 Mem=0 GRES=shard:2(2/2,0/2)","comment":"JobId=42\n   Nodes=node2 GRES=gpu:1(IDX:1)","gres_detail":["shard:2(0/2,2/2)","shard:1(1/2,0/2)"],"job_resources":{"nodes":{"count":2,"allocation":[{"index":0,"name":"node1"},{"index":1,"name":"node2"}]}}}]}"#;

    #[test]
    fn the_sampler_asks_slurmctld_for_json_and_refuses_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("sc-ask-{}", std::process::id()));
        let Some(gpu_map::Selection::Ask(a)) = gpu_map::parse_selection("ask:0:m0#2;m1#2") else {
            panic!("spec");
        };
        let none = dir.join("none");
        let scontrol = fake_tool(
            &dir.join("ok"),
            "scontrol",
            &format!(
                r#"[ "$*" = "--json show job 42" ] || {{ echo "bad args: $*" >&2; exit 3; }}
cat <<'JSON'
{SCONTROL_JSON}
JSON"#
            ),
        );
        let one_of_two = vec![gpu_map::Sel {
            key: gpu_map::Key::Minor(0),
            share: gpu_map::Share::Shard { n: 1, of: 2 },
        }];
        assert_eq!(
            ask(&scontrol, &none, &diffs(24, 11), &a).unwrap(),
            one_of_two
        );
        // 22.05: squeue --json, every job; the job is picked by its id.
        let squeue = fake_tool(
            &dir.join("ok"),
            "squeue",
            r#"[ "$*" = "--json" ] || { echo "bad args: $*" >&2; exit 3; }
cat <<'JSON'
{"meta":{},"errors":[],"jobs":[
 {"job_id":41,"gres_detail":["shard:2(IDX:0)"],"job_resources":{"nodes":"node2","allocated_nodes":[{"nodename":"node2"}]}},
 {"job_id":42,"name":"evil\nNodes=node2 GRES=gpu:1(IDX:1)","gres_detail":["shard:1(IDX:0)"],"job_resources":{"nodes":"node2","allocated_nodes":[{"nodename":"node2","sockets":{"0":{"cores":{"0":"allocated"}}}}]}}
]}
JSON"#,
        );
        assert_eq!(ask(&none, &squeue, &diffs(22, 5), &a).unwrap(), one_of_two);
        // Before 22.05: no JSON, refused without a call.
        let e = ask(&scontrol, &squeue, &diffs(21, 8), &a).unwrap_err();
        assert!(e.contains("JSON"), "{e}");
        // The tool fails: refused, with its message.
        let failing = fake_tool(
            &dir.join("fail"),
            "scontrol",
            "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1",
        );
        let e = ask(&failing, &none, &diffs(26, 5), &a).unwrap_err();
        assert!(e.contains("Unable to contact"), "{e}");
        // Text, as `scontrol show job -d` prints it: not JSON, refused.
        let text = fake_tool(
            &dir.join("text"),
            "scontrol",
            "echo 'JobId=42 JobName=wrap'; echo '     Nodes=node2 CPU_IDs=0 Mem=0 GRES=shard:1(1/2,0/2)'",
        );
        let e = ask(&text, &none, &diffs(24, 11), &a).unwrap_err();
        assert!(e.contains("not understood"), "{e}");
        // No tool at all.
        assert!(ask(&dir.join("none"), &none, &diffs(24, 11), &a).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
