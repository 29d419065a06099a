//! New tiny Qwen2.5-VL checkpoints made from scratch, and the supervised fine-tuning loss that
//! teaches them a task before RL.
//!
//! - [`train_tokenizer`]: a Qwen2-like byte-level BPE learned from a corpus (see [`bpe`]).
//! - [`TinyVlSpec`] + [`create_random_checkpoint`]: a complete Hugging Face checkpoint directory
//!   in the Hub layout of `tests/golden/policy/tiny-qwen2_5_vl` (flat `config.json`, two
//!   safetensors shards + index, tokenizer and processor files), with weights drawn as
//!   transformers 5.23 `PreTrainedModel._init_weights` draws them for
//!   `Qwen2_5_VLForConditionalGeneration`: `N(0, initializer_range = 0.02)` for every `Linear`,
//!   `Conv3d` (the vision patch embedding) and `Embedding` weight, zeros for their biases, ones
//!   for the RMS-norm weights (no padding row: the config sets no `pad_token_id`). The draws come
//!   from [`DetRng`] (Box-Muller), one stream per tensor name, so a seed gives byte-identical
//!   files and one tensor's values do not depend on the others' sizes.
//! - [`sft_loss`]: token-mean negative log-likelihood of the response tokens.
//!
//! `tests/golden/policy/check_created_checkpoint.py DIR` checks a created directory with
//! transformers (no missing or unexpected weights; the init statistics; the processor).

pub mod bpe;
mod files;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;
use shareflow_runtime::rng::DetRng;
use tokenizers::Tokenizer;

pub use bpe::{SPECIAL_TOKENS, train_tokenizer};
pub use files::QWEN2_VL_CHAT_TEMPLATE;

use super::error::{PolicyError, Result};
use super::model::{PolicyModel, ScoreOptions, Sequence};

/// `initializer_range` of the config; HF's default for Qwen2.5-VL (text and vision).
pub const INITIALIZER_RANGE: f64 = 0.02;
/// Shards written, as the Hub checkpoints (and the fixture) are sharded.
const SHARDS: usize = 2;

/// Sizes of a tiny Qwen2.5-VL.
///
/// The [`Default`] is meant to learn a small visual counting task on 2 CPU cores in minutes:
/// 1,425,216 parameters plus 256 per vocabulary entry (1.69 M, 6.7 MB of f32, with a
/// 1024-entry vocabulary). The text decoder (hidden 128, 4 layers, 4 heads of 32 with 2 KV
/// heads, SwiGLU 512) carries most of them and most of the compute; four layers leave room for
/// reading the image tokens, counting and writing the answer. The vision tower is half as wide
/// (hidden 64, 4 heads of 16, MLP 256), 4 blocks, windows of 112 px (8x8 patches) with full
/// attention in blocks 1 and 3, so objects anywhere in the image are related before the merger
/// hands 2x2 patches per token to the decoder. Pixels are kept between 56x56 and 224x224
/// (4 to 64 image tokens), which bounds a training sequence to ~100-150 tokens. `rope_theta`
/// is 1e4 (not the Hub's 1e6): sequences are short, and the faster rotations tell near
/// positions apart. The M-RoPE sections keep Qwen2.5-VL's (t, h, w) proportions 2:3:3 of
/// head_dim / 2 = 16.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyVlSpec {
    /// Text decoder: hidden size.
    pub hidden: usize,
    /// Text decoder: SwiGLU inner size.
    pub intermediate: usize,
    /// Text decoder: number of layers.
    pub layers: usize,
    /// Text decoder: attention heads (head_dim = hidden / heads).
    pub heads: usize,
    /// Text decoder: key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Multimodal rotary sections (t, h, w) in frequency pairs; they sum to head_dim / 2.
    pub mrope_section: [usize; 3],
    pub rope_theta: f64,
    /// Vision tower: hidden size.
    pub vision_hidden: usize,
    /// Vision tower: SwiGLU inner size.
    pub vision_intermediate: usize,
    /// Vision tower: number of blocks.
    pub vision_depth: usize,
    /// Vision tower: attention heads (head_dim a multiple of 4 for the 2-D rotary).
    pub vision_heads: usize,
    /// Side of a vision attention window in pixels (a multiple of patch * merge).
    pub window_size: usize,
    /// Vision blocks with full attention (the others attend within windows).
    pub fullatt_block_indexes: Vec<usize>,
    /// Patch side in pixels (14 in every Qwen2.5-VL).
    pub patch_size: usize,
    /// Patches merged per side into one image token (2).
    pub spatial_merge_size: usize,
    /// Frames per temporal patch (2; an image is repeated).
    pub temporal_patch_size: usize,
    /// Image processor: fewest pixels an image is resized to.
    pub min_pixels: usize,
    /// Image processor: most pixels an image is resized to.
    pub max_pixels: usize,
    /// Share the input embedding with the output projection (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
}

