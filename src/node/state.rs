//! The node's root-owned state directory: per-job sampler state, local records and
//! records waiting for delivery. Every path is built from validated parts.
//!
//! ```text
//! <state_dir>/jobs/<job>.<node>/{job.json,sampler.json,sampler.pid}
//! <state_dir>/records/YYYY-MM-DD.jsonl      local records, kept for audit (see `retention`)
//! <state_dir>/pending/<job>.<node>.json     waiting to be written to accounting
//! <state_dir>/verify/<job>.<node>.json      in accounting, to be read once more later
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::accounting::Delivery;
use crate::record::valid_node_name;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("bad job id `{0}`")]
    BadJobId(String),
    #[error("bad node name `{0}`")]
    BadNode(String),
    #[error("state directory {path}: {why}")]
    Unsafe { path: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refused: {why}")]
    Mismatch { path: String, why: String },
    #[error("{path}: corrupted: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Parses a Slurm job id: decimal digits only, no sign, no leading zero, fits u32.
pub fn parse_job_id(s: &str) -> Result<u32, StateError> {
    let bad = || StateError::BadJobId(s.chars().take(32).collect());
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0')
    {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// A job on a node: the key of every state file. A pending record's key also names the
/// run it measured (`<job>.<node>@<run>`, the measurement's start in tenths of a second),
/// so that a requeued job's next run on the same node never replaces a record of the
/// previous run that is still waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct JobKey {
    pub job: u32,
    pub node: String,
    #[serde(default)]
    pub run: Option<u64>,
}

impl JobKey {
    pub fn new(job: u32, node: &str) -> Result<JobKey, StateError> {
        let node = node.to_ascii_lowercase();
        if !valid_node_name(&node) {
            return Err(StateError::BadNode(node.chars().take(64).collect()));
        }
        Ok(JobKey {
            job,
            node,
            run: None,
        })
    }

    /// The same job and node, for the run whose measurement started at `start_unix`.
    pub fn with_run(&self, start_unix: f64) -> JobKey {
        JobKey {
            run: Some((start_unix.max(0.0) * 10.0).round() as u64),
            ..self.clone()
        }
    }

    /// Parses `<job>.<node>[@<run>]` as written by `Display`.
    pub fn parse(s: &str) -> Result<JobKey, StateError> {
        let bad = || StateError::BadJobId(s.chars().take(32).collect());
        let (job, rest) = s.split_once('.').ok_or_else(bad)?;
        let (node, run) = match rest.split_once('@') {
            Some((node, run))
                if !run.is_empty()
                    && run.len() <= 15
                    && run.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (node, Some(run.parse().map_err(|_| bad())?))
            }
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        Ok(JobKey {
            run,
            ..JobKey::new(parse_job_id(job)?, node)?
        })
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.node)?;
        match self.run {
            Some(run) => write!(f, "@{run}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

const SUBDIRS: [&str; 5] = ["jobs", "records", "pending", "stuck", "verify"];

impl StateDir {
    /// Opens the state directory, creating it (mode 0700) if needed, and refuses one
    /// that another user owns or that others can write: the plugin runs as root and
    /// trusts what it finds there.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in std::iter::once(root.to_path_buf()).chain(SUBDIRS.iter().map(|s| root.join(s))) {
            if !dir.exists() {
                builder.create(&dir).map_err(io_err(&dir))?;
            }
            check_dir(&dir)?;
        }
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing state directory without creating anything (the epilog, the
    /// sampler, the courier): `Ok(None)` if it or its `jobs` directory does not exist;
    /// the same checks as [`StateDir::open`] on the directory and on each of its
    /// directories that exists, an error naming the directory otherwise.
    pub fn existing(root: &Path) -> Result<Option<StateDir>, StateError> {
        for (i, dir) in std::iter::once(root.to_path_buf())
            .chain(SUBDIRS.iter().map(|s| root.join(s)))
            .enumerate()
        {
            match fs::symlink_metadata(&dir) {
                Ok(_) => check_dir(&dir)?,
                // The root and `jobs` (made first by the prolog) must be there.
                Err(e) if e.kind() == io::ErrorKind::NotFound && i < 2 => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        Ok(Some(StateDir {
            root: root.to_path_buf(),
        }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn job_dir(&self, key: &JobKey) -> PathBuf {
        self.root.join("jobs").join(key.to_string())
    }
    pub fn record_path(&self, key: &JobKey) -> PathBuf {
        self.root.join("records").join(format!("{key}.json"))
    }
    pub fn pending_path(&self, key: &JobKey) -> PathBuf {
        self.root.join("pending").join(format!("{key}.json"))
    }
    pub fn pending_dir(&self) -> PathBuf {
        self.root.join("pending")
    }
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// Creates the job's directory (0700).
    pub fn create_job_dir(&self, key: &JobKey) -> Result<PathBuf, StateError> {
        let dir = self.job_dir(key);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// Keys of the records waiting for delivery.
    pub fn pending_keys(&self) -> Vec<JobKey> {
        keys_in(&self.pending_dir())
    }

    /// Where a delivered multi-node record waits for its late check (`verify_after_s`).
    pub fn verify_path(&self, key: &JobKey) -> PathBuf {
        self.root.join("verify").join(format!("{key}.json"))
    }
    pub fn verify_dir(&self) -> PathBuf {
        self.root.join("verify")
    }
}

/// A record waiting for its late check: the delivery, and the field's text as its node
/// last saw it (with the part in).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VerifyEntry {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub seen: String,
}

/// Keeps the delivered record `d` of `key` for its late check, with the field's text
/// `seen`: written (durably) to `verify/`, whose file's age says when it was last
/// looked at, then removed from `pending/`. Where `verify/` cannot be made or written,
/// the record only leaves `pending/` (as without the check).
pub fn keep_for_verify(
    state: &StateDir,
    key: &JobKey,
    d: &Delivery,
    seen: &str,
) -> Result<(), StateError> {
    let dir = state.verify_dir();
    let kept = (|| {
        if fs::symlink_metadata(&dir).is_err() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        check_dir(&dir)?;
        let entry = VerifyEntry {
            delivery: d.clone(),
            seen: seen.to_string(),
        };
        write_json_durable(&state.verify_path(key), &entry)
    })();
    let _ = fs::remove_file(state.pending_path(key));
    kept
}

/// The records waiting for their late check that delivered at least `after` before
/// `now`, with how long ago.
pub fn due_verifications(
    state: &StateDir,
    after: std::time::Duration,
    now: std::time::SystemTime,
) -> Vec<(JobKey, std::time::Duration)> {
    keys_in(&state.verify_dir())
        .into_iter()
        .filter_map(|key| {
            let modified = fs::symlink_metadata(state.verify_path(&key))
                .ok()?
                .modified()
                .ok()?;
            let age = now.duration_since(modified).unwrap_or_default();
            (age >= after).then_some((key, age))
        })
        .collect()
}

/// The record of `key` waiting for its late check (`Ok(None)`: gone), refused like a
/// pending one whose content disagrees with its name.
pub fn load_verify(state: &StateDir, key: &JobKey) -> Result<Option<VerifyEntry>, StateError> {
    let path = state.verify_path(key);
    let Some(e) = read_json::<VerifyEntry>(&path)? else {
        return Ok(None);
    };
    check_pending(key, &e.delivery).map_err(|why| StateError::Mismatch {
        path: path.display().to_string(),
        why,
    })?;
    Ok(Some(e))
}

/// The late check of `key` is over: the record goes (`again` false), or goes back to
/// `pending/` to be delivered again (`again` true: its part was missing).
pub fn end_verify(state: &StateDir, key: &JobKey, again: bool) {
    let path = state.verify_path(key);
    if again {
        // Kept for the next check where the move fails.
        let _ = fs::rename(&path, state.pending_path(key));
    } else {
        let _ = fs::remove_file(path);
    }
}

/// Notes why a pending record was not delivered (for `spank-carbon pending`); the
/// record itself stays in `pending/`.
pub fn note_stuck(state: &StateDir, key: &JobKey, why: &str) {
    let dir = state.root().join("stuck");
    if !dir.is_dir() {
        let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    }
    let _ = write_atomic(&dir.join(format!("{key}.txt")), why.as_bytes());
}

/// Forgets the note of a record that was delivered.
pub fn clear_stuck(state: &StateDir, key: &JobKey) {
    let _ = fs::remove_file(state.root().join("stuck").join(format!("{key}.txt")));
}

/// Why a pending record was not delivered yet, if a courier said.
pub fn stuck_reason(state: &StateDir, key: &JobKey) -> Option<String> {
    fs::read_to_string(state.root().join("stuck").join(format!("{key}.txt"))).ok()
}

/// Refuses a state directory that is not a directory (a symbolic link included), that
/// another user owns, or that group or others can write.
fn check_dir(dir: &Path) -> Result<(), StateError> {
    let me = rustix::process::geteuid().as_raw();
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    let unsafe_because = if !meta.is_dir() {
        Some("not a directory")
    } else if meta.uid() != me {
        Some("owned by another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("writable by group or others")
    } else {
        None
    };
    match unsafe_because {
        Some(why) => Err(StateError::Unsafe {
            path: dir.display().to_string(),
            why: why.into(),
        }),
        None => Ok(()),
    }
}

/// Keys named by the `<job>.<node>[.json]` entries of a directory; others are ignored.
pub fn keys_in(dir: &Path) -> Vec<JobKey> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut keys: Vec<JobKey> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json").unwrap_or(&name);
            JobKey::parse(stem).ok()
        })
        .collect();
    keys.sort();
    keys
}

/// Writes a file so that readers see the old or the new content, never a mix:
/// a temporary file in the same directory, renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_file(path, bytes, false)
}

/// Like `write_atomic`, and the data is on disk before the rename: for what must
/// survive a crash of the node (records waiting for delivery, fair-share state).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_file(path, bytes, true)
}

/// A temporary file beside `path`, created new (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600)
/// under a name no one can predict or share: `.<name>.<pid>.<n>.<random>.tmp`. A name
/// that exists already (a leftover, a trap) is never opened: another is tried.
fn create_temp(path: &Path) -> io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..16 {
        let mut r = [0u8; 8];
        if crate::slurm::sacct_rows::random_bytes(&mut r).is_err() {
            // Still unique: the pid and the counter; O_EXCL keeps it safe.
            r = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                .to_le_bytes();
        }
        let tmp = dir.join(format!(
            ".{name}.{}.{}.{:016x}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            u64::from_le_bytes(r)
        ));
        match open_new(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Creates `path` for writing, mode 0600; fails if anything is there, a symbolic link
/// (even a dangling one) included.
fn open_new(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let (tmp, mut f) = create_temp(path).map_err(io_err(path))?;
    let result = (|| {
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Only the file this call created.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state types always serialise");
    write_atomic(path, &bytes)
}

pub fn write_json_durable<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state types always serialise");
    write_durable(path, &bytes)
}

/// Reads a JSON state file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: path.display().to_string(),
            source,
        })
}

/// Reads the pending record of `key` (`Ok(None)`: gone, delivered meanwhile) and refuses
/// one whose content disagrees with its validated name: another job, another node, or a
/// node name that is not one. The courier addresses the job by the name.
pub fn load_pending(state: &StateDir, key: &JobKey) -> Result<Option<Delivery>, StateError> {
    let path = state.pending_path(key);
    let Some(d) = read_json::<Delivery>(&path)? else {
        return Ok(None);
    };
    check_pending(key, &d).map_err(|why| StateError::Mismatch {
        path: path.display().to_string(),
        why,
    })?;
    Ok(Some(d))
}

/// Why a pending record does not belong to `key`, if it does not.
fn check_pending(key: &JobKey, d: &Delivery) -> Result<(), String> {
    let short = |s: &str| s.chars().take(64).collect::<String>();
    if d.job != key.job {
        return Err(format!(
            "it is job {}'s record, not job {}'s",
            d.job, key.job
        ));
    }
    if d.part.node != key.node {
        return Err(format!(
            "it is node `{}`'s part, not {}'s",
            short(&d.part.node),
            key.node
        ));
    }
    if key.run.is_some() && key.with_run(d.part.start).run != key.run {
        return Err(format!(
            "it measured a run from {}, not run {:?}",
            d.part.start, key.run
        ));
    }
    if let Some(bad) = d.nodes.iter().find(|n| !valid_node_name(n)) {
        return Err(format!("bad node name `{}` in its node list", short(bad)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sc-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn job_ids_are_validated() {
        assert_eq!(parse_job_id("42").unwrap(), 42);
        assert_eq!(parse_job_id("4294967295").unwrap(), u32::MAX);
        for bad in [
            "",
            "0",
            "042",
            "-1",
            "+1",
            "1.5",
            "../../etc",
            "4294967296",
            "12345678901",
            "1 2",
        ] {
            assert!(parse_job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_validated_and_round_trip() {
        let k = JobKey::new(7, "Node-01").unwrap();
        assert_eq!(k.to_string(), "7.node-01");
        assert_eq!(JobKey::parse("7.node-01").unwrap(), k);
        for bad in ["7./etc", "7.", "x.node", "7.no de", "7..hidden", "7.a/b"] {
            assert!(JobKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_dir_created_private_and_checked() {
        let root = temp_dir("state");
        let s = StateDir::open(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
        let key = JobKey::new(1, "n1").unwrap();
        let d = s.create_job_dir(&key).unwrap();
        assert!(d.ends_with("jobs/1.n1"));
        write_json(&s.pending_path(&key), &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(s.pending_keys(), vec![key.clone()]);
        let v: serde_json::Value = read_json(&s.pending_path(&key)).unwrap().unwrap();
        assert_eq!(v["a"], 1);
        assert!(read_json::<serde_json::Value>(&root.join("none"))
            .unwrap()
            .is_none());
        fs::write(s.pending_path(&key), b"{not json").unwrap();
        assert!(matches!(
            read_json::<serde_json::Value>(&s.pending_path(&key)),
            Err(StateError::Corrupt { .. })
        ));
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            StateDir::open(&root),
            Err(StateError::Unsafe { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o777
    }

    fn temps_in(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn files_are_created_private_and_never_through_a_link() {
        let root = temp_dir("files");
        let s = StateDir::open(&root).unwrap();
        let target = s.pending_dir().join("1.n1.json");
        write_atomic(&target, b"one").unwrap();
        assert_eq!(mode(&target), 0o600);
        write_durable(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert!(temps_in(&s.pending_dir()).is_empty());
        // A symbolic link where the file goes is replaced, never written through.
        let victim = root.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = s.pending_dir().join("2.n1.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_json(&link, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&link).unwrap().is_file());
        // Temporary names are fresh each time and carry the pid; one that exists is
        // never opened (O_EXCL), and a failed write leaves none behind.
        let (a, fa) = create_temp(&target).unwrap();
        let (b, _fb) = create_temp(&target).unwrap();
        assert_ne!(a, b);
        let an = a.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            an.starts_with(&format!(".1.n1.json.{}.", std::process::id())),
            "{an}"
        );
        assert_eq!(mode(&a), 0o600);
        drop(fa);
        assert_eq!(
            open_new(&a).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        fs::remove_file(&a).unwrap();
        // A link planted at the name, to a file or to nowhere, is neither followed nor
        // replaced.
        let trap = s.pending_dir().join(".trap.tmp");
        std::os::unix::fs::symlink(&victim, &trap).unwrap();
        assert!(open_new(&trap).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        fs::remove_file(&trap).unwrap();
        let nowhere = root.join("created-through-a-link");
        std::os::unix::fs::symlink(&nowhere, &trap).unwrap();
        assert!(open_new(&trap).is_err());
        assert!(!nowhere.exists());
        fs::remove_file(&trap).unwrap();
        fs::remove_file(&b).unwrap();
        // The rename fails (a directory, not empty, where the file goes).
        let blocked = s.pending_dir().join("3.n1.json");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomic(&blocked, b"x").is_err());
        assert!(temps_in(&s.pending_dir()).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn existing_state_dirs_get_the_same_checks() {
        let root = temp_dir("existing");
        assert!(StateDir::existing(&root).unwrap().is_none(), "no directory");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(StateDir::existing(&root).unwrap().is_none(), "no jobs/ yet");
        StateDir::open(&root).unwrap();
        assert!(StateDir::existing(&root).unwrap().is_some());
        let refused = |what: &str, needle: &str, why: &str| {
            let e = StateDir::existing(&root).unwrap_err();
            assert!(matches!(e, StateError::Unsafe { .. }), "{what}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(needle) && text.contains(why),
                "{what}: {text}"
            );
            assert!(StateDir::open(&root).is_err(), "{what}: open agrees");
        };
        // Writable by others: the root, then a subdirectory.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        refused(
            "root 0777",
            &root.display().to_string(),
            "writable by group or others",
        );
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        let pending = root.join("pending");
        fs::set_permissions(&pending, fs::Permissions::from_mode(0o770)).unwrap();
        refused("pending 0770", "pending", "writable by group or others");
        fs::set_permissions(&pending, fs::Permissions::from_mode(0o700)).unwrap();
        // Owned by another user (the tests run as root; otherwise chown is refused).
        let me = rustix::process::geteuid().as_raw();
        let other = me.wrapping_add(4242);
        if std::os::unix::fs::chown(&pending, Some(other), None).is_ok() {
            refused("pending chowned", "pending", "owned by another user");
            std::os::unix::fs::chown(&pending, Some(me), None).unwrap();
        }
        // A symbolic link instead of jobs/.
        let jobs = root.join("jobs");
        fs::remove_dir(&jobs).unwrap();
        let elsewhere = temp_dir("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &jobs).unwrap();
        refused("jobs a link", "jobs", "not a directory");
        fs::remove_file(&jobs).unwrap();
        fs::create_dir(&jobs).unwrap();
        assert!(StateDir::existing(&root).unwrap().is_some());
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&elsewhere).unwrap();
    }

    fn delivery(job: u32, node: &str, nodes: &[&str]) -> Delivery {
        Delivery {
            job,
            field: crate::core::config::Field::System,
            part: crate::record::NodePart::new(
                node,
                1.5,
                1,
                1.0,
                crate::record::Method::Counter,
                (1.0, 2.0),
            ),
            meta: crate::record::Meta {
                intensity: crate::units::GramsPerKwh(475.0),
                pue: 1.5,
                expected_nodes: nodes.len() as u32,
            },
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            sluid: None,
        }
    }

    #[test]
    fn delivered_records_wait_for_their_late_check_then_go_or_return() {
        let root = temp_dir("verify");
        let s = StateDir::open(&root).unwrap();
        assert_eq!(mode(&s.verify_dir()), 0o700);
        let key = JobKey::new(7, "n1").unwrap();
        let d = delivery(7, "n1", &["n1", "n2"]);
        write_json(&s.pending_path(&key), &d).unwrap();
        keep_for_verify(&s, &key, &d, "seen text").unwrap();
        assert!(s.pending_keys().is_empty(), "no longer pending");
        let e = load_verify(&s, &key).unwrap().unwrap();
        assert_eq!((e.delivery, e.seen.as_str()), (d.clone(), "seen text"));
        // Due once it is `after` old, not before.
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        assert!(due_verifications(&s, hour, now).is_empty());
        let due = due_verifications(&s, hour, now + hour * 2);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, key);
        assert!(due[0].1 >= hour);
        // Missing: back to pending, as a delivery the courier reads again.
        end_verify(&s, &key, true);
        assert_eq!(s.pending_keys(), vec![key.clone()]);
        assert_eq!(load_pending(&s, &key).unwrap(), Some(d.clone()));
        assert!(load_verify(&s, &key).unwrap().is_none());
        // There: gone.
        keep_for_verify(&s, &key, &d, "x").unwrap();
        end_verify(&s, &key, false);
        assert!(load_verify(&s, &key).unwrap().is_none());
        assert!(s.pending_keys().is_empty());
        // Another job's record under this name is refused.
        keep_for_verify(&s, &key, &delivery(8, "n1", &["n1", "n2"]), "x").unwrap();
        assert!(matches!(
            load_verify(&s, &key),
            Err(StateError::Mismatch { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn pending_records_must_match_their_name() {
        let root = temp_dir("pending");
        let s = StateDir::open(&root).unwrap();
        let key = JobKey::new(7, "n1").unwrap();
        assert!(load_pending(&s, &key).unwrap().is_none(), "none yet");
        let good = delivery(7, "n1", &["n1", "n2"]);
        write_json(&s.pending_path(&key), &good).unwrap();
        assert_eq!(load_pending(&s, &key).unwrap(), Some(good));
        for (bad, why) in [
            (delivery(8, "n1", &["n1"]), "job 8's record, not job 7's"),
            (
                delivery(7, "n2", &["n1", "n2"]),
                "node `n2`'s part, not n1's",
            ),
            (delivery(7, "N1", &["n1"]), "node `N1`'s part"),
            (delivery(7, "n1", &["n1", "../x"]), "bad node name `../x`"),
            (delivery(7, "n1", &["n1", ""]), "bad node name ``"),
        ] {
            write_json(&s.pending_path(&key), &bad).unwrap();
            let e = load_pending(&s, &key).unwrap_err();
            assert!(matches!(e, StateError::Mismatch { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains(why), "{text}");
            assert!(text.contains("pending/7.n1.json: refused"), "{text}");
        }
        fs::write(s.pending_path(&key), b"{\"job\": 7").unwrap();
        assert!(matches!(
            load_pending(&s, &key),
            Err(StateError::Corrupt { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }
}
