//! The policy model: Hugging Face checkpoints of Qwen2.5-VL and Qwen2/Qwen2.5 loaded into candle,
//! scored differentiably, sampled with a KV cache, trained with the PPO objective and saved back.

pub mod error;

pub use error::{PolicyError, Result};
pub mod config;

pub use config::{Architecture, ModelConfig, TextConfig, VisionConfig};
pub mod weights;

pub use weights::ParamStore;
pub mod layers;
pub mod text;
pub mod vision;

pub use vision::PixelValues;
pub mod model;

pub use model::{
    Generation, LoadOptions, PolicyModel, SamplingParams, ScoreOptions, Scores, Sequence,
};
