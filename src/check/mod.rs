//! `spank-carbon check`: is this node set up so that the plugin measures? A pure
//! diagnosis over [`Facts`] (gathered by [`gather`], which does all the I/O), one
//! function per item, each finding with its status, what was found and, when not ok,
//! the fix. The plugin runs the part of it that can keep it from measuring when slurmd
//! starts ([`slurmd_problems`]), so that a misconfiguration is never silent.

use std::path::PathBuf;

use crate::core::config::{Config, Field};

pub mod conf;
pub mod finding;
pub mod gather;
pub mod mapping;

use finding::{error, ok, warning};
pub use finding::{Finding, GpuMapping, MappedBoard, Status};
pub use mapping::{Gpus, Nvml, NvmlGpu};

use conf::{Kind, Plugstack, SlurmConf};

/// A file's owner and mode (from lstat).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileMeta {
    pub uid: u32,
    pub mode: u32,
    pub is_dir: bool,
    pub is_file: bool,
    pub is_symlink: bool,
}

/// `slurmd -V`.
#[derive(Debug, Clone, PartialEq)]
pub enum Slurmd {
    /// Found at `path`; its output, or why running it failed.
    Found {
        path: PathBuf,
        output: Result<String, String>,
    },
    /// Not at any of the places tried.
    Missing { tried: Vec<PathBuf> },
}

/// The state directory.
#[derive(Debug, Clone, PartialEq)]
pub struct StateFacts {
    /// `state_dir` as configured (may hold `%n`).
    pub template: String,
    /// `%n` resolved for the node, or why not.
    pub resolved: Result<PathBuf, String>,
    /// The directory and its subdirectories: (path, lstat, `None` = missing).
    pub dirs: Vec<(PathBuf, Option<FileMeta>)>,
    /// The entry points' own check ([`crate::node::state::StateDir::existing`]), run as root.
    pub entry_check: Option<Result<(), String>>,
    /// When the directory is missing: the nearest existing ancestor.
    pub ancestor: Option<(PathBuf, FileMeta)>,
}

/// Whether the record can be written.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountingFacts {
    pub sacctmgr: PathBuf,
    pub sacctmgr_meta: Option<FileMeta>,
    pub sacct: PathBuf,
    pub sacct_meta: Option<FileMeta>,
    pub euid: u32,
    pub user: Option<String>,
    /// slurm.conf's SlurmUser (default root).
    pub slurm_user: String,
    /// `sacctmgr show user NAME format=adminlevel`, when asked (not root nor SlurmUser).
    pub admin_level: Option<Result<String, String>>,
    /// `sacctmgr show cluster`: slurmdbd answers, or why not (`None`: not asked).
    pub dbd: Option<Result<(), String>>,
    pub field: Field,
    /// slurm.conf's AccountingStoreFlags.
    pub store_flags: Option<String>,
}

/// Everything the check looks at, gathered by [`gather::gather`].
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The Slurm version the plugin was built for.
    pub built_for: String,
    pub node: Option<String>,
    pub slurmd: Slurmd,
    pub slurm_conf_path: PathBuf,
    pub slurm_conf: Result<SlurmConf, String>,
    pub plugstack_path: PathBuf,
    pub plugstack: Result<Plugstack, String>,
    /// The spank-carbon library of each plugstack line naming it: resolved path, lstat.
    pub libraries: Vec<(PathBuf, Option<FileMeta>)>,
    /// The directories holding them, with their stat: whoever can write there can
    /// replace the library.
    pub library_dirs: Vec<(PathBuf, Option<FileMeta>)>,
    pub gpus: Gpus,
    pub state: StateFacts,
    pub accounting: AccountingFacts,
    /// Behaviour that depends on the Slurm version, one line each.
    pub differences: Vec<String>,
}

/// The diagnosis, one finding per line, in the order of the items.
pub fn diagnose(f: &Facts) -> Vec<Finding> {
    let mut out = vec![slurm_version(f)];
    out.extend(slurm_conf(f));
    out.extend(plugstack(f));
    out.extend(mapping::findings(&f.gpus));
    out.push(state_dir(f));
    out.extend(accounting(f));
    out.extend(differences(f));
    out
}

