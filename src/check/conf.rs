//! Parsers for what `spank-carbon check` (and the plugin's start-up check in slurmd)
//! reads: slurm.conf with its `Include`s, plugstack.conf with its `include` globs,
//! PrologFlags, version strings and /etc/passwd. Pure: files are read through a
//! function given by the caller, so every parser is tested on text.

use std::io;
use std::path::{Path, PathBuf};

/// Reads a whole file.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<String>;
/// Lists the names in a directory.
pub type ListDir<'a> = &'a dyn Fn(&Path) -> io::Result<Vec<String>>;

/// How deep `Include`/`include` directives are followed (Slurm has no limit; a loop
/// must not hang us).
pub const MAX_INCLUDE_DEPTH: u32 = 8;

/// slurm.conf's `Key=Value` settings, after its `Include`s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmConf {
    pub path: PathBuf,
    /// (lower-cased key, value) in file order, includes in place.
    values: Vec<(String, String)>,
    /// Includes that could not be followed, one sentence each.
    pub problems: Vec<String>,
}

impl SlurmConf {
    /// The last value given to `key` (case-insensitive), as slurmd takes it.
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.values
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The directory of slurm.conf, against which Slurm resolves relative paths.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// PlugStackConfig, else plugstack.conf beside slurm.conf (Slurm's default).
    pub fn plugstack_path(&self) -> PathBuf {
        match self.get("PlugStackConfig") {
            Some(p) => self.dir().join(p),
            None => self.dir().join("plugstack.conf"),
        }
    }

    /// Builds one from (key, value) pairs (tests).
    pub fn from_pairs(path: &Path, pairs: &[(&str, &str)]) -> SlurmConf {
        SlurmConf {
            path: path.to_path_buf(),
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            problems: Vec::new(),
        }
    }
}

fn strip_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

/// `include PATH` (keyword case-insensitive, then white space), as Slurm's parser.
fn include_target(line: &str) -> Option<&str> {
    let head = line.get(..7)?;
    if !head.eq_ignore_ascii_case("include") {
        return None;
    }
    let rest = &line[7..];
    if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    rest.split_whitespace().next()
}

/// Reads slurm.conf and the files it `Include`s (relative to slurm.conf's directory,
/// at most [`MAX_INCLUDE_DEPTH`] deep). An unreadable slurm.conf is an error; an
/// unreadable include is noted in `problems`.
pub fn read_slurm_conf(path: &Path, read: ReadFile) -> Result<SlurmConf, String> {
    let text = read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut conf = SlurmConf {
        path: path.to_path_buf(),
        ..SlurmConf::default()
    };
    let dir = conf.dir().to_path_buf();
    slurm_conf_text(&text, path, &dir, read, 0, &mut conf);
    Ok(conf)
}

fn slurm_conf_text(
    text: &str,
    file: &Path,
    dir: &Path,
    read: ReadFile,
    depth: u32,
    conf: &mut SlurmConf,
) {
    for line in text.lines().map(strip_comment) {
        let line = line.trim();
        if let Some(target) = include_target(line) {
            let inc = dir.join(target);
            if target.contains('*') {
                conf.problems.push(format!(
                    "{}: `Include {target}`: Slurm skips includes with globs",
                    file.display()
                ));
            } else if depth >= MAX_INCLUDE_DEPTH {
                conf.problems.push(format!(
                    "{}: includes nested deeper than {MAX_INCLUDE_DEPTH}",
                    inc.display()
                ));
            } else {
                match read(&inc) {
                    Ok(t) => slurm_conf_text(&t, &inc, dir, read, depth + 1, conf),
                    Err(e) => conf.problems.push(format!(
                        "{}: included from {}: {e}",
                        inc.display(),
                        file.display()
                    )),
                }
            }
            continue;
        }
        for token in line.split_whitespace() {
            if let Some((k, v)) = token.split_once('=') {
                conf.values
                    .push((k.to_ascii_lowercase(), v.trim_matches('"').to_string()));
            }
        }
    }
}

/// What PrologFlags means for the plugin.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrologFlags {
    /// The prolog runs at allocation on every node (Alloc, or a flag that implies it).
    pub alloc: bool,
    /// RunInJob: the SPANK job prolog/epilog never run.
    pub run_in_job: bool,
    /// Flags Slurm does not know (slurmctld refuses to start with them).
    pub unknown: Vec<String>,
}

