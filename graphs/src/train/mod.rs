//! The driver of the stock training graphs (see [`crate::share_grpo`]) behind `shareflow train`:
//! settings, data, checkpoints, and the graph builder.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dataflow;
pub mod init;
pub mod steps;

pub use checkpoint::{Checkpointer, Resume, Start, TrainState};
pub use config::{Config, describe, keys};
pub use data::SeedSource;
pub use dataflow::{
    GraphBuilder, GraphResult, Outcome, RespPayload, TrainGraph, estimator, run_dataflow,
    run_graph, score_math, scored,
};
pub use steps::{GraphKind, Settings, StepRecord, Truncation, run_sequential};
