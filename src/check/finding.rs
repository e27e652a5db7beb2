//! One line of `spank-carbon check`: its status, what was found, what to change, and for
//! a gres index what the plugin would do with a job holding it.

use serde::Serialize;

use crate::gpu::MigInstance;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// One line of the check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to change; `None` when ok.
    pub fix: Option<String>,
    /// For a gres index: what the plugin would do with a job holding it (`--json` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuMapping>,
}

pub(crate) fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
        gpu: None,
    }
}

pub(crate) fn warning(
    check: &'static str,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        status: Status::Warning,
        detail: detail.into(),
        fix: Some(fix.into()),
        gpu: None,
    }
}

pub(crate) fn error(
    check: &'static str,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        status: Status::Error,
        detail: detail.into(),
        fix: Some(fix.into()),
        gpu: None,
    }
}

/// The mapping of one simulated job, in `--json`'s `gpu` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuMapping {
    /// The gres index (`null`: a job given by UUID, see `key`).
    pub index: Option<usize>,
    /// `gpu`, `mps`, `shard`.
    pub job: &'static str,
    /// The job's MPS count or shard count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_share: Option<u64>,
    pub files: Vec<String>,
    /// The key the prolog passes the sampler (`--gpus`: `m3`, `u:GPU-...`, `g0.1.0`,
    /// `n2/4`, `e2/4`, with `~mps25` or `~sh1/8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub boards: Vec<MappedBoard>,
    /// The refusal's reason, when the job's GPUs would not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A board the job would be charged for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappedBoard {
    pub nvml_index: u32,
    pub minor: u32,
    pub uuid: String,
    pub name: String,
    /// The MIG instances the job holds on it.
    pub mig_instances: Vec<MigInstance>,
    /// `whole`, `mig-sm`, `mps`, `shard`.
    pub rule: &'static str,
    /// Fraction of the board's energy charged.
    pub share: f64,
    /// MIG: fraction of the board's SMs in no instance (never charged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unallocated: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board_shards: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board_mps: Option<u64>,
}
