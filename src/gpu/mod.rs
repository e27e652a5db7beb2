//! GPU access behind a trait: NVML (through nvml-wrapper, which loads libnvidia-ml at
//! run time) in production, scripted fakes in tests.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use std::cell::Cell;

use nvml_wrapper::enums::device::{DeviceArchitecture, SampleValue};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};

use crate::units::Milliwatts;

#[cfg(test)]
pub mod fake;
#[allow(unsafe_code)]
mod ffi;
pub mod map;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML could not be initialised: {0}")]
    Init(#[source] NvmlError),
    #[error("NVML: {what}: {source}")]
    Nvml {
        what: String,
        #[source]
        source: NvmlError,
    },
}

fn nvml_err(what: impl Into<String>) -> impl FnOnce(NvmlError) -> GpuError {
    let what = what.into();
    move |source| GpuError::Nvml { what, source }
}

/// One physical GPU board.
pub trait Gpu {
    /// The minor number of its /dev/nvidiaN device file.
    fn minor(&self) -> u32;
    fn uuid(&self) -> &str;
    fn name(&self) -> &str;
    /// Whether the board is split between users (MIG): its energy is the whole board's.
    fn shared(&self) -> bool;
    /// The energy counter, in millijoules since the driver was loaded; `None` where the
    /// GPU has no counter (before Volta).
    fn energy(&self) -> Result<Option<u64>, GpuError>;
    /// Power drawn: the value and what it means (see `PowerKind`).
    fn power(&self) -> Result<PowerReading, GpuError>;
}

/// What a power reading means. NVML's `nvmlDeviceGetPowerUsage` is a one-second mean on
/// Ampere and newer except GA100 (A100, A30), and the power of the moment on GA100 and
/// older; the fields `NVML_FI_DEV_POWER_AVERAGE` / `_INSTANT` say it themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PowerKind {
    /// Mean over the last second.
    #[serde(rename = "avg")]
    Average1s,
    /// The power of the moment.
    #[serde(rename = "inst")]
    Instant,
    /// Both, at different samples (a summary only: one reading is never mixed).
    #[serde(rename = "mixed")]
    Mixed,
}

impl PowerKind {
    /// The kind of a series of readings of kinds `self` and `other`.
    pub fn combine(self, other: PowerKind) -> PowerKind {
        if self == other {
            self
        } else {
            PowerKind::Mixed
        }
    }

    /// The record's word for it.
    pub fn token(self) -> &'static str {
        match self {
            PowerKind::Average1s => "avg",
            PowerKind::Instant => "inst",
            PowerKind::Mixed => "mixed",
        }
    }

    /// The record's flag for energy integrated from samples of this kind: `pwavg`,
    /// `pwinst`, `pwmixed`.
    pub fn flag(self) -> &'static str {
        match self {
            PowerKind::Average1s => "pwavg",
            PowerKind::Instant => "pwinst",
            PowerKind::Mixed => "pwmixed",
        }
    }

    pub fn is_flag(f: &str) -> bool {
        ["pwavg", "pwinst", "pwmixed"].contains(&f)
    }

    pub fn from_token(s: &str) -> Option<PowerKind> {
        match s {
            "avg" => Some(PowerKind::Average1s),
            "inst" => Some(PowerKind::Instant),
            "mixed" => Some(PowerKind::Mixed),
            _ => None,
        }
    }
}

/// One power reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerReading {
    pub mw: Milliwatts,
    pub kind: PowerKind,
}

/// What `nvmlDeviceGetPowerUsage` means on a board: instantaneous on GA100 (A100, A30,
/// A800: PCI device ids 0x20xx) and on every architecture before Ampere, a one-second
/// mean on the other Ampere boards and everything newer (NVML's documentation of
/// nvmlDeviceGetPowerUsage). An architecture NVML cannot tell is taken as old.
pub fn power_usage_kind(
    arch: Option<DeviceArchitecture>,
    name: &str,
    pci_device_id: Option<u32>,
) -> PowerKind {
    use DeviceArchitecture as A;
    match arch {
        Some(A::Ampere) if is_ga100(name, pci_device_id) => PowerKind::Instant,
        Some(A::Ampere | A::Ada | A::Hopper | A::Blackwell | A::Unknown) => PowerKind::Average1s,
        Some(A::Kepler | A::Maxwell | A::Pascal | A::Volta | A::Turing) | None => {
            PowerKind::Instant
        }
    }
}