impl Default for TinyVlSpec {
    fn default() -> Self {
        Self {
            hidden: 128,
            intermediate: 512,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            mrope_section: [4, 6, 6],
            rope_theta: 10_000.0,
            vision_hidden: 64,
            vision_intermediate: 256,
            vision_depth: 4,
            vision_heads: 4,
            window_size: 112,
            fullatt_block_indexes: vec![1, 3],
            patch_size: 14,
            spatial_merge_size: 2,
            temporal_patch_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 224 * 224,
            tie_word_embeddings: false,
        }
    }
}

/// How a tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// `N(0, INITIALIZER_RANGE^2)`: Linear, Conv3d and Embedding weights.
    Normal,
    /// Biases.
    Zeros,
    /// RMS-norm weights.
    Ones,
}

impl TinyVlSpec {
    /// Text head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Checks that the sizes make a model the loader and transformers accept.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PolicyError::Input(format!("TinyVlSpec: {m}")));
        let positive = [
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("vision_hidden", self.vision_hidden),
            ("vision_intermediate", self.vision_intermediate),
            ("vision_depth", self.vision_depth),
            ("vision_heads", self.vision_heads),
            ("patch_size", self.patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("min_pixels", self.min_pixels),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "heads ({}) must divide hidden ({}) into heads of even size",
                self.heads, self.hidden
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "kv_heads ({}) must divide heads ({})",
                self.kv_heads, self.heads
            ));
        }
        if self.mrope_section.iter().sum::<usize>() * 2 != self.head_dim() {
            return bad(format!(
                "mrope_section {:?} must sum to head_dim / 2 = {}",
                self.mrope_section,
                self.head_dim() / 2
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!(
                "rope_theta must be positive, got {}",
                self.rope_theta
            ));
        }
        if !self.vision_hidden.is_multiple_of(self.vision_heads)
            || !(self.vision_hidden / self.vision_heads).is_multiple_of(4)
        {
            return bad(format!(
                "vision_heads ({}) must divide vision_hidden ({}) into heads of a multiple of 4",
                self.vision_heads, self.vision_hidden
            ));
        }
        let unit = self.patch_size * self.spatial_merge_size;
        if self.window_size < unit || !self.window_size.is_multiple_of(unit) {
            return bad(format!(
                "window_size ({}) must be a positive multiple of patch_size * spatial_merge_size \
                 ({unit})",
                self.window_size
            ));
        }
        if let Some(&i) = self
            .fullatt_block_indexes
            .iter()
            .find(|&&i| i >= self.vision_depth)
        {
            return bad(format!(
                "fullatt_block_indexes names block {i}, but vision_depth is {}",
                self.vision_depth
            ));
        }
        if self.max_pixels < self.min_pixels {
            return bad(format!(
                "max_pixels ({}) is below min_pixels ({})",
                self.max_pixels, self.min_pixels
            ));
        }
        Ok(())
    }

    /// Every tensor of the checkpoint (Hub names, sorted) with its shape and initialisation.
    pub fn tensors(&self, vocab_size: usize) -> BTreeMap<String, (Vec<usize>, Init)> {
        let mut t = BTreeMap::new();
        let mut add = |name: String, shape: Vec<usize>, init: Init| {
            t.insert(name, (shape, init));
        };
        let (h, hd) = (self.hidden, self.head_dim());
        let (q, kv) = (self.heads * hd, self.kv_heads * hd);
        add(
            "model.embed_tokens.weight".into(),
            vec![vocab_size, h],
            Init::Normal,
        );
        if !self.tie_word_embeddings {
            add("lm_head.weight".into(), vec![vocab_size, h], Init::Normal);
        }
        add("model.norm.weight".into(), vec![h], Init::Ones);
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            add(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones);
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                Init::Ones,
            );
            for (proj, out) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                add(
                    format!("{p}.self_attn.{proj}.weight"),
                    vec![out, h],
                    Init::Normal,
                );
                add(format!("{p}.self_attn.{proj}.bias"), vec![out], Init::Zeros);
            }
            add(
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, q],
                Init::Normal,
            );
            let i = self.intermediate;
            add(
                format!("{p}.mlp.gate_proj.weight"),
                vec![i, h],
                Init::Normal,
            );
            add(format!("{p}.mlp.up_proj.weight"), vec![i, h], Init::Normal);
            add(
                format!("{p}.mlp.down_proj.weight"),
                vec![h, i],
                Init::Normal,
            );
        }
        let (vh, vi) = (self.vision_hidden, self.vision_intermediate);
        add(
            "visual.patch_embed.proj.weight".into(),
            vec![
                vh,
                3,
                self.temporal_patch_size,
                self.patch_size,
                self.patch_size,
            ],
            Init::Normal,
        );
        let mut linear = |name: String, d_in: usize, d_out: usize| {
            add(format!("{name}.weight"), vec![d_out, d_in], Init::Normal);
            add(format!("{name}.bias"), vec![d_out], Init::Zeros);
        };
        for b in 0..self.vision_depth {
            let p = format!("visual.blocks.{b}");
            linear(format!("{p}.attn.qkv"), vh, 3 * vh);
            linear(format!("{p}.attn.proj"), vh, vh);
            linear(format!("{p}.mlp.gate_proj"), vh, vi);
            linear(format!("{p}.mlp.up_proj"), vh, vi);
            linear(format!("{p}.mlp.down_proj"), vi, vh);
        }
        let merged = vh * self.spatial_merge_size * self.spatial_merge_size;
        linear("visual.merger.mlp.0".into(), merged, merged);
        linear("visual.merger.mlp.2".into(), merged, h);
        for b in 0..self.vision_depth {
            add(
                format!("visual.blocks.{b}.norm1.weight"),
                vec![vh],
                Init::Ones,
            );
            add(
                format!("visual.blocks.{b}.norm2.weight"),
                vec![vh],
                Init::Ones,
            );
        }
        add("visual.merger.ln_q.weight".into(), vec![vh], Init::Ones);
        t
    }

    /// Number of parameters of the model with a vocabulary of `vocab_size` entries.
    pub fn num_params(&self, vocab_size: usize) -> usize {
        self.tensors(vocab_size)
            .values()
            .map(|(s, _)| s.iter().product::<usize>())
            .sum()
    }
}

