//! The tests that need no cluster and no GPU, one module per subject; a plain `cargo test`
//! runs them all. What they need besides the crate: a C compiler for the fake NVML
//! (`fake_nvml`; inside another release's root, where there is none, the fake library
//! scripts/test.sh built there), and promtool (`metrics`; see there). scripts/test.sh runs
//! them in each release's root too, a module at a time.
//!
//! The property tests' saved failures are replayed from
//! tests/proptest-regressions/properties.txt: proptest's default place for a module of a
//! crate whose root is tests/hermetic/main.rs.

mod fake_nvml;
mod hardening;
mod mail;
mod metrics;
mod properties;
