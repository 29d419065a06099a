//! The Qwen2.5-VL vision tower: patch embedding (a Conv3d with stride = kernel, i.e. a linear map
//! of flattened patches), blocks of RMS-normed attention with 2-D rotary embeddings (windowed in
//! most blocks, full in `fullatt_block_indexes`) and gated SiLU MLPs, and the patch merger that
//! turns each 2x2 group of patches into one language-model token.

use candle_core::{DType, Device, Tensor};

use super::config::VisionConfig;
use super::error::{PolicyError, Result};
use super::image::PixelValues;
use std::sync::Arc;

use super::kernels::{AttnMask, RopeTable, rope};
use super::layers::{GatedMlp, Linear, RmsNorm, attention};
use super::weights::ParamStore;

#[derive(Debug, Clone)]
struct Block {
    norm1: RmsNorm,
    qkv: Linear,
    proj: Linear,
    norm2: RmsNorm,
    mlp: GatedMlp,
}

/// The vision tower.
#[derive(Debug, Clone)]
pub struct VisionModel {
    patch: Linear,
    blocks: Vec<Block>,
    merger_ln: RmsNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    cfg: VisionConfig,
    inv_freq: Vec<f32>,
}

/// Token order and attention segments of a batch of images.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPlan {
    /// Merged-token units in window order.
    pub window_index: Vec<usize>,
    /// Patch offsets of the attention windows (deduplicated, starting at 0).
    pub cu_window: Vec<usize>,
    /// Patch offsets of whole frames (full attention).
    pub cu_full: Vec<usize>,
}

/// HF `get_window_index` plus the full-attention `cu_seqlens`.
pub fn window_plan(grids: &[[usize; 3]], cfg: &VisionConfig) -> WindowPlan {
    let ms = cfg.spatial_merge_size;
    let unit = ms * ms;
    let vws = cfg.window_size / ms / cfg.patch_size;
    let mut window_index = Vec::new();
    let mut cu_window = vec![0usize];
    let mut cu_full = vec![0usize];
    let mut offset = 0usize;
    for &[t, h, w] in grids {
        let (lh, lw) = (h / ms, w / ms);
        let nwh = (lh + vws - lh % vws) / vws;
        let nww = (lw + vws - lw % vws) / vws;
        for tt in 0..t {
            for wy in 0..nwh {
                for wx in 0..nww {
                    let mut count = 0;
                    for y in wy * vws..(wy + 1) * vws {
                        for x in wx * vws..(wx + 1) * vws {
                            if y < lh && x < lw {
                                window_index.push(offset + tt * lh * lw + y * lw + x);
                                count += 1;
                            }
                        }
                    }
                    let last = cu_window.last().copied().unwrap_or(0);
                    if count > 0 {
                        cu_window.push(last + count * unit);
                    }
                }
            }
            let last = cu_full.last().copied().unwrap_or(0);
            cu_full.push(last + h * w);
        }
        offset += t * lh * lw;
    }
    WindowPlan {
        window_index,
        cu_window,
        cu_full,
    }
}

