//! What speaks Slurm's formats: its version differences, SLUIDs, host lists, gres.conf
//! and slurm.conf, sacct's rows, and the SPANK bindings; and what runs its tools.
//!
//! The build targets one Slurm release (the headers `build.rs` found); everything that
//! depends on that release is a field of [`Differences`], derived only from the version.
//! No other code compares versions.

pub mod gres;
pub mod hostlist;
pub mod run;
pub mod sacct_rows;
mod sluid;
#[allow(unsafe_code)]
pub mod sys;
mod version;

pub use sluid::{parse_sluid, record_form as sluid_record_form};
pub use version::{Differences, JobJson, SlurmVersion};
