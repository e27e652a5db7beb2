//! What differs between the Slurm versions spank-carbon runs on, in one place.
//!
//! The build targets one Slurm release (the headers `build.rs` found); everything that
//! depends on that release is a field of [`Differences`], derived only from the version.
//! No other code compares versions.

mod sluid;
mod version;

pub use sluid::{parse_sluid, record_form as sluid_record_form};
pub use version::{Differences, SlurmVersion};
