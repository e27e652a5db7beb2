//! The I/O half of `spank-carbon check`: reads the files, runs `slurmd -V` and sacctmgr
//! (absolute paths, argument vectors, time limits), opens NVML within nvml_timeout_ms,
//! and fills [`Facts`] for the pure diagnosis.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::conf::{self, SlurmConf};
use super::mapping::{self, NodeMap};
use super::{AccountingFacts, Facts, FileMeta, Gpus, Nvml, NvmlGpu, Slurmd, StateFacts};
use crate::core::config::Config;
use crate::gpu::map as gpu_map;
use crate::gpu::BoardInfo;
use crate::gpu::OpenHost;
use crate::slurm::run::run_tool;

/// Where slurmd is looked for, in this order, when `--slurmd` is not given.
pub const SLURMD_PATHS: &[&str] = &[
    "/usr/sbin/slurmd",
    "/usr/local/sbin/slurmd",
    "/opt/slurm/sbin/slurmd",
];

/// Where a plugin named by a relative path is looked for when slurm.conf has no
/// PluginDir (Debian's, RPM builds', a source build's defaults).
pub const PLUGIN_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/slurm-wlm",
    "/usr/lib/aarch64-linux-gnu/slurm-wlm",
    "/usr/lib64/slurm",
    "/usr/local/lib/slurm",
];

/// The state directory's subdirectories the entry points check (see `state`).
const STATE_SUBDIRS: [&str; 4] = ["jobs", "records", "pending", "stuck"];

/// Time limit of `slurmd -V`.
const SLURMD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub slurm_conf: Option<PathBuf>,
    pub plugstack: Option<PathBuf>,
    pub slurmd: Option<PathBuf>,
    /// The node, for `%n` and gres.conf's NodeName lines.
    pub node: Option<String>,
}

/// slurm.conf as slurmd finds it: the path given, else SLURM_CONF (absolute), else
/// /etc/slurm/slurm.conf.
pub fn slurm_conf_path(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("SLURM_CONF")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        })
        .unwrap_or_else(|| PathBuf::from("/etc/slurm/slurm.conf"))
}

/// Reads a configuration file (at most 16 MiB).
pub fn read_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(16 << 20)
        .read_to_string(&mut s)?;
    Ok(s)
}

fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// lstat of `path`, `None` if it does not exist (or cannot be read).
pub fn lstat(path: &Path) -> Option<FileMeta> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let ft = m.file_type();
    Some(FileMeta {
        uid: m.uid(),
        mode: m.mode(),
        is_dir: ft.is_dir(),
        is_file: ft.is_file(),
        is_symlink: ft.is_symlink(),
    })
}

/// A tool's output on one line, at most 300 characters.
fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim().replace('\n', "; ");
    text.chars().take(300).collect()
}

/// stat of `path` (links followed), `None` if it does not exist.
fn stat(path: &Path) -> Option<FileMeta> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileMeta {
        uid: m.uid(),
        mode: m.mode(),
        is_dir: m.is_dir(),
        is_file: m.is_file(),
        is_symlink: false,
    })
}

/// slurm.conf read from `path`, includes followed.
pub fn slurm_conf(path: &Path) -> Result<SlurmConf, String> {
    conf::read_slurm_conf(path, &read_file)
}

/// Gathers everything the check needs; `open` opens NVML (a fake in tests).
pub fn gather(o: &Options, open: &'static OpenHost) -> Facts {
    let slurm_conf_path = slurm_conf_path(o.slurm_conf.as_deref());
    let slurm_conf = slurm_conf(&slurm_conf_path);
    let plugstack_path = o.plugstack.clone().unwrap_or_else(|| match &slurm_conf {
        Ok(c) => c.plugstack_path(),
        Err(_) => slurm_conf_path
            .parent()
            .unwrap_or(Path::new("/"))
            .join("plugstack.conf"),
    });
    let plugstack = conf::read_plugstack(&plugstack_path, &read_file, &list_dir);
    let ours: Vec<&conf::PlugLine> = plugstack
        .as_ref()
        .map(|p| p.lines.iter().filter(|l| l.is_spank_carbon()).collect())
        .unwrap_or_default();
    let libraries = ours
        .iter()
        .map(|l| {
            let p = plugin_path(&l.plugin, slurm_conf.as_ref().ok());
            let m = lstat(&p);
            (p, m)
        })
        .collect();
    let library_dirs = ours
        .iter()
        .filter_map(|l| {
            let p = plugin_path(&l.plugin, slurm_conf.as_ref().ok());
            let dir = p.parent()?.to_path_buf();
            let m = stat(&dir);
            Some((dir, m))
        })
        .collect();
    let args: Vec<String> = ours.first().map(|l| l.args.clone()).unwrap_or_default();
    // The configuration the plugin would use (defaults where the arguments are bad:
    // that is reported by itself).
    let unresolved = Config::from_args(&args).unwrap_or_default();
    let config = unresolved
        .clone()
        .for_node(o.node.as_deref())
        .unwrap_or_else(|_| unresolved.clone());
    Facts {
        built_for: crate::SLURM_VERSION.to_string(),
        node: o.node.clone(),
        slurmd: slurmd(o.slurmd.as_deref()),
        gpus: gpus(&config, &slurm_conf_path, o.node.as_deref(), open),
        state: state(&unresolved, o.node.as_deref()),
        accounting: accounting(&config, slurm_conf.as_ref().ok()),
        slurm_conf_path,
        slurm_conf,
        plugstack_path,
        plugstack,
        libraries,
        library_dirs,
        differences: super::version_differences(),
    }
}

