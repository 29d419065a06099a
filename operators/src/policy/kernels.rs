//! Fused CPU kernels **with** backward passes for the two hottest element-wise chains of the
//! training forward: the masked, scaled softmax of attention and RMS normalisation. candle's own
//! fused softmax / rms_norm have no backward (TECH_NOTES); composing them from primitive ops is
//! correct but runs a dozen memory-bound passes over the largest tensors. These ops run one pass
//! forward and one backward, and agree with the composed forms to float rounding (tests below).
//! On other devices the callers fall back to the composed forms.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

/// Rows at least this many elements in total are split across threads.
const PAR_MIN: usize = 1 << 16;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f(row_index, out_row)` over rows of `out` (row length `n`), on the candle thread count.
fn par_rows(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let threads = candle_core::utils::get_num_threads().max(1);
    if threads == 1 || out.len() < PAR_MIN || n == 0 {
        for (r, row) in out.chunks_mut(n.max(1)).enumerate() {
            f(r, row);
        }
        return;
    }
    let rows = out.len() / n;
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (c, chunk) in out.chunks_mut(per * n).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (i, row) in chunk.chunks_mut(n).enumerate() {
                    f(c * per + i, row);
                }
            });
        }
    });
}

/// Additive mask shared by all heads: (batch, q_len, k_len).
#[derive(Debug, Clone)]
pub struct AttnMask {
    pub batch: usize,
    pub q_len: usize,
    pub k_len: usize,
    pub add: Arc<Vec<f32>>,
}

/// `softmax(scale * x + mask)` over the last dim of x (batch, heads, q_len, k_len).
#[derive(Debug, Clone)]
struct MaskedSoftmax {
    scale: f32,
    mask: Option<AttnMask>,
    heads: usize,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "shareflow-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let dims = l.dims();
        let k = dims.last().copied().unwrap_or(1);
        let q = if dims.len() >= 2 {
            dims[dims.len() - 2]
        } else {
            1
        };
        if let Some(m) = &self.mask
            && (m.q_len != q || m.k_len != k || x.len() != m.batch * self.heads * q * k)
        {
            candle_core::bail!("masked softmax: mask {m:?} does not fit scores {dims:?}");
        }
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, k, |r, row| {
            let xr = &x[r * k..(r + 1) * k];
            let madd = self.mask.as_ref().map(|m| {
                let b = r / (self.heads * q);
                let qi = r % q;
                &m.add[(b * q + qi) * k..(b * q + qi + 1) * k]
            });
            let mut max = f32::NEG_INFINITY;
            for j in 0..k {
                let v = xr[j] * self.scale + madd.map_or(0.0, |m| m[j]);
                row[j] = v;
                max = max.max(v);
            }
            let mut sum = 0f32;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        Ok(Some(
            res.apply_op2_no_bwd(&g, &SoftmaxBwd { scale: self.scale })?,
        ))
    }
}

/// `dx = scale * y * (g - sum(g * y))` per row.
#[derive(Debug, Clone)]
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "shareflow-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        let k = l1.dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; y.len()];
        par_rows(&mut out, k, |r, row| {
            let yr = &y[r * k..(r + 1) * k];
            let gr = &g[r * k..(r + 1) * k];
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for j in 0..k {
                row[j] = self.scale * yr[j] * (gr[j] - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Attention probabilities `softmax(scale * scores + mask)` with a backward pass; `scores` is
/// (batch, heads, q_len, k_len) f32.
pub fn masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&AttnMask>,
) -> candle_core::Result<Tensor> {
    let heads = if scores.rank() == 4 {
        scores.dim(1)?
    } else {
        1
    };
    if !scores.device().is_cpu() || scores.dtype() != DType::F32 {
        let mut s = (scores * scale)?;
        if let Some(m) = mask {
            let t = Tensor::from_slice(&m.add, (m.batch, 1, m.q_len, m.k_len), scores.device())?;
            s = s.broadcast_add(&t)?;
        }
        return candle_nn::ops::softmax(&s, candle_core::D::Minus1);
    }
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        scale: scale as f32,
        mask: mask.cloned(),
        heads,
    })
}

/// `w * x / sqrt(mean(x^2) + eps)` over the last dim, with gradients for x and w.
#[derive(Debug, Clone)]
struct RmsNormOp {
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "shareflow-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let w = slice(s2, l2, self.name())?;
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, h, |r, row| {
            let xr = &x[r * h..(r + 1) * h];
            let inv = inv_rms(xr, self.eps);
            for j in 0..h {
                row[j] = xr[j] * inv * w[j];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let g = grad.contiguous()?;
        let w = w.contiguous()?;
        let dx = x.apply_op3_no_bwd(&w, &g, &RmsNormBwdX { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(&g, &RmsNormBwdW { eps: self.eps })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx = inv * (g*w) - x * inv^3 * mean(g * w * x).
#[derive(Debug, Clone)]
struct RmsNormBwdX {
    eps: f32,
}

impl CustomOp3 for RmsNormBwdX {
    fn name(&self) -> &'static str {
        "shareflow-rms-norm-bwd-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let w = slice(s2, l2, self.name())?;
        let g = slice(s3, l3, self.name())?;
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, h, |r, row| {
            let xr = &x[r * h..(r + 1) * h];
            let gr = &g[r * h..(r + 1) * h];
            let inv = inv_rms(xr, self.eps);
            let dot: f32 = (0..h).map(|j| gr[j] * w[j] * xr[j]).sum::<f32>() / h as f32;
            let c = inv * inv * inv * dot;
            for j in 0..h {
                row[j] = inv * gr[j] * w[j] - xr[j] * c;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// dw = sum over rows of g * x * inv.
#[derive(Debug, Clone)]
struct RmsNormBwdW {
    eps: f32,
}

impl CustomOp2 for RmsNormBwdW {
    fn name(&self) -> &'static str {
        "shareflow-rms-norm-bwd-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        let h = l1.dims().last().copied().unwrap_or(1);
        let mut dw = vec![0f32; h];
        for (xr, gr) in x.chunks(h).zip(g.chunks(h)) {
            let inv = inv_rms(xr, self.eps);
            for j in 0..h {
                dw[j] += gr[j] * xr[j] * inv;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(h)))
    }
}

/// HF Qwen2RMSNorm with a backward pass (fused on CPU f32, composed elsewhere).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        let var = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let inv = (var + eps)?.sqrt()?.recip()?;
        return x.broadcast_mul(&inv)?.broadcast_mul(w);
    }
    x.contiguous()?.apply_op2(w, RmsNormOp { eps: eps as f32 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Vec<f32> {
        let mut rng = shareflow_runtime::rng::DetRng::from_seed(seed);
        (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY)
    }

    #[test]
    fn masked_softmax_matches_composed_forward_and_backward() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, h, q, k) = (2, 3, 5, 7);
        let x = Var::from_vec(rand(&[b, h, q, k], 1), (b, h, q, k), &dev)?;
        let mut add = vec![0f32; b * q * k];
        for (i, v) in add.iter_mut().enumerate() {
            if i % 5 == 0 {
                *v = -1e30;
            }
        }
        let mask = AttnMask {
            batch: b,
            q_len: q,
            k_len: k,
            add: Arc::new(add.clone()),
        };
        let up = Tensor::from_vec(rand(&[b, h, q, k], 2), (b, h, q, k), &dev)?;
        let fused = masked_softmax(x.as_tensor(), 0.25, Some(&mask))?;
        let m = Tensor::from_vec(add, (b, 1, q, k), &dev)?;
        let composed = candle_nn::ops::softmax(
            &(x.as_tensor() * 0.25)?.broadcast_add(&m)?,
            candle_core::D::Minus1,
        )?;
        assert!(max_diff(&fused, &composed) < 1e-6);
        let g1 = (fused * &up)?.sum_all()?.backward()?;
        let g2 = (composed * &up)?.sum_all()?.backward()?;
        let (Some(a), Some(c)) = (g1.get(x.as_tensor()), g2.get(x.as_tensor())) else {
            panic!("no gradient");
        };
        assert!(max_diff(a, c) < 1e-5, "{}", max_diff(a, c));
        Ok(())
    }

    #[test]
    fn rms_norm_matches_composed_forward_and_backward() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(rand(&[4, 3, 16], 3), (4, 3, 16), &dev)?;
        let w = Var::from_vec(rand(&[16], 4), 16, &dev)?;
        let up = Tensor::from_vec(rand(&[4, 3, 16], 5), (4, 3, 16), &dev)?;
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6)?;
        let var = x.as_tensor().sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let inv = (var + 1e-6)?.sqrt()?.recip()?;
        let composed = x
            .as_tensor()
            .broadcast_mul(&inv)?
            .broadcast_mul(w.as_tensor())?;
        assert!(max_diff(&fused, &composed) < 1e-5);
        let g1 = (fused * &up)?.sum_all()?.backward()?;
        let g2 = (composed * &up)?.sum_all()?.backward()?;
        for v in [&x, &w] {
            let (Some(a), Some(c)) = (g1.get(v.as_tensor()), g2.get(v.as_tensor())) else {
                panic!("no gradient");
            };
            assert!(max_diff(a, c) < 1e-4, "{}", max_diff(a, c));
        }
        Ok(())
    }
}
