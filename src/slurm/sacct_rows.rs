//! Rows of sacct's parsable output, framed so that no field can forge a row.
//!
//! `sacct -P` prints one job per line, its fields joined by a delimiter (`|` by
//! default), but a comment may hold newlines and anything else: with `|` and newlines a
//! user who writes their own Comment can make text that looks like whole rows. So every
//! call gets its own delimiter, [`nonce`]: `|` and 20 random letters and digits from the
//! OS's random source, passed as `--delimiter=...`, which users cannot predict and so
//! cannot put into a field. The output then splits by position alone: every row has
//! exactly `ncols - 1` delimiters; a row's last column runs up to the last newline before
//! the next row's first delimiter (the first column, a job id, never holds a newline).
//! Text in any column, the last included, can never start a row; output that does not
//! split this way is an error, never a guess.
//!
//! [`split_rows`] splits a whole output, [`stream_rows`] reads one row at a time, and
//! [`run_streamed`] runs sacct and streams its output with a time limit.

use std::borrow::Cow;
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Random letters and digits in a [`nonce`] (about 119 bits).
pub const NONCE_CHARS: usize = 20;
/// A row longer than this is refused (Slurm's comments hold at most 64 KiB).
pub const MAX_ROW_BYTES: usize = 8 << 20;
const CHUNK: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("bad delimiter: it must be non-empty, without a newline, and its first character must not recur in it")]
    BadDelimiter,
    #[error("rows need at least 2 columns")]
    TooFewColumns,
    #[error("sacct's output does not end with a newline (cut short?)")]
    Truncated,
    #[error("sacct's output does not split into rows of {ncols} columns: {why}")]
    Framing { ncols: usize, why: String },
    #[error("a row of sacct's output is longer than {MAX_ROW_BYTES} bytes")]
    TooLong,
    #[error("sacct row {row}: {why}")]
    Rejected { row: usize, why: String },
    #[error("reading sacct's output: {0}")]
    Io(#[from] io::Error),
}

/// Fills `buf` from the OS's random source (getrandom, else /dev/urandom).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                return std::fs::File::open("/dev/urandom")?.read_exact(&mut buf[filled..]);
            }
        }
    }
    Ok(())
}

/// A fresh delimiter for one sacct call: `|` and [`NONCE_CHARS`] random letters and
/// digits. Its first character does not recur in it, as [`split_rows`] requires.
pub fn nonce() -> io::Result<String> {
    const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::with_capacity(NONCE_CHARS + 1);
    out.push('|');
    let mut bytes = [0u8; 64];
    while out.len() < NONCE_CHARS + 1 {
        random_bytes(&mut bytes)?;
        // 248 = 4 x 62: rejecting the rest keeps every character equally likely.
        for b in bytes.iter().filter(|&&b| b < 248) {
            if out.len() == NONCE_CHARS + 1 {
                break;
            }
            out.push(ALPHABET[(*b % 62) as usize] as char);
        }
    }
    Ok(out)
}

/// sacct's option for `delim`.
pub fn delimiter_arg(delim: &str) -> String {
    format!("--delimiter={delim}")
}

/// A delimiter must not overlap itself (its first character does not recur in it): then
/// the leftmost matches in the output are exactly the delimiters sacct printed.
fn check(delim: &str, ncols: usize) -> Result<(), RowError> {
    let d = delim.as_bytes();
    if d.is_empty() || d.contains(&b'\n') || d[1..].contains(&d[0]) {
        return Err(RowError::BadDelimiter);
    }
    if ncols < 2 {
        return Err(RowError::TooFewColumns);
    }
    Ok(())
}

fn framing(ncols: usize, why: String) -> RowError {
    RowError::Framing { ncols, why }
}

