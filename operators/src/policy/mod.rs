//! The policy model: Hugging Face checkpoints of Qwen2.5-VL and Qwen2/Qwen2.5 loaded into candle,
//! scored differentiably, sampled with a KV cache, trained with the PPO objective and saved back.

pub mod error;

pub use error::{PolicyError, Result};
pub mod config;

pub use config::{Architecture, ModelConfig, TextConfig, VisionConfig};
pub mod loss;
pub mod optim;

pub use loss::{
    KlConfig, KlPenalty, PpoConfig, PpoTerms, kl_penalty, kl_penalty_full, masked_mean, ppo_loss,
};
pub use optim::{GradAccumulator, OptimConfig, OptimState, Optimizer, StepStats, VarState};
