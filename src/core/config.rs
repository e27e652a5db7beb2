//! Configuration: plugstack.conf arguments (`key=value`) and an optional TOML file
//! (`config=PATH`). The file is read first; plugstack arguments override it.
//!
//! Every error names the key it is about, so an operator can fix plugstack.conf from
//! the one line in slurmd's log.

use std::path::{Path, PathBuf};

use crate::units::GramsPerKwh;

/// Default carbon intensity: the world average of electricity generation, 475 gCO2e/kWh
/// (IEA, Global Energy & CO2 Status Report 2019; also CodeCarbon's world fallback).
pub const DEFAULT_INTENSITY: f64 = 475.0;
/// Default power usage effectiveness: 1.58, the average of the Uptime Institute's 2018
/// global data-centre survey, the figure Strubell et al. (2019) used; Uptime's 2023
/// survey still reports 1.58.
pub const DEFAULT_PUE: f64 = 1.58;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/spank-carbon";
pub const DEFAULT_BIN: &str = "/usr/local/sbin/spank-carbon";
pub const DEFAULT_SAMPLE_MS: u64 = 1000;
/// Local records are kept this many days (then removed by the courier's sweep).
pub const DEFAULT_RECORDS_KEEP_DAYS: u64 = 90;
/// And at most this many MiB in all, oldest days removed first.
pub const DEFAULT_RECORDS_MAX_MB: u64 = 1024;
/// The log is rotated past this many MiB...
pub const DEFAULT_LOG_MAX_MB: u64 = 16;
/// ...keeping this many old generations (`.1` newest).
pub const DEFAULT_LOG_KEEP: u64 = 3;
/// Time limit of the epilog's NVML work (when it reads end counters itself).
pub const DEFAULT_NVML_TIMEOUT_MS: u64 = 5000;
/// The mail program `spank-carbon mail` hands mail to: Debian's `mail` alternative
/// (mailutils or bsd-mailx), Slurm's own default MailProg on current releases.
pub const DEFAULT_MAIL_PROG: &str = "/usr/bin/mail";
/// How long `spank-carbon mail` waits for a job's record: well inside the 120 s that
/// slurmctld gives MailProg (MAIL_PROG_TIMEOUT in src/slurmctld/agent.c).
pub const DEFAULT_MAIL_WAIT_S: u64 = 30;
/// The most `mail_wait_s` may be: slurmctld kills MailProg after 120 s.
pub const MAX_MAIL_WAIT_S: u64 = 90;

/// Which of the job's accounting comment fields holds the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// SystemComment: slurmctld never sends it to slurmdbd, so nothing overwrites it.
    System,
    /// AdminComment: rewritten by slurmctld's completion record when the job has one.
    Admin,
    /// Comment: the user's own field; rewritten at completion with job_comment.
    Job,
}

impl Field {
    /// The name sacctmgr and sacct use for the field.
    pub fn slurm_name(self) -> &'static str {
        match self {
            Field::System => "SystemComment",
            Field::Admin => "AdminComment",
            Field::Job => "Comment",
        }
    }
}