/// Where Slurm finds the plugin: an absolute path as is, a relative one in PluginDir.
fn plugin_path(plugin: &str, conf: Option<&SlurmConf>) -> PathBuf {
    let p = Path::new(plugin);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let dirs: Vec<String> = match conf.and_then(|c| c.get("PluginDir")) {
        Some(d) => d.split(':').map(str::to_string).collect(),
        None => PLUGIN_DIRS.iter().map(|d| d.to_string()).collect(),
    };
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| Path::new(d).join(plugin)).collect();
    candidates
        .iter()
        .find(|c| c.exists())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| p.to_path_buf())
}

fn slurmd(given: Option<&Path>) -> Slurmd {
    let tried: Vec<PathBuf> = match given {
        Some(p) => vec![p.to_path_buf()],
        None => SLURMD_PATHS.iter().map(PathBuf::from).collect(),
    };
    let Some(path) = tried.iter().find(|p| p.is_file()).cloned() else {
        return Slurmd::Missing { tried };
    };
    let output = match run_tool(&path, &["-V"], SLURMD_TIMEOUT) {
        Ok(out) if out.status.success() => {
            let text = one_line(&out.stdout);
            if text.is_empty() {
                Ok(one_line(&out.stderr))
            } else {
                Ok(text)
            }
        }
        Ok(out) => Err(format!("{}: {}", out.status, one_line(&out.stderr))),
        Err(e) => Err(crate::logging::chain(&e)),
    };
    Slurmd::Found { path, output }
}

fn gpus(config: &Config, slurm_conf: &Path, node: Option<&str>, open: &'static OpenHost) -> Gpus {
    let gres_conf = gpu_map::gres_conf_path(config.gres_conf.as_deref(), slurm_conf);
    let nvml = nvml_within(open, config.nvml_lib.clone(), config.nvml_timeout());
    let boards = match &nvml {
        Nvml::Opened { boards: Ok(b), .. } => Some(b.as_slice()),
        _ => None,
    };
    let map = gather_map(
        &gres_conf,
        slurm_conf,
        node,
        &gpu_map::ProcFiles::system(),
        &gpu_map::stat_char_device,
        boards,
    );
    Gpus {
        gres_conf,
        map,
        nvml,
    }
}

/// Opens NVML and reads every GPU's identity and energy counter in a helper thread,
/// waiting at most `limit` (a wedged driver can block a call forever).
pub fn nvml_within(open: &'static OpenHost, lib: Option<PathBuf>, limit: Duration) -> Nvml {
    let (tx, rx) = mpsc::channel();
    let work = move || {
        let _ = tx.send(Err("initialising NVML".to_string()));
        let host = match open(lib.as_deref()) {
            Ok(h) => h,
            Err(e) => return drop(tx.send(Ok(Nvml::Failed(crate::logging::chain(&e))))),
        };
        let _ = tx.send(Err("listing the GPUs".to_string()));
        let all = match host.open_all() {
            Ok(g) => g,
            Err(e) => return drop(tx.send(Ok(Nvml::Failed(crate::logging::chain(&e))))),
        };
        let mut gpus = Vec::with_capacity(all.len());
        for g in &all {
            let _ = tx.send(Err(format!("reading GPU minor {}", g.minor())));
            gpus.push(NvmlGpu {
                minor: g.minor(),
                uuid: g.uuid().to_string(),
                name: g.name().to_string(),
                counter: g.energy().map_err(|e| crate::logging::chain(&e)),
                shared: g.shared(),
            });
        }
        let _ = tx.send(Err("describing the boards (MIG instances, SMs)".to_string()));
        let boards = host.boards().map_err(|e| crate::logging::chain(&e));
        let driver = host.driver();
        let _ = tx.send(Ok(Nvml::Opened {
            driver,
            gpus,
            boards,
        }));
    };
    if let Err(e) = std::thread::Builder::new()
        .name("spank-carbon-check-nvml".into())
        .spawn(work)
    {
        return Nvml::Failed(format!("starting a thread for NVML: {e}"));
    }
    let deadline = std::time::Instant::now() + limit;
    let mut doing = "starting".to_string();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(Ok(done)) => return done,
            Ok(Err(step)) => doing = step,
            Err(mpsc::RecvTimeoutError::Timeout) => return Nvml::TimedOut(doing),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Nvml::Failed(format!("the NVML thread ended while {doing}"))
            }
        }
    }
}