/// Whether the check failed (any error).
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.status == Status::Error)
}

/// (major, minor) of a version string.
fn major_minor(v: &str) -> Option<(u32, u32)> {
    conf::parse_version(v).map(|(a, b, _)| (a, b))
}

/// The version Slurm's behaviour is judged by: slurmd's, else the build's.
fn effective_version(f: &Facts) -> (u32, u32) {
    let slurmd = match &f.slurmd {
        Slurmd::Found { output: Ok(o), .. } => major_minor(o),
        _ => None,
    };
    slurmd
        .or_else(|| major_minor(&f.built_for))
        .unwrap_or((0, 0))
}

/// Item 1: slurmd's major.minor must be the build's.
pub fn slurm_version(f: &Facts) -> Finding {
    const C: &str = "slurm version";
    match &f.slurmd {
        Slurmd::Missing { tried } => warning(
            C,
            format!(
                "slurmd not found (tried {}); the plugin was built for Slurm {}",
                join_paths(tried),
                f.built_for
            ),
            "give its path with --slurmd PATH, or run the check on a compute node",
        ),
        Slurmd::Found {
            path,
            output: Err(e),
        } => warning(
            C,
            format!("{} -V failed: {e}", path.display()),
            "check that slurmd runs on this node",
        ),
        Slurmd::Found {
            path,
            output: Ok(out),
        } => {
            let text = out.trim();
            match (major_minor(text), major_minor(&f.built_for)) {
                (Some(have), Some(built)) if have == built => ok(
                    C,
                    format!("{} is `{text}`; the plugin was built for {}", path.display(), f.built_for),
                ),
                (Some(_), Some(_)) => error(
                    C,
                    format!(
                        "{} is `{text}` but the plugin was built for Slurm {}: Slurm skips a \
                         plugin built for another major.minor with a verbose-level log line only",
                        path.display(),
                        f.built_for
                    ),
                    "rebuild with SLURM_INCLUDE_DIR=<the directory holding this Slurm's slurm/spank.h> \
                     (Debian: libslurm-dev's /usr/include) and reinstall, then restart slurmd",
                ),
                _ => warning(
                    C,
                    format!("cannot read a version in `{text}` ({} -V)", path.display()),
                    format!("check by hand that slurmd is Slurm {}", f.built_for),
                ),
            }
        }
    }
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Item 2: slurm.conf read, and its PrologFlags.
pub fn slurm_conf(f: &Facts) -> Vec<Finding> {
    const C: &str = "slurm.conf";
    let mut out = Vec::new();
    match &f.slurm_conf {
        Err(e) => out.push(error(
            C,
            format!("cannot read it: {e}"),
            "give its path with --slurm-conf PATH (or SLURM_CONF)",
        )),
        Ok(c) if !c.problems.is_empty() => out.push(warning(
            C,
            format!("{}: {}", c.path.display(), c.problems.join("; ")),
            "fix the Include lines (settings in those files were not checked)",
        )),
        Ok(c) => out.push(ok(C, c.path.display().to_string())),
    }
    out.push(prolog_flags_finding(
        &f.slurm_conf,
        &f.slurm_conf_path,
        effective_version(f),
    ));
    out
}

/// PrologFlags must give the prolog at allocation (Alloc) and not move the prolog into
/// the job (RunInJob). A slurm.conf that cannot be read is a warning.
pub fn prolog_flags_finding(
    conf: &Result<SlurmConf, String>,
    path: &std::path::Path,
    version: (u32, u32),
) -> Finding {
    const C: &str = "PrologFlags";
    let conf = match conf {
        Ok(c) => c,
        Err(e) => {
            return warning(
                C,
                format!("not checked: {e}"),
                format!(
                    "make {} readable (or set SLURM_CONF) so PrologFlags can be checked",
                    path.display()
                ),
            )
        }
    };
    let value = conf.get("PrologFlags");
    let shown = format!("PrologFlags={}", value.unwrap_or("(not set)"));
    let flags = conf::prolog_flags(value, version);
    if flags.run_in_job {
        return error(
            C,
            format!(
                "{shown}: under RunInJob slurmd never runs SPANK job_prolog/job_epilog, so \
                 spank-carbon measures nothing"
            ),
            "remove RunInJob from PrologFlags, keep Alloc (e.g. PrologFlags=Alloc,Contain), \
             then restart slurmctld and slurmd",
        );
    }
    if !flags.alloc {
        return error(
            C,
            format!(
                "{shown}: without Alloc the prolog runs on a node only when the job's first step \
                 starts there, so nodes where no step ran are not measured"
            ),
            "add Alloc to PrologFlags (PrologFlags=Alloc, or Contain which implies it), then \
             restart slurmctld and slurmd",
        );
    }
    if !flags.unknown.is_empty() {
        return warning(
            C,
            format!("{shown}: Slurm does not know {}", flags.unknown.join(", ")),
            "remove the unknown flags (slurmctld refuses to start with them)",
        );
    }
    ok(C, format!("{shown} (the prolog runs at allocation)"))
}

/// Item 3: plugstack.conf names the plugin once, with valid arguments, and its library
/// is safe.
pub fn plugstack(f: &Facts) -> Vec<Finding> {
    const C: &str = "plugstack.conf";
    let stack = match &f.plugstack {
        Ok(s) => s,
        Err(e) => {
            return vec![error(
                C,
                format!("cannot read it: {e}; Slurm then loads no plugin"),
                plugstack_fix(&f.plugstack_path),
            )]
        }
    };
    let ours: Vec<_> = stack.lines.iter().filter(|l| l.is_spank_carbon()).collect();
    let mut out = Vec::new();
    let problems = if stack.problems.is_empty() {
        String::new()
    } else {
        format!(" (also: {})", stack.problems.join("; "))
    };
    let Some(line) = ours.first() else {
        out.push(error(
            C,
            format!(
                "no line names libspank_carbon.so in {} or its includes{problems}",
                f.plugstack_path.display()
            ),
            plugstack_fix(&f.plugstack_path),
        ));
        return out;
    };
    let at = format!("{}:{}", line.file.display(), line.line);
    if ours.len() > 1 {
        let all: Vec<String> = ours
            .iter()
            .map(|l| format!("{}:{}", l.file.display(), l.line))
            .collect();
        out.push(error(
            C,
            format!(
                "libspank_carbon.so is named {} times: {}",
                ours.len(),
                all.join(", ")
            ),
            "keep one line: the same library twice is refused, two copies would measure twice",
        ));
    } else if line.kind == Kind::Required {
        out.push(warning(
            C,
            format!("{at}: `required {}`", line.plugin),
            "use `optional`: a required plugin that fails to load (say after a Slurm upgrade) \
             or fails with strict=true takes the node out; spank-carbon is built never to fail a job",
        ));
    } else {
        out.push(ok(C, format!("{at}: optional {}{problems}", line.plugin)));
    }
    out.push(arguments_finding(&line.args, f.node.as_deref()));
    for (path, meta) in &f.libraries {
        out.push(library_finding(path, meta.as_ref()));
    }
    for (dir, meta) in &f.library_dirs {
        if let Some(m) = meta {
            if m.uid != 0 || m.mode & 0o022 != 0 {
                let d = dir.display();
                out.push(error(
                    "plugin library",
                    format!("{d} (uid {}, mode {:o}): others can replace the library slurmd runs as root", m.uid, m.mode & 0o7777),
                    format!("chown root:root {d} && chmod go-w {d}"),
                ));
            }
        }
    }
    out
}

fn plugstack_fix(path: &std::path::Path) -> String {
    format!(
        "add `optional /usr/local/lib/spank-carbon/libspank_carbon.so` (with your key=value \
         settings) to {}, then restart slurmd",
        path.display()
    )
}

/// The plugstack arguments through the plugin's own parser (its message names the key).
/// Without a node, `%n` is checked for syntax only.
pub fn arguments_finding(args: &[String], node: Option<&str>) -> Finding {
    const C: &str = "plugin arguments";
    let parsed = match node {
        Some(n) => Config::from_args_on(args, Some(n)),
        None => Config::from_args(args),
    };
    let shown = if args.is_empty() {
        "(none: defaults)".to_string()
    } else {
        args.join(" ")
    };
    match parsed {
        Ok(_) => ok(C, shown),
        Err(e) => error(
            C,
            format!("{shown}: {e}: the plugin does nothing on this node until it is fixed"),
            "correct that key=value on the libspank_carbon.so line in plugstack.conf \
             (README: Configuration), then restart slurmd",
        ),
    }
}

fn library_finding(path: &std::path::Path, meta: Option<&FileMeta>) -> Finding {
    const C: &str = "plugin library";
    let p = path.display();
    match meta {
        None => error(
            C,
            format!("{p} does not exist"),
            "install it (scripts/install.sh) or correct the path in plugstack.conf",
        ),
        Some(m) if m.is_symlink || !m.is_file => warning(
            C,
            format!("{p} is not a plain file (a link?)"),
            "point plugstack.conf at the library itself, root-owned",
        ),
        Some(m) if m.uid != 0 => error(
            C,
            format!(
                "{p} is owned by uid {}, not root: slurmd runs its code as root",
                m.uid
            ),
            format!("chown root:root {p}"),
        ),
        Some(m) if m.mode & 0o022 != 0 => error(
            C,
            format!(
                "{p} has mode {:o}: others can replace the code slurmd runs as root",
                m.mode & 0o7777
            ),
            format!("chmod go-w {p}"),
        ),
        Some(m) => ok(C, format!("{p} (root, mode {:o})", m.mode & 0o7777)),
    }
}

/// Item 5: the state directory is root's and private, or can be made by the prolog.
pub fn state_dir(f: &Facts) -> Finding {
    const C: &str = "state_dir";
    let s = &f.state;
    let dir = match &s.resolved {
        Ok(d) => d,
        Err(e) => {
            return error(
                C,
                format!("state_dir={}: {e}", s.template),
                "give the node with --node NAME, or correct state_dir",
            )
        }
    };
    let shown = if s.template != dir.display().to_string() {
        format!(
            "{} (state_dir={}, node {})",
            dir.display(),
            s.template,
            f.node.as_deref().unwrap_or("?")
        )
    } else {
        dir.display().to_string()
    };
    if let Some(Err(e)) = &s.entry_check {
        return error(
            C,
            format!("{shown}: {e}: the plugin refuses it"),
            format!("chown -R root:root {0} && chmod -R go-w {0}", dir.display()),
        );
    }
    for (path, meta) in &s.dirs {
        let Some(m) = meta else { continue };
        let p = path.display();
        let why = if m.is_symlink || !m.is_dir {
            Some("not a directory (a link?)")
        } else if m.uid != 0 {
            Some("not owned by root")
        } else if m.mode & 0o022 != 0 {
            Some("writable by group or others")
        } else {
            None
        };
        if let Some(why) = why {
            return error(
                C,
                format!("{p}: {why}: the plugin refuses it"),
                format!("chown root:root {p} && chmod 700 {p}"),
            );
        }
    }
    match s.dirs.first() {
        Some((_, Some(_))) => ok(C, format!("{shown}: root-owned, private")),
        _ => match &s.ancestor {
            Some((a, m)) if m.is_dir && !m.is_symlink && m.uid == 0 => ok(
                C,
                format!(
                    "{shown}: not there yet; the first prolog creates it (0700) under {}",
                    a.display()
                ),
            ),
            Some((a, _)) => error(
                C,
                format!(
                    "{shown}: missing, and {} is not a root-owned directory",
                    a.display()
                ),
                format!("mkdir -p -m 700 {} as root", dir.display()),
            ),
            None => error(
                C,
                format!("{shown}: missing and no parent directory exists"),
                format!("mkdir -p -m 700 {} as root", dir.display()),
            ),
        },
    }
}

/// Item 6: the courier (root) can write the configured field through sacctmgr.
pub fn accounting(f: &Facts) -> Vec<Finding> {
    let a = &f.accounting;
    let mut out = Vec::new();
    for (key, path, meta) in [
        ("sacctmgr", &a.sacctmgr, &a.sacctmgr_meta),
        ("sacct", &a.sacct, &a.sacct_meta),
    ] {
        out.push(match meta {
            Some(m) if m.is_file && m.mode & 0o111 != 0 => {
                ok("tools", format!("{key}: {}", path.display()))
            }
            Some(_) => error(
                "tools",
                format!("{key}: {} is not an executable file", path.display()),
                format!("set {key}= to Slurm's {key}"),
            ),
            None => error(
                "tools",
                format!("{key}: {} not found", path.display()),
                format!("set {key}=/absolute/path/to/{key} in plugstack.conf"),
            ),
        });
    }
    out.push(rights_finding(a));
    out.push(match &a.dbd {
        None => warning("slurmdbd", "not asked (no sacctmgr)", "fix sacctmgr first"),
        Some(Ok(())) => ok("slurmdbd", "answers (sacctmgr show cluster)"),
        Some(Err(e)) => error(
            "slurmdbd",
            format!("sacctmgr show cluster failed: {e}"),
            "start slurmdbd or check AccountingStorageHost; records wait in state_dir/pending meanwhile",
        ),
    });
    out.push(field_finding(a));
    out.push(gpu_tres_finding(&f.slurm_conf));
    out
}

/// slurm.conf's AccountingStorageTRES lists `gres/gpu` (not among Slurm's default TRES):
/// without it sacct's AllocTRES holds no GPU, so `report` counts GPU-hours only for jobs
/// with a record and the job-end mail cannot tell a GPU job whose record is late from a
/// CPU job. Where GresTypes has shards or MPS, `gres/shard`/`gres/mps` likewise.
/// (`gres/gpu:TYPE` alone does: Slurm then accounts every GPU job under one of the types.)
pub fn gpu_tres_finding(conf: &Result<SlurmConf, String>) -> Finding {
    const C: &str = "accounting TRES";
    let conf = match conf {
        Ok(c) => c,
        Err(e) => return warning(
            C,
            format!("not checked: {e}"),
            "make slurm.conf readable (or set SLURM_CONF) so AccountingStorageTRES can be checked",
        ),
    };
    let value = conf.get("AccountingStorageTRES").unwrap_or("");
    let tres: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let has = |name: &str| {
        tres.iter()
            .map(|t| t.to_ascii_lowercase())
            .any(|t| t == name || t.strip_prefix(name).is_some_and(|r| r.starts_with(':')))
    };
    let gres_types = conf.get("GresTypes").unwrap_or("").to_ascii_lowercase();
    let mut missing: Vec<&str> = Vec::new();
    if !has("gres/gpu") {
        missing.push("gres/gpu");
    }
    for (gres, tres_name) in [("shard", "gres/shard"), ("mps", "gres/mps")] {
        if gres_types.split(',').any(|g| g.trim() == gres) && !has(tres_name) {
            missing.push(tres_name);
        }
    }
    let shown = format!(
        "AccountingStorageTRES={}",
        if value.is_empty() { "(not set)" } else { value }
    );
    if missing.is_empty() {
        return ok(
            C,
            format!("{shown} (sacct's AllocTRES shows each job's GPUs)"),
        );
    }
    let mut want = tres.clone();
    want.extend(missing.iter().copied());
    warning(
        C,
        format!(
            "{shown} lacks {}: Slurm tracks a GRES only when listed there, so sacct's AllocTRES \
             shows no GPU; `spank-carbon report` then counts GPU-hours only for jobs with a \
             record, and the job-end mail cannot tell a GPU job whose record is late from a CPU \
             job (it adds nothing)",
            missing.join(", ")
        ),
        format!(
            "set AccountingStorageTRES={} in slurm.conf and restart slurmctld (jobs from then on \
             are recorded with their GPUs)",
            want.join(",")
        ),
    )
}

fn rights_finding(a: &AccountingFacts) -> Finding {
    const C: &str = "accounting rights";
    let who = a.user.clone().unwrap_or_else(|| format!("uid {}", a.euid));
    if a.euid == 0 {
        return ok(C, "running as root: slurmdbd lets root write every field");
    }
    if a.user.as_deref() == Some(a.slurm_user.as_str()) {
        return ok(
            C,
            format!("{who} is SlurmUser: slurmdbd lets it write every field"),
        );
    }
    let note = "(the plugin's courier runs as root, which may write; run this check as root)";
    match &a.admin_level {
        Some(Ok(level))
            if level.eq_ignore_ascii_case("operator")
                || level.eq_ignore_ascii_case("administrator") =>
        {
            ok(C, format!("{who} has AdminLevel {level}"))
        }
        Some(Ok(level)) => warning(
            C,
            format!(
                "{who} has AdminLevel `{}`: cannot set SystemComment/AdminComment {note}",
                level.trim()
            ),
            format!("run as root, or sacctmgr modify user {who} set adminlevel=operator"),
        ),
        Some(Err(e)) => warning(
            C,
            format!("AdminLevel of {who} not known: {e} {note}"),
            "run this check as root",
        ),
        None => warning(
            C,
            format!("{who}: AdminLevel not asked {note}"),
            "run this check as root",
        ),
    }
}

fn field_finding(a: &AccountingFacts) -> Finding {
    const C: &str = "field";
    let name = a.field.slurm_name();
    match a.field {
        Field::System => ok(C, format!("field=system ({name}: only sacctmgr writes it, nothing overwrites it)")),
        Field::Admin => warning(
            C,
            format!("field=admin ({name}): slurmctld's completion record rewrites it when the job has one, and may arrive after the record"),
            "use field=system unless AdminComment is needed",
        ),
        Field::Job => {
            let flags = a.store_flags.as_deref().unwrap_or("");
            let stored = flags.split(',').any(|f| f.trim().eq_ignore_ascii_case("job_comment"));
            if stored {
                warning(C, format!("field=job ({name}): users can edit it while the job runs"), "use field=system")
            } else {
                error(
                    C,
                    format!("field=job ({name}) but AccountingStoreFlags={} lacks job_comment: sacct does not show Comment", if flags.is_empty() { "(not set)" } else { flags }),
                    "use field=system, or add job_comment to AccountingStoreFlags",
                )
            }
        }
    }
}

/// Item 7: what differs with the Slurm version, for the operator's information.
pub fn differences(f: &Facts) -> Vec<Finding> {
    f.differences
        .iter()
        .map(|d| ok("version differences", d.clone()))
        .collect()
}

/// The version differences in force for the Slurm this build targets
/// (src/slurm/version.rs), one line each.
pub fn version_differences() -> Vec<String> {
    let diffs = crate::slurm::Differences::built();
    let mut lines: Vec<String> = diffs.describe().into_iter().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push("none: this Slurm behaves as the plugin's baseline".into());
    }
    lines
        .into_iter()
        .map(|l| format!("built for Slurm {}: {l}", crate::SLURM_VERSION))
        .collect()
}

