//! shareflow: an embeddable streaming pipeline engine in which RL training of (multimodal)
//! language models is a timely dataflow graph of operators; the stock graph is Share-GRPO
//! (R1-ShareVL, arXiv 2505.16673).
//!
//! This facade re-exports the layers — [`runtime`] (the engine), [`operators`] (the RL operators),
//! [`graphs`] (stock graphs) — and hosts [`tools`], the dataflow programs behind the `shareflow`
//! command-line subcommands.

pub use shareflow_graphs as graphs;
pub use shareflow_operators as operators;
pub use shareflow_runtime as runtime;

pub mod embedded;
pub mod tools;
