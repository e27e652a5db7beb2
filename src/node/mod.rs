//! What runs on a compute node: the job's environment, prolog and epilog, the sampler,
//! the courier that delivers records, the root-owned state directory, retention, the
//! intensity cache and the metrics textfile.

pub mod courier;
pub mod intensity_cache;
pub mod job;
pub mod metrics;
pub mod retention;
pub mod sampler;
pub mod state;
