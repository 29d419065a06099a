//! The stock training graphs (`share-grpo`, `grpo`, `sft`) behind `shareflow train`.

pub mod config;
pub mod dataflow;
pub mod sft;
pub mod steps;

pub use config::{Config, describe, keys};
pub use dataflow::{Outcome, run_dataflow};
pub use sft::run_sft;
pub use steps::{GraphKind, Settings, StepRecord, run_sequential};
