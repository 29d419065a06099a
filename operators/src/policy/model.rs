//! The policy: a checkpoint's weights assembled into the text decoder (and the vision tower for
//! Qwen2.5-VL), with the three things RL training asks of it: differentiable per-token log-probs
//! of responses ([`PolicyModel::score`]), sampling with a KV cache ([`PolicyModel::generate`]),
//! and saving back as a Hugging Face checkpoint ([`PolicyModel::save`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use shareflow_runtime::rng::DetRng;

use super::config::{Architecture, ModelConfig};
use super::error::{PolicyError, Result};
use super::image::PixelValues;
use super::kernels;
use super::text::{Deepstack, KvCache, Pos3, TextModel, causal_mask};
use super::vision::VisionModel;
use super::vision_qwen3::Qwen3VisionModel;
use super::weights::ParamStore;

/// Which parameters get gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Make parameters trainable (`Var`s). Inference-only loads keep plain tensors.
    pub trainable: bool,
    /// Keep the vision tower frozen even when training.
    pub freeze_vision: bool,
    /// The dtype of the forward pass. Parameters (and so gradients and optimizer state) stay
    /// f32 whatever it is: with `BF16`, each weight is cast down where it is used and its
    /// gradient flows back to the f32 master copy. Attention softmax, norms' statistics and
    /// token log-probs are computed in f32. F32 (the default) or BF16.
    pub compute_dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            trainable: true,
            freeze_vision: false,
            compute_dtype: DType::F32,
        }
    }
}

/// One sequence to score: `ids` = prompt tokens then response tokens.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub ids: &'a [u32],
    pub prompt_len: usize,
    pub images: &'a [PixelValues],
}

/// Options of [`PolicyModel::score`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreOptions {
    /// Logits are divided by this before the softmax (verl scores at the rollout temperature).
    pub temperature: f64,
    /// Also compute the per-token entropy.
    pub entropy: bool,
    /// Run a prompt shared by several rows once (see [`PolicyModel::score`]); `false` runs
    /// every row whole, as transformers does.
    pub share_prompts: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            entropy: false,
            share_prompts: true,
        }
    }
}

/// Per-token results of [`PolicyModel::score`], right-padded to the longest response.
#[derive(Debug, Clone)]
pub struct Scores {
    /// (batch, max_response_len) log-probs of the response tokens; differentiable.
    pub log_probs: Tensor,
    /// (batch, max_response_len) 1.0 on response tokens, 0.0 on padding.
    pub mask: Tensor,
    /// (batch, max_response_len) entropy of the next-token distribution, when asked for.
    pub entropy: Option<Tensor>,
    /// Response length of each row.
    pub lengths: Vec<usize>,
}

impl Scores {
    /// The log-probs of row `b` without padding.
    pub fn row(&self, b: usize) -> Result<Vec<f32>> {
        let len = self.lengths.get(b).copied().unwrap_or(0);
        Ok(self.log_probs.get(b)?.narrow(0, 0, len)?.to_vec1::<f32>()?)
    }
}

/// Sampling settings of [`PolicyModel::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus mass kept (1.0 keeps everything).
    pub top_p: f64,
    /// Keep only the k most likely tokens (0: no limit).
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Token ids that end a response (included in it).
    pub stop: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
            stop: Vec::new(),
        }
    }
}

/// One generated response.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// Log-prob of each token under the sampling distribution before truncation, i.e.
    /// `log_softmax(logits / temperature)` (temperature 1 when greedy).
    pub log_probs: Vec<f32>,
    /// Whether a stop token ended it (otherwise it hit `max_new_tokens`).
    pub stopped: bool,
    /// The policy version whose weights produced it.
    pub policy_version: u64,
}

/// The vision tower of a multimodal family.
#[derive(Debug, Clone)]
enum Vision {
    Qwen2_5(VisionModel),
    Qwen3(Qwen3VisionModel),
}

impl Vision {
    /// Image features (image tokens, hidden) and the deepstack features (Qwen3-VL).
    fn forward(
        &self,
        images: &[PixelValues],
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        match self {
            Self::Qwen2_5(v) => Ok((v.forward(images, device, dtype)?, Vec::new())),
            Self::Qwen3(v) => {
                let f = v.forward(images, device, dtype)?;
                Ok((f.main, f.deepstack))
            }
        }
    }
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct PolicyModel {
    config: ModelConfig,
    params: ParamStore,
    text: TextModel,
    vision: Option<Vision>,
    version: u64,
    dtype: DType,
}

impl PolicyModel {
    /// Loads the model of a Hugging Face checkpoint directory.
    pub fn load(dir: &Path, device: &Device, opts: LoadOptions) -> Result<Self> {
        let config = ModelConfig::load(dir)?;
        let params = ParamStore::load(dir, device, |name| {
            opts.trainable && !(opts.freeze_vision && name.starts_with("visual."))
        })?;
        // An inference load keeps its weights in the compute dtype. A training load keeps its
        // frozen ones (a frozen vision tower) f32, as they are saved back into checkpoints.
        let params = if opts.trainable {
            params
        } else {
            params.frozen_in(opts.compute_dtype)?
        };
        Self::from_params(config, params)?.with_compute_dtype(opts.compute_dtype)
    }

