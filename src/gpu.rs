//! GPU access behind a trait: NVML (through nvml-wrapper, which loads libnvidia-ml at
//! run time) in production, scripted fakes in tests.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use crate::units::Milliwatts;

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
    /// Power drawn now (a one-second average on Ampere and newer).
    fn power(&self) -> Result<Milliwatts, GpuError>;
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
        })
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
}

struct NvmlGpu<'a> {
    device: Device<'a>,
    minor: u32,
    uuid: String,
    name: String,
    shared: bool,
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
    fn power(&self) -> Result<Milliwatts, GpuError> {
        self.device
            .power_usage()
            .map(|mw| Milliwatts(mw as f64))
            .map_err(nvml_err(format!("power of minor {}", self.minor)))
    }
}

/// Opens a host's GPUs (NVML, from a given libnvidia-ml, in production). `'static`,
/// `Send` and `Sync` so that it can run in a helper thread that may never return.
pub type OpenHost = dyn Fn(Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> + Send + Sync;

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
pub mod fake {
    //! A scripted GPU for unit tests of the sampler and the job logic.
    use super::*;
    use std::cell::Cell;

    pub struct FakeGpu {
        pub minor: u32,
        pub power_mw: f64,
        pub counter: Cell<Option<u64>>,
        pub shared: bool,
        pub fail_power: bool,
    }

    impl Gpu for FakeGpu {
        fn minor(&self) -> u32 {
            self.minor
        }
        fn uuid(&self) -> &str {
            "GPU-fake"
        }
        fn name(&self) -> &str {
            "Fake"
        }
        fn shared(&self) -> bool {
            self.shared
        }
        fn energy(&self) -> Result<Option<u64>, GpuError> {
            Ok(self.counter.get())
        }
        fn power(&self) -> Result<Milliwatts, GpuError> {
            if self.fail_power {
                return Err(GpuError::Nvml {
                    what: "power".into(),
                    source: NvmlError::Unknown,
                });
            }
            Ok(Milliwatts(self.power_mw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeGpu;
    use super::*;
    use std::cell::Cell;

    /// A host whose GPUs answer at once, except that reading `stuck_minor`'s counter
    /// (or opening NVML at all, for `u32::MAX`) never returns.
    struct Host {
        gpus: Vec<(FakeGpu, bool)>,
    }

    struct Stuck<'a>(&'a FakeGpu, bool);

    impl Gpu for Stuck<'_> {
        fn minor(&self) -> u32 {
            self.0.minor()
        }
        fn uuid(&self) -> &str {
            self.0.uuid()
        }
        fn name(&self) -> &str {
            self.0.name()
        }
        fn shared(&self) -> bool {
            self.0.shared()
        }
        fn energy(&self) -> Result<Option<u64>, GpuError> {
            if self.1 {
                loop {
                    std::thread::park();
                }
            }
            self.0.energy()
        }
        fn power(&self) -> Result<Milliwatts, GpuError> {
            self.0.power()
        }
    }

    impl GpuHost for Host {
        fn driver(&self) -> String {
            "fake".into()
        }
        fn open_minors(&self, minors: &[u32]) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
            minors
                .iter()
                .map(|m| {
                    let (g, stuck) =
                        self.gpus
                            .iter()
                            .find(|(g, _)| g.minor == *m)
                            .ok_or(GpuError::Nvml {
                                what: format!("no GPU with device minor {m}"),
                                source: NvmlError::NotFound,
                            })?;
                    Ok(Box::new(Stuck(g, *stuck)) as Box<dyn Gpu>)
                })
                .collect()
        }
        fn open_all(&self) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
            self.open_minors(&self.gpus.iter().map(|(g, _)| g.minor).collect::<Vec<_>>())
        }
    }

    fn gpu(minor: u32) -> FakeGpu {
        FakeGpu {
            minor,
            power_mw: 100_000.0,
            counter: Cell::new(Some(1_000_000 + u64::from(minor))),
            shared: false,
            fail_power: false,
        }
    }

    /// Minor 2's counter read hangs.
    fn host_stuck_on_2(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        Ok(Box::new(Host {
            gpus: vec![(gpu(0), false), (gpu(2), true), (gpu(5), false)],
        }))
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
