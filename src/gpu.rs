//! GPU access behind a trait: NVML (through nvml-wrapper, which loads libnvidia-ml at
//! run time) in production, scripted fakes in tests.

use std::path::Path;

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

/// A host's set of GPUs.
pub trait GpuHost {
    /// Driver version, for the record's provenance.
    fn driver(&self) -> String;
    /// Opens the GPUs with the given device minor numbers, in that order. A minor with
    /// no GPU is an error: a job's GPUs must all be measured or the gap be known.
    fn open_minors(&self, minors: &[u32]) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError>;
    /// Every GPU of the host, in NVML's (PCI bus) order.
    fn open_all(&self) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError>;
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
