//! Keeps the state directory's growth bounded. Local records go one JSON object a line
//! into one file per UTC day (`records/YYYY-MM-DD.jsonl`, appended with O_APPEND, one
//! write() per record, so that concurrent epilogs never interleave partial lines); they
//! are removed by age (`records_keep_days`) and, oldest day first, by total size
//! (`records_max_mb`). The log (`spank-carbon.log`) is rotated by size (`log_max_mb`,
//! `log_keep` old generations `.1`, `.2`, ...).
//!
//! Pruning is not in a job's critical path: the node's courier calls `maybe_sweep`,
//! which does the work at most once every `SWEEP_EVERY` (a stamp file in the state
//! directory remembers when, across couriers) and never in two processes at once.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::core::calendar::{civil_from_days, days_from_civil};
use crate::core::config::Config;
use crate::node::state::{JobKey, StateDir, StateError};

/// How often the courier's sweep does its work.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The log of the detached processes, in the state directory.
pub const LOG_NAME: &str = "spank-carbon.log";
const STAMP: &str = "retention.stamp";
const LOCK: &str = "retention.lock";
/// Time one sweep spends folding per-job record files (the layout before day files)
/// into day files; while some are left, the next sweep comes after `LEGACY_AGAIN`.
const LEGACY_BUDGET: Duration = Duration::from_secs(1);
const LEGACY_AGAIN: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

pub fn records_dir(state: &StateDir) -> PathBuf {
    state.root().join("records")
}

/// The UTC day number of a time (days since 1970-01-01; 0 for times before it).
pub fn day_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// `YYYY-MM-DD.jsonl`, the file of a day's local records.
pub fn day_file_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}.jsonl")
}

/// The day of a `YYYY-MM-DD.jsonl` name; `None` for any other name.
pub fn parse_day_file(name: &str) -> Option<i64> {
    let date = name.strip_suffix(".jsonl")?;
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) {
        return None;
    }
    if !digits(5..7) || !digits(8..10) {
        return None;
    }
    let (y, m, d) = (
        date[0..4].parse().ok()?,
        date[5..7].parse().ok()?,
        date[8..10].parse().ok()?,
    );
    let day = days_from_civil(y, m, d);
    // Rejects 2026-02-30 and the like: the name must be the day's own.
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// The key of a per-job record file (`<job>.<node>.json`, the layout before day files).
fn legacy_key(name: &str) -> Option<JobKey> {
    JobKey::parse(name.strip_suffix(".json")?).ok()
}

fn open_append(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Appends `line` (ending in a newline) with one write() on an O_APPEND descriptor:
/// processes appending to the same file at once each land whole lines.
pub fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let mut f = open_append(path)?;
    let n = loop {
        match f.write(line) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n < line.len() {
        // A full disk: end the torn line so that the next record starts on its own line
        // (readers skip lines that are not whole JSON).
        let _ = f.write(b"\n");
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", line.len()),
        ));
    }
    Ok(())
}