/// The model's vocabulary size for a tokenizer: its size (special tokens included) rounded up
/// to a multiple of 64, as the Qwen checkpoints pad their embedding tables.
pub fn padded_vocab_size(tokenizer: &Tokenizer) -> usize {
    tokenizer.get_vocab_size(true).div_ceil(64) * 64
}

/// The values of one tensor: `N(0, 0.02^2)` draws from the stream (seed, name), zeros or ones.
fn init_tensor(seed: u64, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = match init {
        Init::Normal => {
            let mut rng = DetRng::derive(seed, 0, name, 0);
            (0..n)
                .map(|_| (rng.normal() * INITIALIZER_RANGE) as f32)
                .collect()
        }
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
    };
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Writes a new Qwen2.5-VL checkpoint directory with random weights (see the module doc):
/// `config.json`, `generation_config.json`, `model-0000{1,2}-of-00002.safetensors`,
/// `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`,
/// `chat_template.json`, `preprocessor_config.json`. The token ids in the configs come from
/// `tokenizer`, which must hold the Qwen2-VL special tokens ([`SPECIAL_TOKENS`]); the
/// vocabulary is the tokenizer's size rounded up to a multiple of 64.
///
/// `dir` must not exist or be empty; the files are written to a temporary sibling and moved
/// into place. The same spec, tokenizer and seed give byte-identical files.
pub fn create_random_checkpoint(
    dir: &Path,
    spec: &TinyVlSpec,
    tokenizer: &Tokenizer,
    seed: u64,
) -> Result<()> {
    spec.validate()?;
    let ids = files::special_ids(tokenizer)?;
    let vocab_size = padded_vocab_size(tokenizer);
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir, e))?;
        if entries.next().is_some() {
            return Err(PolicyError::Input(format!(
                "{}: exists and is not empty; choose a new directory",
                dir.display()
            )));
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| PolicyError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| PolicyError::io(&tmp, e))?;

    let mut tensors = Vec::new();
    for (name, (shape, init)) in spec.tensors(vocab_size) {
        let t = init_tensor(seed, &name, &shape, init)?;
        tensors.push((name, t));
    }
    files::write_shards(&tmp, tensors, SHARDS)?;
    let json_files: [(&str, Value); 5] = [
        ("config.json", files::config_json(spec, vocab_size, &ids)),
        (
            "generation_config.json",
            files::generation_config_json(&ids),
        ),
        ("tokenizer_config.json", files::tokenizer_config_json(&ids)),
        (
            "chat_template.json",
            serde_json::json!({ "chat_template": QWEN2_VL_CHAT_TEMPLATE }),
        ),
        (
            "preprocessor_config.json",
            files::preprocessor_config_json(spec),
        ),
    ];
    for (file, value) in json_files {
        files::write_json(&tmp.join(file), &value)?;
    }
    let tok_path = tmp.join("tokenizer.json");
    let tok_json = tokenizer
        .to_string(true)
        .map_err(|e| PolicyError::bad_file(&tok_path, format!("cannot serialize: {e}")))?;
    std::fs::write(&tok_path, tok_json + "\n").map_err(|e| PolicyError::io(&tok_path, e))?;
    std::fs::rename(&tmp, dir).map_err(|e| PolicyError::io(dir, e))
}

/// Reads a `tokenizer.json` to reuse in [`create_random_checkpoint`] instead of training one with
/// [`train_tokenizer`] (it must hold the [`SPECIAL_TOKENS`], which that function checks).
pub fn read_tokenizer(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| {
        PolicyError::bad_file(
            path,
            format!("cannot read it as a tokenizers `tokenizer.json`: {e}"),
        )
    })
}

/// Supervised fine-tuning loss of a batch: the mean negative log-likelihood over all response
/// tokens (the tokens after `prompt_len`) of all sequences, as a differentiable scalar, and the
/// number of response tokens it averages over (to weight micro-batches).
pub fn sft_loss(model: &PolicyModel, batch: &[Sequence<'_>]) -> Result<(Tensor, f64)> {
    let scores = model.score(batch, &ScoreOptions::default())?;
    let n: usize = scores.lengths.iter().sum();
    let nll = scores
        .log_probs
        .mul(&scores.mask)?
        .sum_all()?
        .affine(-1.0 / n.max(1) as f64, 0.0)?;
    Ok((nll, n as f64))
}