/// Whether the record's GPU energy also goes into the job's energy TRES (Slurm 25.11+,
/// `sacctmgr ... set tres=energy=J`): key `energy_tres`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnergyTres {
    /// Set it unless Slurm measured the job's energy itself (a non-zero energy that is
    /// not the record's).
    #[default]
    Auto,
    /// Never set it.
    Off,
    /// Set it even over energy Slurm measured.
    Overwrite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub intensity: GramsPerKwh,
    pub pue: f64,
    pub field: Field,
    pub nvml_lib: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub sample_ms: u64,
    pub checkpoint_s: u64,
    pub bin: PathBuf,
    pub sacct: PathBuf,
    pub sacctmgr: PathBuf,
    pub gres_conf: Option<PathBuf>,
    pub strict: bool,
    pub write_timeout_s: u64,
    pub settle_ms: u64,
    pub stagger_ms: u64,
    pub deliver_timeout_s: u64,
    pub max_job_s: u64,
    pub liveness_s: u64,
    /// Slurm's squeue: the liveness check, and on Slurm 22.05 the sampler's question for
    /// the job's allocation (`squeue --json`; `gpu_map::Ask`).
    pub squeue: PathBuf,
    /// Slurm's scontrol: the sampler asks slurmctld for the job's allocation for gres/mps
    /// jobs and on nodes with gres/shard or several GPU types (`gpu_map::Ask`), 23.02+.
    pub scontrol: PathBuf,
    pub retry_s: u64,
    /// How long after a multi-node part is in accounting its node reads the field once
    /// more (a late write may have dropped it); 0: never.
    pub verify_after_s: u64,
    pub intensity_series: Option<PathBuf>,
    pub intensity_max_age_s: u64,
    pub embodied_kg_per_gpu_hour: f64,
    pub records_keep_days: u64,
    pub records_max_mb: u64,
    pub log_max_mb: u64,
    pub log_keep: u64,
    pub nvml_timeout_ms: u64,
    pub energy_tres: EnergyTres,
    /// node_exporter's textfile directory; `None`: no textfile is written automatically.
    pub metrics_dir: Option<PathBuf>,
    /// The site's mail program that `spank-carbon mail` hands the mail to.
    pub mail_prog: PathBuf,
    /// How long `spank-carbon mail` waits for the job's record, seconds.
    pub mail_wait_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            intensity: GramsPerKwh(DEFAULT_INTENSITY),
            pue: DEFAULT_PUE,
            field: Field::System,
            nvml_lib: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            sample_ms: DEFAULT_SAMPLE_MS,
            checkpoint_s: 30,
            bin: PathBuf::from(DEFAULT_BIN),
            sacct: PathBuf::from("/usr/bin/sacct"),
            sacctmgr: PathBuf::from("/usr/bin/sacctmgr"),
            gres_conf: None,
            strict: false,
            write_timeout_s: 15,
            settle_ms: 3000,
            stagger_ms: 400,
            deliver_timeout_s: 300,
            max_job_s: 30 * 24 * 3600,
            liveness_s: 120,
            squeue: PathBuf::from("/usr/bin/squeue"),
            scontrol: PathBuf::from("/usr/bin/scontrol"),
            retry_s: 60,
            verify_after_s: 300,
            intensity_series: None,
            intensity_max_age_s: 7200,
            embodied_kg_per_gpu_hour: 0.0,
            records_keep_days: DEFAULT_RECORDS_KEEP_DAYS,
            records_max_mb: DEFAULT_RECORDS_MAX_MB,
            log_max_mb: DEFAULT_LOG_MAX_MB,
            log_keep: DEFAULT_LOG_KEEP,
            nvml_timeout_ms: DEFAULT_NVML_TIMEOUT_MS,
            energy_tres: EnergyTres::Auto,
            metrics_dir: None,
            mail_prog: PathBuf::from(DEFAULT_MAIL_PROG),
            mail_wait_s: DEFAULT_MAIL_WAIT_S,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown key `{0}` (known keys: {keys})", keys = KEYS.join(", "))]
    UnknownKey(String),
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
    #[error("bad value for `{key}`: `{value}`: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
}