/// A GA100 board, by its PCI device id (`pciDeviceId >> 16` in 0x2080..=0x20ff) or by
/// a word of its name (A100, A100X, A800, A30, A30X).
fn is_ga100(name: &str, pci_device_id: Option<u32>) -> bool {
    if let Some(id) = pci_device_id {
        if (0x2080..=0x20ff).contains(&(id >> 16)) && id & 0xffff == 0x10de {
            return true;
        }
    }
    name.split([' ', '-'])
        .any(|w| ["A100", "A100X", "A800", "A30", "A30X", "GA100"].contains(&w))
}

/// A MIG instance of a board as NVML describes it (GPU instance, compute instance).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigInstance {
    pub gi: u32,
    pub ci: u32,
    /// Streaming multiprocessors of the instance (NVML's device attributes).
    pub sm_count: u32,
    /// `MIG-...`
    pub uuid: String,
}

/// What NVML says about one board: the keys a job's GPUs can be found by, and what a
/// shared board's energy is divided by.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct BoardInfo {
    /// NVML's index (PCI bus order).
    pub index: u32,
    pub minor: u32,
    pub uuid: String,
    /// `00000000:41:00.0`, as NVML writes it.
    pub pci_bus_id: String,
    pub name: String,
    /// MIG mode currently enabled.
    pub mig: bool,
    /// Streaming multiprocessors of the whole board, where NVML tells.
    pub sm_count: Option<u32>,
    /// MIG instances (empty unless `mig`).
    pub instances: Vec<MigInstance>,
    /// SMs that MIG can hand out on this board: those of its largest GPU instance
    /// profile (A100: 98 of 108, H100 SXM: 132). `None` unless `mig` or where NVML
    /// does not tell. NVML documents `sm_count`'s call (device attributes) for MIG
    /// device handles only, so on a board this may be the only SM count there is.
    #[serde(default)]
    pub mig_sm_count: Option<u32>,
}

/// A host's set of GPUs.
pub trait GpuHost {
    /// Driver version, for the record's provenance.
    fn driver(&self) -> String;
    /// Opens the GPUs with the given device minor numbers, in that order. A minor with
    /// no GPU is an error: a job's GPUs must all be measured or the gap be known.
    fn open_minors(&self, minors: &[u32]) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError>;
    /// Every GPU of the host, in NVML's (PCI bus) order.
    fn open_all(&self) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError>;
    /// What NVML says about every board, in NVML's order (for mapping a job's GPUs).
    fn boards(&self) -> Result<Vec<BoardInfo>, GpuError> {
        Ok(self
            .open_all()?
            .iter()
            .enumerate()
            .map(|(i, g)| BoardInfo {
                index: i as u32,
                minor: g.minor(),
                uuid: g.uuid().to_string(),
                name: g.name().to_string(),
                mig: g.shared(),
                ..BoardInfo::default()
            })
            .collect())
    }
}

pub struct NvmlHost {
    nvml: Nvml,
}

impl NvmlHost {
    /// Loads libnvidia-ml (from `lib` when given, else the system's) and initialises it.
    pub fn open(lib: Option<&Path>) -> Result<NvmlHost, GpuError> {
        let nvml = match lib {
            Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
            None => Nvml::init(),
        }
        .map_err(GpuError::Init)?;
        Ok(NvmlHost { nvml })
    }

    fn wrap<'a>(&'a self, device: Device<'a>) -> Result<NvmlGpu<'a>, GpuError> {
        let minor = device.minor_number().map_err(nvml_err("minor number"))?;
        let uuid = device.uuid().unwrap_or_else(|_| format!("minor-{minor}"));
        let name = device.name().unwrap_or_else(|_| "unknown".into());
        let shared = matches!(device.mig_mode(), Ok(m) if m.current == 1);
        Ok(NvmlGpu {
            device,
            minor,
            uuid,
            name,
            shared,
            fields: Cell::new(true),
            usage_kind: Cell::new(None),
        })
    }

