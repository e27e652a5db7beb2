//! The node's courier (`spank-carbon deliver`) seen from the prolog and epilog: its lock,
//! and starting one where none runs.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::core::config::Config;
use crate::node::job::Spawner;
use crate::node::state::StateDir;

/// The lock file the node's courier (`spank-carbon deliver`) holds while it runs.
pub const COURIER_LOCK: &str = "courier.lock";

/// The node's courier lock, if no courier holds it (dropping the file releases it).
pub fn try_courier_lock(state: &StateDir) -> Option<fs::File> {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(state.root().join(COURIER_LOCK))
        .ok()?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(lock)
}

/// Whether a courier holds the node's lock (taken and released at once: this only looks).
pub fn courier_running(state: &StateDir) -> bool {
    try_courier_lock(state).is_none()
}

/// Starts the node's courier (`spank-carbon deliver`) unless one runs: by every epilog
/// that leaves a record (`stale_only` false), and by every prolog for records older than
/// `deliver_timeout_s` + `settle_ms` (a courier that was killed, a node rebooted while
/// records waited) or delivered records due for their late check (`verify_after_s`),
/// so that records go out once slurmdbd answers, with no manual step.
/// The courier gets the node's name (SLURMD_NODENAME), as the sampler does, so that it
/// resolves `%n` in `state_dir` to this node's directory.
pub fn ensure_courier(
    config: &Config,
    state: &StateDir,
    args: &[String],
    node: &str,
    spawner: &dyn Spawner,
    stale_only: bool,
) {
    if (stale_only && !has_stale_pending(config, state)) || courier_running(state) {
        return;
    }
    let mut argv = vec!["deliver".to_string(), "--".into()];
    argv.extend(args.iter().cloned());
    let child_env = [("SLURMD_NODENAME".to_string(), node.to_string())];
    if let Err(e) = spawner.spawn_detached(&config.bin, &argv, &child_env) {
        log::error!(
            "could not start delivery; records wait in {}: {e}",
            state.pending_dir().display()
        );
    }
}

/// Whether a record has waited longer than its courier would have tried for, or a
/// delivered one is due for its late check.
fn has_stale_pending(config: &Config, state: &StateDir) -> bool {
    if config.verify_after_s > 0
        && !crate::node::state::due_verifications(
            state,
            Duration::from_secs(config.verify_after_s),
            std::time::SystemTime::now(),
        )
        .is_empty()
    {
        return true;
    }
    let stale_after =
        Duration::from_secs(config.deliver_timeout_s) + Duration::from_millis(config.settle_ms);
    fs::read_dir(state.pending_dir()).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > stale_after))
        })
    })
}