/// What keeps the plugin from measuring, checked when slurmd starts: its plugstack
/// arguments and slurm.conf's PrologFlags (read from `conf_path`). Only the findings
/// that are not ok. (The Slurm version cannot differ: slurmd loaded the plugin.)
pub fn slurmd_problems(
    args: &[String],
    node: Option<&str>,
    conf_path: &std::path::Path,
    conf: &Result<SlurmConf, String>,
) -> Vec<Finding> {
    let version = major_minor(crate::SLURM_VERSION).unwrap_or((0, 0));
    [
        arguments_finding(args, node),
        prolog_flags_finding(conf, conf_path, version),
    ]
    .into_iter()
    .filter(|f| f.status != Status::Ok)
    .collect()
}

/// The findings as lines: status, item, what was found, and the fix under it.
pub fn render_text(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        s.push_str(&format!(
            "{:<8}{:<20}{}\n",
            f.status.as_str(),
            f.check,
            f.detail
        ));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("{:<28}fix: {fix}\n", ""));
        }
    }
    let (e, w) = (
        findings
            .iter()
            .filter(|f| f.status == Status::Error)
            .count(),
        findings
            .iter()
            .filter(|f| f.status == Status::Warning)
            .count(),
    );
    s.push_str(&format!("{e} error(s), {w} warning(s)\n"));
    s
}

/// The findings as a JSON array of {check, status, detail, fix}.
pub fn render_json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests;
