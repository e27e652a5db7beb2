//! The node's local record of a job: kept in `records/` (see `retention`) for audit and
//! later reports, beside the record delivered to accounting.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::core::config::{Config, Field};
use crate::node::retention;
use crate::node::sampler::{NodeResult, SamplerState};
use crate::node::state::{JobKey, StateDir, StateError};
use crate::record::NodePart;

/// The node's local record, kept in `records/` for audit and later reports.
#[derive(Debug, Clone, Serialize)]
pub struct LocalRecord<'a> {
    pub version: u32,
    pub job: u32,
    pub node: &'a str,
    pub nodes: &'a [String],
    pub field: Field,
    pub intensity_g_per_kwh: f64,
    pub pue: f64,
    pub driver: &'a str,
    pub window: Window,
    pub result: &'a NodeResult,
    pub co2e_g: f64,
    pub sampler_stop: Option<&'a str>,
    pub series_bucket_s: f64,
    pub series_mj: &'a [f64],
    pub segment_part: Option<&'a NodePart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sluid: Option<&'a str>,
    /// How the job's GPUs here were found: the prolog's selection (`gpu_map`'s spec: `m3`
    /// a device minor, `u:GPU-...` a UUID Slurm gave, `g0.1.0` a MIG instance, `n2/4` an
    /// NVML position, `ask:` slurmctld's allocation, `~` a share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_by: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    pub start_unix: f64,
    pub end_unix: f64,
    pub seconds: f64,
}

/// Appends the node's local record to the day's file in `records/` (see `retention`);
/// returns that file.
#[allow(clippy::too_many_arguments)]
pub fn write_local_record(
    config: &Config,
    state: &StateDir,
    key: &JobKey,
    nodes: &[String],
    final_state: &SamplerState,
    result: &NodeResult,
    part: Option<&NodePart>,
    sluid: Option<&str>,
    found_by: Option<&str>,
) -> Result<PathBuf, StateError> {
    let local = LocalRecord {
        version: 1,
        job: key.job,
        node: &key.node,
        nodes,
        field: config.field,
        intensity_g_per_kwh: config.intensity.0,
        pue: config.pue,
        driver: &final_state.driver,
        window: Window {
            start_unix: result.start_unix,
            end_unix: result.end_unix,
            seconds: result.end_unix - result.start_unix,
        },
        result,
        co2e_g: part.map_or(0.0, |p| p.co2e_g),
        sampler_stop: final_state.stop_reason.as_deref(),
        series_bucket_s: final_state.series.bucket_s,
        series_mj: &final_state.series.mj,
        segment_part: part,
        sluid,
        found_by,
    };
    retention::append_record(state, SystemTime::now(), &local)
}