impl VisionModel {
    /// Loads `visual.*`.
    pub fn load(p: &ParamStore, cfg: &VisionConfig) -> Result<Self> {
        let hs = cfg.hidden_size;
        let patch = patch_embedding(p, cfg, false)?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let pre = format!("visual.blocks.{i}");
            blocks.push(Block {
                norm1: RmsNorm::load(p, &format!("{pre}.norm1.weight"), hs, 1e-6)?,
                qkv: Linear::load(p, &format!("{pre}.attn.qkv"), hs, 3 * hs, true)?,
                proj: Linear::load(p, &format!("{pre}.attn.proj"), hs, hs, true)?,
                norm2: RmsNorm::load(p, &format!("{pre}.norm2.weight"), hs, 1e-6)?,
                mlp: GatedMlp::load(p, &format!("{pre}.mlp"), hs, cfg.intermediate_size, true)?,
            });
        }
        let merged = hs * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let dim = hs / cfg.num_heads / 2;
        let inv_freq = (0..dim / 2)
            .map(|i| 1.0f32 / 10_000f32.powf((2 * i) as f32 / dim as f32))
            .collect();
        Ok(Self {
            patch,
            blocks,
            merger_ln: RmsNorm::load(p, "visual.merger.ln_q.weight", hs, 1e-6)?,
            merger_fc1: Linear::load(p, "visual.merger.mlp.0", merged, merged, true)?,
            merger_fc2: Linear::load(p, "visual.merger.mlp.2", merged, cfg.out_hidden_size, true)?,
            cfg: cfg.clone(),
            inv_freq,
        })
    }

    /// Image features, one row per language-model image token, images in order:
    /// (sum of llm_tokens, out_hidden_size).
    /// Computed in `dtype` (the patches are cast to it).
    pub fn forward(&self, images: &[PixelValues], device: &Device, dtype: DType) -> Result<Tensor> {
        let cfg = &self.cfg;
        let pd = cfg.patch_dim();
        let ms = cfg.spatial_merge_size;
        let unit = ms * ms;
        let (grids, data) = pack_patches(images, cfg)?;
        let n_patches = data.len() / pd;
        let plan = window_plan(&grids, cfg);
        // Reorder patches into window order (in whole merge units).
        let mut order = Vec::with_capacity(n_patches);
        for &u in &plan.window_index {
            order.extend((u * unit..(u + 1) * unit).map(|x| x as u32));
        }
        let order_t = Tensor::from_vec(order.clone(), n_patches, device)?;
        let x = Tensor::from_vec(data, (n_patches, pd), device)?.to_dtype(dtype)?;
        let mut h = self.patch.forward(&x)?.index_select(&order_t, 0)?;
        let table = self.rotary(&grids, &order);
        for (i, blk) in self.blocks.iter().enumerate() {
            let cu = if cfg.fullatt_block_indexes.contains(&i) {
                &plan.cu_full
            } else {
                &plan.cu_window
            };
            let a = self.attn(blk, &blk.norm1.forward(&h)?, &table, cu)?;
            h = (h + a)?;
            let m = blk.mlp.forward(&blk.norm2.forward(&h)?)?;
            h = (h + m)?;
        }
        let merged = self
            .merger_ln
            .forward(&h)?
            .reshape((n_patches / unit, cfg.hidden_size * unit))?;
        let merged = self.merger_fc1.forward(&merged)?.gelu_erf()?;
        let merged = self.merger_fc2.forward(&merged)?;
        // Back to the original token order.
        let mut reverse = vec![0u32; plan.window_index.len()];
        for (pos, &u) in plan.window_index.iter().enumerate() {
            reverse[u] = pos as u32;
        }
        let reverse = Tensor::from_vec(reverse, plan.window_index.len(), device)?;
        Ok(merged.index_select(&reverse, 0)?)
    }

    /// 2-D rotary tables (patches, head_dim) in window order.
    fn rotary(&self, grids: &[[usize; 3]], order: &[u32]) -> RopeTable {
        rotary_table(
            grids,
            self.cfg.spatial_merge_size,
            &self.inv_freq,
            Some(order),
        )
    }

    fn attn(&self, blk: &Block, x: &Tensor, table: &RopeTable, cu: &[usize]) -> Result<Tensor> {
        vision_attention(&blk.qkv, &blk.proj, self.cfg.num_heads, x, table, cu)
    }
}

/// The images' grids and their patches concatenated, each image checked against the patch size
/// and merge size of `cfg`.
pub(crate) fn pack_patches(
    images: &[PixelValues],
    cfg: &VisionConfig,
) -> Result<(Vec<[usize; 3]>, Vec<f32>)> {
    let pd = cfg.patch_dim();
    let ms = cfg.spatial_merge_size;
    let mut grids = Vec::with_capacity(images.len());
    let mut data = Vec::with_capacity(images.iter().map(|i| i.data.len()).sum());
    for (n, img) in images.iter().enumerate() {
        let [t, h, w] = img.grid_thw;
        if t == 0 || h % ms != 0 || w % ms != 0 || img.data.len() != t * h * w * pd {
            return Err(PolicyError::Input(format!(
                "image {n}: grid_thw {:?} with {} values does not fit patches of {pd} values \
                 and merge size {ms}",
                img.grid_thw,
                img.data.len()
            )));
        }
        grids.push(img.grid_thw);
        data.extend_from_slice(&img.data);
    }
    Ok((grids, data))
}