fn bad(key: &str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

fn number(key: &str, value: &str, min: f64, max: f64) -> Result<f64, ConfigError> {
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not a number"))?;
    if !v.is_finite() || v < min || v > max {
        return Err(bad(key, value, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

fn integer(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let v: u64 = value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not a whole number"))?;
    if v < min || v > max {
        return Err(bad(key, value, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

fn absolute_path(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(bad(key, value, "must be an absolute path"));
    }
    if value.contains('\0') || p.components().any(|c| c.as_os_str() == "..") {
        return Err(bad(key, value, "must not contain `..`"));
    }
    Ok(p.to_path_buf())
}

/// `value` with `%n` replaced by the (lower-cased, validated) node name and `%%` by `%`.
/// Any other `%` is an error, and so is `%n` with no node name known.
pub fn substitute_node(key: &str, value: &str, node: Option<&str>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => {
                let Some(node) = node else {
                    return Err(bad(
                        key,
                        value,
                        "`%n` needs the node's name, and none is known \
                         (SLURMD_NODENAME is not set; on the command line give --node NAME)",
                    ));
                };
                let name = node.to_ascii_lowercase();
                if !crate::record::valid_node_name(&name) {
                    return Err(bad(
                        key,
                        value,
                        format!(
                            "`%n`: `{}` is not a valid node name",
                            node.chars().take(64).collect::<String>()
                        ),
                    ));
                }
                out.push_str(&name);
            }
            _ => {
                return Err(bad(
                    key,
                    value,
                    "`%` must be followed by `n` (the node's name) or `%` (a literal `%`)",
                ))
            }
        }
    }
    Ok(out)
}

fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

/// One configuration key. [`TABLE`] holds them all: [`Config::set`] parses with it, and
/// `spank-carbon docs` makes the man page's KEYS, the example TOML file and README.md's
/// table of keys from it.
pub struct Key {
    pub name: &'static str,
    /// What the key does: one paragraph of markdown, as README.md's table shows it (the
    /// man page and the example TOML file drop the markup).
    pub doc: &'static str,
    /// For a key whose default is no value: the default as people are told it (markdown),
    /// and an example value for the example TOML file. `None`: the default is
    /// `Config::default()`'s value, as [`Key::get`] writes it.
    pub unset: Option<Unset>,
    /// Parses the value (`set(config, key, value)`) into the configuration.
    pub set: fn(&mut Config, &str, &str) -> Result<(), ConfigError>,
    /// The key's value in a configuration, as text; `None` when it has none.
    pub get: fn(&Config) -> Option<String>,
}

/// What a key without a default value does then.
pub struct Unset {
    /// The default as people are told it, e.g. "the system's `libnvidia-ml.so.1`".
    pub shown: &'static str,
    /// A value for the example TOML file.
    pub example: &'static str,
}

impl Key {
    /// The key's value in `Config::default()` (`None` for a key with no default value).
    pub fn default_value(&self) -> Option<String> {
        (self.get)(&Config::default())
    }
}

const fn key(
    name: &'static str,
    doc: &'static str,
    set: fn(&mut Config, &str, &str) -> Result<(), ConfigError>,
    get: fn(&Config) -> Option<String>,
) -> Key {
    Key {
        name,
        doc,
        unset: None,
        set,
        get,
    }
}

const fn unset(key: Key, shown: &'static str, example: &'static str) -> Key {
    Key {
        unset: Some(Unset { shown, example }),
        ..key
    }
}

fn shown(p: &Path) -> Option<String> {
    Some(p.display().to_string())
}

/// Every key the plugin accepts, in plugstack.conf and in the TOML file, in the order
/// of [`KEYS`] (and of the known keys an unknown key's error lists).
pub const TABLE: &[Key] = &[
    unset(
        key(
            "config",
            "a TOML file of further keys (`key = value`, one a line). Only in plugstack.conf. The file must be owned by root and not writable by group or others; plugstack.conf arguments override its keys.",
            |_, k, v| Err(bad(k, v, "only allowed in plugstack.conf")),
            |_| None,
        ),
        "none",
        "/etc/spank-carbon/spank-carbon.toml",
    ),
    key(
        "intensity",
        "grid carbon intensity, gCO2e/kWh (0 to 5000). Default: world average electricity, IEA Global Energy & CO2 Status Report 2019 (also CodeCarbon's world fallback). Set your grid's: Strubell et al. used 432.7 (US 2018).",
        |c, k, v| {
            c.intensity = GramsPerKwh(number(k, v, 0.0, 5000.0)?);
            Ok(())
        },
        |c| Some(c.intensity.0.to_string()),
    ),
    key(
        "pue",
        "data-centre power usage effectiveness (1 to 5), multiplied into CO2e. Default: the Uptime Institute's global survey average (2018, used by Strubell et al.; still 1.58 in 2023).",
        |c, k, v| {
            c.pue = number(k, v, 1.0, 5.0)?;
            Ok(())
        },
        |c| Some(c.pue.to_string()),
    ),
    key(
        "field",
        "the job's accounting field that holds the record: `system` (SystemComment, which only sacctmgr writes), `admin` (AdminComment) or `job` (Comment).",
        |c, k, v| {
            c.field = match v {
                "system" => Field::System,
                "admin" => Field::Admin,
                "job" => Field::Job,
                _ => return Err(bad(k, v, "expected system, admin or job")),
            };
            Ok(())
        },
        |c| {
            Some(
                match c.field {
                    Field::System => "system",
                    Field::Admin => "admin",
                    Field::Job => "job",
                }
                .to_string(),
            )
        },
    ),
    unset(
        key(
            "nvml_lib",
            "absolute path of libnvidia-ml, for unusual driver locations (and the tests' fake).",
            |c, k, v| {
                c.nvml_lib = Some(absolute_path(k, v)?);
                Ok(())
            },
            |c| c.nvml_lib.as_deref().and_then(shown),
        ),
        "the system's `libnvidia-ml.so.1`",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    ),
    key(
        "state_dir",
        "root-owned (0700) directory for sampler state, local records, pending deliveries and the log. Refused if another user owns it or others can write it. `%n` is the node's name (SLURMD_NODENAME, lower-cased, a valid node name), as in Slurm's `SlurmdSpoolDir=/var/spool/slurmd/%n`: several slurmd on one host then each have their own directory and courier; `%%` is a `%`, any other `%` an error. The sampler and courier get SLURMD_NODENAME from the plugin; `spank-carbon deliver`/`pending` take `--node NAME` (else SLURMD_NODENAME, else the short host name).",
        |c, k, v| {
            // Checked here (a bad `%` escape is reported at once); substituted by
            // `for_node`.
            substitute_node(k, v, Some("n"))?;
            c.state_dir = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.state_dir),
    ),
    key(
        "sample_ms",
        "power sampling interval, milliseconds (10 to 3600000). Energy comes from the counters when the GPU has them (Volta and newer); samples fill in where it has none. NVML's `nvmlDeviceGetPowerUsage` is a 1 s average on Ampere and newer **except GA100** (A100, A30, A800), and the power of the moment on GA100 and older; the sampler asks for NVML's average-power field (`NVML_FI_DEV_POWER_AVERAGE`, 1 s mean) where the board has it, else its instant-power field, else `nvmlDeviceGetPowerUsage` with the meaning of the board's generation, and each GPU of the local record says which (`power`: `avg`, `inst`, `mixed`). With 1 s means, sampling faster than 1 s gains little; instant readings at 1 s miss what happens between them.",
        |c, k, v| {
            c.sample_ms = integer(k, v, 10, 3_600_000)?;
            Ok(())
        },
        |c| Some(c.sample_ms.to_string()),
    ),
    key(
        "checkpoint_s",
        "how often the sampler saves its running integral (and re-reads the counters to detect a reset), seconds.",
        |c, k, v| {
            c.checkpoint_s = integer(k, v, 1, 86_400)?;
            Ok(())
        },
        |c| Some(c.checkpoint_s.to_string()),
    ),
    key(
        "bin",
        "the spank-carbon binary the plugin starts (the sampler and the courier), always by absolute path. The packages install it at `/usr/bin/spank-carbon`, and their drop-in passes `bin=/usr/bin/spank-carbon`.",
        |c, k, v| {
            c.bin = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.bin),
    ),
    key(
        "sacct",
        "Slurm's sacct, run by absolute path with an argument vector, never through a shell.",
        |c, k, v| {
            c.sacct = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.sacct),
    ),
    key(
        "sacctmgr",
        "Slurm's sacctmgr, run by absolute path with an argument vector, never through a shell.",
        |c, k, v| {
            c.sacctmgr = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.sacctmgr),
    ),
    unset(
        key(
            "gres_conf",
            "the gres.conf slurmd uses, to map the job's GPUs to device files.",
            |c, k, v| {
                c.gres_conf = Some(absolute_path(k, v)?);
                Ok(())
            },
            |c| c.gres_conf.as_deref().and_then(shown),
        ),
        "`gres.conf` beside `$SLURM_CONF`",
        "/etc/slurm/gres.conf",
    ),
    key(
        "strict",
        "if `true`, a failure makes the prolog or epilog return an error (with `required` in plugstack.conf, that drains the node).",
        |c, k, v| {
            c.strict = boolean(k, v)?;
            Ok(())
        },
        |c| Some(c.strict.to_string()),
    ),
    key(
        "write_timeout_s",
        "time limit of one sacct or sacctmgr call, seconds (1 to 600).",
        |c, k, v| {
            c.write_timeout_s = integer(k, v, 1, 600)?;
            Ok(())
        },
        |c| Some(c.write_timeout_s.to_string()),
    ),
    key(
        "settle_ms",
        "how long a node watches the record after its write (multi-node merge), milliseconds; keep it well above one sacctmgr round trip.",
        |c, k, v| {
            c.settle_ms = integer(k, v, 0, 600_000)?;
            Ok(())
        },
        |c| Some(c.settle_ms.to_string()),
    ),
    key(
        "stagger_ms",
        "delay between nodes' first writes, by rank in the job's node list, milliseconds.",
        |c, k, v| {
            c.stagger_ms = integer(k, v, 0, 60_000)?;
            Ok(())
        },
        |c| Some(c.stagger_ms.to_string()),
    ),
    key(
        "deliver_timeout_s",
        "how long one delivery keeps trying before leaving the record pending, seconds, counted from the turn of the job's last node (`stagger_ms` x nodes after the epilog).",
        |c, k, v| {
            c.deliver_timeout_s = integer(k, v, 1, 86_400 * 7)?;
            Ok(())
        },
        |c| Some(c.deliver_timeout_s.to_string()),
    ),
    key(
        "max_job_s",
        "a sampler stops after this many seconds whatever happens (the default is 30 days).",
        |c, k, v| {
            c.max_job_s = integer(k, v, 60, 366 * 86_400)?;
            Ok(())
        },
        |c| Some(c.max_job_s.to_string()),
    ),
    key(
        "liveness_s",
        "how often the sampler asks `squeue` whether its job still runs, seconds; a job that ended twice in a row without an epilog here (node lost, slurmd restarted at the wrong moment) stops the sampler, which keeps a local record (flag `noepilog`, not delivered: its window's end is a guess) and removes its state.",
        |c, k, v| {
            c.liveness_s = integer(k, v, 1, 86_400)?;
            Ok(())
        },
        |c| Some(c.liveness_s.to_string()),
    ),
    key(
        "squeue",
        "Slurm's squeue, by absolute path: the liveness check; on Slurm 22.05 also the sampler's question for a job's GPUs (see `scontrol`): 22.05's scontrol has no JSON, so `squeue --json`, which lists every job slurmctld holds, is read and the job picked by its id.",
        |c, k, v| {
            c.squeue = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.squeue),
    ),
    key(
        "scontrol",
        "Slurm's scontrol, by absolute path, for gres/mps jobs and on nodes with gres/shard or several GPU types only: the sampler asks slurmctld once per job and node (`scontrol --json show job JOB`, 20 s timeout; `squeue --json` on 22.05) which GPUs, shards and MPS the job has there, reading only the JSON's per-node GRES, never the job's text; an unanswered or unreadable answer is a refusal (no part for the node).",
        |c, k, v| {
            c.scontrol = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.scontrol),
    ),
    key(
        "retry_s",
        "how often the node's courier retries records it gave up on, seconds (at once when it delivers another record).",
        |c, k, v| {
            c.retry_s = integer(k, v, 1, 86_400)?;
            Ok(())
        },
        |c| Some(c.retry_s.to_string()),
    ),
    key(
        "verify_after_s",
        "how long after its part of a multi-node job is in accounting each node reads the field again, seconds (and again this much later while others still change it), and delivers its part again if a late write (one slurmdbd applied long after sacctmgr gave up) dropped it; kept in `state_dir/verify/` and made by the courier that runs on the node then (a later job's prolog or epilog starts one); must exceed the longest a write can be held; 0: never.",
        |c, k, v| {
            c.verify_after_s = integer(k, v, 0, 86_400)?;
            Ok(())
        },
        |c| Some(c.verify_after_s.to_string()),
    ),
    unset(
        key(
            "intensity_series",
            "CSV time series of carbon intensity (unix time, gCO2e/kWh); the fixed `intensity` is the fallback.",
            |c, k, v| {
                c.intensity_series = Some(absolute_path(k, v)?);
                Ok(())
            },
            |c| c.intensity_series.as_deref().and_then(shown),
        ),
        "none",
        "/etc/spank-carbon/intensity.csv",
    ),
    key(
        "intensity_max_age_s",
        "a series whose last point is older than this at the job's end is stale, seconds: the fixed value is used and the record says `src:fallback`.",
        |c, k, v| {
            c.intensity_max_age_s = integer(k, v, 1, 366 * 86_400)?;
            Ok(())
        },
        |c| Some(c.intensity_max_age_s.to_string()),
    ),
    key(
        "embodied_kg_per_gpu_hour",
        "embodied emissions per GPU-hour of allocation, kg (0 is off), e.g. a vendor's lifecycle figure amortised over the service life; recorded apart (`embodied_g`), never added to `co2e_g`.",
        |c, k, v| {
            c.embodied_kg_per_gpu_hour = number(k, v, 0.0, 100.0)?;
            Ok(())
        },
        |c| Some(c.embodied_kg_per_gpu_hour.to_string()),
    ),
    key(
        "records_keep_days",
        "local records (`state_dir/records/`) older than this many days are removed by the node's courier (checked at most once an hour).",
        |c, k, v| {
            c.records_keep_days = integer(k, v, 1, 36_500)?;
            Ok(())
        },
        |c| Some(c.records_keep_days.to_string()),
    ),
    key(
        "records_max_mb",
        "and, oldest day first, while all local records together exceed this many MiB (the current day's file is never removed).",
        |c, k, v| {
            c.records_max_mb = integer(k, v, 1, 1 << 30)?;
            Ok(())
        },
        |c| Some(c.records_max_mb.to_string()),
    ),
    key(
        "log_max_mb",
        "`state_dir/spank-carbon.log` is rotated by the courier once it exceeds this many MiB.",
        |c, k, v| {
            c.log_max_mb = integer(k, v, 1, 1 << 20)?;
            Ok(())
        },
        |c| Some(c.log_max_mb.to_string()),
    ),
    key(
        "log_keep",
        "old log generations kept (`spank-carbon.log.1` newest); `0` keeps none.",
        |c, k, v| {
            c.log_keep = integer(k, v, 0, 100)?;
            Ok(())
        },
        |c| Some(c.log_keep.to_string()),
    ),
    key(
        "nvml_timeout_ms",
        "time limit of the epilog's own NVML work (when the sampler died and the epilog reads the end counters), milliseconds: a GPU NVML does not answer for in time (wedged driver) gets no end counter, its energy comes from the samples, and the log says `NVML timeout`.",
        |c, k, v| {
            c.nvml_timeout_ms = integer(k, v, 100, 600_000)?;
            Ok(())
        },
        |c| Some(c.nvml_timeout_ms.to_string()),
    ),
    key(
        "energy_tres",
        "Slurm 25.11+ only (never sent below): the record's GPU energy also goes into the job's energy TRES (`sacctmgr ... set tres=energy=J`, in the same call as the record; `sacct -o ConsumedEnergy`, sreport). `auto`: unless the job already has energy Slurm measured itself (acct_gather_energy); `off`: never; `overwrite`: even then. Any other value is an error naming `energy_tres`.",
        |c, k, v| {
            c.energy_tres = match v {
                "auto" => EnergyTres::Auto,
                "off" => EnergyTres::Off,
                "overwrite" => EnergyTres::Overwrite,
                _ => return Err(bad(k, v, "expected auto, off or overwrite")),
            };
            Ok(())
        },
        |c| {
            Some(
                match c.energy_tres {
                    EnergyTres::Auto => "auto",
                    EnergyTres::Off => "off",
                    EnergyTres::Overwrite => "overwrite",
                }
                .to_string(),
            )
        },
    ),
    unset(
        key(
            "metrics_dir",
            "directory of node_exporter's textfile collector (Debian: `/var/lib/prometheus/node-exporter`): when set, the epilog after each record and the courier after each round write `spank-carbon-<node>.prom` there, atomically. `spank-carbon metrics` writes it on demand (`--dir`, else this key, else Debian's directory).",
            |c, k, v| {
                c.metrics_dir = Some(absolute_path(k, v)?);
                Ok(())
            },
            |c| c.metrics_dir.as_deref().and_then(shown),
        ),
        "none",
        "/var/lib/prometheus/node-exporter",
    ),
    key(
        "mail_prog",
        "the site's mail program that `spank-carbon mail` (Slurm's MailProg) hands each mail to, with the job's footprint added to end mails: by absolute path, its arguments unchanged, never through a shell.",
        |c, k, v| {
            c.mail_prog = absolute_path(k, v)?;
            Ok(())
        },
        |c| shown(&c.mail_prog),
    ),
    key(
        "mail_wait_s",
        "how long `spank-carbon mail` waits for an ending job's record before it sends the mail saying it is not recorded yet; at most 90 (slurmctld kills MailProg after 120 s).",
        |c, k, v| {
            c.mail_wait_s = integer(k, v, 0, MAX_MAIL_WAIT_S)?;
            Ok(())
        },
        |c| Some(c.mail_wait_s.to_string()),
    ),
];

const fn key_names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = TABLE[i].name;
        i += 1;
    }
    names
}

/// Every key's name, in [`TABLE`]'s order.
pub const KEYS: &[&str] = &key_names::<{ TABLE.len() }>();

impl Config {
    /// Sets one key from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match TABLE.iter().find(|k| k.name == key) {
            Some(k) => (k.set)(self, key, value),
            None => Err(ConfigError::UnknownKey(key.to_string())),
        }
    }

    /// Builds the configuration from plugstack.conf arguments.
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let mut pairs = Vec::with_capacity(args.len());
        for arg in args {
            let arg = arg.as_ref();
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| ConfigError::NotKeyValue(arg.to_string()))?;
            pairs.push((key.trim(), value.trim()));
        }
        if let Some((_, path)) = pairs.iter().rev().find(|(k, _)| *k == "config") {
            let path = absolute_path("config", path)?;
            let text = read_config_file(&path)?;
            config.apply_toml(&text).map_err(|e| match e {
                ConfigError::File { .. } => e,
                other => ConfigError::File {
                    path: path.display().to_string(),
                    why: other.to_string(),
                },
            })?;
        }
        for (key, value) in pairs {
            if key != "config" {
                config.set(key, value)?;
            }
        }
        Ok(config)
    }

    /// Builds the configuration from plugstack.conf arguments for the node `node`
    /// (SLURMD_NODENAME, `--node`...): `%n` in `state_dir` becomes the node's name.
    /// Without a node, a `state_dir` with `%n` is an error naming the key.
    pub fn from_args_on<S: AsRef<str>>(
        args: &[S],
        node: Option<&str>,
    ) -> Result<Config, ConfigError> {
        Config::from_args(args)?.for_node(node)
    }

    /// Substitutes the node's name for `%n` (and `%` for `%%`) in `state_dir`, as Slurm
    /// does in its per-node paths (`SlurmdSpoolDir=/var/spool/slurmd/%n`), so that several
    /// slurmd on one host each have their own state directory and courier. The name is
    /// lower-cased and must be a valid node name (it becomes a path component).
    pub fn for_node(mut self, node: Option<&str>) -> Result<Config, ConfigError> {
        let key = "state_dir";
        let template = self.state_dir.to_string_lossy().into_owned();
        let resolved = substitute_node(key, &template, node)?;
        if resolved != template {
            self.state_dir = absolute_path(key, &resolved)?;
        }
        Ok(self)
    }

    /// Applies the keys of a TOML document.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: "(toml)".into(),
                why: e.message().to_string(),
            })?;
        for (key, value) in &table {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(bad(
                        key,
                        other.type_str(),
                        "expected a string, number or boolean",
                    ))
                }
            };
            self.set(key, &text)?;
        }
        Ok(())
    }

    pub fn sample_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.sample_ms)
    }

    pub fn nvml_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.nvml_timeout_ms)
    }
}

