//! shareflow-graphs: stock graphs built only from the public operator APIs of shareflow-operators
//! (anything here a user's own graph could do the same way).
//!
//! So far: the model-free advantage stage of Share-GRPO and GRPO ([`advantages`]), which the
//! `shareflow advantages` tool runs on rollout dumps. Depends on shareflow-operators and
//! shareflow-runtime.

pub mod advantages;
pub mod train;

pub use advantages::{Estimator, advantage_stage};
