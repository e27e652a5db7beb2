//! A scripted GPU host for unit tests (the sampler, the epilog's bounded NVML read and
//! `check`'s), and the device files of a node's GPUs.

use std::cell::Cell;
use std::path::Path;

use nvml_wrapper::error::NvmlError;

use super::{Gpu, GpuError, GpuHost, PowerKind, PowerReading};
use crate::units::Milliwatts;

pub struct FakeGpu {
    pub minor: u32,
    pub power_mw: f64,
    pub counter: Cell<Option<u64>>,
    pub shared: bool,
    pub fail_power: bool,
    /// Millijoules the counter advances at every read (a GPU at work); 0: it stands.
    pub counter_step: u64,
    /// Reading the counter never returns (a wedged driver).
    pub hangs: bool,
    /// What its power readings are, in turn.
    pub kinds: &'static [PowerKind],
    /// Power readings so far.
    pub readings: Cell<usize>,
}

impl FakeGpu {
    /// A board drawing `power_mw` (one-second means) whose counter stands at `counter`.
    pub fn new(minor: u32, power_mw: f64, counter: Option<u64>) -> FakeGpu {
        FakeGpu {
            minor,
            power_mw,
            counter: Cell::new(counter),
            shared: false,
            fail_power: false,
            counter_step: 0,
            hangs: false,
            kinds: &[PowerKind::Average1s],
            readings: Cell::new(0),
        }
    }
}

impl Gpu for &FakeGpu {
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
        if self.hangs {
            loop {
                std::thread::park();
            }
        }
        let c = self.counter.get().map(|c| c + self.counter_step);
        self.counter.set(c);
        Ok(c)
    }
    fn power(&self) -> Result<PowerReading, GpuError> {
        let n = self.readings.get();
        self.readings.set(n + 1);
        if self.fail_power {
            return Err(GpuError::Nvml {
                what: "power".into(),
                source: NvmlError::Unknown,
            });
        }
        Ok(PowerReading {
            mw: Milliwatts(self.power_mw),
            kind: self.kinds[n % self.kinds.len()],
        })
    }
}

/// A host of fake GPUs, in NVML's order.
pub struct FakeHost(pub Vec<FakeGpu>);

impl GpuHost for FakeHost {
    fn driver(&self) -> String {
        "fake".into()
    }
    fn open_minors(&self, minors: &[u32]) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
        minors
            .iter()
            .map(|m| {
                let g = self
                    .0
                    .iter()
                    .find(|g| g.minor == *m)
                    .ok_or(GpuError::Nvml {
                        what: format!("no GPU with device minor {m}"),
                        source: NvmlError::NotFound,
                    })?;
                Ok(Box::new(g) as Box<dyn Gpu>)
            })
            .collect()
    }
    fn open_all(&self) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
        Ok(self.0.iter().map(|g| Box::new(g) as Box<dyn Gpu>).collect())
    }
}

/// The character-device majors of /dev/nvidiaN and of /dev/nvidia-caps/nvidia-capN.
pub const NVIDIA: u32 = 195;
pub const CAPS: u32 = 508;

/// A stat of a node's GPU device files: /dev/nvidiaN is (NVIDIA, N),
/// /dev/nvidia-caps/nvidia-capN (CAPS, N), nothing else a device.
pub fn nvidia_stat(p: &Path) -> Option<(u32, u32)> {
    let s = p.to_str()?;
    if let Some(n) = s.strip_prefix("/dev/nvidia-caps/nvidia-cap") {
        return Some((CAPS, n.parse().ok()?));
    }
    s.strip_prefix("/dev/nvidia")?
        .parse()
        .ok()
        .map(|n| (NVIDIA, n))
}
