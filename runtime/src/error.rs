//! Errors of the runtime, with messages that say what to do.

use std::path::PathBuf;

/// Everything the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The cluster configuration is inconsistent.
    #[error("cluster configuration: {0}")]
    Cluster(String),
    /// The hostfile could not be read.
    #[error("cannot read hostfile {path}: {source}")]
    Hostfile {
        /// The hostfile path.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// timely refused to start (e.g. a port in use, a peer unreachable).
    #[error("starting the dataflow failed: {0}")]
    Start(String),
    /// A worker thread panicked.
    #[error("worker {index} failed: {message}")]
    Worker {
        /// The worker's global index.
        index: usize,
        /// The panic message.
        message: String,
    },
    /// Writing metrics failed.
    #[error("writing metrics: {0}")]
    Metrics(#[from] std::io::Error),
}
