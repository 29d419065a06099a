//! The policy model: Hugging Face checkpoints of Qwen2.5-VL, Qwen3-VL, Qwen2/Qwen2.5 and Qwen3
//! loaded into candle,
//! scored differentiably, sampled with a KV cache, trained with the PPO objective and saved back.
//!
//! - [`device`]: `cpu` / `cuda[:N]` / `auto` and the compute dtype (f32, or bf16 over f32
//!   master weights).
//! - [`config`]: `config.json` (flat Hub layout and transformers-5 nested layout).
//! - [`weights`]: safetensors (single or sharded), trainable / frozen parameters, saving.
//! - [`processor`], [`chat`], [`image`], [`resample`]: the input side: tokenizer, chat template
//!   (minijinja, as transformers renders it), the Qwen2-VL image processor with Pillow-exact
//!   resizing, image-placeholder expansion.
//! - [`text`], [`vision`], [`vision_qwen3`], [`layers`]: the Qwen2 / Qwen3 decoder and the
//!   Qwen2.5-VL and Qwen3-VL vision towers, written with differentiable candle ops only.
//! - [`model`]: [`PolicyModel`]: scoring (per-token log-probs, entropy), sampling with a KV
//!   cache, multimodal rotary positions.
//! - [`loss`], [`optim`]: the clipped PPO objective with KL penalties; AdamW with global
//!   grad-norm clipping and gradient accumulation.
//! - [`factory`]: new checkpoints from scratch: a byte-level BPE trained on a corpus, a tiny
//!   Qwen2.5-VL with HF's random init in the Hub layout, and the SFT loss.

pub mod chat;
pub mod config;
pub mod device;
pub mod error;
pub mod factory;
pub mod image;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod pretrained;
pub mod processor;
mod pyfmt;
pub mod resample;
pub mod text;
pub mod vision;
pub mod vision_qwen3;
pub mod weights;

pub use candle_core as candle;
pub use chat::ChatTemplate;
pub use config::{Architecture, ModelConfig, TextConfig, VisionAct, VisionConfig};
pub use device::{DeviceSpec, built_with_cuda, compute_dtype, device_name, open_device};
pub use error::{PolicyError, Result};
pub use factory::{
    TinyVlSpec, create_random_checkpoint, padded_vocab_size, read_tokenizer, sft_loss,
    train_tokenizer,
};
pub use image::{ImageBackend, ImageProcessor, PixelValues, load_pixel_values};
pub use loss::{
    KlConfig, KlPenalty, PpoConfig, PpoTerms, kl_penalty, kl_penalty_full, masked_mean, ppo_loss,
};
pub use model::{
    Generation, LoadOptions, PolicyModel, SamplingParams, ScoreOptions, Scores, Sequence,
};
pub use optim::{
    GradAccumulator, LrDecay, LrSchedule, OptimConfig, OptimState, Optimizer, StepStats, VarState,
};
pub use pretrained::{Policy, Response, ResponseLogProbs, load_image};
pub use processor::{Processor, Prompt, Video};
pub use resample::{Filter, PassOrder, fit_pixels};
pub use weights::ParamStore;
