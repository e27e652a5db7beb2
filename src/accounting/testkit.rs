//! Fixtures for the accounting module's tests: records, rows and timings.

use super::rows::{JobRows, Row, Rows};
use super::{Delivery, Policy, Timing};
use crate::core::config::{EnergyTres, Field};
use crate::record::{self, Meta, Method, NodePart};
use crate::slurm::Differences;
use crate::units::GramsPerKwh;
use std::time::Duration;

pub(super) fn part(node: &str, wh: f64) -> NodePart {
    NodePart::new(node, wh, 1, wh, Method::Counter, (1.0, 2.0))
}

pub(super) fn delivery(node: &str, wh: f64, nodes: &[&str]) -> Delivery {
    Delivery {
        job: 9,
        field: Field::System,
        part: part(node, wh),
        meta: Meta {
            intensity: GramsPerKwh(475.0),
            pue: 1.58,
            expected_nodes: nodes.len() as u32,
        },
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        sluid: None,
    }
}

/// Every job asked for has `value` (one run, ended), or none is in accounting yet.
pub(super) fn rows(jobs: &[u32], value: Option<String>) -> Rows {
    jobs.iter()
        .filter_map(|&j| {
            let v = value.clone()?;
            Some((
                j,
                Ok(JobRows {
                    runs: vec![Row {
                        id: j.to_string(),
                        state: "COMPLETED".into(),
                        ended: true,
                        submit: 0,
                        start: Some(0),
                        end: Some(3),
                        energy: None,
                        value: v,
                    }],
                    selects_others: false,
                    others_below: false,
                }),
            ))
        })
        .collect()
}

pub(super) fn v22() -> Policy {
    Policy::new(Differences::for_version(crate::slurm::SlurmVersion::new(
        22, 5, 8,
    )))
}

pub(super) fn timing() -> Timing {
    Timing {
        stagger: Duration::ZERO,
        settle: Duration::from_millis(30),
        give_up: Duration::from_secs(5),
        flight: Duration::from_millis(20),
    }
}

pub(super) fn policy(major: u8, minor: u8, energy: EnergyTres) -> Policy {
    Policy {
        diffs: Differences::for_version(crate::slurm::SlurmVersion::new(major, minor, 0)),
        energy,
        slurm_energy: true,
    }
}

pub(super) fn merged_one(wh: f64) -> String {
    let d = delivery("n1", wh, &["n1"]);
    record::merge_in_run("", &d.part, &d.meta, Some(&d.nodes), 0)
}