/// Appends a local record to the file of `now`'s UTC day; returns that file.
pub fn append_record<T: Serialize>(
    state: &StateDir,
    now: SystemTime,
    record: &T,
) -> Result<PathBuf, StateError> {
    let path = records_dir(state).join(day_file_name(day_of(now)));
    let mut line = serde_json::to_vec(record).expect("records always serialise");
    line.push(b'\n');
    append_line(&path, &line).map_err(|source| StateError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

/// The local record of `job` on `node` in a records directory: a per-job file of the
/// old layout, else the last one in the newest day file that has one.
pub fn find_record(records: &Path, job: u32, node: &str) -> Option<serde_json::Value> {
    let legacy = records.join(format!("{job}.{node}.json"));
    if let Ok(bytes) = fs::read(&legacy) {
        return serde_json::from_slice(&bytes).ok();
    }
    let mut days: Vec<(i64, PathBuf)> = fs::read_dir(records)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((parse_day_file(e.file_name().to_str()?)?, e.path())))
        .collect();
    days.sort();
    days.iter().rev().find_map(|(_, path)| {
        let file = fs::File::open(path).ok()?;
        io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .filter(|v| v["job"] == job && v["node"] == node)
            .last()
    })
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// Per-job record files folded into day files, and whether some are left.
    pub migrated: usize,
    pub legacy_left: bool,
    /// Record files removed (by age, then by size).
    pub removed_old: Vec<String>,
    pub removed_for_size: Vec<String>,
    pub removed_bytes: u64,
    /// Bytes of records left.
    pub kept_bytes: u64,
    pub log_rotated: bool,
}

impl SweepReport {
    pub fn did_something(&self) -> bool {
        self.migrated > 0
            || !self.removed_old.is_empty()
            || !self.removed_for_size.is_empty()
            || self.log_rotated
    }
}

/// Folds per-job record files into the day file of their modification time, for up to
/// `budget`, so that a node upgraded with a large `records/` converges; files older
/// than `oldest_day` are left to be removed. Returns how many it moved and whether it
/// stopped with some left.
fn migrate_legacy(dir: &Path, oldest_day: i64, budget: Duration) -> (usize, bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, false);
    };
    let stop_at = std::time::Instant::now() + budget;
    let mut moved = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if name.to_str().and_then(legacy_key).is_none() {
            continue;
        }
        let path = entry.path();
        // Plain files only (never a FIFO or a link); unreadable ones stay and go by age.
        let Some(meta) = fs::symlink_metadata(&path).ok().filter(|m| m.is_file()) else {
            continue;
        };
        let day = meta.modified().map_or(0, day_of);
        if day < oldest_day {
            continue;
        }
        if std::time::Instant::now() >= stop_at {
            return (moved, true);
        }
        let parsed = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let Some(value) = parsed else {
            continue;
        };
        let mut line = serde_json::to_vec(&value).expect("a parsed value serialises");
        line.push(b'\n');
        let target = dir.join(day_file_name(day));
        if let Err(e) = append_line(&target, &line) {
            log::error!(
                "retention: moving {} into {}: {e}",
                path.display(),
                target.display()
            );
            return (moved, false);
        }
        let _ = fs::remove_file(&path);
        moved += 1;
    }
    (moved, false)
}

/// Removes record files older than `keep_days` days, then the oldest days while all of
/// them together exceed `max_bytes` (the current day's file is never removed).
fn prune_records(dir: &Path, keep_days: u64, max_bytes: u64, today: i64, r: &mut SweepReport) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(i64, PathBuf, u64)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = fs::symlink_metadata(e.path()).ok()?;
            if !meta.is_file() {
                return None;
            }
            let day = match parse_day_file(&name) {
                Some(day) => day,
                None if legacy_key(&name).is_some() => meta.modified().map_or(0, day_of),
                None => return None,
            };
            Some((day, e.path(), meta.len()))
        })
        .collect();
    files.sort();
    let name = |p: &Path| {
        p.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into())
    };
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    for (day, path, len) in &files {
        let too_old = today - day > keep_days as i64;
        let too_big = total > max_bytes && *day < today;
        if !(too_old || too_big) {
            continue;
        }
        match fs::remove_file(path) {
            Ok(()) => {
                total -= len;
                r.removed_bytes += len;
                if too_old {
                    r.removed_old.push(name(path));
                } else {
                    r.removed_for_size.push(name(path));
                }
            }
            Err(e) => log::error!("retention: removing {}: {e}", path.display()),
        }
    }
    if total > max_bytes {
        log::warn!(
            "retention: today's local records alone exceed records_max_mb ({} bytes in {})",
            total,
            dir.display()
        );
    }
    r.kept_bytes = total;
}

/// Renames the log to `.1` (older generations shifted, beyond `keep` removed) once it
/// is over `max_bytes`; writers reopen the path at their next line (see `LogFile`).
pub fn rotate_log(path: &Path, max_bytes: u64, keep: u64) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() <= max_bytes {
        return false;
    }
    let name = path
        .file_name()
        .map_or(LOG_NAME.into(), |n| n.to_string_lossy());
    let gen = |i: u64| path.with_file_name(format!("{name}.{i}"));
    let done = if keep == 0 {
        fs::remove_file(path)
    } else {
        let _ = fs::remove_file(gen(keep));
        for i in (1..keep).rev() {
            let _ = fs::rename(gen(i), gen(i + 1));
        }
        fs::rename(path, gen(1))
    };
    match done {
        Ok(()) => true,
        Err(e) => {
            log::error!("retention: rotating {}: {e}", path.display());
            false
        }
    }
}

