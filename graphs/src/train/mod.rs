//! The stock training graphs (`share-grpo`, `grpo`, `sft`) behind `shareflow train`.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dataflow;
pub mod init;
pub mod sft;
pub mod steps;

pub use checkpoint::{Checkpointer, Resume, Start, TrainState};
pub use config::{Config, describe, keys};
pub use data::SeedSource;
pub use dataflow::{
    GraphBuilder, GraphResult, Outcome, RespPayload, TrainGraph, estimator, run_dataflow,
    run_graph, score_math, scored,
};
pub use sft::run_sft;
pub use steps::{GraphKind, Settings, StepRecord, Truncation, run_sequential};