    /// What NVML says of one board; a MIG instance that cannot be read is logged and
    /// left out (a job on it is then not found, rather than charged a guess).
    fn board(&self, index: u32) -> Result<BoardInfo, GpuError> {
        let device = self
            .nvml
            .device_by_index(index)
            .map_err(nvml_err(format!("device {index}")))?;
        let minor = device
            .minor_number()
            .map_err(nvml_err(format!("minor number of device {index}")))?;
        let uuid = device
            .uuid()
            .map_err(nvml_err(format!("uuid of device {index}")))?;
        let pci_bus_id = device.pci_info().map(|p| p.bus_id).unwrap_or_default();
        let name = device.name().unwrap_or_else(|_| "unknown".into());
        let mig = matches!(device.mig_mode(), Ok(m) if m.current == 1);
        let sm_count = match device.attributes() {
            Ok(a) if a.multiprocessor_count > 0 => Some(a.multiprocessor_count),
            Ok(_) => None,
            Err(e) => {
                log::debug!("SM count of GPU {uuid}: {e}");
                None
            }
        };
        let mut instances = Vec::new();
        let mut mig_sm_count = None;
        if mig {
            // NVML_GPU_INSTANCE_PROFILE_1_SLICE (0) .. _6_SLICE (6); ids a board lacks
            // answer an error.
            mig_sm_count = (0..=6)
                .filter_map(|p| device.profile_info(p).ok())
                .map(|p| p.multiprocessor_count)
                .max()
                .filter(|&n| n > 0);
            let slots = match device.mig_device_count() {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("MIG devices of GPU {uuid} (minor {minor}): {e}");
                    0
                }
            };
            for slot in 0..slots {
                match self.mig_instance(&device, slot) {
                    Ok(Some(m)) => instances.push(m),
                    Ok(None) => {}
                    Err(e) => log::warn!(
                        "MIG device {slot} of GPU {uuid} (minor {minor}): {}",
                        crate::logging::chain(&e)
                    ),
                }
            }
        }
        Ok(BoardInfo {
            index,
            minor,
            uuid,
            pci_bus_id,
            name,
            mig,
            sm_count,
            instances,
            mig_sm_count,
        })
    }

    /// The MIG device in `slot` of a board; `None` where the slot is free.
    fn mig_instance(&self, board: &Device, slot: u32) -> Result<Option<MigInstance>, GpuError> {
        let m = match board.mig_device_by_index(slot) {
            Ok(m) => m,
            Err(NvmlError::NotFound) => return Ok(None),
            Err(e) => return Err(nvml_err("handle")(e)),
        };
        let uuid = m.uuid().map_err(nvml_err("uuid"))?;
        let (gi, ci) =
            ffi::mig_instance_ids(&m).map_err(nvml_err(format!("instance ids of {uuid}")))?;
        let sm_count = m
            .attributes()
            .map_err(nvml_err(format!("SM count of {uuid}")))?
            .multiprocessor_count;
        Ok(Some(MigInstance {
            gi,
            ci,
            sm_count,
            uuid,
        }))
    }
}

impl GpuHost for NvmlHost {
    fn driver(&self) -> String {
        self.nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".into())
    }

    fn open_minors(&self, minors: &[u32]) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
        let mut all = self.open_all()?;
        let mut out: Vec<Box<dyn Gpu + '_>> = Vec::with_capacity(minors.len());
        for &minor in minors {
            let pos =
                all.iter()
                    .position(|g| g.minor() == minor)
                    .ok_or_else(|| GpuError::Nvml {
                        what: format!("no GPU with device minor {minor}"),
                        source: NvmlError::NotFound,
                    })?;
            out.push(all.swap_remove(pos));
        }
        Ok(out)
    }

    fn open_all(&self) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
        let count = self.nvml.device_count().map_err(nvml_err("device count"))?;
        let mut out: Vec<Box<dyn Gpu + '_>> = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(nvml_err(format!("device {index}")))?;
            out.push(Box::new(self.wrap(device)?));
        }
        Ok(out)
    }

    fn boards(&self) -> Result<Vec<BoardInfo>, GpuError> {
        let count = self.nvml.device_count().map_err(nvml_err("device count"))?;
        (0..count).map(|i| self.board(i)).collect()
    }
}

struct NvmlGpu<'a> {
    device: Device<'a>,
    minor: u32,
    uuid: String,
    name: String,
    shared: bool,
    /// Whether NVML's power fields are still worth asking for (false once the board
    /// said it has neither).
    fields: Cell<bool>,
    /// What `nvmlDeviceGetPowerUsage` means here, once worked out.
    usage_kind: Cell<Option<PowerKind>>,
}

