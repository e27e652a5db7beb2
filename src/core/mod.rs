//! The pure core: energy integration, carbon intensity, configuration, the fair-share
//! policy, reports over records and the end mail's footprint (and calendar dates). No
//! I/O, no Slurm processes, no NVML.

pub mod calendar;
pub mod config;
pub mod energy;
pub mod fairshare;
pub mod intensity;
pub mod mail;
pub mod report;