    /// The same model computing its forward passes in `dtype` (F32 or BF16; see
    /// [`LoadOptions::compute_dtype`]). Its frozen weights keep their dtype (f32 unless loaded
    /// with that compute dtype): a cast at each use.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(PolicyError::Input(format!(
                "compute dtype {dtype:?} is not supported: use f32 or bf16"
            )));
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// The dtype of the forward pass.
    pub fn compute_dtype(&self) -> DType {
        self.dtype
    }

    /// Assembles a model over existing parameters.
    pub fn from_params(config: ModelConfig, params: ParamStore) -> Result<Self> {
        let text = TextModel::load(&params, &config.text)?;
        let vision = match (&config.architecture, &config.vision) {
            (arch, Some(v)) if arch.is_multimodal() => {
                if v.out_hidden_size != config.text.hidden_size {
                    return Err(PolicyError::bad_file(
                        params.source(),
                        format!(
                            "vision_config.out_hidden_size {} differs from the text hidden_size {}",
                            v.out_hidden_size, config.text.hidden_size
                        ),
                    ));
                }
                Some(if *arch == Architecture::Qwen3Vl {
                    Vision::Qwen3(Qwen3VisionModel::load(&params, v)?)
                } else {
                    Vision::Qwen2_5(VisionModel::load(&params, v)?)
                })
            }
            _ => None,
        };
        Ok(Self {
            config,
            params,
            text,
            vision,
            version: 0,
            dtype: DType::F32,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        self.params.device()
    }

    /// The policy version (bumped by the trainer after each optimizer step).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn set_version(&mut self, v: u64) {
        self.version = v;
    }

    /// Trainable parameters by checkpoint-internal name, in a stable order.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.params.trainable()
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// An immutable copy of the current weights (an optimizer step on `self` leaves it alone).
    pub fn snapshot(&self) -> Result<Self> {
        let params = self.params.snapshot()?.frozen_in(self.dtype)?;
        let mut m = Self::from_params(self.config.clone(), params)?;
        m.version = self.version;
        m.dtype = self.dtype;
        Ok(m)
    }

    /// A trainable deep copy (a data-parallel replica): the same weights, version and compute
    /// dtype in variables of its own, so that an optimizer step on one leaves the other alone.
    pub fn replica(&self) -> Result<Self> {
        let mut m = Self::from_params(self.config.clone(), self.params.replica()?)?;
        m.version = self.version;
        m.dtype = self.dtype;
        Ok(m)
    }

    /// Writes a Hugging Face checkpoint directory: the weights under their original names and
    /// dtype, and every other file of `source_dir` (config, tokenizer, templates, processor
    /// config) copied unchanged. Written to a temporary sibling and renamed into place.
    pub fn save(&self, source_dir: &Path, out_dir: &Path) -> Result<()> {
        if out_dir.exists() {
            return Err(PolicyError::Input(format!(
                "{}: already exists; choose a new directory",
                out_dir.display()
            )));
        }
        let name = out_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into());
        let tmp = out_dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| PolicyError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| PolicyError::io(&tmp, e))?;
        let entries = std::fs::read_dir(source_dir).map_err(|e| PolicyError::io(source_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PolicyError::io(source_dir, e))?;
            let path = entry.path();
            let fname = entry.file_name().to_string_lossy().into_owned();
            let is_weights =
                fname.ends_with(".safetensors") || fname == "model.safetensors.index.json";
            if path.is_file() && !is_weights {
                std::fs::copy(&path, tmp.join(&fname)).map_err(|e| PolicyError::io(&path, e))?;
            }
        }
        self.params.save(&tmp, 5 << 30)?;
        std::fs::rename(&tmp, out_dir).map_err(|e| PolicyError::io(out_dir, e))
    }

    /// Multimodal rotary positions of one sequence (HF `get_rope_index`): text tokens count up
    /// on all three axes; an image's tokens get (0, row, col) offset by the position after the
    /// preceding text, a video's (scaled frame time, row, col); the text after either continues
    /// from that position + max(rows, cols). `images` holds the images and videos in prompt
    /// order. Returns the positions and the next free position.
    pub fn rope_index(&self, ids: &[u32], images: &[PixelValues]) -> Result<(Vec<Pos3>, i64)> {
        visual_rope_index(ids, ids.len(), images, &self.visual_tokens())
    }

    /// The image / video placeholder tokens of this checkpoint.
    pub fn visual_tokens(&self) -> VisualTokens {
        VisualTokens {
            image: self.config.image_token_id,
            video: self.config.video_token_id,
            merge: self.merge_size(),
            tokens_per_second: self
                .config
                .vision
                .as_ref()
                .map_or(0.0, |v| v.tokens_per_second),
        }
    }

    fn merge_size(&self) -> usize {
        self.config
            .vision
            .as_ref()
            .map_or(1, |v| v.spatial_merge_size)
    }

    /// `placeholder_end[r]`: image tokens at positions before it are image placeholders; after
    /// it (a response that happens to contain the image token) they are ordinary tokens.
    /// Returns the embeddings and, for Qwen3-VL with images, the deepstack inputs.
    fn embed_rows(
        &self,
        rows: &[Vec<u32>],
        images: &[&[PixelValues]],
        placeholder_end: &[usize],
    ) -> Result<(Tensor, Option<Deepstack>)> {
        let device = self.device().clone();
        let b = rows.len();
        let l = rows.first().map_or(0, Vec::len);
        let vocab = self.config.text.vocab_size;
        let mut flat = Vec::with_capacity(b * l);
        for row in rows {
            for &t in row {
                if t as usize >= vocab {
                    return Err(PolicyError::Input(format!(
                        "token id {t} is outside the vocabulary of {vocab}"
                    )));
                }
                flat.push(t);
            }
        }
        let ids = Tensor::from_vec(flat.clone(), (b, l), &device)?;
        let text = self.text.embed(&ids)?.to_dtype(self.dtype)?;
        let all: Vec<PixelValues> = images.iter().flat_map(|x| x.iter().cloned()).collect();
        let tokens = self.visual_tokens();
        let is_placeholder = |p: usize, t: u32| {
            tokens.is_placeholder(t) && p % l.max(1) < placeholder_end[p / l.max(1)]
        };
        let n_image_tokens = flat
            .iter()
            .enumerate()
            .filter(|&(p, &t)| is_placeholder(p, t))
            .count();
        if all.is_empty() && n_image_tokens == 0 {
            return Ok((text, None));
        }
        let Some(vision) = &self.vision else {
            return Err(PolicyError::Input(format!(
                "{} is a text-only model; it cannot take images",
                self.config.architecture.hf_class()
            )));
        };
        if self.config.architecture != Architecture::Qwen2_5Vl
            && all.iter().any(|p| p.second_per_grid_t.is_some())
        {
            return Err(PolicyError::Input(format!(
                "video input is implemented for Qwen2.5-VL only, not for {} (its videos carry \
                 per-frame timestamps); give the frames as images",
                self.config.architecture.hf_class()
            )));
        }
        let merge = self
            .config
            .vision
            .as_ref()
            .map_or(1, |v| v.spatial_merge_size);
        for (r, (row, imgs)) in rows.iter().zip(images).enumerate() {
            let end = placeholder_end[r].min(row.len());
            let have = row[..end]
                .iter()
                .filter(|&&t| tokens.is_placeholder(t))
                .count();
            let want: usize = imgs.iter().map(|p| p.llm_tokens(merge)).sum();
            if have != want {
                return Err(PolicyError::Input(format!(
                    "row {r}: {have} image / video tokens in the prompt, but its {} image(s) / \
                     video(s) give {want} features; expand each placeholder to \
                     grid_t*grid_h*grid_w/{} tokens",
                    imgs.len(),
                    merge * merge
                )));
            }
        }
        let (feats, deep) = vision.forward(&all, &device, self.dtype)?;
        let h = self.config.text.hidden_size;
        let combined = Tensor::cat(&[&text.reshape((b * l, h))?, &feats], 0)?;
        let mut next = (b * l) as u32;
        let index: Vec<u32> = flat
            .iter()
            .enumerate()
            .map(|(p, &t)| {
                if is_placeholder(p, t) {
                    next += 1;
                    next - 1
                } else {
                    p as u32
                }
            })
            .collect();
        let deepstack = if deep.is_empty() {
            None
        } else {
            // 0 for text rows, 1 + k for the k-th image token (row 0 of the padded features).
            let base = (b * l) as u32;
            let slots: Vec<u32> = index
                .iter()
                .map(|&i| if i >= base { i - base + 1 } else { 0 })
                .collect();
            Some(Deepstack {
                index: Tensor::from_vec(slots, b * l, &device)?,
                feats: deep,
            })
        };
        let index = Tensor::from_vec(index, b * l, &device)?;
        Ok((
            combined.index_select(&index, 0)?.reshape((b, l, h))?,
            deepstack,
        ))
    }

    /// Per-token log-probs of each sequence's response given its prompt (and images), as one
    /// right-padded batch; differentiable with respect to every trainable parameter.
    ///
    /// Rows that share a prompt (the same tokens and images; GRPO's n responses, Share-GRPO's
    /// m*n) run their prompt, and its images through the vision tower, once: the prompt's keys
    /// and values are computed for one copy and selected for each of its rows, whose responses
    /// then attend to them ([`ScoreOptions::share_prompts`]). The result is the same function of
    /// the weights, gradients included; only floating-point rounding differs.
    pub fn score(&self, batch: &[Sequence<'_>], opts: &ScoreOptions) -> Result<Scores> {
        if batch.is_empty() {
            return Err(PolicyError::Input("score: empty batch".into()));
        }
        if !(opts.temperature > 0.0 && opts.temperature.is_finite()) {
            return Err(PolicyError::Input(format!(
                "score: temperature must be positive, got {}",
                opts.temperature
            )));
        }
        for (r, s) in batch.iter().enumerate() {
            if s.prompt_len == 0 || s.prompt_len >= s.ids.len() {
                return Err(PolicyError::Input(format!(
                    "row {r}: prompt length {} must be between 1 and the sequence length {} - 1",
                    s.prompt_len,
                    s.ids.len()
                )));
            }
        }
        if opts.share_prompts
            && let Some(groups) = PromptGroups::of(batch, &self.visual_tokens())
        {
            return self.score_shared(batch, opts, &groups);
        }
        let l = batch.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        let mut positions = Vec::with_capacity(batch.len());
        let mut lengths = Vec::with_capacity(batch.len());
        for s in batch {
            let (mut pos, _) =
                visual_rope_index(s.ids, s.prompt_len, s.images, &self.visual_tokens())?;
            pos.resize(l, [0; 3]);
            positions.push(pos);
            let mut row = s.ids.to_vec();
            row.resize(l, 0);
            rows.push(row);
            let mut v = vec![true; s.ids.len()];
            v.resize(l, false);
            valid.push(v);
            lengths.push(s.ids.len() - s.prompt_len);
        }
        let images: Vec<&[PixelValues]> = batch.iter().map(|s| s.images).collect();
        let ends: Vec<usize> = batch.iter().map(|s| s.prompt_len).collect();
        let (x, deepstack) = self.embed_rows(&rows, &images, &ends)?;
        let rope = self.text.rope_tables(&positions)?;
        let mask = causal_mask(&valid, l);
        let h = self
            .text
            .forward(&x, &rope, Some(&mask), None, deepstack.as_ref())?;
        // The hidden state before each response token predicts it.
        let starts: Vec<usize> = batch.iter().map(|s| s.prompt_len - 1).collect();
        self.response_scores(batch, &h, &starts, lengths, opts)
    }

    /// [`Self::score`] over prompt groups: a pass over each group's prompt but its last token
    /// (right-padded, with the vision tower), then a pass over every row's last prompt token and
    /// response tokens, with the group's cached keys and values selected per row in front.
    fn score_shared(
        &self,
        batch: &[Sequence<'_>],
        opts: &ScoreOptions,
        groups: &PromptGroups,
    ) -> Result<Scores> {
        let device = self.device().clone();
        let tokens = self.visual_tokens();
        let mut full_pos = Vec::with_capacity(batch.len());
        for s in batch {
            full_pos.push(visual_rope_index(s.ids, s.prompt_len, s.images, &tokens)?.0);
        }
        // Pass 1: the shared prefixes.
        let lp = groups
            .first
            .iter()
            .map(|&f| batch[f].prompt_len - 1)
            .max()
            .unwrap_or(0);
        let mut rows = Vec::with_capacity(groups.first.len());
        let mut positions = Vec::with_capacity(groups.first.len());
        let mut prefix_valid = Vec::with_capacity(groups.first.len());
        let mut ends = Vec::with_capacity(groups.first.len());
        let mut images = Vec::with_capacity(groups.first.len());
        for &f in &groups.first {
            let s = &batch[f];
            let n = s.prompt_len - 1;
            let mut row = s.ids[..n].to_vec();
            row.resize(lp, 0);
            rows.push(row);
            let mut pos = full_pos[f][..n].to_vec();
            pos.resize(lp, [0; 3]);
            positions.push(pos);
            let mut v = vec![true; n];
            v.resize(lp, false);
            prefix_valid.push(v);
            ends.push(n);
            images.push(s.images);
        }
        let (x, deepstack) = self.embed_rows(&rows, &images, &ends)?;
        let rope = self.text.rope_tables(&positions)?;
        let mask = causal_mask(&prefix_valid, lp);
        let mut prefix = KvCache::default();
        self.text.forward(
            &x,
            &rope,
            Some(&mask),
            Some(&mut prefix),
            deepstack.as_ref(),
        )?;
        // Pass 2: each row's last prompt token and its response but the last token, after its
        // group's cached prefix.
        let lengths: Vec<usize> = batch.iter().map(|s| s.ids.len() - s.prompt_len).collect();
        let t = lengths.iter().copied().max().unwrap_or(0);
        let mut rows = Vec::with_capacity(batch.len());
        let mut positions = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        for (r, s) in batch.iter().enumerate() {
            let (a, n) = (s.prompt_len - 1, lengths[r]);
            let mut row = s.ids[a..a + n].to_vec();
            row.resize(t, 0);
            rows.push(row);
            let mut pos = full_pos[r][a..a + n].to_vec();
            pos.resize(t, [0; 3]);
            positions.push(pos);
            let mut v = prefix_valid[groups.group[r]].clone();
            v.extend(std::iter::repeat_n(true, n));
            v.resize(lp + t, false);
            valid.push(v);
        }
        let (x, _) = self.embed_rows(&rows, &vec![&[][..]; batch.len()], &vec![0; batch.len()])?;
        let select: Vec<u32> = groups.group.iter().map(|&g| g as u32).collect();
        let mut cache = prefix.select_rows(&Tensor::from_vec(select, batch.len(), &device)?)?;
        let rope = self.text.rope_tables(&positions)?;
        let mask = causal_mask(&valid, t);
        let h = self
            .text
            .forward(&x, &rope, Some(&mask), Some(&mut cache), None)?;
        self.response_scores(batch, &h, &vec![0; batch.len()], lengths, opts)
    }

    /// Log-probs (and entropy) of the response tokens from hidden states `h` (batch, len,
    /// hidden): row r's token i is predicted by position `starts[r] + i`.
    fn response_scores(
        &self,
        batch: &[Sequence<'_>],
        h: &Tensor,
        starts: &[usize],
        lengths: Vec<usize>,
        opts: &ScoreOptions,
    ) -> Result<Scores> {
        let device = self.device().clone();
        let (b, l, hidden) = h.dims3()?;
        let t = lengths.iter().copied().max().unwrap_or(0);
        let mut gather = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut mask_v = Vec::with_capacity(b * t);
        for (r, s) in batch.iter().enumerate() {
            for i in 0..t {
                if i < lengths[r] {
                    gather.push((r * l + starts[r] + i) as u32);
                    targets.push(s.ids[s.prompt_len + i]);
                    mask_v.push(1.0f32);
                } else {
                    gather.push((r * l) as u32);
                    targets.push(0);
                    mask_v.push(0.0);
                }
            }
        }
        let hs = h
            .reshape((b * l, hidden))?
            .index_select(&Tensor::from_vec(gather, b * t, &device)?, 0)?;
        let logits = self.text.logits(&hs)?;
        let log_probs =
            kernels::token_log_probs(&logits, &targets, opts.temperature)?.reshape((b, t))?;
        let entropy = if opts.entropy {
            Some(kernels::token_entropy(&logits, opts.temperature)?.reshape((b, t))?)
        } else {
            None
        };
        Ok(Scores {
            log_probs,
            mask: Tensor::from_vec(mask_v, (b, t), &device)?,
            entropy,
            lengths,
        })
    }

    /// Samples one response per prompt, all prompts as one left-padded batch with a KV cache.
    /// `rngs[i]` drives prompt i (ignored when greedy), so a response depends only on its own
    /// stream, not on the batch it ran in.
    pub fn generate(
        &self,
        prompts: &[(&[u32], &[PixelValues])],
        params: &SamplingParams,
        rngs: &mut [DetRng],
    ) -> Result<Vec<Generation>> {
        let device = self.device().clone();
        let b = prompts.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        if rngs.len() != b {
            return Err(PolicyError::Input(format!(
                "generate: {} prompts but {} random streams",
                b,
                rngs.len()
            )));
        }
        let temperature_ok = params.temperature >= 0.0 && params.temperature.is_finite();
        let top_p_ok = params.top_p > 0.0 && params.top_p <= 1.0;
        if !temperature_ok || !top_p_ok {
            return Err(PolicyError::Input(format!(
                "generate: temperature must be >= 0 and top_p in (0, 1], got {} and {}",
                params.temperature, params.top_p
            )));
        }
        let lp = prompts.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        if prompts.iter().any(|(ids, _)| ids.is_empty()) {
            return Err(PolicyError::Input("generate: empty prompt".into()));
        }
        let mut rows = Vec::with_capacity(b);
        let mut valid = Vec::with_capacity(b);
        let mut positions = Vec::with_capacity(b);
        let mut next_pos = Vec::with_capacity(b);
        for (ids, imgs) in prompts {
            let pad = lp - ids.len();
            let (pos, next) = self.rope_index(ids, imgs)?;
            let mut p = vec![[0; 3]; pad];
            p.extend(pos);
            positions.push(p);
            let mut row = vec![0u32; pad];
            row.extend_from_slice(ids);
            rows.push(row);
            let mut v = vec![false; pad];
            v.extend(std::iter::repeat_n(true, ids.len()));
            valid.push(v);
            next_pos.push(next);
        }
        // The prompt pass runs each distinct prompt once (n samples of a prompt share its keys
        // and values, selected per row afterwards).
        let (group, first) = group_by(b, |i, j| {
            prompts[i].0 == prompts[j].0
                && (std::ptr::eq(prompts[i].1, prompts[j].1) || prompts[i].1 == prompts[j].1)
        });
        let images: Vec<&[PixelValues]> = first.iter().map(|&f| prompts[f].1).collect();
        let (x, deepstack) =
            self.embed_rows(&pick(&rows, &first), &images, &vec![lp; first.len()])?;
        let rope = self.text.rope_tables(&pick(&positions, &first))?;
        let mask = causal_mask(&pick(&valid, &first), lp);
        let mut cache = KvCache::with_reserve(params.max_new_tokens);
        let h = self
            .text
            .forward(&x, &rope, Some(&mask), Some(&mut cache), deepstack.as_ref())?;
        let mut logits = self.text.logits(&h.narrow(1, lp - 1, 1)?.squeeze(1)?)?;
        if first.len() < b {
            let select: Vec<u32> = group.iter().map(|&g| g as u32).collect();
            let select = Tensor::from_vec(select, b, &device)?;
            cache = cache.select_rows(&select)?;
            logits = logits.index_select(&select, 0)?;
        }
        let mut out: Vec<Generation> = (0..b)
            .map(|_| Generation {
                tokens: Vec::new(),
                log_probs: Vec::new(),
                stopped: false,
                policy_version: self.version,
            })
            .collect();
        for step in 0..params.max_new_tokens {
            let rows_logits = logits.to_vec2::<f32>()?;
            let mut feed = Vec::with_capacity(b);
            for (r, g) in out.iter_mut().enumerate() {
                if g.stopped {
                    feed.push(0);
                    continue;
                }
                let (tok, lp) = sample(&rows_logits[r], params, &mut rngs[r])?;
                g.tokens.push(tok);
                g.log_probs.push(lp);
                if params.stop.contains(&tok) {
                    g.stopped = true;
                }
                feed.push(tok);
            }
            if step + 1 == params.max_new_tokens || out.iter().all(|g| g.stopped) {
                break;
            }
            // A row that stopped before this step feeds a masked pad.
            for (r, v) in valid.iter_mut().enumerate() {
                let just_fed = out[r].tokens.len() == step + 1;
                v.push(just_fed);
            }
            let pos: Vec<Vec<Pos3>> = next_pos
                .iter()
                .map(|&p| {
                    let q = p + step as i64;
                    vec![[q, q, q]]
                })
                .collect();
            let ids = Tensor::from_vec(feed, (b, 1), &device)?;
            let x = self.text.embed(&ids)?.to_dtype(self.dtype)?;
            let rope = self.text.rope_tables(&pos)?;
            let mask = causal_mask(&valid, 1);
            let h = self
                .text
                .forward(&x, &rope, Some(&mask), Some(&mut cache), None)?;
            logits = self.text.logits(&h.squeeze(1)?)?;
        }
        Ok(out)
    }
}

/// HF `get_rope_index` for one unpadded sequence with images (no videos).
pub fn rope_index(
    ids: &[u32],
    images: &[PixelValues],
    image_token_id: Option<u32>,
    merge: usize,
) -> Result<(Vec<Pos3>, i64)> {
    rope_index_until(ids, ids.len(), images, image_token_id, merge)
}

/// [`rope_index`] where only tokens before `placeholder_end` can be image placeholders (a
/// response that contains the image token gets ordinary text positions there).
pub fn rope_index_until(
    ids: &[u32],
    placeholder_end: usize,
    images: &[PixelValues],
    image_token_id: Option<u32>,
    merge: usize,
) -> Result<(Vec<Pos3>, i64)> {
    let tokens = VisualTokens {
        image: image_token_id,
        video: None,
        merge,
        tokens_per_second: 0.0,
    };
    visual_rope_index(ids, placeholder_end, images, &tokens)
}

/// Rows of a batch that share a prompt (the same tokens and the same images).
#[derive(Debug, Clone, PartialEq)]
struct PromptGroups {
    /// Row r's group.
    group: Vec<usize>,
    /// The first row of each group.
    first: Vec<usize>,
}

impl PromptGroups {
    /// The groups of `rows`' prompts (row r's prompt is `ids[..prompt_len]`), or `None` when
    /// no two rows share one, or when a prompt cannot be split before its last token (a
    /// one-token prompt, or one that ends in an image placeholder).
    fn of(rows: &[Sequence<'_>], tokens: &VisualTokens) -> Option<Self> {
        let splittable =
            |s: &Sequence<'_>| s.prompt_len >= 2 && !tokens.is_placeholder(s.ids[s.prompt_len - 1]);
        if !rows.iter().all(splittable) {
            return None;
        }
        let (group, first) = group_by(rows.len(), |i, j| {
            let (a, b) = (&rows[i], &rows[j]);
            a.ids[..a.prompt_len] == b.ids[..b.prompt_len]
                && (std::ptr::eq(a.images, b.images) || a.images == b.images)
        });
        (first.len() < rows.len()).then_some(Self { group, first })
    }
}

/// The items of `v` at `index`, cloned.
fn pick<T: Clone>(v: &[T], index: &[usize]) -> Vec<T> {
    index.iter().map(|&i| v[i].clone()).collect()
}

/// Groups items `0..n` by `same` (an equivalence): returns each item's group and each group's
/// first item, groups numbered in order of their first items.
fn group_by(n: usize, same: impl Fn(usize, usize) -> bool) -> (Vec<usize>, Vec<usize>) {
    let mut group = Vec::with_capacity(n);
    let mut first: Vec<usize> = Vec::new();
    for i in 0..n {
        match first.iter().position(|&f| same(f, i)) {
            Some(g) => group.push(g),
            None => {
                group.push(first.len());
                first.push(i);
            }
        }
    }
    (group, first)
}

/// The placeholder tokens of images and videos and what their rotary positions need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisualTokens {
    pub image: Option<u32>,
    pub video: Option<u32>,
    pub merge: usize,
    /// `vision_config.tokens_per_second`: temporal positions per second of video.
    pub tokens_per_second: f64,
}

impl VisualTokens {
    /// The placeholder token of `item` (an image or a video).
    fn of(&self, item: &PixelValues) -> Option<u32> {
        if item.second_per_grid_t.is_some() {
            self.video
        } else {
            self.image
        }
    }

    fn is_placeholder(&self, t: u32) -> bool {
        Some(t) == self.image || Some(t) == self.video
    }
}

/// HF `get_rope_index` for one unpadded sequence with images and videos (`visuals`, in prompt
/// order; a video has `second_per_grid_t`). A visual item's tokens get (t, start + row,
/// start + col) with t = start for an image and start + int(frame * tokens_per_second *
/// second_per_grid_t) for a video; the text after it continues from start + max(rows, cols).
/// Only tokens before `placeholder_end` can be placeholders.
pub fn visual_rope_index(
    ids: &[u32],
    placeholder_end: usize,
    visuals: &[PixelValues],
    tokens: &VisualTokens,
) -> Result<(Vec<Pos3>, i64)> {
    let mut pos = Vec::with_capacity(ids.len());
    let mut next: i64 = 0;
    let mut i = 0;
    let mut item = 0;
    while i < ids.len() {
        if i < placeholder_end && tokens.is_placeholder(ids[i]) {
            let p = visuals.get(item).ok_or_else(|| {
                PolicyError::Input(format!(
                    "the prompt has more image / video placeholders than the {} image(s) and \
                     video(s) given",
                    visuals.len()
                ))
            })?;
            let kind = if p.second_per_grid_t.is_some() {
                "video"
            } else {
                "image"
            };
            let want = tokens.of(p);
            let [t, h, w] = p.grid_thw;
            let (lh, lw) = (h / tokens.merge, w / tokens.merge);
            let n = t * lh * lw;
            if i + n > placeholder_end.min(ids.len())
                || ids[i..i + n].iter().any(|&x| Some(x) != want)
            {
                return Err(PolicyError::Input(format!(
                    "{kind} {item} (image and video inputs counted together, in prompt order) \
                     needs {n} consecutive {kind} tokens in the prompt"
                )));
            }
            // HF: (arange(t) * time_interval).long() in float32; images use an interval of 1
            // and have t = 1.
            let interval = match p.second_per_grid_t {
                Some(s) => (tokens.tokens_per_second as f32) * s,
                None => 1.0,
            };
            for tt in 0..t {
                let q0 = next + (tt as f32 * interval) as i64;
                for y in 0..lh {
                    for x in 0..lw {
                        pos.push([q0, next + y as i64, next + x as i64]);
                    }
                }
            }
            next += lh.max(lw) as i64;
            i += n;
            item += 1;
        } else {
            pos.push([next, next, next]);
            next += 1;
            i += 1;
        }
    }
    if item != visuals.len() {
        return Err(PolicyError::Input(format!(
            "{} image(s) / video(s) given but the prompt has placeholders for {item}",
            visuals.len()
        )));
    }
    Ok((pos, next))
}

/// Draws one token from a row of logits; returns it with its log-prob under
/// `log_softmax(logits / temperature)` (temperature 1 when greedy).
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut DetRng) -> Result<(u32, f32)> {
    if logits.iter().any(|x| x.is_nan()) {
        return Err(PolicyError::NonFinite("NaN in next-token logits".into()));
    }
    let greedy = params.temperature == 0.0;
    let temp = if greedy {
        1.0
    } else {
        params.temperature as f32
    };
    let scaled: Vec<f32> = logits.iter().map(|&x| x / temp).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scaled.iter().map(|&x| (x - max).exp()).sum();
    let log_z = max + sum.ln();
    if greedy {
        let mut best = 0usize;
        for (i, &x) in scaled.iter().enumerate() {
            if x > scaled[best] {
                best = i;
            }
        }
        return Ok((best as u32, scaled[best] - log_z));
    }
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let probs: Vec<f64> = order
        .iter()
        .map(|&i| f64::from(scaled[i] - log_z).exp())
        .collect();
    let mut keep = probs.len();
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        for (n, p) in probs.iter().enumerate() {
            if cum >= params.top_p {
                keep = n;
                break;
            }
            cum += p;
        }
        keep = keep.max(1);
    }
    let total: f64 = probs[..keep].iter().sum();
    let mut u = rng.next_f64() * total;
    let mut pick = order[keep - 1];
    for (n, p) in probs[..keep].iter().enumerate() {
        if u < *p {
            pick = order[n];
            break;
        }
        u -= p;
    }
    Ok((pick as u32, scaled[pick] - log_z))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(h: usize, w: usize) -> PixelValues {
        PixelValues {
            data: vec![0.0; h * w * 1176],
            grid_thw: [1, h, w],
            second_per_grid_t: None,
        }
    }

    #[test]
    fn rope_index_text_then_image_then_text() {
        // 2 text tokens, a 2x3 merged image (grid 4x6), 2 text tokens.
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3, 4];
        let (pos, next) = rope_index(&ids, &[img(4, 6)], Some(9), 2).expect("valid");
        assert_eq!(pos[0], [0, 0, 0]);
        assert_eq!(pos[1], [1, 1, 1]);
        assert_eq!(pos[2], [2, 2, 2]);
        assert_eq!(pos[4], [2, 2, 4]);
        assert_eq!(pos[5], [2, 3, 2]);
        assert_eq!(pos[7], [2, 3, 4]);
        assert_eq!(pos[8], [5, 5, 5]);
        assert_eq!(pos[9], [6, 6, 6]);
        assert_eq!(next, 7);
    }

    #[test]
    fn rope_index_rejects_count_mismatch() {
        assert!(rope_index(&[1, 9, 9], &[img(4, 6)], Some(9), 2).is_err());
        assert!(rope_index(&[1, 2], &[img(2, 2)], Some(9), 2).is_err());
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.1f32, 2.0, -1.0, 1.9];
        let params = SamplingParams {
            top_k: 1,
            ..SamplingParams::default()
        };
        let mut rng = DetRng::from_seed(1);
        for _ in 0..20 {
            assert_eq!(sample(&logits, &params, &mut rng).expect("ok").0, 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probs ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two.
        let logits = [3.0f32, 2.0, 1.0, -0.1];
        let params = SamplingParams {
            top_p: 0.8,
            ..SamplingParams::default()
        };
        let mut rng = DetRng::from_seed(7);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample(&logits, &params, &mut rng).expect("ok").0 as usize] += 1;
        }
        assert!(seen[0] > 1000 && seen[1] > 300, "{seen:?}");
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
    }

    #[test]
    fn sampled_log_prob_is_the_tempered_distribution() {
        let logits = [1.0f32, 0.0];
        let params = SamplingParams {
            temperature: 2.0,
            ..SamplingParams::default()
        };
        let mut rng = DetRng::from_seed(3);
        let (tok, lp) = sample(&logits, &params, &mut rng).expect("ok");
        let z = (0.5f32.exp() + 1.0).ln();
        let want = if tok == 0 { 0.5 - z } else { -z };
        assert!((lp - want).abs() < 1e-6);
    }
}