/// Reads the TOML file, refusing one that someone other than root could have written:
/// the plugin runs as root and acts on what the file says.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let err = |why: String| ConfigError::File {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.uid() != 0 && meta.uid() != rustix::process::getuid().as_raw() {
        return Err(err("not owned by root".into()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(err("writable by group or others".into()));
    }
    std::fs::read_to_string(path).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_tres_key() {
        assert_eq!(Config::default().energy_tres, EnergyTres::Auto);
        for (v, want) in [
            ("auto", EnergyTres::Auto),
            ("off", EnergyTres::Off),
            ("overwrite", EnergyTres::Overwrite),
        ] {
            let c = Config::from_args(&[format!("energy_tres={v}")]).unwrap();
            assert_eq!(c.energy_tres, want);
        }
        let e = Config::from_args(&["energy_tres=yes"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`energy_tres`") && text.contains("auto, off or overwrite"),
            "{text}"
        );
    }

    #[test]
    fn metrics_and_mail_keys() {
        let c = Config::default();
        assert_eq!(c.metrics_dir, None);
        assert_eq!(c.mail_prog, Path::new(DEFAULT_MAIL_PROG));
        let c = Config::from_args(&[
            "metrics_dir=/var/lib/prometheus/node-exporter",
            "mail_prog=/usr/bin/mail.mailutils",
            "mail_wait_s=5",
        ])
        .unwrap();
        assert_eq!(
            c.metrics_dir.as_deref(),
            Some(Path::new("/var/lib/prometheus/node-exporter"))
        );
        assert_eq!(c.mail_prog, Path::new("/usr/bin/mail.mailutils"));
        assert_eq!(c.mail_wait_s, 5);
        for bad in [
            "metrics_dir=prom",
            "mail_prog=mail",
            "mail_prog=/usr/../bin/sh",
            "mail_wait_s=91",
            "mail_wait_s=ten",
        ] {
            let key = bad.split('=').next().unwrap();
            let e = Config::from_args(&[bad]).unwrap_err();
            assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
        }
    }

    #[test]
    fn defaults_when_no_arguments() {
        let c = Config::from_args::<&str>(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.field, Field::System);
        assert_eq!(c.intensity.0, 475.0);
        assert_eq!(c.pue, 1.58);
    }

    #[test]
    fn arguments_set_keys() {
        let c = Config::from_args(&[
            "intensity=100.5",
            "pue=1.2",
            "field=admin",
            "nvml_lib=/opt/nv/libnvidia-ml.so.1",
            "state_dir=/var/lib/sc",
            "sample_ms=250",
            "strict=true",
        ])
        .unwrap();
        assert_eq!(c.intensity.0, 100.5);
        assert_eq!(c.pue, 1.2);
        assert_eq!(c.field, Field::Admin);
        assert_eq!(
            c.nvml_lib.as_deref(),
            Some(Path::new("/opt/nv/libnvidia-ml.so.1"))
        );
        assert_eq!(c.state_dir, Path::new("/var/lib/sc"));
        assert_eq!(c.sample_ms, 250);
        assert!(c.strict);
        let c = Config::from_args(&[
            "records_keep_days=7",
            "records_max_mb=50",
            "log_max_mb=2",
            "log_keep=0",
            "nvml_timeout_ms=250",
        ])
        .unwrap();
        assert_eq!(
            (
                c.records_keep_days,
                c.records_max_mb,
                c.log_max_mb,
                c.log_keep
            ),
            (7, 50, 2, 0)
        );
        assert_eq!(c.nvml_timeout(), std::time::Duration::from_millis(250));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_args(&["intensty=3"]).unwrap_err();
        assert_eq!(e, ConfigError::UnknownKey("intensty".into()));
        assert!(e.to_string().contains("`intensty`"));
        let e = Config::from_args(&["pue=0.5"]).unwrap_err();
        assert!(e.to_string().contains("`pue`"), "{e}");
        let e = Config::from_args(&["field=mine"]).unwrap_err();
        assert!(e.to_string().contains("`field`"), "{e}");
        let e = Config::from_args(&["state_dir=relative/dir"]).unwrap_err();
        assert!(e.to_string().contains("`state_dir`"), "{e}");
        let e = Config::from_args(&["state_dir=/var/../etc"]).unwrap_err();
        assert!(e.to_string().contains("`state_dir`"), "{e}");
        let e = Config::from_args(&["sample_ms=abc"]).unwrap_err();
        assert!(e.to_string().contains("`sample_ms`"), "{e}");
        let e = Config::from_args(&["intensity=NaN"]).unwrap_err();
        assert!(e.to_string().contains("`intensity`"), "{e}");
        for bad in [
            "records_keep_days=0",
            "records_max_mb=0",
            "log_max_mb=-1",
            "log_keep=101",
            "nvml_timeout_ms=10",
            "nvml_timeout_ms=5s",
        ] {
            let key = bad.split('=').next().unwrap();
            let e = Config::from_args(&[bad]).unwrap_err();
            assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
        }
        let e = Config::from_args(&["lonely"]).unwrap_err();
        assert_eq!(e, ConfigError::NotKeyValue("lonely".into()));
    }

    #[test]
    fn state_dir_names_the_node() {
        let args = ["state_dir=/var/lib/sc/%n"];
        let c = Config::from_args_on(&args, Some("Node7")).unwrap();
        assert_eq!(c.state_dir, Path::new("/var/lib/sc/node7"));
        let c = Config::from_args_on(&["state_dir=/s/%n/x-%n%%"], Some("gpu-01.a")).unwrap();
        assert_eq!(c.state_dir, Path::new("/s/gpu-01.a/x-gpu-01.a%"));
        // Two nodes, two directories; without `%n` the node changes nothing.
        let a = Config::from_args_on(&args, Some("node1")).unwrap();
        let b = Config::from_args_on(&args, Some("node2")).unwrap();
        assert_ne!(a.state_dir, b.state_dir);
        let c = Config::from_args_on(&["state_dir=/var/lib/sc"], Some("node1")).unwrap();
        assert_eq!(c.state_dir, Path::new("/var/lib/sc"));
        let c = Config::from_args_on::<&str>(&[], None).unwrap();
        assert_eq!(c.state_dir, Path::new(DEFAULT_STATE_DIR));
        // The file's value is substituted too.
        let mut c = Config::default();
        c.apply_toml("state_dir = \"/t/%n\"\n").unwrap();
        assert_eq!(
            c.for_node(Some("n1")).unwrap().state_dir,
            Path::new("/t/n1")
        );
    }

    #[test]
    fn state_dir_node_errors_name_the_key() {
        let args = ["state_dir=/var/lib/sc/%n"];
        let e = Config::from_args_on(&args, None).unwrap_err();
        assert!(e.to_string().contains("`state_dir`"), "{e}");
        assert!(e.to_string().contains("SLURMD_NODENAME"), "{e}");
        // Plain `from_args` knows no node: never a literal `%n` directory.
        assert!(Config::from_args(&args).unwrap().for_node(None).is_err());
        for node in ["../etc", "a/b", "", ".hidden", "x y", &"n".repeat(65)] {
            let e = Config::from_args_on(&args, Some(node)).unwrap_err();
            assert!(e.to_string().contains("`state_dir`"), "{node}: {e}");
            assert!(
                e.to_string().contains("not a valid node name"),
                "{node}: {e}"
            );
        }
        for value in ["/s/%", "/s/%h", "/s/%N", "/s/100%x"] {
            let e = Config::from_args(&[format!("state_dir={value}")]).unwrap_err();
            assert!(e.to_string().contains("`state_dir`"), "{value}: {e}");
            assert!(e.to_string().contains("followed by"), "{value}: {e}");
        }
        // `%%n` is a literal `%n`, not the node.
        let c = Config::from_args_on(&["state_dir=/s/%%n"], None).unwrap();
        assert_eq!(c.state_dir, Path::new("/s/%n"));
        assert_eq!(
            substitute_node("k", "/a/%n/%%/%n", Some("B2")).unwrap(),
            "/a/b2/%/b2"
        );
    }

    #[test]
    fn toml_keys_and_errors() {
        let mut c = Config::default();
        c.apply_toml("intensity = 50\npue = 1.1\nfield = \"job\"\nsample_ms = 500\n")
            .unwrap();
        assert_eq!(c.intensity.0, 50.0);
        assert_eq!(c.pue, 1.1);
        assert_eq!(c.field, Field::Job);
        assert_eq!(c.sample_ms, 500);
        let e = c.apply_toml("colour = 1").unwrap_err();
        assert_eq!(e, ConfigError::UnknownKey("colour".into()));
        let e = c.apply_toml("pue = [1]").unwrap_err();
        assert!(e.to_string().contains("`pue`"), "{e}");
        assert!(c.apply_toml("pue = ").is_err());
    }

    #[test]
    fn file_then_arguments_override() {
        let dir = std::env::temp_dir().join(format!("sc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sc.toml");
        std::fs::write(&path, "intensity = 10\npue = 1.3\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let arg = format!("config={}", path.display());
        let c = Config::from_args(&[arg.as_str(), "pue=1.4"]).unwrap();
        assert_eq!(c.intensity.0, 10.0);
        assert_eq!(c.pue, 1.4);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::from_args(&[arg.as_str()]).unwrap_err();
        assert!(e.to_string().contains("writable"), "{e}");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Config::from_args(&[arg.as_str()]).unwrap_err();
        assert!(e.to_string().contains("`bogus`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