fn state(unresolved: &Config, node: Option<&str>) -> StateFacts {
    let template = unresolved.state_dir.display().to_string();
    let resolved = unresolved
        .clone()
        .for_node(node)
        .map(|c| c.state_dir)
        .map_err(|e| e.to_string());
    let Ok(dir) = &resolved else {
        return StateFacts {
            template,
            resolved,
            dirs: Vec::new(),
            entry_check: None,
            ancestor: None,
        };
    };
    let dirs: Vec<(PathBuf, Option<FileMeta>)> = std::iter::once(dir.clone())
        .chain(STATE_SUBDIRS.iter().map(|s| dir.join(s)))
        .map(|p| {
            let m = lstat(&p);
            (p, m)
        })
        .collect();
    let entry_check = (rustix::process::geteuid().is_root()).then(|| {
        crate::node::state::StateDir::existing(dir)
            .map(|_| ())
            .map_err(|e| crate::logging::chain(&e))
    });
    let ancestor = if dirs[0].1.is_none() {
        dir.ancestors()
            .skip(1)
            .find_map(|a| lstat(a).map(|m| (a.to_path_buf(), m)))
    } else {
        None
    };
    StateFacts {
        template,
        resolved,
        dirs,
        entry_check,
        ancestor,
    }
}

fn accounting(config: &Config, conf: Option<&SlurmConf>) -> AccountingFacts {
    let euid = rustix::process::geteuid().as_raw();
    let user = read_file(Path::new("/etc/passwd"))
        .ok()
        .and_then(|p| conf::user_name(&p, euid));
    let slurm_user = conf
        .and_then(|c| c.get("SlurmUser"))
        .unwrap_or("root")
        .to_string();
    let sacctmgr_meta = stat(&config.sacctmgr);
    let sacct_meta = stat(&config.sacct);
    let timeout = Duration::from_secs(config.write_timeout_s);
    let usable = sacctmgr_meta.is_some_and(|m| m.is_file);
    let admin_level = match (&user, usable) {
        (Some(name), true) if euid != 0 && *name != slurm_user => Some(
            run_tool(
                &config.sacctmgr,
                &["-n", "-P", "show", "user", name, "format=adminlevel"],
                timeout,
            )
            .map_err(|e| crate::logging::chain(&e))
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() {
                    Err(format!("{}: {}", out.status, one_line(&out.stderr)))
                } else if text.is_empty() {
                    Err(format!("{name} is not a user in accounting"))
                } else {
                    Ok(text)
                }
            }),
        ),
        _ => None,
    };
    let dbd = usable.then(|| {
        run_tool(
            &config.sacctmgr,
            &["-n", "-P", "show", "cluster", "format=cluster"],
            timeout,
        )
        .map_err(|e| crate::logging::chain(&e))
        .and_then(|out| {
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{}: {}", out.status, one_line(&out.stderr)))
            }
        })
    });
    AccountingFacts {
        sacctmgr: config.sacctmgr.clone(),
        sacctmgr_meta,
        sacct: config.sacct.clone(),
        sacct_meta,
        euid,
        user,
        slurm_user,
        admin_level,
        dbd,
        field: config.field,
        store_flags: conf
            .and_then(|c| c.get("AccountingStoreFlags"))
            .map(str::to_string),
    }
}

/// Reads the node's configuration through the prolog's own [`gpu_map::read_node`] (files
/// under `proc`, devices by `stat`: /proc and the real stat on a node) and simulates its
/// jobs.
pub fn gather_map(
    gres_conf: &Path,
    slurm_conf: &Path,
    node: Option<&str>,
    proc: &gpu_map::ProcFiles,
    stat: gpu_map::DevStat,
    boards: Option<&[BoardInfo]>,
) -> Result<NodeMap, String> {
    let node = node.ok_or("the node's name is not known (give --node NAME)")?;
    let gres = gpu_map::read_node(gres_conf, slurm_conf, node, proc, stat)
        .map_err(|e| crate::logging::chain(&e))?;
    let settings = read_file(gres_conf)
        .map(|t| mapping::uuid_settings(&t))
        .unwrap_or_default();
    Ok(mapping::simulate(&gres, settings, boards))
}
