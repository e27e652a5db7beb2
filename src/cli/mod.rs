//! The `spank-carbon` commands, one file each: arguments and glue, the work in the library.

pub mod check;
pub mod docs;
pub mod fairshare;
pub mod mail;
pub mod measure;
pub mod metrics;
pub mod pending;
pub mod report;
pub mod sample;
pub mod tres;
