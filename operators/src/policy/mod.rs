//! The policy model: Hugging Face checkpoints of Qwen2.5-VL and Qwen2/Qwen2.5 loaded into candle,
//! scored differentiably, sampled with a KV cache, trained with the PPO objective and saved back.

pub mod error;

pub use error::{PolicyError, Result};
pub mod config;

pub use config::{Architecture, ModelConfig, TextConfig, VisionConfig};

pub mod chat;
pub mod image;
pub mod processor;
mod pyfmt;
pub mod resample;

pub use chat::ChatTemplate;
pub use image::{ImageProcessor, PixelValues};
pub use processor::{Processor, Prompt};
pub use resample::{Filter, PassOrder};
