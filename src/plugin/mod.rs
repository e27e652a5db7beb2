//! The Slurm boundary: the symbols slurmd looks for, one trampoline through which every
//! call from C passes (panics caught, errors logged, the job never failed unless the
//! operator set `strict=true`), Slurm's logging, and the detached spawn. All of the
//! crate's `unsafe` code is here.
//!
//! Contexts (SPANK): slurm_spank_job_prolog/epilog run in S_CTX_JOB_SCRIPT, as root, in
//! a fresh `slurmstepd spank prolog|epilog` process. slurm_spank_init is called in every
//! other context: by slurmd once at start (S_CTX_SLURMD), where it checks what would keep
//! the plugin from measuring and logs it; by srun, sbatch, salloc and every step's
//! slurmstepd, where it only asks the context and returns.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::core::config::Config;
use crate::gpu::open_nvml;
use crate::logging::{chain, PREFIX};
use crate::node::epilog::{self, EpilogOutcome};
use crate::node::job::{JobError, Spawner};
use crate::node::job_env::JobEnv;
use crate::node::prolog::{self, PrologOutcome};
use crate::slurm::sys::{spank_context, spank_item, spank_t, SLURM_VERSION_NUMBER};

#[no_mangle]
pub static plugin_name: [u8; 13] = *b"spank-carbon\0";
#[no_mangle]
pub static plugin_type: [u8; 6] = *b"spank\0";
/// Slurm loads the plugin only when this has its own major.minor: it comes from the
/// headers the build used (see build.rs).
#[no_mangle]
pub static plugin_version: c_uint = SLURM_VERSION_NUMBER;

#[no_mangle]
pub extern "C" fn slurm_spank_job_prolog(sp: spank_t, ac: c_int, av: *mut *mut c_char) -> c_int {
    trampoline(Phase::Prolog, sp, ac, av)
}

#[no_mangle]
pub extern "C" fn slurm_spank_job_epilog(sp: spank_t, ac: c_int, av: *mut *mut c_char) -> c_int {
    trampoline(Phase::Epilog, sp, ac, av)
}

/// Never silently off: in slurmd (once, at its start) checks the plugstack arguments and
/// slurm.conf's PrologFlags and logs each problem at error level with what to change.
/// Elsewhere (srun, sbatch, salloc, each step's slurmstepd) it asks the context and
/// returns. Always 0: the check never fails slurmd.
#[no_mangle]
pub extern "C" fn slurm_spank_init(_sp: spank_t, ac: c_int, av: *mut *mut c_char) -> c_int {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if context() != Some(spank_context::S_CTX_SLURMD as c_int) {
            return;
        }
        // SAFETY: Slurm passes `ac` valid C strings in `av`.
        let args = unsafe { collect_args(ac, av) };
        slurmd_startup_check(&args);
    }));
    0
}

/// spank_context() (see the bindings), resolved at run time like the other Slurm
/// functions; its value is compared as an int, never trusted to be a known variant.
fn context() -> Option<c_int> {
    type ContextFn = unsafe extern "C" fn() -> c_int;
    let sym = slurm_symbol(c"spank_context");
    if sym.is_null() {
        return None;
    }
    // SAFETY: `spank_context` is `spank_context_t spank_context(void)`, an enum (int).
    let f = unsafe { std::mem::transmute::<*mut c_void, ContextFn>(sym) };
    // SAFETY: it takes no argument and reads Slurm's global SPANK stack.
    Some(unsafe { f() })
}

fn slurmd_startup_check(args: &[String]) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    install_slurm_logger();
    // slurmd sets SLURM_CONF to the file it read (configless: its cached copy).
    let path = crate::check::gather::slurm_conf_path(None);
    let conf = crate::check::gather::slurm_conf(&path);
    let node = std::env::var("SLURMD_NODENAME").ok();
    let problems = crate::check::slurmd_problems(args, node.as_deref(), &path, &conf);
    for p in &problems {
        let fix = p.fix.as_deref().unwrap_or("");
        match p.status {
            crate::check::Status::Error => log::error!("{}: {}; fix: {fix}", p.check, p.detail),
            _ => log::warn!("{}: {}; fix: {fix}", p.check, p.detail),
        }
    }
    if problems.is_empty() {
        log::info!(
            "loaded (built for Slurm {}); plugstack arguments and PrologFlags ok",
            crate::SLURM_VERSION
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Prolog,
    Epilog,
}

fn trampoline(phase: Phase, sp: spank_t, ac: c_int, av: *mut *mut c_char) -> c_int {
    let mut strict = false;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        install_slurm_logger();
        // SAFETY: Slurm passes `ac` valid C strings in `av`.
        let args = unsafe { collect_args(ac, av) };
        // `%n` in state_dir: this node's name, as the sampler and courier resolve it.
        let node = std::env::var("SLURMD_NODENAME").ok();
        let config = match Config::from_args_on(&args, node.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                log::error!("plugstack.conf: {e}; spank-carbon does nothing until this is fixed");
                return Ok(());
            }
        };
        strict = config.strict;
        // SAFETY: `sp` is the handle Slurm gave this call.
        let job_item = unsafe { spank_job_id(sp) };
        let env = JobEnv::from_env(job_item, |k| std::env::var(k).ok())?;
        match phase {
            Phase::Prolog => {
                let outcome = prolog::prolog(&config, &args, &env, &DetachedSpawner)?;
                match outcome {
                    PrologOutcome::Started { minors, pid } => log::debug!(
                        "job {}: sampler {pid} started for GPU minors {minors:?} on {}",
                        env.job,
                        env.node
                    ),
                    PrologOutcome::AlreadyRunning => {
                        log::debug!("job {}: sampler already running", env.job)
                    }
                    PrologOutcome::NoGpus => {}
                }
            }
            Phase::Epilog => {
                let outcome = epilog::epilog(&config, &args, &env, &DetachedSpawner, &open_nvml)?;
                if let EpilogOutcome::Recorded { part, .. } = outcome {
                    log::info!(
                        "job {} on {}: {} Wh on {} GPU(s) ({}), {} gCO2e",
                        env.job,
                        part.node,
                        part.wh,
                        part.gpus,
                        part.method.as_str(),
                        part.co2e_g
                    );
                }
            }
        }
        Ok::<(), JobError>(())
    }));
    let what = match phase {
        Phase::Prolog => "prolog",
        Phase::Epilog => "epilog",
    };
    let failed = match outcome {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            log::error!("{what}: {}", chain(&e));
            true
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            log::error!("{what}: internal error (panic: {msg}); the job goes on");
            true
        }
    };
    if failed && strict {
        -1
    } else {
        0
    }
}

