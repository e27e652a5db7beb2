//! What runs on a compute node: the job's environment, prolog and epilog, the sampler,
//! the courier that delivers records, the root-owned state directory, retention, the
//! intensity cache and the metrics textfile.

pub mod courier;
pub mod courier_lock;
pub mod epilog;
pub mod intensity_cache;
pub mod job;
pub mod job_env;
pub mod local_record;
pub mod metrics;
pub mod prolog;
pub mod retention;
pub mod sampler;
pub mod selection;
pub mod state;