/// The patch embedding, a Conv3d whose stride is its kernel, as the linear map of flattened
/// patches it is: `visual.patch_embed.proj.weight` (and with `bias`, `.bias`).
pub(crate) fn patch_embedding(p: &ParamStore, cfg: &VisionConfig, bias: bool) -> Result<Linear> {
    let hs = cfg.hidden_size;
    let conv = p.get(
        "visual.patch_embed.proj.weight",
        &[
            hs,
            cfg.in_channels,
            cfg.temporal_patch_size,
            cfg.patch_size,
            cfg.patch_size,
        ],
    )?;
    let b = if bias {
        Some(p.get("visual.patch_embed.proj.bias", &[hs])?)
    } else {
        None
    };
    Ok(Linear::new(conv.reshape((hs, cfg.patch_dim()))?, b))
}

/// The attention of a vision block: fused q/k/v projection, 2-D rotary on q and k, attention
/// within the segments `cu`, output projection. `x` is (patches, hidden).
pub(crate) fn vision_attention(
    qkv: &Linear,
    proj: &Linear,
    heads: usize,
    x: &Tensor,
    table: &RopeTable,
    cu: &[usize],
) -> Result<Tensor> {
    let (n, hidden) = x.dims2()?;
    let hd = hidden / heads;
    let qkv = qkv.forward(x)?.reshape((n, 3, heads, hd))?;
    let part =
        |i: usize| -> Result<Tensor> { Ok(qkv.narrow(1, i, 1)?.reshape((1, n, heads, hd))?) };
    // Rotary in f32 whatever the compute dtype, as HF's `apply_rotary_pos_emb_vision` does.
    let dtype = x.dtype();
    let rot = |t: Tensor| -> Result<Tensor> {
        Ok(rope(&t.to_dtype(DType::F32)?, table)?
            .to_dtype(dtype)?
            .squeeze(0)?)
    };
    let q = rot(part(0)?)?;
    let k = rot(part(1)?)?;
    let v = qkv.narrow(1, 2, 1)?.squeeze(1)?;
    let out = segmented_attention(&q, &k, &v, cu)?.reshape((n, heads * hd))?;
    proj.forward(&out)
}

/// The 2-D rotary table of the vision towers, (patches, head_dim) with head_dim = 4 *
/// `inv_freq.len()`: patch (row, col) gets angles `[row * f.., col * f..]`, twice (HF's
/// `rot_pos_emb` then `cat(emb, emb)`). Patches are in the processor's merge-block order
/// (frame, block row, block col, row in block, col in block), permuted by `order` if given.
pub(crate) fn rotary_table(
    grids: &[[usize; 3]],
    ms: usize,
    inv_freq: &[f32],
    order: Option<&[u32]>,
) -> RopeTable {
    let q = inv_freq.len();
    let hd = 4 * q;
    let mut pos: Vec<(usize, usize)> = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / ms {
                for bw in 0..w / ms {
                    for ih in 0..ms {
                        for iw in 0..ms {
                            pos.push((bh * ms + ih, bw * ms + iw));
                        }
                    }
                }
            }
        }
    }
    let n = order.map_or(pos.len(), <[u32]>::len);
    let mut cos = Vec::with_capacity(n * hd);
    let mut sin = Vec::with_capacity(n * hd);
    for i in 0..n {
        let (ph, pw) = pos[order.map_or(i, |o| o[i] as usize)];
        let start = cos.len();
        for &p in &[ph, pw] {
            for &f in inv_freq {
                let ang = p as f32 * f;
                cos.push(ang.cos());
                sin.push(ang.sin());
            }
        }
        cos.extend_from_within(start..start + 2 * q);
        sin.extend_from_within(start..start + 2 * q);
    }
    RopeTable {
        batch: 1,
        len: n,
        dim: hd,
        cos: Arc::new(cos),
        sin: Arc::new(sin),
    }
}

