//! The decoder shared by Qwen2/Qwen2.5, Qwen2.5-VL, Qwen3 and Qwen3-VL: token embedding, pre-norm
//! blocks of grouped-query attention and a gated SiLU MLP, final norm, LM head. The families
//! differ only in options: q/k/v biases (Qwen2), per-head RMS norms of queries and keys (Qwen3),
//! the layout of the multimodal rotary sections ([`RopeStyle`]), and Qwen3-VL's deepstack
//! ([`Deepstack`]: vision features added to the hidden states of image tokens after the first
//! layers).
//!
//! Positions are always three axes (temporal, height, width). Text-only models and text tokens use
//! the same value on every axis, which makes multimodal rotary identical to plain 1-D rotary.

use candle_core::{D, Tensor};

use super::config::TextConfig;
use super::error::{PolicyError, Result};
use std::sync::Arc;

use super::kernels::{AttnMask, RopeTable, rope};
use super::layers::{GatedMlp, Linear, RmsNorm, attention};
use super::weights::ParamStore;

/// A token's position on the (t, h, w) axes.
pub type Pos3 = [i64; 3];

/// How rotary frequencies are assigned to position axes.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeStyle {
    /// Every frequency uses the first axis (1-D rotary).
    Plain,
    /// Qwen2-VL / Qwen2.5-VL: contiguous sections of frequencies for t, h, w.
    Sections(Vec<usize>),
    /// Qwen3-VL: frequency `f` reads h when `f % 3 == 1` and `f < 3 * sections[1]`, w when
    /// `f % 3 == 2` and `f < 3 * sections[2]`, t otherwise.
    Interleaved(Vec<usize>),
}

impl RopeStyle {
    /// The position axis (0 = t, 1 = h, 2 = w) each of `half` frequencies reads.
    pub fn axes(&self, half: usize) -> Vec<usize> {
        let mut axis = vec![0usize; half];
        match self {
            Self::Plain => {}
            Self::Sections(sec) => {
                let mut f = 0;
                for (a, &n) in sec.iter().enumerate() {
                    for _ in 0..n {
                        if f < half {
                            axis[f] = a.min(2);
                        }
                        f += 1;
                    }
                }
            }
            Self::Interleaved(sec) => {
                // Axis a (1 = h, 2 = w) takes frequencies a, a + 3, ... below 3 * sec[a].
                for a in [1usize, 2] {
                    let end = sec.get(a).map_or(0, |n| 3 * n).min(half);
                    for f in (a..end).step_by(3) {
                        axis[f] = a;
                    }
                }
            }
        }
        axis
    }
}

/// Qwen3-VL deepstack inputs of one forward pass: after decoder layer `i`, row `r` of the
/// flattened (batch * len) hidden states gets `feats[i][index[r] - 1]` added when `index[r] > 0`
/// (the image tokens, in order).
#[derive(Debug, Clone)]
pub struct Deepstack {
    /// (batch * len) u32: 0 for text positions, 1 + k for the k-th image token.
    pub index: Tensor,
    /// One (image tokens, hidden) tensor per layer it feeds, from layer 0 on.
    pub feats: Vec<Tensor>,
}

/// Rotary tables for a batch: cos and sin rows of head_dim values per (batch, position).
pub type RopeTables = RopeTable;

/// Per-layer keys and values of the tokens seen so far, (batch, kv_heads, len, head_dim).
///
/// A cache made by [`KvCache::with_reserve`] (generation) keeps `reserve` free positions after
/// its first fill and writes later tokens into them in place; a default cache grows by
/// concatenation, which keeps gradients (scoring rows after a shared prompt).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    reserve: usize,
}

/// One layer's keys and values: the first `len` positions of `k` and `v` (batch, kv_heads,
/// capacity, head_dim) are filled.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerKv {
    fn first(k: &Tensor, v: &Tensor, reserve: usize) -> Result<Self> {
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        let len = k.dim(2)?;
        if reserve == 0 {
            return Ok(Self { k, v, len });
        }
        let (b, h, _, d) = k.dims4()?;
        let kb = Tensor::zeros((b, h, len + reserve, d), k.dtype(), k.device())?;
        let vb = Tensor::zeros((b, h, len + reserve, d), v.dtype(), v.device())?;
        kb.slice_set(&k, 2, 0)?;
        vb.slice_set(&v, 2, 0)?;
        Ok(Self { k: kb, v: vb, len })
    }

    /// Appends (batch, kv_heads, new, head_dim) keys and values: in place while the reserved
    /// positions last (`in_place`), by concatenation otherwise.
    fn append(self, k: &Tensor, v: &Tensor, in_place: bool) -> Result<Self> {
        let new = k.dim(2)?;
        if in_place && self.len + new <= self.k.dim(2)? {
            self.k.slice_set(&k.contiguous()?, 2, self.len)?;
            self.v.slice_set(&v.contiguous()?, 2, self.len)?;
            return Ok(Self {
                len: self.len + new,
                ..self
            });
        }
        let (pk, pv) = self.filled()?;
        Ok(Self {
            k: Tensor::cat(&[&pk, k], 2)?,
            v: Tensor::cat(&[&pv, v], 2)?,
            len: self.len + new,
        })
    }

    /// The filled positions' keys and values.
    fn filled(&self) -> Result<(Tensor, Tensor)> {
        if self.len == self.k.dim(2)? {
            return Ok((self.k.clone(), self.v.clone()));
        }
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

impl KvCache {
    /// An empty cache that keeps `reserve` positions free after its first fill, for tokens
    /// appended one step at a time without copying the cache (no gradients flow through
    /// in-place writes: for generation only).
    pub fn with_reserve(reserve: usize) -> Self {
        Self {
            layers: Vec::new(),
            reserve,
        }
    }

    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A cache whose row i is this cache's row `index[i]` (u32 indices), on every layer;
    /// differentiable, so that rows sharing a prompt's keys and values add up its gradients.
    pub fn select_rows(&self, index: &Tensor) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some(l) => Ok(Some(LayerKv {
                    k: l.k.index_select(index, 0)?,
                    v: l.v.index_select(index, 0)?,
                    len: l.len,
                })),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            reserve: self.reserve,
        })
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct Block {
    ln1: RmsNorm,
    attn: Attention,
    ln2: RmsNorm,
    mlp: GatedMlp,
}

