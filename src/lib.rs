//! spank-carbon: the GPU energy and CO2e of every Slurm job, in its accounting record.
//!
//! Layers, bottom to top (a module imports only from layers below it; see
//! docs/ARCHITECTURE.md): `units` and `logging`; `slurm` (Slurm's formats and tools);
//! `record`; `core` (pure policy: energy, intensity, config, fair-share, report); `gpu`
//! (NVML behind a trait, the job's boards); `accounting` (the merge protocol); `node`
//! (what runs on a node); `check`; `plugin` (where Slurm calls in). `unsafe` code is
//! denied everywhere but the FFI modules: `plugin`, `slurm::sys` and `gpu::ffi`.

#![deny(unsafe_code)]

pub mod accounting;
pub mod check;
pub mod core;
pub mod gpu;
pub mod logging;
pub mod node;
pub mod record;
pub mod slurm;
pub mod units;

#[allow(unsafe_code)]
mod plugin;

#[cfg(test)]
mod architecture;

/// The Slurm version whose headers this build used.
pub const SLURM_VERSION: &str = env!("SPANK_CARBON_SLURM_VERSION");
