//! The end-to-end tests on the local Slurm cluster, one module per subject: jobs run by
//! slurmd with the installed plugin (scripts/install.sh), fake GPUs (tests/fake-nvml),
//! their records read back from slurmdbd and compared with the fake GPUs' truth (common).
//!
//! Each test needs the cluster that scripts/cluster.sh starts (4 nodes) and root, so each
//! is ignored by a plain `cargo test`. scripts/test.sh starts a cluster of each Slurm
//! release and runs them there, a module at a time (scripts/run-tests.sh) and one test at
//! a time, since several restart the cluster or change its configuration; by hand:
//! `cargo test --test cluster -- --include-ignored --test-threads 1` (`gpus::` after `--`
//! for one module).

#[path = "../common/mod.rs"]
mod common;

mod check;
mod cluster;
mod energy;
mod faults;
mod gpus;
mod operator;
mod reports;
mod runs;
