//! The node's root-owned state directory: per-job sampler state, local records and
//! records waiting for delivery. Every path is built from validated parts.
//!
//! ```text
//! <state_dir>/jobs/<job>.<node>/{job.json,sampler.json,sampler.pid}
//! <state_dir>/records/YYYY-MM-DD.jsonl      local records, kept for audit (see `retention`)
//! <state_dir>/pending/<job>.<node>.json     waiting to be written to accounting
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// A job on a node: the key of every state file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct JobKey {
    pub job: u32,
    pub node: String,
}

impl JobKey {
    pub fn new(job: u32, node: &str) -> Result<JobKey, StateError> {
        let node = node.to_ascii_lowercase();
        if !valid_node_name(&node) {
            return Err(StateError::BadNode(node.chars().take(64).collect()));
        }
        Ok(JobKey { job, node })
    }

    /// Parses `<job>.<node>` as written by `Display`.
    pub fn parse(s: &str) -> Result<JobKey, StateError> {
        let (job, node) = s
            .split_once('.')
            .ok_or_else(|| StateError::BadJobId(s.chars().take(32).collect()))?;
        JobKey::new(parse_job_id(job)?, node)
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.node)
    }
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

const SUBDIRS: [&str; 3] = ["jobs", "records", "pending"];

impl StateDir {
    /// Opens the state directory, creating it (mode 0700) if needed, and refuses one
    /// that another user owns or that others can write: the plugin runs as root and
    /// trusts what it finds there.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let me = rustix::process::geteuid().as_raw();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in std::iter::once(root.to_path_buf()).chain(SUBDIRS.iter().map(|s| root.join(s))) {
            if !dir.exists() {
                builder.create(&dir).map_err(io_err(&dir))?;
            }
            let meta = fs::symlink_metadata(&dir).map_err(io_err(&dir))?;
            let unsafe_because = if !meta.is_dir() {
                Some("not a directory")
            } else if meta.uid() != me {
                Some("owned by another user")
            } else if meta.mode() & 0o022 != 0 {
                Some("writable by group or others")
            } else {
                None
            };
            if let Some(why) = unsafe_because {
                return Err(StateError::Unsafe {
                    path: dir.display().to_string(),
                    why: why.into(),
                });
            }
        }
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing state directory without creating anything (for readers).
    pub fn existing(root: &Path) -> Option<StateDir> {
        root.join("jobs").is_dir().then(|| StateDir {
            root: root.to_path_buf(),
        })
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

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
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
}