/// # Safety
/// `av` must point to `ac` valid NUL-terminated strings (or be null with `ac` 0).
unsafe fn collect_args(ac: c_int, av: *mut *mut c_char) -> Vec<String> {
    if av.is_null() || ac <= 0 {
        return Vec::new();
    }
    (0..ac as usize)
        .filter_map(|i| {
            let p = *av.add(i);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        })
        .collect()
}

fn slurm_symbol(name: &CStr) -> *mut c_void {
    // SAFETY: dlsym with RTLD_DEFAULT only looks up a symbol in the process.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// The job id from spank_get_item(S_JOB_ID), resolved at run time so the library has
/// no link-time dependency on Slurm.
///
/// # Safety
/// `sp` must be the handle of the current SPANK call.
unsafe fn spank_job_id(sp: spank_t) -> Option<u32> {
    type GetItem = unsafe extern "C" fn(spank_t, spank_item, ...) -> c_int;
    let sym = slurm_symbol(c"spank_get_item");
    if sym.is_null() || sp.is_null() {
        return None;
    }
    let get: GetItem = std::mem::transmute::<*mut c_void, GetItem>(sym);
    let mut id: u32 = 0;
    let rc = get(sp, spank_item::S_JOB_ID, &mut id as *mut u32);
    (rc == 0 && id > 0).then_some(id)
}

type LogFn = unsafe extern "C" fn(*const c_char, ...);

/// Sends log records to slurmd's log through slurm_error/slurm_info/slurm_debug, with a
/// fixed "%s" format so that no message is ever read as a format string.
struct SlurmLogger {
    error: Option<LogFn>,
    info: Option<LogFn>,
    debug: Option<LogFn>,
}

fn log_fn(name: &CStr) -> Option<LogFn> {
    let sym = slurm_symbol(name);
    // SAFETY: these Slurm functions have the signature `void f(const char *fmt, ...)`.
    (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, LogFn>(sym) })
}

impl log::Log for SlurmLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let (f, tag) = match record.level() {
            log::Level::Error => (self.error, ""),
            log::Level::Warn => (self.info, "warning: "),
            log::Level::Info => (self.info, ""),
            _ => (self.debug, ""),
        };
        let text = format!("{PREFIX}{tag}{}", record.args()).replace('\0', " ");
        match (f, CString::new(text.clone())) {
            // SAFETY: the format is "%s" and the one argument a valid C string.
            (Some(f), Ok(c)) => unsafe { f(c"%s".as_ptr(), c.as_ptr()) },
            _ => eprintln!("{text}"),
        }
    }
    fn flush(&self) {}
}

fn install_slurm_logger() {
    let logger = SlurmLogger {
        error: log_fn(c"slurm_error"),
        info: log_fn(c"slurm_info"),
        debug: log_fn(c"slurm_debug"),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Starts the spank-carbon binary in a new session with no descriptor of slurmstepd's
/// left open, so it outlives the prolog/epilog without holding the job or slurmd back.
struct DetachedSpawner;

impl Spawner for DetachedSpawner {
    fn spawn_detached(
        &self,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> std::io::Result<u32> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("LC_ALL", "C")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(conf) = std::env::var_os("SLURM_CONF") {
            cmd.env("SLURM_CONF", conf);
        }
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                // Mark every inherited descriptor close-on-exec (std's own exec-error
                // pipe already is), so none of slurmstepd's survives into the child.
                const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
                let rc = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
                if rc != 0 {
                    for fd in 3..4096 {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(child.id())
    }
}