/// Applies retention now: records older than `records_keep_days` go, then the oldest
/// days beyond `records_max_mb`, and the log is rotated past `log_max_mb`. `now` is the
/// clock (a parameter, for tests).
pub fn sweep(state: &StateDir, config: &Config, now: SystemTime) -> SweepReport {
    let mut report = SweepReport::default();
    let dir = records_dir(state);
    let oldest_day = day_of(now) - config.records_keep_days as i64;
    (report.migrated, report.legacy_left) = migrate_legacy(&dir, oldest_day, LEGACY_BUDGET);
    prune_records(
        &dir,
        config.records_keep_days,
        config.records_max_mb.saturating_mul(MIB),
        day_of(now),
        &mut report,
    );
    report.log_rotated = rotate_log(
        &state.root().join(LOG_NAME),
        config.log_max_mb.saturating_mul(MIB),
        config.log_keep,
    );
    report
}

/// Runs `sweep` if none ran in the last `SWEEP_EVERY` (or the clock went back past the
/// last one) and no other process sweeps now; cheap otherwise (one lock, one stat).
pub fn maybe_sweep(state: &StateDir, config: &Config, now: SystemTime) -> Option<SweepReport> {
    let lock = open_append(&state.root().join(LOCK)).ok()?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    let stamp_path = state.root().join(STAMP);
    if let Ok(last) = fs::symlink_metadata(&stamp_path).and_then(|m| m.modified()) {
        // Either way: a clock set back by more than the period sweeps again.
        let gap = now.duration_since(last).unwrap_or_else(|e| e.duration());
        if gap < SWEEP_EVERY {
            return None;
        }
    }
    // Stamped first: a sweep that fails half-way is not retried in a loop.
    let stamp = match open_append(&stamp_path).and_then(|f| f.set_modified(now).map(|()| f)) {
        Ok(f) => f,
        Err(e) => {
            log::error!("retention: {}: {e}", stamp_path.display());
            return None;
        }
    };
    let report = sweep(state, config, now);
    if report.legacy_left {
        // Old per-job files are left: the next sweep in a minute, not an hour.
        let _ = stamp.set_modified(now - SWEEP_EVERY + LEGACY_AGAIN);
    }
    if report.did_something() {
        log::info!(
            "retention: {} record file(s) folded into day files, {} older than {} days and {} over {} MiB removed ({} bytes), {} bytes kept{}",
            report.migrated,
            report.removed_old.len(),
            config.records_keep_days,
            report.removed_for_size.len(),
            config.records_max_mb,
            report.removed_bytes,
            report.kept_bytes,
            if report.log_rotated { "; log rotated" } else { "" }
        );
    }
    Some(report)
}