/// Parses PrologFlags as Slurm's `prolog_str2flags` (comma list, case-insensitive),
/// for a Slurm of version `(major, minor)`: Contain, RunInJob, X11, NoHold and
/// ForceRequeueOnFail imply Alloc, and DeferBatch does from 26.05.
pub fn prolog_flags(value: Option<&str>, version: (u32, u32)) -> PrologFlags {
    let mut flags = PrologFlags::default();
    for tok in value.unwrap_or("").split(',').map(str::trim) {
        if tok.is_empty() {
            continue;
        }
        match tok.to_ascii_lowercase().as_str() {
            "alloc" | "contain" | "x11" | "nohold" | "forcerequeueonfail" => flags.alloc = true,
            "runinjob" => {
                flags.alloc = true;
                flags.run_in_job = true;
            }
            "deferbatch" => flags.alloc |= version >= (26, 5),
            "serial" => {}
            _ => flags.unknown.push(tok.to_string()),
        }
    }
    flags
}

/// The first `MAJOR.MINOR[.MICRO]` in `text` (`slurmd -V` prints `slurm 22.05.8`).
pub fn parse_version(text: &str) -> Option<(u32, u32, Option<u32>)> {
    text.split_whitespace().find_map(|tok| {
        let mut parts = tok.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.parse().ok()?;
        let micro = parts.next().and_then(|m| {
            let digits: String = m.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        Some((major, minor, micro))
    })
}

/// `required` or `optional`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Required,
    Optional,
}

/// One plugin line of plugstack.conf.
#[derive(Debug, Clone, PartialEq)]
pub struct PlugLine {
    pub file: PathBuf,
    pub line: usize,
    pub kind: Kind,
    /// The plugin's path as written (Slurm looks a relative one up in PluginDir).
    pub plugin: String,
    pub args: Vec<String>,
}

impl PlugLine {
    /// Whether the line loads spank-carbon.
    pub fn is_spank_carbon(&self) -> bool {
        let base = self.plugin.rsplit('/').next().unwrap_or("");
        base.starts_with("libspank_carbon")
    }
}

/// plugstack.conf's plugin lines, includes followed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plugstack {
    pub lines: Vec<PlugLine>,
    /// Lines Slurm ignores and includes that could not be followed.
    pub problems: Vec<String>,
}

/// Reads plugstack.conf as Slurm's SPANK stack does: `required|optional PATH ARGS...`,
/// `include GLOB` (relative to the including file's directory, sorted, no match is not
/// an error), `#` comments. A missing top-level file is an error here (Slurm reads it
/// as empty: no plugin at all).
pub fn read_plugstack(path: &Path, read: ReadFile, list: ListDir) -> Result<Plugstack, String> {
    let text = read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Plugstack::default();
    plugstack_text(&text, path, read, list, 0, &mut out);
    Ok(out)
}

fn plugstack_text(
    text: &str,
    file: &Path,
    read: ReadFile,
    list: ListDir,
    depth: u32,
    out: &mut Plugstack,
) {
    for (i, line) in text.lines().enumerate() {
        let mut tokens = strip_comment(line).split_whitespace();
        let Some(first) = tokens.next() else {
            continue;
        };
        let Some(target) = tokens.next() else {
            out.problems.push(format!(
                "{}:{}: `{first}` without a path: Slurm ignores the line",
                file.display(),
                i + 1
            ));
            continue;
        };
        let kind = match first {
            "required" => Kind::Required,
            "optional" => Kind::Optional,
            "include" => {
                let pattern = file.parent().unwrap_or(Path::new("/")).join(target);
                if depth >= MAX_INCLUDE_DEPTH {
                    out.problems.push(format!(
                        "{}: includes nested deeper than {MAX_INCLUDE_DEPTH}",
                        pattern.display()
                    ));
                    continue;
                }
                for inc in glob(&pattern, list) {
                    match read(&inc) {
                        Ok(t) => plugstack_text(&t, &inc, read, list, depth + 1, out),
                        Err(e) => out.problems.push(format!("{}: {e}", inc.display())),
                    }
                }
                continue;
            }
            other => {
                out.problems.push(format!(
                    "{}:{}: `{other}` is not required, optional or include: Slurm ignores the line",
                    file.display(),
                    i + 1
                ));
                continue;
            }
        };
        out.lines.push(PlugLine {
            file: file.to_path_buf(),
            line: i + 1,
            kind,
            plugin: target.to_string(),
            args: tokens.map(str::to_string).collect(),
        });
    }
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths matching `pattern` (an absolute path whose components may hold `*`, `?`
/// and `[...]`), sorted, as glob(3) without flags: wildcards do not match a leading dot.
pub fn glob(pattern: &Path, list: ListDir) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for comp in pattern.components().skip(1) {
        let comp = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if !has_magic(&comp) {
                next.push(base.join(comp.as_ref()));
                continue;
            }
            let Ok(mut names) = list(base) else {
                continue;
            };
            names.sort();
            next.extend(
                names
                    .iter()
                    .filter(|n| fnmatch(&comp, n))
                    .map(|n| base.join(n)),
            );
        }
        found = next;
    }
    // Without wildcards the path itself: whether it exists is for the reader to say.
    found
}

