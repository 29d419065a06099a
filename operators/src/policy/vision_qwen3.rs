//! The Qwen3-VL vision tower: patch embedding (a Conv3d with bias, as a linear map of flattened
//! patches) plus a learned position-embedding table resampled bilinearly to each image's patch
//! grid, blocks of LayerNormed full attention (per frame) with 2-D rotary embeddings and a GELU
//! MLP, the final patch merger, and the "deepstack" mergers: the outputs of the blocks in
//! `deepstack_visual_indexes` merged like the final output and added to the hidden states of the
//! image tokens after decoder layers 0, 1, ... (see [`super::text::Deepstack`]).
//!
//! Reference: transformers 5.23 `models/qwen3_vl/modeling_qwen3_vl.py` (`Qwen3VLVisionModel`)
//! and `vision_utils.py` (`get_vision_interpolation_indices_and_weights`, bilinear with
//! `align_corners=True`). Checked against it by `operators/tests/qwen3_policy.rs`.

use candle_core::{DType, Device, Tensor};

use super::config::{VisionAct, VisionConfig};
use super::error::{PolicyError, Result};
use super::image::PixelValues;
use super::kernels::RopeTable;
use super::layers::{LayerNorm, Linear};
use super::vision::{pack_patches, patch_embedding, rotary_table, vision_attention};
use super::weights::ParamStore;

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// `fc2(gelu(fc1(norm(x))))` over groups of `merge^2` patches; the norm runs over one patch
/// (`postshuffle = false`, the final merger) or over the concatenated group (the deepstack
/// mergers).
#[derive(Debug, Clone)]
struct Merger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    postshuffle: bool,
}

impl Merger {
    fn load(p: &ParamStore, prefix: &str, cfg: &VisionConfig, postshuffle: bool) -> Result<Self> {
        let hs = cfg.hidden_size;
        let merged = hs * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle { merged } else { hs };
        Ok(Self {
            norm: LayerNorm::load(p, &format!("{prefix}.norm"), norm_dim, 1e-6)?,
            fc1: Linear::load(p, &format!("{prefix}.linear_fc1"), merged, merged, true)?,
            fc2: Linear::load(
                p,
                &format!("{prefix}.linear_fc2"),
                merged,
                cfg.out_hidden_size,
                true,
            )?,
            postshuffle,
        })
    }

    fn forward(&self, x: &Tensor, merged: usize) -> Result<Tensor> {
        let rows = x.elem_count() / merged;
        let y = if self.postshuffle {
            self.norm.forward(&x.reshape((rows, merged))?)?
        } else {
            self.norm.forward(x)?.reshape((rows, merged))?
        };
        self.fc2.forward(&self.fc1.forward(&y)?.gelu_erf()?)
    }
}

/// Features of a batch of images: one row per language-model image token, images in order.
#[derive(Debug, Clone)]
pub struct VisionFeatures {
    /// (image tokens, out_hidden_size): replaces the image placeholders' embeddings.
    pub main: Tensor,
    /// One (image tokens, out_hidden_size) tensor per deepstack layer, for decoder layers 0, 1, ...
    pub deepstack: Vec<Tensor>,
}

/// The Qwen3-VL vision tower.
#[derive(Debug, Clone)]
pub struct Qwen3VisionModel {
    patch: Linear,
    pos_embed: Tensor,
    side: usize,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
    cfg: VisionConfig,
    inv_freq: Vec<f32>,
}

/// Bilinear taps (align_corners) of target index `i` on an axis of `size` into a table side of
/// `side`: `[(tap, weight); 2]`, as `_interpolation_axis_taps_weights` computes them in f32.
fn axis_taps(i: usize, size: usize, side: usize) -> [(usize, f32); 2] {
    let src = i as f32 * (side - 1) as f32 / (size.saturating_sub(1).max(1)) as f32;
    let floor = src.floor();
    let base = floor as usize;
    let mut out = [(0, 0.0); 2];
    for (o, slot) in out.iter_mut().enumerate() {
        let tap = (base + o).min(side - 1);
        let w = (1.0 - (src - floor - o as f32).abs()).max(0.0);
        *slot = (tap, w);
    }
    out
}

