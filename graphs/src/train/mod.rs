//! The stock training graphs (`share-grpo`, `grpo`, `sft`) behind `shareflow train`.

pub mod config;

pub use config::{Config, describe, keys};