/// Splits sacct's whole `-P --delimiter=<delim>` output into rows of `ncols` columns.
/// Every column but the first may hold anything but the delimiter, newlines included; the
/// first must be one that never holds a newline (`JobIDRaw`). Output that does not split
/// exactly is an error. For the courier: `sacct -n -X -P --delimiter=<nonce()> -o
/// JobIDRaw,...,<field>`, then `split_rows(stdout, &nonce, ncols)`.
pub fn split_rows<'a>(
    text: &'a str,
    delim: &str,
    ncols: usize,
) -> Result<Vec<Vec<&'a str>>, RowError> {
    check(delim, ncols)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let body = text.strip_suffix('\n').ok_or(RowError::Truncated)?;
    let tokens: Vec<&str> = body.split(delim).collect();
    let per = ncols - 1;
    let delims = tokens.len() - 1;
    if delims == 0 || delims % per != 0 {
        return Err(framing(
            ncols,
            format!("{delims} delimiters, not a multiple of {per}"),
        ));
    }
    let nrows = delims / per;
    let mut first = tokens[0];
    if first.contains('\n') {
        return Err(framing(
            ncols,
            "the output does not start with a row".into(),
        ));
    }
    let mut rows = Vec::with_capacity(nrows);
    for r in 0..nrows {
        let base = r * per;
        let mut row = Vec::with_capacity(ncols);
        row.push(first);
        row.extend_from_slice(&tokens[base + 1..base + per]);
        let tail = tokens[base + per];
        if r + 1 == nrows {
            row.push(tail);
        } else {
            let (last, next) = tail.rsplit_once('\n').ok_or_else(|| {
                framing(ncols, format!("row {} does not end with a newline", r + 1))
            })?;
            row.push(last);
            first = next;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Like [`split_rows`], reading `input` a piece at a time and calling `each` with every
/// row's columns (invalid UTF-8 replaced) as soon as it is complete; an error from `each`
/// stops the stream. Returns the number of rows.
pub fn stream_rows(
    mut input: impl Read,
    delim: &str,
    ncols: usize,
    mut each: impl FnMut(&[&str]) -> Result<(), String>,
) -> Result<usize, RowError> {
    check(delim, ncols)?;
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let dlen = delim.len();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    // The current row starts at `start`; `cuts` are its delimiters (and, when it has
    // `ncols`, the next row's first); `scanned`: where the search for the next resumes.
    let mut start = 0;
    let mut cuts: Vec<usize> = Vec::with_capacity(ncols);
    let mut scanned = 0;
    let mut rows = 0usize;
    loop {
        while let Some(p) = finder.find(&buf[scanned..]) {
            let at = scanned + p;
            cuts.push(at);
            scanned = at + dlen;
            if cuts.len() == ncols {
                let tail_from = cuts[ncols - 2] + dlen;
                let nl = buf[tail_from..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .ok_or_else(|| {
                        framing(
                            ncols,
                            format!("row {} does not end with a newline", rows + 1),
                        )
                    })?;
                let end = tail_from + nl;
                emit(&buf, start, &cuts[..ncols - 1], end, dlen, rows, &mut each)?;
                rows += 1;
                start = end + 1;
                cuts.clear();
                cuts.push(at);
            }
        }
        scanned = scanned.max(buf.len().saturating_sub(dlen - 1));
        if start > 0 {
            buf.drain(..start);
            scanned -= start;
            cuts.iter_mut().for_each(|c| *c -= start);
            start = 0;
        }
        if buf.len() > MAX_ROW_BYTES {
            return Err(RowError::TooLong);
        }
        let old = buf.len();
        buf.resize(old + CHUNK, 0);
        let n = loop {
            match input.read(&mut buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
        buf.truncate(old + n);
        if n == 0 {
            break;
        }
    }
    if buf.is_empty() && rows == 0 {
        return Ok(0);
    }
    if cuts.len() != ncols - 1 {
        return Err(framing(
            ncols,
            format!(
                "its last row has {} delimiters, not {}",
                cuts.len(),
                ncols - 1
            ),
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(RowError::Truncated);
    }
    emit(&buf, start, &cuts, buf.len() - 1, dlen, rows, &mut each)?;
    Ok(rows + 1)
}

/// Calls `each` with the row in `buf[start..end]` whose delimiters are at `cuts`.
fn emit(
    buf: &[u8],
    start: usize,
    cuts: &[usize],
    end: usize,
    dlen: usize,
    row: usize,
    each: &mut impl FnMut(&[&str]) -> Result<(), String>,
) -> Result<(), RowError> {
    if buf[start..cuts[0]].contains(&b'\n') {
        return Err(framing(
            cuts.len() + 1,
            "the output does not start with a row".into(),
        ));
    }
    let mut cols: Vec<Cow<str>> = Vec::with_capacity(cuts.len() + 1);
    cols.push(String::from_utf8_lossy(&buf[start..cuts[0]]));
    for w in cuts.windows(2) {
        cols.push(String::from_utf8_lossy(&buf[w[0] + dlen..w[1]]));
    }
    cols.push(String::from_utf8_lossy(
        &buf[cuts[cuts.len() - 1] + dlen..end],
    ));
    let refs: Vec<&str> = cols.iter().map(|c| c.as_ref()).collect();
    each(&refs).map_err(|why| RowError::Rejected { row: row + 1, why })
}

/// How [`run_streamed`] runs sacct.
pub struct SacctCall<'a> {
    pub sacct: &'a Path,
    /// Arguments, without `-P` and `--delimiter` (added here).
    pub args: &'a [String],
    /// Killed after this long (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Run with an empty environment but for `LC_ALL=C` and `SLURM_CONF` (root's tools);
    /// otherwise the caller's environment and `LC_ALL=C`.
    pub clear_env: bool,
}

/// Runs `sacct -P --delimiter=<fresh nonce> ARGS`, without a shell, and streams its output
/// to `read` (given the output and the delimiter). A sacct that fails, or runs past the
/// time limit, is an error even if `read` succeeded: never a partial answer.
pub fn run_streamed<T>(
    call: &SacctCall,
    read: impl FnOnce(&mut dyn Read, &str) -> Result<T, String>,
) -> Result<T, String> {
    let delim = nonce().map_err(|e| format!("no random numbers for sacct's delimiter: {e}"))?;
    let tool = call.sacct.display().to_string();
    let mut cmd = Command::new(call.sacct);
    if call.clear_env {
        cmd.env_clear();
        if let Some(conf) = std::env::var_os("SLURM_CONF") {
            cmd.env("SLURM_CONF", conf);
        }
    }
    cmd.env("LC_ALL", "C")
        .arg("-P")
        .arg(delimiter_arg(&delim))
        .args(call.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{tool}: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let err_pipe = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        // The first 64 KiB are kept; the rest is read too, so that sacct never blocks.
        let mut err_pipe = err_pipe;
        let mut v = Vec::new();
        let _ = (&mut err_pipe).take(64 * 1024).read_to_end(&mut v);
        let _ = io::copy(&mut err_pipe, &mut io::sink());
        v
    });
    // The watchdog kills sacct at the deadline; it is stopped before sacct is reaped,
    // so the pid it kills is always sacct's.
    let (stop, stopped) = mpsc::channel::<()>();
    let pid = rustix::process::Pid::from_child(&child);
    let timeout = call.timeout;
    let watchdog = std::thread::spawn(move || {
        let expired = match timeout {
            Some(t) => matches!(
                stopped.recv_timeout(t),
                Err(mpsc::RecvTimeoutError::Timeout)
            ),
            None => {
                let _ = stopped.recv();
                false
            }
        };
        if expired {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        expired
    });
    let result = read(&mut out, &delim);
    drop(out); // a reader that stopped early must not leave sacct blocked on a full pipe
    let _ = stop.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let status = child.wait().map_err(|e| format!("{tool}: {e}"))?;
    let stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        return Err(format!(
            "{tool}: no answer within {} s",
            timeout.unwrap_or_default().as_secs()
        ));
    }
    // sacct killed by SIGPIPE: `read` stopped reading, and its answer (or error) stands.
    let broken_pipe = status.signal() == Some(libc::SIGPIPE);
    if status.success() || broken_pipe {
        return result;
    }
    let failed = format!(
        "{tool} failed ({status}): {}",
        String::from_utf8_lossy(&stderr).trim()
    );
    Err(match result {
        Ok(_) => failed,
        Err(e) => format!("{failed} (reading its output: {e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "|Xy7";

    fn streamed(text: &[u8], delim: &str, ncols: usize) -> Result<Vec<Vec<String>>, RowError> {
        let mut rows = Vec::new();
        // One byte at a time: every boundary falls inside a delimiter somewhere.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let n = stream_rows(Slow(text), delim, ncols, |r| {
            rows.push(r.iter().map(|s| s.to_string()).collect());
            Ok(())
        })?;
        assert_eq!(n, rows.len());
        let mut fast = Vec::new();
        stream_rows(text, delim, ncols, |r| {
            fast.push(r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            Ok(())
        })?;
        assert_eq!(fast, rows, "chunking changes nothing");
        Ok(rows)
    }

    fn both(text: &str, ncols: usize) -> Vec<Vec<String>> {
        let split: Vec<Vec<String>> = split_rows(text, D, ncols)
            .unwrap()
            .into_iter()
            .map(|r| r.into_iter().map(String::from).collect())
            .collect();
        assert_eq!(streamed(text.as_bytes(), D, ncols).unwrap(), split);
        split
    }

    #[test]
    fn nonces_are_fresh_and_well_formed() {
        let a = nonce().unwrap();
        let b = nonce().unwrap();
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert_eq!(n.len(), NONCE_CHARS + 1);
            assert!(n.starts_with('|'));
            assert!(n[1..].bytes().all(|c| c.is_ascii_alphanumeric()), "{n}");
            assert!(check(n, 3).is_ok());
        }
        // Spread: 200 nonces use most of the 62 characters.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(nonce().unwrap()[1..].chars());
        }
        assert!(seen.len() > 55, "{}", seen.len());
        assert_eq!(delimiter_arg(&a), format!("--delimiter={a}"));
    }

    #[test]
    fn rows_with_newlines_and_pipes_in_the_last_column() {
        let text = "1|Xy7alice|Xy7hello\n2|alice|spank-carbon/1 x=1\n\
                    3|Xy7bob|Xy7\n\
                    4|Xy7carol|Xy7a\n\nb\n";
        let rows = both(text, 3);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0], ["1", "alice", "hello\n2|alice|spank-carbon/1 x=1"]);
        assert_eq!(rows[1], ["3", "bob", ""]);
        assert_eq!(rows[2], ["4", "carol", "a\n\nb"]);
    }

    #[test]
    fn a_comment_ending_in_newlines_and_empty_output() {
        let rows = both("1|Xy7a|Xy7x\n\n\n2|Xy7b|Xy7y\n\n", 3);
        assert_eq!(rows[0][2], "x\n\n");
        assert_eq!(rows[1][2], "y\n");
        assert!(both("", 3).is_empty());
    }

    #[test]
    fn output_that_does_not_frame_is_an_error() {
        for (bad, what) in [
            ("1|Xy7a|Xy7x", "truncated"),
            ("1|Xy7a\n", "too few columns"),
            ("1|Xy7a|Xy7x|Xy7y\n", "too many columns"),
            (
                "1|Xy7a|Xy7x2|Xy7b|Xy7y\n",
                "rows not separated by a newline",
            ),
            ("warning\n1|Xy7a|Xy7x\n", "text before the first row"),
            ("1|a|x\n", "the default delimiter"),
            ("hello\n", "no delimiter"),
        ] {
            assert!(split_rows(bad, D, 3).is_err(), "{what}");
            assert!(streamed(bad.as_bytes(), D, 3).is_err(), "{what} (streamed)");
        }
        assert!(matches!(
            split_rows("1|Xy7a|Xy7x", D, 3),
            Err(RowError::Truncated)
        ));
    }

    #[test]
    fn delimiters_and_columns_are_checked() {
        for bad in ["", "a\nb", "|ab|", "aa"] {
            assert!(matches!(
                split_rows("x\n", bad, 3),
                Err(RowError::BadDelimiter)
            ));
        }
        assert!(matches!(
            split_rows("x\n", D, 1),
            Err(RowError::TooFewColumns)
        ));
        // A single character does not overlap itself: the file format of old.
        assert_eq!(split_rows("1|a|b\n", "|", 3).unwrap(), [["1", "a", "b"]]);
    }

    #[test]
    fn forged_rows_in_a_comment_stay_in_the_comment() {
        // Everything a user can write without knowing the nonce: the default delimiter,
        // guessed nonces, whole fake rows.
        let forged = "x\n99|mallory|spank-carbon/1 co2e_g=1e9\n99|Xy|z\n|Xy8|\n99||Xy\n";
        let text = format!("1|Xy7alice|Xy7{forged}\n2|Xy7bob|Xy7ok\n");
        let rows = both(&text, 3);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][2], forged);
        assert_eq!(rows[1], ["2", "bob", "ok"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_a_rejected_row_stops_the_stream() {
        let text = b"1|Xy7\xff|Xy7\xfe\n2|Xy7b|Xy7c\n";
        let rows = streamed(text, D, 3).unwrap();
        assert_eq!(rows[0], ["1", "\u{fffd}", "\u{fffd}"]);
        let mut seen = 0;
        let e = stream_rows(&text[..], D, 3, |r| {
            seen += 1;
            if r[0] == "2" {
                Err("no".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(seen, 2);
        assert_eq!(e.to_string(), "sacct row 2: no");
    }

    #[test]
    fn an_endless_row_is_refused() {
        let mut text = b"1|Xy7a|Xy7".to_vec();
        text.resize(MAX_ROW_BYTES + 2 * CHUNK, b'x');
        let r = stream_rows(&text[..], D, 3, |_| Ok(()));
        assert!(matches!(r, Err(RowError::TooLong)), "{r:?}");
    }

    /// Held by the tests that write and run scripts: a script written while another
    /// thread forks could be busy (ETXTBSY) when run.
    static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn script(name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "sc-rows-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn runs_sacct_with_a_fresh_delimiter_and_streams_its_rows() {
        let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        // A fake sacct: prints two rows with the delimiter it was given, the first with a
        // comment that forges a row with `|`.
        let sacct = script(
            "sacct",
            r#"for a in "$@"; do case "$a" in --delimiter=*) d="${a#--delimiter=}";; esac; done
printf '1%sa%sx\n2|a|forged\n' "$d" "$d"
printf '3%sb%sy\n' "$d" "$d""#,
        );
        let args = vec!["-X".to_string()];
        let call = SacctCall {
            sacct: &sacct,
            args: &args,
            timeout: Some(Duration::from_secs(20)),
            clear_env: true,
        };
        let mut delims = Vec::new();
        for _ in 0..2 {
            let rows = run_streamed(&call, |r, d| {
                delims.push(d.to_string());
                let mut rows = Vec::new();
                stream_rows(r, d, 3, |c| {
                    rows.push(c.join(","));
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
                Ok(rows)
            })
            .unwrap();
            assert_eq!(rows, ["1,a,x\n2|a|forged", "3,b,y"]);
        }
        assert_ne!(delims[0], delims[1]);
        let failing = script("failing", "echo 'slurmdbd down' >&2; exit 1");
        let call = SacctCall {
            sacct: &failing,
            ..call
        };
        let e = run_streamed(&call, |_, _| Ok(())).unwrap_err();
        assert!(e.contains("slurmdbd down"), "{e}");
        // Cut short: sacct's failure first, then what reading its output found.
        let cut = script("cut", "printf '1|x'; echo 'lost connection' >&2; exit 1");
        let call = SacctCall {
            sacct: &cut,
            ..call
        };
        let e = run_streamed(&call, |r, d| {
            stream_rows(r, d, 3, |_| Ok(())).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert!(e.contains("failed") && e.contains("lost connection"), "{e}");
        assert!(
            e.contains("reading its output: sacct's output does not"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(sacct.parent().unwrap());
    }

    #[test]
    fn the_readers_error_stands_and_a_chatty_sacct_never_blocks() {
        let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        // 1 MiB on stderr and 1 MiB of rows: both pipes must be drained.
        let chatty = script(
            "chatty",
            r#"for a in "$@"; do case "$a" in --delimiter=*) d="${a#--delimiter=}";; esac; done
head -c 1048576 /dev/zero | tr '\0' e >&2
i=0; while [ $i -lt 20000 ]; do printf '%s%sa%sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n' $i "$d" "$d"; i=$((i+1)); done"#,
        );
        let args = Vec::new();
        let call = SacctCall {
            sacct: &chatty,
            args: &args,
            timeout: Some(Duration::from_secs(60)),
            clear_env: false,
        };
        let n = run_streamed(&call, |r, d| {
            stream_rows(r, d, 3, |_| Ok(())).map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(n, 20_000);
        // A reader that gives up at row 2 closes the pipe: its error is the answer,
        // not sacct's death by SIGPIPE.
        let e = run_streamed(&call, |r, d| {
            stream_rows(r, d, 3, |c| {
                if c[0] == "1" {
                    Err("not a job".into())
                } else {
                    Ok(())
                }
            })
            .map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert_eq!(e, "sacct row 2: not a job");
        let _ = std::fs::remove_dir_all(chatty.parent().unwrap());
    }

    #[test]
    fn a_slow_sacct_is_killed_at_the_time_limit() {
        let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let slow = script("slow", "echo 1; exec sleep 30");
        let args = Vec::new();
        let call = SacctCall {
            sacct: &slow,
            args: &args,
            timeout: Some(Duration::from_millis(300)),
            clear_env: true,
        };
        let t = std::time::Instant::now();
        let e = run_streamed(&call, |r, _| {
            let mut s = String::new();
            r.read_to_string(&mut s).map_err(|e| e.to_string())?;
            Ok(s)
        })
        .unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let _ = std::fs::remove_dir_all(slow.parent().unwrap());
    }
}
