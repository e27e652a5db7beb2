//! Running Slurm's tools (sacct, sacctmgr, squeue, scontrol, sshare, slurmd): by absolute
//! path, without a shell, with a minimal environment and a time limit.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tool that could not be run or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{tool}: could not run: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool}: no answer within {secs} s")]
    Timeout { tool: String, secs: u64 },
}

pub struct CmdOutput {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `path args`, without a shell and with a minimal environment, killing it after
/// `timeout`.
pub fn run_tool(path: &PathBuf, args: &[&str], timeout: Duration) -> Result<CmdOutput, RunError> {
    run_tool_env(path, args, &[], timeout)
}

/// [`run_tool`] with extra environment variables.
pub fn run_tool_env(
    path: &PathBuf,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<CmdOutput, RunError> {
    let tool = path.display().to_string();
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(conf) = std::env::var_os("SLURM_CONF") {
        cmd.env("SLURM_CONF", conf);
    }
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    let mut out_pipe = child.stdout.take().expect("piped");
    let err_pipe = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.take(64 * 1024).read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout {
                    tool,
                    secs: timeout.as_secs(),
                });
            }
        }
    };
    Ok(CmdOutput {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}
