//! shareflow-runtime: the streaming engine underneath shareflow, on timely-dataflow 0.32.
//!
//! The timestamp of every dataflow is the **training step** ([`Step`], a `u64`). This crate knows
//! nothing about language models; it provides the pieces every training graph is built from:
//!
//! - [`group::GroupByKey`]: exchange records by a key, emit each group as soon as it is complete
//!   (size known), and at the step's frontier emit or report whatever is left — never hang, never
//!   emit a partial group silently;
//! - [`driver::StepDriver`]: bounded in-flight steps (probe-based backpressure);
//! - [`keep_if::KeepIf`]: keep records by per-key decisions from another stream;
//! - [`stage`]: heavy stages as operators whose work runs on a thread of their own, group by
//!   group as groups complete;
//! - [`versions`]: a feedback edge that carries policy-version tokens from the end of the graph back
//!   to an earlier operator with a configurable lag (the bound on policy staleness);
//! - [`cluster::ClusterConfig`]: worker threads and multi-process TCP clusters;
//! - [`rng::DetRng`]: randomness derived from (run seed, step, key, index), never from scheduling;
//! - [`metrics`]: per-step metrics aggregated through the dataflow into JSON lines.
//!
//! Depends on timely, serde and tracing only.

pub mod cluster;
pub mod driver;
pub mod error;
pub mod group;
pub mod hash;
pub mod keep_if;
pub mod map_step;
pub mod metrics;
pub mod rng;
pub mod stage;
pub mod versions;

pub use cluster::ClusterConfig;
pub use driver::StepDriver;
pub use error::RuntimeError;
pub use group::{GroupByKey, GroupStatus, Grouped};
pub use hash::{SeedPlacement, seed_owner, stable_hash};
pub use keep_if::KeepIf;
pub use map_step::MapWithStep;
pub use metrics::{Aggregation, CollectMetrics, JsonlSink, MetricRecord, MetricsSink, StepMetrics};
pub use rng::DetRng;
pub use versions::{PolicyVersion, VersionGate, VersionLoop, VersionPublish, version_loop};

/// The timely timestamp of every shareflow dataflow: the training step.
pub type Step = u64;

/// Re-export of the timely version this runtime is built on, so graphs need no direct dependency.
pub use timely;