/// The log file of a detached process: each line is one write() (O_APPEND, so lines of
/// several processes never mix), and the path is reopened when the file there is no
/// longer the one open (the courier rotated it), so that a sampler that lives for days
/// keeps logging into the current file.
pub struct LogFile {
    path: PathBuf,
    file: fs::File,
    id: (u64, u64),
    buf: Vec<u8>,
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<LogFile> {
        let file = open_append(path)?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            id: (meta.dev(), meta.ino()),
            buf: Vec::new(),
        })
    }

    fn reopen_if_rotated(&mut self) {
        let current = fs::symlink_metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if current.is_ok_and(|id| id == self.id) {
            return;
        }
        if let Ok(fresh) = LogFile::open(&self.path) {
            self.file = fresh.file;
            self.id = fresh.id;
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 64 * 1024 {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.reopen_if_rotated();
        let result = self.file.write(&self.buf).map(|_| ());
        self.buf.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn temp_state(tag: &str) -> (PathBuf, StateDir) {
        let root = std::env::temp_dir().join(format!(
            "sc-ret-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        let state = StateDir::open(&root).unwrap();
        (root, state)
    }

    fn at_day(day: i64, secs_into_day: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400 + secs_into_day)
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn day_file_names_round_trip_and_reject_others() {
        // The epoch, and 946684800 s = 2000-01-01T00:00:00Z.
        assert_eq!(day_file_name(0), "1970-01-01.jsonl");
        assert_eq!(day_file_name(946_684_800 / 86_400), "2000-01-01.jsonl");
        for day in (0..40_000).step_by(7).chain([59, 60, 11_016, 11_017]) {
            assert_eq!(parse_day_file(&day_file_name(day)), Some(day), "{day}");
        }
        // Leap days: 2000 is a leap year, 1900 and 2100 are not.
        assert!(parse_day_file("2000-02-29.jsonl").is_some());
        for bad in [
            "2100-02-29.jsonl",
            "2026-02-30.jsonl",
            "2026-13-01.jsonl",
            "2026-1-01.jsonl",
            "2026-01-01.json",
            "2026-01-01",
            "+026-01-01.jsonl",
            "12.node1.json",
            ".2026-01-01.jsonl.tmp",
        ] {
            assert_eq!(parse_day_file(bad), None, "{bad}");
        }
        assert_eq!(day_of(at_day(20_000, 86_399)), 20_000);
        assert_eq!(day_of(at_day(20_001, 0)), 20_001);
    }

    #[test]
    fn concurrent_appends_land_whole_lines() {
        let (root, state) = temp_state("append");
        let now = at_day(20_000, 3600);
        let threads = 8;
        let per = 100;
        std::thread::scope(|s| {
            for t in 0..threads {
                let state = &state;
                s.spawn(move || {
                    for i in 0..per {
                        // Records of a few bytes to tens of KiB, like a long job's series.
                        let pad = "x".repeat((t * 7919 + i * 104_729) % 40_000);
                        let rec =
                            serde_json::json!({"job": t * 1000 + i + 1, "node": "n1", "pad": pad});
                        append_record(state, now, &rec).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(records_dir(&state).join(day_file_name(20_000))).unwrap();
        let jobs: BTreeSet<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["job"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(text.lines().count(), threads * per);
        assert_eq!(jobs.len(), threads * per, "every record once, none torn");
        let rec = find_record(&records_dir(&state), 3042, "n1").unwrap();
        assert_eq!(rec["job"], 3042);
        assert!(find_record(&records_dir(&state), 3042, "n2").is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn old_per_job_files_are_folded_into_day_files_and_still_found() {
        let (root, state) = temp_state("migrate");
        let dir = records_dir(&state);
        let day = 20_100;
        let legacy = dir.join("77.node3.json");
        fs::write(
            &legacy,
            b"{\n  \"job\": 77,\n  \"node\": \"node3\",\n  \"wh\": 1.5\n}",
        )
        .unwrap();
        fs::File::options()
            .write(true)
            .open(&legacy)
            .unwrap()
            .set_modified(at_day(day, 100))
            .unwrap();
        fs::write(dir.join("78.node3.json"), b"{broken").unwrap();
        assert_eq!(find_record(&dir, 77, "node3").unwrap()["wh"], 1.5);
        // Out of time at once: nothing moved, and it says some are left.
        assert_eq!(migrate_legacy(&dir, 0, Duration::ZERO), (0, true));
        let config = Config::default();
        let r = sweep(&state, &config, at_day(day + 1, 0));
        assert_eq!((r.migrated, r.legacy_left), (1, false));
        assert!(!legacy.exists());
        assert!(
            dir.join("78.node3.json").exists(),
            "unreadable: left to age out"
        );
        let text = fs::read_to_string(dir.join(day_file_name(day))).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(find_record(&dir, 77, "node3").unwrap()["wh"], 1.5);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn records_are_removed_by_age_with_a_fake_clock() {
        let (root, state) = temp_state("age");
        let dir = records_dir(&state);
        let config = Config {
            records_keep_days: 30,
            ..Config::default()
        };
        let today = 20_500;
        let keep = config.records_keep_days as i64;
        let ages = [0, 1, keep - 1, keep, keep + 1, keep + 40];
        for age in ages {
            fs::write(dir.join(day_file_name(today - age)), b"{}\n").unwrap();
        }
        // An old-layout file, too old, that cannot be folded: it goes by its age.
        let stale = dir.join("5.n1.json");
        fs::write(&stale, b"not json").unwrap();
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(at_day(today - keep - 2, 0))
            .unwrap();
        fs::write(dir.join("notes.txt"), b"an operator's file").unwrap();
        let r = sweep(&state, &config, at_day(today, 43_200));
        let expected_gone: BTreeSet<String> = ages
            .iter()
            .filter(|a| **a > keep)
            .map(|a| day_file_name(today - a))
            .chain(["5.n1.json".to_string()])
            .collect();
        assert_eq!(
            r.removed_old.iter().cloned().collect::<BTreeSet<_>>(),
            expected_gone
        );
        assert!(r.removed_for_size.is_empty());
        let left = names(&dir);
        for age in ages {
            assert_eq!(
                left.contains(&day_file_name(today - age)),
                age <= keep,
                "{age}"
            );
        }
        assert!(
            left.contains("notes.txt"),
            "files that are not records are left alone"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn records_over_the_size_cap_go_oldest_first_but_never_today() {
        let (root, state) = temp_state("size");
        let dir = records_dir(&state);
        let config = Config {
            records_max_mb: 1,
            ..Config::default()
        };
        let cap = config.records_max_mb * MIB;
        let today = 20_600;
        let each = (cap / 3 + 1) as usize; // three of them are over the cap, two are not
        for age in 0..5 {
            fs::write(dir.join(day_file_name(today - age)), vec![b'x'; each]).unwrap();
        }
        let r = sweep(&state, &config, at_day(today, 0));
        let left = names(&dir);
        let kept: Vec<i64> = (0..5)
            .filter(|a| left.contains(&day_file_name(today - a)))
            .collect();
        assert_eq!(kept, vec![0, 1], "the two newest days fit");
        assert_eq!(r.removed_for_size.len(), 3);
        assert!(r.kept_bytes <= cap && r.kept_bytes == 2 * each as u64);
        // Today's file alone over the cap is kept (it is being written).
        fs::write(dir.join(day_file_name(today)), vec![b'x'; cap as usize + 1]).unwrap();
        sweep(&state, &config, at_day(today, 0));
        assert!(dir.join(day_file_name(today)).exists());
        assert!(!dir.join(day_file_name(today - 1)).exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn log_is_rotated_by_size_keeping_generations() {
        let (root, state) = temp_state("log");
        let config = Config {
            log_max_mb: 1,
            log_keep: 2,
            ..Config::default()
        };
        let log = root.join(LOG_NAME);
        let big = vec![b'a'; (config.log_max_mb * MIB) as usize + 1];
        let now = at_day(20_000, 0);
        fs::write(&log, b"small").unwrap();
        assert!(
            !sweep(&state, &config, now).log_rotated,
            "under the cap: left"
        );
        for generation in [b'1', b'2', b'3'] {
            let mut content = big.clone();
            content.push(generation);
            fs::write(&log, &content).unwrap();
            assert!(sweep(&state, &config, now).log_rotated);
            assert!(!log.exists());
        }
        let last = |p: PathBuf| *fs::read(p).unwrap().last().unwrap();
        assert_eq!(last(root.join(format!("{LOG_NAME}.1"))), b'3');
        assert_eq!(last(root.join(format!("{LOG_NAME}.2"))), b'2');
        assert!(
            !root.join(format!("{LOG_NAME}.3")).exists(),
            "only log_keep kept"
        );
        let none = Config {
            log_keep: 0,
            ..config
        };
        fs::write(&log, &big).unwrap();
        assert!(sweep(&state, &none, now).log_rotated);
        assert!(!log.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn log_writer_follows_rotation() {
        let (root, _state) = temp_state("logfile");
        let log = root.join(LOG_NAME);
        let mut w = LogFile::open(&log).unwrap();
        writeln!(w, "first").unwrap();
        w.flush().unwrap();
        assert!(rotate_log(&log, 0, 1));
        writeln!(w, "second").unwrap();
        w.flush().unwrap();
        assert_eq!(
            fs::read_to_string(root.join(format!("{LOG_NAME}.1"))).unwrap(),
            "first\n"
        );
        assert_eq!(fs::read_to_string(&log).unwrap(), "second\n");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sweeps_at_most_once_an_hour() {
        let (root, state) = temp_state("rate");
        let config = Config {
            records_keep_days: 1,
            ..Config::default()
        };
        let dir = records_dir(&state);
        let t0 = at_day(21_000, 0);
        fs::write(dir.join(day_file_name(20_000)), b"{}\n").unwrap();
        assert_eq!(
            maybe_sweep(&state, &config, t0).unwrap().removed_old.len(),
            1
        );
        fs::write(dir.join(day_file_name(20_001)), b"{}\n").unwrap();
        let soon = t0 + SWEEP_EVERY - Duration::from_secs(1);
        assert!(maybe_sweep(&state, &config, soon).is_none());
        assert!(dir.join(day_file_name(20_001)).exists());
        let later = t0 + SWEEP_EVERY;
        assert_eq!(
            maybe_sweep(&state, &config, later)
                .unwrap()
                .removed_old
                .len(),
            1
        );
        // A clock set far back sweeps again rather than never.
        assert!(maybe_sweep(&state, &config, t0 - SWEEP_EVERY * 48).is_some());
        // Another process sweeping (holding the lock): this one does nothing.
        let held = open_append(&root.join(LOCK)).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        assert!(maybe_sweep(&state, &config, later + SWEEP_EVERY * 2).is_none());
        fs::remove_dir_all(&root).unwrap();
    }
}