impl Qwen3VisionModel {
    /// Loads `visual.*`.
    pub fn load(p: &ParamStore, cfg: &VisionConfig) -> Result<Self> {
        let hs = cfg.hidden_size;
        let patch = patch_embedding(p, cfg, true)?;
        let n_pos = cfg.num_position_embeddings.ok_or_else(|| {
            PolicyError::bad_file(
                p.source(),
                "vision_config.num_position_embeddings is needed by Qwen3-VL",
            )
        })?;
        let side = (n_pos as f64).sqrt().round() as usize;
        let pos_embed = p.get("visual.pos_embed.weight", &[n_pos, hs])?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let pre = format!("visual.blocks.{i}");
            let inter = cfg.intermediate_size;
            blocks.push(Block {
                norm1: LayerNorm::load(p, &format!("{pre}.norm1"), hs, 1e-6)?,
                qkv: Linear::load(p, &format!("{pre}.attn.qkv"), hs, 3 * hs, true)?,
                proj: Linear::load(p, &format!("{pre}.attn.proj"), hs, hs, true)?,
                norm2: LayerNorm::load(p, &format!("{pre}.norm2"), hs, 1e-6)?,
                fc1: Linear::load(p, &format!("{pre}.mlp.linear_fc1"), hs, inter, true)?,
                fc2: Linear::load(p, &format!("{pre}.mlp.linear_fc2"), inter, hs, true)?,
            });
        }
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|j| Merger::load(p, &format!("visual.deepstack_merger_list.{j}"), cfg, true))
            .collect::<Result<Vec<_>>>()?;
        let dim = hs / cfg.num_heads / 2;
        let base = cfg.rope_theta as f32;
        let inv_freq = (0..dim / 2)
            .map(|i| 1.0f32 / base.powf((2 * i) as f32 / dim as f32))
            .collect();
        Ok(Self {
            patch,
            pos_embed,
            side,
            blocks,
            merger: Merger::load(p, "visual.merger", cfg, false)?,
            deepstack,
            cfg: cfg.clone(),
            inv_freq,
        })
    }

    /// Image features and deepstack features of `images`, in order.
    /// Computed in `dtype` (the patches are cast to it).
    pub fn forward(
        &self,
        images: &[PixelValues],
        device: &Device,
        dtype: DType,
    ) -> Result<VisionFeatures> {
        let cfg = &self.cfg;
        let pd = cfg.patch_dim();
        let ms = cfg.spatial_merge_size;
        let merged = cfg.hidden_size * ms * ms;
        let (grids, data) = pack_patches(images, cfg)?;
        // Full attention within each frame.
        let mut cu = vec![0usize];
        for &[t, h, w] in &grids {
            for _ in 0..t {
                let last = cu.last().copied().unwrap_or(0);
                cu.push(last + h * w);
            }
        }
        let n_patches = data.len() / pd;
        let x = Tensor::from_vec(data, (n_patches, pd), device)?.to_dtype(dtype)?;
        let pos = self.position_embeddings(&grids, device)?.to_dtype(dtype)?;
        let mut h = (self.patch.forward(&x)? + pos)?;
        let table = rotary_table(&grids, ms, &self.inv_freq, None);
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            let a = self.attn(blk, &blk.norm1.forward(&h)?, &table, &cu)?;
            h = (h + a)?;
            let m = blk.norm2.forward(&h)?;
            let m = match cfg.hidden_act {
                VisionAct::GeluTanh => blk.fc1.forward(&m)?.gelu()?,
                VisionAct::GeluErf => blk.fc1.forward(&m)?.gelu_erf()?,
                VisionAct::Silu => blk.fc1.forward(&m)?.silu()?,
            };
            h = (h + blk.fc2.forward(&m)?)?;
            if let Some(j) = cfg.deepstack_visual_indexes.iter().position(|&k| k == i) {
                deepstack.push(self.deepstack[j].forward(&h, merged)?);
            }
        }
        Ok(VisionFeatures {
            main: self.merger.forward(&h, merged)?,
            deepstack,
        })
    }

    /// The position table resampled to every patch, (patches, hidden), patches in the
    /// processor's merge-block order and repeated per frame.
    fn position_embeddings(&self, grids: &[[usize; 3]], device: &Device) -> Result<Tensor> {
        let ms = self.cfg.spatial_merge_size;
        let side = self.side;
        let mut index = Vec::new();
        let mut weight = Vec::new();
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / ms {
                    for bw in 0..w / ms {
                        for ih in 0..ms {
                            for iw in 0..ms {
                                let rows = axis_taps(bh * ms + ih, h, side);
                                let cols = axis_taps(bw * ms + iw, w, side);
                                for (hr, hw) in rows {
                                    for (wc, ww) in cols {
                                        index.push((hr * side + wc) as u32);
                                        weight.push(hw * ww);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let n = index.len() / 4;
        let taps = Tensor::from_vec(index, 4 * n, device)?;
        let weight = Tensor::from_vec(weight, (n, 4, 1), device)?;
        let hs = self.cfg.hidden_size;
        let gathered = self
            .pos_embed
            .index_select(&taps, 0)?
            .reshape((n, 4, hs))?
            .broadcast_mul(&weight.to_dtype(self.pos_embed.dtype())?)?;
        Ok(gathered.sum(1)?)
    }

    fn attn(&self, blk: &Block, x: &Tensor, table: &RopeTable, cu: &[usize]) -> Result<Tensor> {
        vision_attention(&blk.qkv, &blk.proj, self.cfg.num_heads, x, table, cu)
    }
}

#[cfg(test)]
mod tests {
    use super::axis_taps;

    #[test]
    fn taps_hit_the_corners_and_interpolate_between() {
        // 4 positions onto a side of 4: exact table entries.
        for i in 0..4 {
            assert_eq!(axis_taps(i, 4, 4)[0], (i, 1.0));
        }
        // 3 positions onto a side of 4: 0, 1.5, 3.
        let mid = axis_taps(1, 3, 4);
        assert_eq!(mid, [(1, 0.5), (2, 0.5)]);
        let last = axis_taps(2, 3, 4);
        assert_eq!(last[0], (3, 1.0));
        assert_eq!(last[1].1, 0.0);
        // One position: the first entry.
        assert_eq!(axis_taps(0, 1, 4)[0], (0, 1.0));
    }
}