/// Attention restricted to segments `cu` (offsets into the rows of q/k/v, (n, heads, head_dim)),
/// computed as one batch: segments are gathered into (segments, heads, max_len, head_dim), pad
/// keys masked out, and the valid rows gathered back. A handful of ops whatever the number of
/// windows (a loop over windows costs a dozen ops per window, and a full-size zero tensor per
/// window in the backward pass of each slice).
pub(crate) fn segmented_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu: &[usize],
) -> Result<Tensor> {
    let (n, heads, hd) = q.dims3()?;
    let lens: Vec<usize> = cu.windows(2).map(|w| w[1] - w[0]).collect();
    let segs = lens.len();
    let max = lens.iter().copied().max().unwrap_or(0);
    if segs == 0 || max == 0 || cu.last().copied() != Some(n) {
        return Err(PolicyError::Input(format!(
            "vision attention: segments {cu:?} do not cover {n} patches"
        )));
    }
    let device = q.device();
    // Padded slots read row 0; their keys are masked and their outputs dropped.
    let mut gather = Vec::with_capacity(segs * max);
    let mut scatter = vec![0u32; n];
    let mut add = Vec::with_capacity(segs * max * max);
    for (w, &len) in lens.iter().enumerate() {
        for i in 0..max {
            if i < len {
                gather.push((cu[w] + i) as u32);
                scatter[cu[w] + i] = (w * max + i) as u32;
            } else {
                gather.push(0);
            }
        }
        for _ in 0..max {
            add.extend((0..max).map(|j| if j < len { 0.0 } else { -1e30f32 }));
        }
    }
    let gather = Tensor::from_vec(gather, segs * max, device)?;
    let pack = |t: &Tensor| -> Result<Tensor> {
        Ok(t.contiguous()?
            .index_select(&gather, 0)?
            .reshape((segs, max, heads, hd))?
            .transpose(1, 2)?)
    };
    let mask = AttnMask {
        batch: segs,
        q_len: max,
        k_len: max,
        add: Arc::new(add),
    };
    let out = attention(&pack(q)?, &pack(k)?, &pack(v)?, Some(&mask))?;
    let out = out
        .transpose(1, 2)?
        .contiguous()?
        .reshape((segs * max, heads, hd))?;
    let scatter = Tensor::from_vec(scatter, n, device)?;
    Ok(out.index_select(&scatter, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VisionConfig {
        VisionConfig {
            depth: 1,
            hidden_size: 32,
            intermediate_size: 64,
            num_heads: 2,
            out_hidden_size: 64,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 112,
            fullatt_block_indexes: vec![],
            in_channels: 3,
            tokens_per_second: 2.0,
            hidden_act: crate::policy::config::VisionAct::Silu,
            num_position_embeddings: None,
            deepstack_visual_indexes: vec![],
            rope_theta: 10_000.0,
        }
    }

    #[test]
    fn window_plan_matches_hf_layout() {
        // 12x20 patches -> 6x10 merged tokens, windows of 4x4 merged tokens: 2 x 3 windows.
        let plan = window_plan(&[[1, 12, 20]], &cfg());
        assert_eq!(plan.window_index.len(), 60);
        // First window: rows 0..4, cols 0..4 of the 6x10 grid.
        assert_eq!(&plan.window_index[..5], &[0, 1, 2, 3, 10]);
        // Window sizes in patches: (4x4, 4x4, 4x2, 2x4, 2x4, 2x2) merged tokens times 4.
        let sizes: Vec<usize> = plan.cu_window.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(sizes, vec![64, 64, 32, 32, 32, 16]);
        assert_eq!(plan.cu_full, vec![0, 240]);
        let mut sorted = plan.window_index.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..60).collect::<Vec<_>>());
    }

    #[test]
    fn window_plan_offsets_second_image() {
        let plan = window_plan(&[[1, 4, 4], [1, 2, 2]], &cfg());
        assert_eq!(plan.window_index, vec![0, 1, 2, 3, 4]);
        assert_eq!(plan.cu_window, vec![0, 16, 20]);
        assert_eq!(plan.cu_full, vec![0, 16, 20]);
    }
}
