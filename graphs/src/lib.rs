//! shareflow-graphs: stock graphs built only from the public operator APIs of shareflow-operators
//! (anything here a user's own graph could do the same way).
//!
//! The stock training graphs ([`share_grpo`], SFT included), the model-free advantage
//! stage of Share-GRPO and GRPO ([`advantages`]; the `shareflow advantages` tool runs it on
//! rollout dumps), and the run around a graph ([`train`]: settings, data, checkpoints, the
//! [`train::dataflow::GraphBuilder`]). Depends on shareflow-operators and
//! shareflow-runtime.

pub mod advantages;
pub mod share_grpo;
pub mod train;

pub use advantages::{Estimator, advantage_stage};