/// The decoder.
#[derive(Debug, Clone)]
pub struct TextModel {
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    cfg: TextConfig,
    rope: RopeStyle,
    inv_freq: Vec<f32>,
}

impl TextModel {
    /// Loads `model.*` and `lm_head.weight` (or the tied embedding).
    pub fn load(p: &ParamStore, cfg: &TextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim;
        let embed = p.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let norm = |name: &str| -> Result<Option<RmsNorm>> {
            if cfg.qk_norm {
                Ok(Some(RmsNorm::load(p, name, hd, cfg.rms_norm_eps)?))
            } else {
                Ok(None)
            }
        };
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let pre = format!("model.layers.{i}");
            blocks.push(Block {
                ln1: RmsNorm::load(
                    p,
                    &format!("{pre}.input_layernorm.weight"),
                    h,
                    cfg.rms_norm_eps,
                )?,
                attn: Attention {
                    q: Linear::load(
                        p,
                        &format!("{pre}.self_attn.q_proj"),
                        h,
                        cfg.num_attention_heads * hd,
                        cfg.qkv_bias,
                    )?,
                    k: Linear::load(
                        p,
                        &format!("{pre}.self_attn.k_proj"),
                        h,
                        cfg.num_key_value_heads * hd,
                        cfg.qkv_bias,
                    )?,
                    v: Linear::load(
                        p,
                        &format!("{pre}.self_attn.v_proj"),
                        h,
                        cfg.num_key_value_heads * hd,
                        cfg.qkv_bias,
                    )?,
                    o: Linear::load(
                        p,
                        &format!("{pre}.self_attn.o_proj"),
                        cfg.num_attention_heads * hd,
                        h,
                        cfg.o_bias,
                    )?,
                    q_norm: norm(&format!("{pre}.self_attn.q_norm.weight"))?,
                    k_norm: norm(&format!("{pre}.self_attn.k_norm.weight"))?,
                    heads: cfg.num_attention_heads,
                    kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                },
                ln2: RmsNorm::load(
                    p,
                    &format!("{pre}.post_attention_layernorm.weight"),
                    h,
                    cfg.rms_norm_eps,
                )?,
                mlp: GatedMlp::load(p, &format!("{pre}.mlp"), h, cfg.intermediate_size, false)?,
            });
        }
        let norm = RmsNorm::load(p, "model.norm.weight", h, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings && !p.contains("lm_head.weight") {
            Linear::from_weight(embed.clone())
        } else {
            Linear::load(p, "lm_head", h, cfg.vocab_size, false)?
        };
        let rope = match &cfg.mrope_section {
            Some(s) if cfg.mrope_interleaved => RopeStyle::Interleaved(s.clone()),
            Some(s) => RopeStyle::Sections(s.clone()),
            None => RopeStyle::Plain,
        };
        let half = hd / 2;
        let base = cfg.rope_theta as f32;
        let inv_freq = (0..half)
            .map(|i| 1.0f32 / base.powf((2 * i) as f32 / hd as f32))
            .collect();
        Ok(Self {
            embed,
            blocks,
            norm,
            lm_head,
            cfg: cfg.clone(),
            rope,
            inv_freq,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Embeddings of token ids (batch, len) -> (batch, len, hidden).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let e = self.embed.index_select(&flat, 0)?;
        Ok(e.reshape((b, l, self.cfg.hidden_size))?)
    }

    /// Rotary tables for per-row positions (all rows the same length).
    pub fn rope_tables(&self, positions: &[Vec<Pos3>]) -> Result<RopeTables> {
        let b = positions.len();
        let l = positions.first().map_or(0, Vec::len);
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        let axis = self.rope.axes(half);
        let mut cos = Vec::with_capacity(b * l * hd);
        let mut sin = Vec::with_capacity(b * l * hd);
        for row in positions {
            if row.len() != l {
                return Err(PolicyError::Input(
                    "rope_tables: rows of different lengths".into(),
                ));
            }
            for p in row {
                let start = cos.len();
                for f in 0..half {
                    let ang = p[axis[f]] as f32 * self.inv_freq[f];
                    cos.push(ang.cos());
                    sin.push(ang.sin());
                }
                cos.extend_from_within(start..start + half);
                sin.extend_from_within(start..start + half);
            }
        }
        Ok(RopeTable {
            batch: b,
            len: l,
            dim: hd,
            cos: Arc::new(cos),
            sin: Arc::new(sin),
        })
    }

    /// Runs the blocks and the final norm over embeddings `x` (batch, len, hidden). `mask` is
    /// additive, broadcastable to (batch, heads, len, cached + len). With a cache, keys and
    /// values are appended to it. `deepstack` adds vision features after the first layers.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&AttnMask>,
        mut cache: Option<&mut KvCache>,
        deepstack: Option<&Deepstack>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        let (b, l, hidden) = x.dims3()?;
        let zero = match deepstack {
            Some(d) if !d.feats.is_empty() => {
                Some(Tensor::zeros((1, hidden), x.dtype(), x.device())?)
            }
            _ => None,
        };
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.blocks.len()
        {
            c.layers = vec![None; self.blocks.len()];
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (c.reserve, &mut c.layers[i]));
            let a = blk.attn.forward(&blk.ln1.forward(&h)?, rope, mask, slot)?;
            h = (h + a)?;
            let m = blk.mlp.forward(&blk.ln2.forward(&h)?)?;
            h = (h + m)?;
            if let (Some(d), Some(zero)) = (deepstack, &zero)
                && let Some(f) = d.feats.get(i)
            {
                let add = Tensor::cat(&[zero, &f.to_dtype(h.dtype())?], 0)?
                    .index_select(&d.index, 0)?
                    .reshape((b, l, hidden))?;
                h = (h + add)?;
            }
        }
        self.norm.forward(&h)
    }

