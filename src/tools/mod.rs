//! The programs behind `shareflow advantages` and `shareflow score`: JSON-lines input checked up
//! front (errors name the line and field), then a timely dataflow over the stock operators, then
//! output in a deterministic order. Nothing is written unless everything succeeded.

pub mod advantages;
pub mod data;
pub mod jsonl;
pub mod plot;
pub mod score;
pub mod tensorboard;
pub mod train;

use shareflow_operators::Issue;
use shareflow_runtime::RuntimeError;

/// Everything the tools can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The input could not be read.
    #[error("cannot read {source_name}: {error}")]
    Read {
        /// File name or `<stdin>`.
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Input lines are malformed.
    #[error("{}", .0.join("\n"))]
    Input(Vec<String>),
    /// Groups could not be processed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Issues(Vec<Issue>),
    /// The dataflow could not run.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