const FIELD_POWER_AVERAGE: u32 = 185; // NVML_FI_DEV_POWER_AVERAGE
const FIELD_POWER_INSTANT: u32 = 186; // NVML_FI_DEV_POWER_INSTANT

/// Milliwatts from a power field's value.
fn field_mw(v: &SampleValue) -> Option<f64> {
    match *v {
        SampleValue::U32(x) => Some(f64::from(x)),
        SampleValue::U64(x) => Some(x as f64),
        SampleValue::I64(x) if x >= 0 => Some(x as f64),
        SampleValue::F64(x) if x.is_finite() && x >= 0.0 => Some(x),
        _ => None,
    }
}

/// The reading to use from NVML's answer for the two power fields: the one-second mean
/// where the board gives it, else the instant power. `Err(true)` when the board has
/// neither (asking again is pointless), `Err(false)` when this read failed.
fn pick_field(samples: &[Result<FieldValueSample, NvmlError>]) -> Result<PowerReading, bool> {
    let mut unsupported = 0;
    for (id, kind) in [
        (FIELD_POWER_AVERAGE, PowerKind::Average1s),
        (FIELD_POWER_INSTANT, PowerKind::Instant),
    ] {
        let Some(Ok(sample)) = samples
            .iter()
            .find(|s| matches!(s, Ok(s) if s.field.0 == id))
        else {
            continue;
        };
        match &sample.value {
            Ok(v) => {
                if let Some(mw) = field_mw(v) {
                    return Ok(PowerReading {
                        mw: Milliwatts(mw),
                        kind,
                    });
                }
            }
            Err(NvmlError::NotSupported) => unsupported += 1,
            Err(_) => {}
        }
    }
    Err(unsupported == 2)
}

impl NvmlGpu<'_> {
    fn usage_kind(&self) -> PowerKind {
        if let Some(k) = self.usage_kind.get() {
            return k;
        }
        let arch = self.device.architecture().ok();
        let pci = self.device.pci_info().ok().map(|p| p.pci_device_id);
        let k = power_usage_kind(arch, &self.name, pci);
        self.usage_kind.set(Some(k));
        k
    }
}

impl Gpu for NvmlGpu<'_> {
    fn minor(&self) -> u32 {
        self.minor
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn shared(&self) -> bool {
        self.shared
    }
    fn energy(&self) -> Result<Option<u64>, GpuError> {
        match self.device.total_energy_consumption() {
            Ok(mj) => Ok(Some(mj)),
            Err(NvmlError::NotSupported) => Ok(None),
            Err(e) => Err(nvml_err(format!("energy of minor {}", self.minor))(e)),
        }
    }
    fn power(&self) -> Result<PowerReading, GpuError> {
        if self.fields.get() {
            let ids = [FieldId(FIELD_POWER_AVERAGE), FieldId(FIELD_POWER_INSTANT)];
            match self.device.field_values_for(&ids) {
                Ok(samples) => match pick_field(&samples) {
                    Ok(r) => return Ok(r),
                    Err(neither) => self.fields.set(!neither),
                },
                Err(NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)) => {
                    self.fields.set(false)
                }
                Err(e) => log::debug!("power fields of minor {}: {e}", self.minor),
            }
        }
        let mw = self
            .device
            .power_usage()
            .map_err(nvml_err(format!("power of minor {}", self.minor)))?;
        Ok(PowerReading {
            mw: Milliwatts(f64::from(mw)),
            kind: self.usage_kind(),
        })
    }
}