    /// LM-head logits of hidden states (any leading dims), in f32 whatever the compute dtype
    /// (log-probs and sampling need their precision).
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(h)?.to_dtype(candle_core::DType::F32)?)
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rope_t: &RopeTables,
        mask: Option<&AttnMask>,
        cache: Option<(usize, &mut Option<LayerKv>)>,
    ) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let hd = self.head_dim;
        // (Qwen3: per-head RMS norm, then) rotary on (batch, len, heads, head_dim), then heads
        // first.
        let normed = |t: Tensor, n: &Option<RmsNorm>| -> Result<Tensor> {
            match n {
                Some(n) => n.forward(&t),
                None => Ok(t),
            }
        };
        let q = normed(
            self.q.forward(x)?.reshape((b, l, self.heads, hd))?,
            &self.q_norm,
        )?;
        let q = rope(&q, rope_t)?.transpose(1, 2)?;
        let k = normed(
            self.k.forward(x)?.reshape((b, l, self.kv_heads, hd))?,
            &self.k_norm,
        )?;
        let k = rope(&k, rope_t)?.transpose(1, 2)?;
        let v = self
            .v
            .forward(x)?
            .reshape((b, l, self.kv_heads, hd))?
            .transpose(1, 2)?;
        let (k, v) = match cache {
            Some((reserve, slot)) => {
                let layer = match slot.take() {
                    Some(layer) => layer.append(&k, &v, reserve > 0)?,
                    None => LayerKv::first(&k, &v, reserve)?,
                };
                let kv = layer.filled()?;
                *slot = Some(layer);
                kv
            }
            None => (k, v),
        };
        // Grouped-query attention without copying keys/values per query head: the `rep` query
        // heads of one key head are stacked as rows, (batch, kv_heads, rep * len, head_dim).
        let rep = self.heads / self.kv_heads;
        let q = q.contiguous()?.reshape((b, self.kv_heads, rep * l, hd))?;
        let out = attention(&q, &k, &v, mask)?;
        let out = out
            .reshape((b, self.heads, l, hd))?
            .transpose(1, 2)?
            .reshape((b, l, self.heads * hd))?;
        self.o.forward(&out)
    }
}

/// Additive attention mask (batch, q_len, past + q_len) shared by the heads: causal, and key
/// positions whose `valid` flag is false are masked. `valid` has one row per sequence of length
/// past + q_len.
pub fn causal_mask(valid: &[Vec<bool>], q_len: usize) -> AttnMask {
    const NEG: f32 = -1e30;
    let b = valid.len();
    let k_len = valid.first().map_or(0, Vec::len);
    let past = k_len.saturating_sub(q_len);
    let mut m = Vec::with_capacity(b * q_len * k_len);
    for row in valid {
        for qi in 0..q_len {
            for (ki, &ok) in row.iter().enumerate() {
                m.push(if ok && ki <= past + qi { 0.0 } else { NEG });
            }
        }
    }
    AttnMask {
        batch: b,
        q_len,
        k_len,
        add: std::sync::Arc::new(m),
    }
}

/// Log-softmax of logits over the vocabulary (last dim), differentiable.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}