/// Whether `name` matches the shell pattern `pat` (one path component).
pub fn fnmatch(pat: &str, name: &str) -> bool {
    if name.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    matches(pat.as_bytes(), name.as_bytes())
}

fn matches(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| matches(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && matches(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(c) = s.first() else {
                return false;
            };
            match class(&p[1..], *c) {
                Some((hit, rest)) => hit && matches(rest, &s[1..]),
                None => *c == b'[' && matches(&p[1..], &s[1..]),
            }
        }
        Some(c) => s.first() == Some(c) && matches(&p[1..], &s[1..]),
    }
}

/// Matches `c` against a bracket expression after its `[`: (matched, pattern after `]`),
/// or `None` if the bracket is not closed (a literal `[`).
fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negate, mut i) = match p.first() {
        Some(b'!') | Some(b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != negate, &p[i + 1..]));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    None
}

/// The name of `uid` in an /etc/passwd text.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Whether gres.conf (text of the file itself) turns on AutoDetect: its value, if not
/// `off`.
pub fn gres_autodetect(text: &str) -> Option<String> {
    text.lines()
        .map(strip_comment)
        .flat_map(str::split_whitespace)
        .filter_map(|t| t.split_once('='))
        .filter(|(k, _)| k.eq_ignore_ascii_case("autodetect"))
        .map(|(_, v)| v.to_string())
        .next_back()
        .filter(|v| !v.eq_ignore_ascii_case("off"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A file system of texts: files by path, directories listed from them.
    fn fs(files: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    fn reader(fs: &BTreeMap<PathBuf, String>) -> impl Fn(&Path) -> io::Result<String> + '_ {
        move |p| {
            fs.get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn lister(fs: &BTreeMap<PathBuf, String>) -> impl Fn(&Path) -> io::Result<Vec<String>> + '_ {
        move |d| {
            let names: Vec<String> = fs
                .keys()
                .filter(|p| p.parent() == Some(d))
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            if names.is_empty() {
                Err(io::Error::from(io::ErrorKind::NotFound))
            } else {
                Ok(names)
            }
        }
    }

    #[test]
    fn slurm_conf_keys_last_wins_and_includes_are_followed() {
        let files = fs(&[
            (
                "/etc/slurm/slurm.conf",
                "ClusterName=c # PrologFlags=RunInJob in a comment\nprologflags=Contain\nInclude extra.conf\nINCLUDE /abs/more.conf\nInclude missing.conf\nInclude parts/*.conf\n",
            ),
            ("/etc/slurm/extra.conf", "PrologFlags=Alloc,Serial\nPlugStackConfig=/opt/ps.conf\n"),
            ("/abs/more.conf", "PluginDir=/usr/lib/slurm\n"),
        ]);
        let c = read_slurm_conf(Path::new("/etc/slurm/slurm.conf"), &reader(&files)).unwrap();
        assert_eq!(c.get("PrologFlags"), Some("Alloc,Serial"));
        assert_eq!(c.get("pluginDIR"), Some("/usr/lib/slurm"));
        assert_eq!(c.plugstack_path(), Path::new("/opt/ps.conf"));
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("missing.conf"), "{:?}", c.problems);
        assert!(c.problems[1].contains("globs"), "{:?}", c.problems);
        let e = read_slurm_conf(Path::new("/nope/slurm.conf"), &reader(&files)).unwrap_err();
        assert!(e.contains("/nope/slurm.conf"), "{e}");
    }

    #[test]
    fn slurm_conf_include_loops_stop() {
        let files = fs(&[("/s/slurm.conf", "Include slurm.conf\nA=1\n")]);
        let c = read_slurm_conf(Path::new("/s/slurm.conf"), &reader(&files)).unwrap();
        assert_eq!(c.get("a"), Some("1"));
        assert!(
            c.problems.iter().any(|p| p.contains("deeper")),
            "{:?}",
            c.problems
        );
        // Default plugstack: beside slurm.conf; a relative PlugStackConfig is too.
        assert_eq!(c.plugstack_path(), Path::new("/s/plugstack.conf"));
        let c = SlurmConf::from_pairs(Path::new("/s/slurm.conf"), &[("PlugStackConfig", "p.conf")]);
        assert_eq!(c.plugstack_path(), Path::new("/s/p.conf"));
    }

    #[test]
    fn prolog_flags_as_slurm_reads_them() {
        let v22 = (22, 5);
        assert!(!prolog_flags(None, v22).alloc);
        assert!(!prolog_flags(Some("Serial"), v22).alloc);
        assert!(prolog_flags(Some("alloc"), v22).alloc);
        assert!(prolog_flags(Some("Serial,CONTAIN"), v22).alloc);
        assert!(prolog_flags(Some("X11"), v22).alloc);
        let r = prolog_flags(Some("Alloc,RunInJob"), (24, 11));
        assert!(r.alloc && r.run_in_job);
        assert!(!prolog_flags(Some("Contain"), v22).run_in_job);
        assert!(!prolog_flags(Some("DeferBatch"), (24, 11)).alloc);
        assert!(prolog_flags(Some("DeferBatch"), (26, 5)).alloc);
        assert_eq!(prolog_flags(Some("Alloc,Bogus"), v22).unknown, ["Bogus"]);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("slurm 22.05.8\n"), Some((22, 5, Some(8))));
        assert_eq!(parse_version("slurm-wlm 24.11.5"), Some((24, 11, Some(5))));
        assert_eq!(parse_version("slurm 23.02.0-0rc1"), Some((23, 2, Some(0))));
        assert_eq!(parse_version("26.05"), Some((26, 5, None)));
        assert_eq!(parse_version("slurm version unknown"), None);
    }

    #[test]
    fn plugstack_lines_includes_and_globs() {
        let files = fs(&[
            (
                "/etc/slurm/plugstack.conf",
                "# comment\noptional /usr/lib/x.so a=1\ninclude plugstack.conf.d/*.conf\nbogus /y.so\nrequired\n",
            ),
            ("/etc/slurm/plugstack.conf.d/20-b.conf", "required libspank_carbon.so pue=1.2 # tail\n"),
            ("/etc/slurm/plugstack.conf.d/10-a.conf", "optional /usr/local/lib/spank-carbon/libspank_carbon.so intensity=350\n"),
            ("/etc/slurm/plugstack.conf.d/.hidden.conf", "optional /h.so\n"),
            ("/etc/slurm/plugstack.conf.d/notes.txt", "optional /t.so\n"),
        ]);
        let p = read_plugstack(
            Path::new("/etc/slurm/plugstack.conf"),
            &reader(&files),
            &lister(&files),
        )
        .unwrap();
        let plugins: Vec<&str> = p.lines.iter().map(|l| l.plugin.as_str()).collect();
        assert_eq!(
            plugins,
            [
                "/usr/lib/x.so",
                "/usr/local/lib/spank-carbon/libspank_carbon.so",
                "libspank_carbon.so"
            ]
        );
        let ours: Vec<&PlugLine> = p.lines.iter().filter(|l| l.is_spank_carbon()).collect();
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[0].kind, Kind::Optional);
        assert_eq!(ours[0].args, ["intensity=350"]);
        assert_eq!(ours[1].kind, Kind::Required);
        assert_eq!(ours[1].args, ["pue=1.2"]);
        assert_eq!(ours[1].line, 1);
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        assert!(p.problems[0].contains(":4:"), "{:?}", p.problems);
        assert!(p.problems[1].contains(":5:"), "{:?}", p.problems);
        assert!(read_plugstack(
            Path::new("/x/plugstack.conf"),
            &reader(&files),
            &lister(&files)
        )
        .is_err());
    }

    #[test]
    fn shell_patterns() {
        assert!(fnmatch("*.conf", "a.conf"));
        assert!(!fnmatch("*.conf", "a.conf.bak"));
        assert!(!fnmatch("*.conf", ".a.conf"));
        assert!(fnmatch(".*.conf", ".a.conf"));
        assert!(fnmatch("n?[0-9][!x]", "na5y"));
        assert!(!fnmatch("n?[0-9][!x]", "na5x"));
        assert!(fnmatch("a[]", "a[]"));
        assert!(fnmatch("[]a]", "]"));
    }

    #[test]
    fn passwd_and_autodetect() {
        let pw = "root:x:0:0:root:/root:/bin/bash\nslurm:x:64030:64030::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(user_name(pw, 0).as_deref(), Some("root"));
        assert_eq!(user_name(pw, 64030).as_deref(), Some("slurm"));
        assert_eq!(user_name(pw, 1), None);
        assert_eq!(
            gres_autodetect("AutoDetect=nvml\nName=gpu File=/dev/nvidia0\n").as_deref(),
            Some("nvml")
        );
        assert_eq!(gres_autodetect("autodetect=off\n"), None);
        assert_eq!(gres_autodetect("# AutoDetect=nvml\n"), None);
    }
}
