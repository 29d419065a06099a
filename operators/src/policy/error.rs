//! Errors of the policy model: every message names the file (or tensor, or field) at fault and
//! what was expected, so a user can fix a checkpoint directory or an input without reading code.

use std::path::PathBuf;

/// What went wrong while loading, running, training or saving a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required file of a checkpoint directory is absent.
    #[error("{path}: missing; {hint}")]
    MissingFile { path: PathBuf, hint: String },
    /// A file is present but its content is not what was expected.
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    /// `architectures` / `model_type` names a model this build does not implement.
    #[error(
        "{path}: unsupported model {what}; supported: Qwen2ForCausalLM (qwen2), \
         Qwen2_5_VLForConditionalGeneration (qwen2_5_vl)"
    )]
    UnsupportedArchitecture { path: PathBuf, what: String },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("{path}: tensor `{name}` missing (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    /// A tensor has another shape than config.json implies.
    #[error("{path}: tensor `{name}` has shape {found:?}, config.json implies {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Bad input to the model (an image, a prompt, a batch).
    #[error("{0}")]
    Input(String),
    /// A numerical failure (a NaN or infinite loss, gradient or log-probability).
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// A candle tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl PolicyError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed file.
    pub fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result of policy functions.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