/// Opens a host's GPUs (NVML, from a given libnvidia-ml, in production). `'static`,
/// `Send` and `Sync` so that it can run in a helper thread that may never return.
pub type OpenHost = dyn Fn(Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> + Send + Sync;

/// The production [`OpenHost`]: NVML, from `lib` when given.
pub fn open_nvml(lib: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
    NvmlHost::open(lib).map(|h| Box::new(h) as Box<dyn GpuHost>)
}

/// The end counters read by `end_counters_within`, one per requested minor.
#[derive(Debug, Clone, PartialEq)]
pub enum CounterRead {
    /// Every GPU answered: its counter, or `None` where it has none or the read failed.
    Done(Vec<Option<u64>>),
    /// NVML could not be opened or a minor not found: no counter at all.
    Failed(String),
    /// NVML did not finish in time: the counters read until then, and the call that
    /// did not return.
    TimedOut {
        counters: Vec<Option<u64>>,
        stuck_in: String,
    },
}

enum Step {
    Doing(String),
    Counter(usize, Option<u64>),
    Failed(String),
    Done,
}

/// Opens NVML and reads the energy counters of `minors` in a helper thread, waiting at
/// most `limit` for it: a wedged driver can block an NVML call forever, and the epilog
/// must return in bounded time. A thread that does not finish is left behind (it ends
/// with the process).
pub fn end_counters_within(
    open: &'static OpenHost,
    lib: Option<PathBuf>,
    minors: Vec<u32>,
    limit: Duration,
) -> CounterRead {
    let deadline = Instant::now() + limit;
    let n = minors.len();
    let (tx, rx) = mpsc::channel();
    let work = move || {
        let _ = tx.send(Step::Doing("initialising NVML".into()));
        let host = match open(lib.as_deref()) {
            Ok(h) => h,
            Err(e) => return drop(tx.send(Step::Failed(crate::logging::chain(&e)))),
        };
        let _ = tx.send(Step::Doing(format!("opening GPU minors {minors:?}")));
        let gpus = match host.open_minors(&minors) {
            Ok(g) => g,
            Err(e) => return drop(tx.send(Step::Failed(crate::logging::chain(&e)))),
        };
        for (i, g) in gpus.iter().enumerate() {
            let what = format!("reading the energy counter of GPU minor {}", g.minor());
            let _ = tx.send(Step::Doing(what));
            let _ = tx.send(Step::Counter(i, g.energy().ok().flatten()));
        }
        let _ = tx.send(Step::Done);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("spank-carbon-nvml".into())
        .spawn(work)
    {
        return CounterRead::Failed(format!("starting a thread for NVML: {e}"));
    }
    let mut counters = vec![None; n];
    let mut doing = String::from("starting");
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Step::Doing(what)) => doing = what,
            Ok(Step::Counter(i, c)) => {
                if let Some(slot) = counters.get_mut(i) {
                    *slot = c;
                }
            }
            Ok(Step::Failed(why)) => return CounterRead::Failed(why),
            Ok(Step::Done) => return CounterRead::Done(counters),
            Err(RecvTimeoutError::Timeout) => {
                return CounterRead::TimedOut {
                    counters,
                    stuck_in: doing,
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return CounterRead::Failed(format!("the NVML thread ended while {doing}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeGpu, FakeHost};
    use super::*;

    fn gpu(minor: u32) -> FakeGpu {
        FakeGpu::new(minor, 100_000.0, Some(1_000_000 + u64::from(minor)))
    }

    /// Minor 2's counter read hangs.
    fn host_stuck_on_2(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        let stuck = FakeGpu {
            hangs: true,
            ..gpu(2)
        };
        Ok(Box::new(FakeHost(vec![gpu(0), stuck, gpu(5)])))
    }

    fn init_hangs(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        loop {
            std::thread::park();
        }
    }

    fn no_nvml(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        Err(GpuError::Init(NvmlError::DriverNotLoaded))
    }

    const LIMIT: Duration = Duration::from_millis(200);

    #[test]
    fn power_usage_means_what_the_generation_makes_it() {
        use DeviceArchitecture as A;
        let avg = PowerKind::Average1s;
        let inst = PowerKind::Instant;
        for (arch, name, pci, want) in [
            (Some(A::Ampere), "NVIDIA A100-SXM4-80GB", None, inst),
            (Some(A::Ampere), "NVIDIA A100 80GB PCIe", None, inst),
            (Some(A::Ampere), "NVIDIA A30", None, inst),
            (Some(A::Ampere), "NVIDIA A800-SXM4-80GB", None, inst),
            // GA100 by its PCI device id, whatever the name
            (
                Some(A::Ampere),
                "NVIDIA Graphics Device",
                Some(0x20b0_10de),
                inst,
            ),
            (Some(A::Ampere), "NVIDIA A40", Some(0x2235_10de), avg),
            (Some(A::Ampere), "NVIDIA RTX A3000 Laptop GPU", None, avg),
            (Some(A::Ampere), "NVIDIA A10", None, avg),
            (Some(A::Ada), "NVIDIA L40S", None, avg),
            (Some(A::Hopper), "NVIDIA H100 80GB HBM3", None, avg),
            (Some(A::Blackwell), "NVIDIA B200", None, avg),
            (Some(A::Unknown), "NVIDIA next", None, avg),
            (Some(A::Volta), "Tesla V100-SXM2-32GB", None, inst),
            (Some(A::Turing), "Tesla T4", None, inst),
            (None, "NVIDIA H100 80GB HBM3", None, inst),
        ] {
            assert_eq!(
                power_usage_kind(arch.clone(), name, pci),
                want,
                "{name} {arch:?}"
            );
        }
    }

    #[test]
    fn power_kinds_combine_and_round_trip() {
        use PowerKind::*;
        for k in [Average1s, Instant, Mixed] {
            assert_eq!(PowerKind::from_token(k.token()), Some(k));
            assert_eq!(k.combine(k), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.token())
            );
        }
        assert_eq!(Average1s.combine(Instant), Mixed);
        assert_eq!(Mixed.combine(Average1s), Mixed);
        assert_eq!(PowerKind::from_token("x"), None);
        for k in [Average1s, Instant, Mixed] {
            assert!(PowerKind::is_flag(k.flag()));
        }
    }

    #[test]
    fn the_mean_field_wins_and_a_missing_one_falls_back() {
        use nvml_wrapper::enums::device::SampleValue as V;
        let s = |id, value| {
            Ok(FieldValueSample {
                field: FieldId(id),
                timestamp: 0,
                latency: 0,
                value,
            })
        };
        let avg = FIELD_POWER_AVERAGE;
        let inst = FIELD_POWER_INSTANT;
        let got = pick_field(&[s(avg, Ok(V::U32(7000))), s(inst, Ok(V::U32(9000)))]);
        assert_eq!(
            got.map(|r| (r.mw.0, r.kind)),
            Ok((7000.0, PowerKind::Average1s))
        );
        let got = pick_field(&[
            s(avg, Err(NvmlError::NotSupported)),
            s(inst, Ok(V::U64(9000))),
        ]);
        assert_eq!(
            got.map(|r| (r.mw.0, r.kind)),
            Ok((9000.0, PowerKind::Instant))
        );
        let neither = [
            s(avg, Err(NvmlError::NotSupported)),
            s(inst, Err(NvmlError::NotSupported)),
        ];
        assert_eq!(pick_field(&neither), Err(true));
        let failed = [
            s(avg, Err(NvmlError::Unknown)),
            s(inst, Err(NvmlError::NotSupported)),
        ];
        assert_eq!(pick_field(&failed), Err(false));
        // A value that is no power at all is not taken.
        let odd = [s(avg, Ok(V::F64(f64::NAN))), s(inst, Ok(V::I64(-1)))];
        assert_eq!(pick_field(&odd), Err(false));
    }

    #[test]
    fn counters_read_in_time() {
        let read = end_counters_within(&host_stuck_on_2, None, vec![5, 0], LIMIT);
        assert_eq!(
            read,
            CounterRead::Done(vec![gpu(5).counter.get(), gpu(0).counter.get()])
        );
        let read = end_counters_within(&host_stuck_on_2, None, vec![0, 7], LIMIT);
        assert!(
            matches!(&read, CounterRead::Failed(why) if why.contains("minor 7")),
            "{read:?}"
        );
        let read = end_counters_within(&no_nvml, None, vec![0], LIMIT);
        assert!(matches!(read, CounterRead::Failed(_)), "{read:?}");
    }

    #[test]
    fn a_hung_call_is_abandoned_at_the_limit() {
        for (open, minors, got, stuck) in [
            (
                &host_stuck_on_2 as &'static OpenHost,
                vec![0, 2, 5],
                vec![gpu(0).counter.get(), None, None],
                "minor 2",
            ),
            (
                &init_hangs as &'static OpenHost,
                vec![0],
                vec![None],
                "initialising",
            ),
        ] {
            let t0 = Instant::now();
            let read = end_counters_within(open, None, minors, LIMIT);
            let took = t0.elapsed();
            assert!(
                took >= LIMIT && took < LIMIT + Duration::from_millis(500),
                "{took:?}"
            );
            match read {
                CounterRead::TimedOut { counters, stuck_in } => {
                    assert_eq!(counters, got);
                    assert!(stuck_in.contains(stuck), "{stuck_in}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
