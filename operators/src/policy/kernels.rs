//! Fused CPU kernels **with** backward passes for the two hottest element-wise chains of the
//! training forward: the masked, scaled softmax of attention and RMS normalisation. candle's own
//! fused softmax / rms_norm have no backward (TECH_NOTES); composing them from primitive ops is
//! correct but runs a dozen memory-bound passes over the largest tensors. These ops run one pass
//! forward and one backward, and agree with the composed forms to float rounding (tests below).
//! On other devices the callers fall back to the composed forms.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

/// Additive mask values at or below this mean "masked".
pub const MASKED: f32 = -1e29;

/// Rows at least this many elements in total are split across threads.
const PAR_MIN: usize = 1 << 16;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Rows of `n` elements (the last one may be shorter) per thread: `per * n` elements for each of
/// at most `threads` chunks, so that every element of `len` is in a chunk some thread runs.
fn rows_per_thread(len: usize, n: usize, threads: usize) -> usize {
    len.div_ceil(n.max(1)).div_ceil(threads.max(1)).max(1)
}

/// Runs `f(row_index, out_row)` over rows of `out` (row length `n`; the last row may be shorter)
/// on candle's own CPU thread pool (the one its matmuls use: another pool would fight its spinning
/// workers for the cores), when the work is large enough to pay for it.
fn par_rows(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let n = n.max(1);
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    if threads == 1 || out.len() < PAR_MIN {
        for (r, row) in out.chunks_mut(n).enumerate() {
            f(r, row);
        }
        return;
    }
    let per = rows_per_thread(out.len(), n, threads);
    let chunks: Vec<std::sync::Mutex<&mut [f32]>> =
        out.chunks_mut(per * n).map(std::sync::Mutex::new).collect();
    debug_assert!(chunks.len() <= threads);
    pool.execute(|tid| {
        if let Some(chunk) = chunks.get(tid)
            && let Ok(mut chunk) = chunk.lock()
        {
            for (i, row) in chunk.chunks_mut(n).enumerate() {
                f(tid * per + i, row);
            }
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

/// `softmax(scale * x + mask)` over the last dim of x, whose rows are (batch, any groups of
/// heads, q_len) in that order: row r reads mask row (r / rows_per_batch, r % q_len).
#[derive(Debug, Clone)]
struct MaskedSoftmax {
    scale: f32,
    mask: Option<AttnMask>,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "shareflow-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let dims = l.dims();
        let k = dims.last().copied().unwrap_or(1);
        let rows = x.len() / k.max(1);
        let mut per_batch = rows;
        if let Some(m) = &self.mask {
            per_batch = rows / m.batch.max(1);
            if m.k_len != k
                || m.q_len == 0
                || per_batch * m.batch != rows
                || per_batch % m.q_len != 0
            {
                candle_core::bail!(
                    "masked softmax: mask ({}, {}, {}) does not fit scores {dims:?}",
                    m.batch,
                    m.q_len,
                    m.k_len
                );
            }
        }
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, k, |r, row| {
            let xr = &x[r * k..(r + 1) * k];
            let madd = self.mask.as_ref().map(|m| {
                let b = r / per_batch;
                let qi = (r % per_batch) % m.q_len;
                &m.add[(b * m.q_len + qi) * k..(b * m.q_len + qi + 1) * k]
            });
            // Masked keys (additive <= MASKED) get probability 0 without an exp (exp of -1e30
            // takes libm's slow underflow path); a row with every key masked stays uniform, as
            // the composed softmax leaves it.
            let mut max = f32::NEG_INFINITY;
            let mut open = 0usize;
            for j in 0..k {
                let m = madd.map_or(0.0, |m| m[j]);
                if m <= MASKED {
                    row[j] = f32::NEG_INFINITY;
                } else {
                    let v = xr[j] * self.scale + m;
                    row[j] = v;
                    max = max.max(v);
                    open += 1;
                }
            }
            if open == 0 {
                row.fill(1.0 / k as f32);
                return;
            }
            let mut sum = 0f32;
            for v in row.iter_mut() {
                *v = if *v == f32::NEG_INFINITY {
                    0.0
                } else {
                    (*v - max).exp()
                };
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
/// (batch, groups, rows, k_len) f32 where each group's rows repeat the q_len queries
/// (grouped-query attention stacks the query heads of one key head as rows).
pub fn masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&AttnMask>,
) -> candle_core::Result<Tensor> {
    if !fused(scores) {
        return composed_masked_softmax(scores, scale, mask);
    }
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        scale: scale as f32,
        mask: mask.cloned(),
    })
}

/// Whether the fused CPU kernels apply: f32 on the CPU. Everything else (CUDA, bf16) takes the
/// composed forms, built from candle primitives that all have backward passes on every device.
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// [`masked_softmax`] from primitive ops (any device and dtype).
pub fn composed_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&AttnMask>,
) -> candle_core::Result<Tensor> {
    let mut s = (scores * scale)?;
    if let Some(m) = mask {
        let (b, g, rows, k) = s.dims4()?;
        let t = Tensor::from_slice(&m.add, (m.batch, 1, 1, m.q_len, m.k_len), scores.device())?
            .to_dtype(s.dtype())?;
        s = s
            .reshape((b, g, rows / m.q_len, m.q_len, k))?
            .broadcast_add(&t)?
            .reshape((b, g, rows, k))?;
    }
    candle_nn::ops::softmax(&s, candle_core::D::Minus1)
}

/// Rotary tables for [`rope`]: `cos`/`sin` rows of `dim` values for each (batch, position).
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub batch: usize,
    pub len: usize,
    pub dim: usize,
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
}

/// `x * cos + rotate_half(x) * sin` on x (batch, len, heads, dim).
#[derive(Debug, Clone)]
struct RopeOp {
    table: RopeTable,
    /// Backward pass: rotate by -sin (cos/sin halves are duplicated, so R^T(sin g) = -R(sin g)
    /// = -(R(g) sin)).
    negate_sin: bool,
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "shareflow-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let t = &self.table;
        let d = t.dim;
        let half = d / 2;
        let dims = l.dims();
        if dims.len() != 4 || dims[0] != t.batch || dims[1] != t.len || dims[3] != d {
            candle_core::bail!(
                "rope: input {dims:?} does not fit table ({}, {}, {d})",
                t.batch,
                t.len
            );
        }
        let heads = dims[2];
        let sign = if self.negate_sin { -1.0f32 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, heads * d, |r, row| {
            let cos = &t.cos[r * d..(r + 1) * d];
            let sin = &t.sin[r * d..(r + 1) * d];
            let xr = &x[r * heads * d..(r + 1) * heads * d];
            for h in 0..heads {
                let xs = &xr[h * d..(h + 1) * d];
                let os = &mut row[h * d..(h + 1) * d];
                for j in 0..half {
                    os[j] = xs[j] * cos[j] - xs[j + half] * sin[j] * sign;
                    os[j + half] = xs[j + half] * cos[j + half] + xs[j] * sin[j + half] * sign;
                }
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(RopeOp {
            table: self.table.clone(),
            negate_sin: !self.negate_sin,
        })?))
    }
}

/// Rotary embedding of x (batch, len, heads, dim) with a backward pass (fused on CPU f32).
pub fn rope(x: &Tensor, table: &RopeTable) -> candle_core::Result<Tensor> {
    if !fused(x) {
        return composed_rope(x, table);
    }
    x.contiguous()?.apply_op1(RopeOp {
        table: table.clone(),
        negate_sin: false,
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
    if !fused(x) || w.dtype() != DType::F32 {
        return composed_rms_norm(x, w, eps);
    }
    x.contiguous()?.apply_op2(w, RmsNormOp { eps: eps as f32 })
}

/// [`rms_norm`] from primitive ops, as HF's Qwen2RMSNorm computes it in any dtype: statistics
/// and normalisation in f32, back to the input's dtype, times the weight in that dtype.
pub fn composed_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let var = x32.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    x32.broadcast_mul(&inv)?
        .to_dtype(dtype)?
        .broadcast_mul(&w.to_dtype(dtype)?)
}

/// `silu(g) * u` element-wise, with gradients for both.
#[derive(Debug, Clone)]
struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Applies `f(gate, up)` element-wise over two same-shape contiguous inputs (and optionally a
/// third), in parallel chunks.
fn zip_map(
    a: &[f32],
    b: &[f32],
    c: Option<&[f32]>,
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    const CHUNK: usize = 4096;
    let mut out = vec![0f32; a.len()];
    par_rows(&mut out, CHUNK, |r, row| {
        let base = r * CHUNK;
        for (j, o) in row.iter_mut().enumerate() {
            let i = base + j;
            *o = f(a[i], b[i], c.map_or(0.0, |c| c[i]));
        }
    });
    out
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "shareflow-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, self.name())?;
        let u = slice(s2, l2, self.name())?;
        if g.len() != u.len() {
            candle_core::bail!("swiglu: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let out = zip_map(g, u, None, |g, u, _| g * sigmoid(g) * u);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let u = u.contiguous()?;
        let grad = grad.contiguous()?;
        let dg = g.apply_op3_no_bwd(&u, &grad, &SwiGluBwdGate)?;
        let du = g.apply_op2_no_bwd(&grad, &SwiGluBwdUp)?;
        Ok((Some(dg), Some(du)))
    }
}

/// d/dg: grad * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
#[derive(Debug, Clone)]
struct SwiGluBwdGate;

impl CustomOp3 for SwiGluBwdGate {
    fn name(&self) -> &'static str {
        "shareflow-swiglu-bwd-gate"
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
        let g = slice(s1, l1, self.name())?;
        let u = slice(s2, l2, self.name())?;
        let d = slice(s3, l3, self.name())?;
        let out = zip_map(g, u, Some(d), |g, u, d| {
            let s = sigmoid(g);
            d * u * s * (1.0 + g * (1.0 - s))
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// d/du: grad * silu(g).
#[derive(Debug, Clone)]
struct SwiGluBwdUp;

impl CustomOp2 for SwiGluBwdUp {
    fn name(&self) -> &'static str {
        "shareflow-swiglu-bwd-up"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, self.name())?;
        let d = slice(s2, l2, self.name())?;
        let out = zip_map(g, d, None, |g, d, _| d * g * sigmoid(g));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `silu(gate) * up` with a backward pass (fused on CPU f32, composed elsewhere).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if !fused(gate) || up.dtype() != DType::F32 || gate.shape() != up.shape() {
        return composed_swiglu(gate, up);
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// Log-softmax statistics of one row of logits at temperature `inv_t = 1 / T`: (max, log Z) of
/// `z * inv_t`.
fn row_lse(z: &[f32], inv_t: f32) -> (f32, f32) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * inv_t));
    let sum: f32 = z.iter().map(|&v| (v * inv_t - max).exp()).sum();
    (max, max + sum.ln())
}

/// `log_softmax(z / T)[target]` per row of logits (rows, vocab), with a backward pass. One pass
/// over the logits each way, instead of materialising the (rows, vocab) log-softmax (for a
/// 150k-token vocabulary that is the largest tensor of a training step).
#[derive(Debug, Clone)]
struct TokenLogProb {
    targets: Arc<Vec<u32>>,
    inv_t: f32,
}

impl CustomOp1 for TokenLogProb {
    fn name(&self) -> &'static str {
        "shareflow-token-log-prob"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = slice(s, l, self.name())?;
        let (rows, vocab) = l.shape().dims2()?;
        if self.targets.len() != rows {
            candle_core::bail!(
                "token log-prob: {} targets for {rows} rows",
                self.targets.len()
            );
        }
        if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token log-prob: target {t} outside the vocabulary of {vocab}");
        }
        let mut out = vec![0f32; rows];
        par_rows(&mut out, 1, |r, o| {
            let zr = &z[r * vocab..(r + 1) * vocab];
            let (_, lse) = row_lse(zr, self.inv_t);
            o[0] = zr[self.targets[r] as usize] * self.inv_t - lse;
        });
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, z: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let z = z.contiguous()?;
        let g = grad.contiguous()?;
        Ok(Some(
            z.apply_op2_no_bwd(&g, &TokenLogProbBwd(self.clone()))?,
        ))
    }
}

/// dz = (g / T) * (onehot(target) - softmax(z / T)).
#[derive(Debug, Clone)]
struct TokenLogProbBwd(TokenLogProb);

impl CustomOp2 for TokenLogProbBwd {
    fn name(&self) -> &'static str {
        "shareflow-token-log-prob-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        let (_, vocab) = l1.shape().dims2()?;
        let inv_t = self.0.inv_t;
        let mut out = vec![0f32; z.len()];
        par_rows(&mut out, vocab, |r, row| {
            let zr = &z[r * vocab..(r + 1) * vocab];
            let (_, lse) = row_lse(zr, inv_t);
            let c = g[r] * inv_t;
            for (o, &v) in row.iter_mut().zip(zr) {
                *o = -c * (v * inv_t - lse).exp();
            }
            row[self.0.targets[r] as usize] += c;
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Entropy of `softmax(z / T)` per row, with a backward pass.
#[derive(Debug, Clone)]
struct RowEntropy {
    inv_t: f32,
}

fn entropy_row(zr: &[f32], inv_t: f32) -> (f32, f32) {
    let (_, lse) = row_lse(zr, inv_t);
    let h = -zr
        .iter()
        .map(|&v| {
            let lp = v * inv_t - lse;
            lp.exp() * lp
        })
        .sum::<f32>();
    (h, lse)
}

impl CustomOp1 for RowEntropy {
    fn name(&self) -> &'static str {
        "shareflow-row-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = slice(s, l, self.name())?;
        let (rows, vocab) = l.shape().dims2()?;
        let mut out = vec![0f32; rows];
        par_rows(&mut out, 1, |r, o| {
            o[0] = entropy_row(&z[r * vocab..(r + 1) * vocab], self.inv_t).0;
        });
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, z: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let z = z.contiguous()?;
        let g = grad.contiguous()?;
        Ok(Some(z.apply_op2_no_bwd(&g, &RowEntropyBwd(self.inv_t))?))
    }
}

/// dH/dz_j = -(1/T) p_j (log p_j + H).
#[derive(Debug, Clone)]
struct RowEntropyBwd(f32);

impl CustomOp2 for RowEntropyBwd {
    fn name(&self) -> &'static str {
        "shareflow-row-entropy-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        let (_, vocab) = l1.shape().dims2()?;
        let inv_t = self.0;
        let mut out = vec![0f32; z.len()];
        par_rows(&mut out, vocab, |r, row| {
            let zr = &z[r * vocab..(r + 1) * vocab];
            let (h, lse) = entropy_row(zr, inv_t);
            for (o, &v) in row.iter_mut().zip(zr) {
                let lp = v * inv_t - lse;
                *o = -g[r] * inv_t * lp.exp() * (lp + h);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `log_softmax(logits / temperature)[targets]` for logits (rows, vocab): (rows).
pub fn token_log_probs(
    logits: &Tensor,
    targets: &[u32],
    temperature: f64,
) -> candle_core::Result<Tensor> {
    if !fused(logits) {
        return composed_token_log_probs(logits, targets, temperature);
    }
    logits.contiguous()?.apply_op1(TokenLogProb {
        targets: Arc::new(targets.to_vec()),
        inv_t: (1.0 / temperature) as f32,
    })
}

/// Entropy of `softmax(logits / temperature)` per row: (rows).
pub fn token_entropy(logits: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    if !fused(logits) {
        return composed_token_entropy(logits, temperature);
    }
    logits.contiguous()?.apply_op1(RowEntropy {
        inv_t: (1.0 / temperature) as f32,
    })
}

/// [`rope`] from primitive ops: `x * cos + rotate_half(x) * sin`, the tables in x's dtype.
pub fn composed_rope(x: &Tensor, table: &RopeTable) -> candle_core::Result<Tensor> {
    let shape = (table.batch, table.len, 1, table.dim);
    let cos = Tensor::from_slice(&table.cos, shape, x.device())?.to_dtype(x.dtype())?;
    let sin = Tensor::from_slice(&table.sin, shape, x.device())?.to_dtype(x.dtype())?;
    let d = table.dim;
    let x1 = x.narrow(candle_core::D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(candle_core::D::Minus1, d / 2, d - d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], candle_core::D::Minus1)?;
    x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?
}

/// [`swiglu`] from primitive ops.
pub fn composed_swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.silu()?.broadcast_mul(up)
}

/// [`token_log_probs`] from primitive ops, in f32 whatever the logits' dtype.
pub fn composed_token_log_probs(
    logits: &Tensor,
    targets: &[u32],
    temperature: f64,
) -> candle_core::Result<Tensor> {
    let z = (logits.to_dtype(DType::F32)? / temperature)?;
    let lp = candle_nn::ops::log_softmax(&z, candle_core::D::Minus1)?;
    let t = Tensor::from_slice(targets, (targets.len(), 1), logits.device())?;
    lp.gather(&t, 1)?.squeeze(1)
}

/// [`token_entropy`] from primitive ops, in f32 whatever the logits' dtype.
pub fn composed_token_entropy(logits: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let z = (logits.to_dtype(DType::F32)? / temperature)?;
    let lp = candle_nn::ops::log_softmax(&z, candle_core::D::Minus1)?;
    (lp.exp()? * &lp)?.sum(candle_core::D::Minus1)?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn every_element_is_in_a_thread_chunk() {
        // A length that is not a multiple of the row length used to leave a tail chunk no
        // thread ran (zeros in swiglu's output on 2 threads).
        for threads in 1..=9 {
            for n in [1, 7, 4096] {
                for len in [1, n, 4 * n + 100, 5 * n + 1, 64 * n - 1, 65536 + 3] {
                    let per = rows_per_thread(len, n, threads);
                    let chunks = len.div_ceil(per * n);
                    assert!(
                        chunks <= threads && chunks * per * n >= len,
                        "len {len} n {n} threads {threads}: {chunks} chunks of {per} rows"
                    );
                }
            }
        }
    }

    #[test]
    fn swiglu_is_right_past_the_parallel_threshold_with_a_partial_tail() -> candle_core::Result<()>
    {
        // 4 full 4096-element chunks and a partial one: the case that lost its tail.
        let len = 4 * 4096 * 4 + 100;
        let g: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) / 17.0).collect();
        let u: Vec<f32> = (0..len).map(|i| ((i % 89) as f32 - 44.0) / 13.0).collect();
        let gt = Tensor::from_vec(g.clone(), len, &Device::Cpu)?;
        let ut = Tensor::from_vec(u.clone(), len, &Device::Cpu)?;
        let y = swiglu(&gt, &ut)?.to_vec1::<f32>()?;
        for (i, (&a, &b)) in g.iter().zip(&u).enumerate() {
            let want = a / (1.0 + (-a).exp()) * b;
            assert!(
                (y[i] - want).abs() <= 1e-5 * want.abs().max(1.0),
                "element {i}: {} vs {want}",
                y[i]
            );
        }
        Ok(())
    }

    fn rand(shape: &[usize], seed: u64) -> Vec<f32> {
        let mut rng = shareflow_runtime::rng::DetRng::from_seed(seed);
        (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect()
    }

    /// Gradients of `sum(fused * up)` and `sum(composed * up)` with respect to each var agree.
    fn assert_same_grads(
        fused: &Tensor,
        composed: &Tensor,
        up: &Tensor,
        vars: &[&Var],
        tol: f32,
    ) -> candle_core::Result<()> {
        let g1 = (fused * up)?.sum_all()?.backward()?;
        let g2 = (composed * up)?.sum_all()?.backward()?;
        for v in vars {
            let (Some(a), Some(c)) = (g1.get(v.as_tensor()), g2.get(v.as_tensor())) else {
                panic!("no gradient");
            };
            assert!(max_diff(a, c) < tol, "{}", max_diff(a, c));
        }
        Ok(())
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
        assert_same_grads(&fused, &composed, &up, &[&x], 1e-5)?;
        Ok(())
    }

    #[test]
    fn rope_matches_composed_forward_and_backward() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, l, h, d) = (2, 5, 3, 8);
        let x = Var::from_vec(rand(&[b, l, h, d], 6), (b, l, h, d), &dev)?;
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for p in 0..b * l {
            let half: Vec<f32> = (0..d / 2)
                .map(|j| (p as f32 + 1.0) * 0.3 / (j as f32 + 1.0))
                .collect();
            for _ in 0..2 {
                cos.extend(half.iter().map(|a| a.cos()));
                sin.extend(half.iter().map(|a| a.sin()));
            }
        }
        let table = RopeTable {
            batch: b,
            len: l,
            dim: d,
            cos: Arc::new(cos.clone()),
            sin: Arc::new(sin.clone()),
        };
        let up = Tensor::from_vec(rand(&[b, l, h, d], 7), (b, l, h, d), &dev)?;
        let fused = rope(x.as_tensor(), &table)?;
        let c = Tensor::from_vec(cos, (b, l, 1, d), &dev)?;
        let s = Tensor::from_vec(sin, (b, l, 1, d), &dev)?;
        let composed = crate::policy::layers::apply_rotary(x.as_tensor(), &c, &s)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        assert!(max_diff(&fused, &composed) < 1e-6);
        assert_same_grads(&fused, &composed, &up, &[&x], 1e-5)?;
        Ok(())
    }

    #[test]
    fn swiglu_matches_composed_forward_and_backward() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let g = Var::from_vec(rand(&[3, 50, 70], 8), (3, 50, 70), &dev)?;
        let u = Var::from_vec(rand(&[3, 50, 70], 9), (3, 50, 70), &dev)?;
        let up = Tensor::from_vec(rand(&[3, 50, 70], 10), (3, 50, 70), &dev)?;
        let fused = swiglu(g.as_tensor(), u.as_tensor())?;
        let composed = (g.as_tensor().silu()? * u.as_tensor())?;
        assert!(max_diff(&fused, &composed) < 1e-5);
        assert_same_grads(&fused, &composed, &up, &[&g, &u], 1e-5)
    }

    #[test]
    fn token_log_probs_and_entropy_match_composed() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (6, 37);
        let z = Var::from_vec(rand(&[n, v], 11), (n, v), &dev)?;
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7) % v as u32).collect();
        let up = Tensor::from_vec(rand(&[n], 12), n, &dev)?;
        for t in [1.0, 0.7] {
            let lp = candle_nn::ops::log_softmax(&(z.as_tensor() / t)?, candle_core::D::Minus1)?;
            let tt = Tensor::from_slice(&targets, (n, 1), &dev)?;
            let want = lp.gather(&tt, 1)?.squeeze(1)?;
            let got = token_log_probs(z.as_tensor(), &targets, t)?;
            assert!(max_diff(&got, &want) < 1e-5);
            let want_h = (lp.exp()? * &lp)?.sum(candle_core::D::Minus1)?.neg()?;
            let got_h = token_entropy(z.as_tensor(), t)?;
            assert!(max_diff(&got_h, &want_h) < 1e-5);
            for (a, b) in [(got, want), (got_h, want_h)] {
                assert_same_grads(&a, &b, &up, &[&z], 1e-5)?;
            }
        }
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
        assert_same_grads(&fused, &composed, &up, &[&x, &w], 1e-4)
    }
    /// The composed forms are what CUDA and bf16 run: in f32 they equal the fused kernels
    /// (forward and gradients); in bf16, computed from f32 vars cast down (f32 master weights,
    /// bf16 compute), every var still gets its gradient, within bf16 rounding of the f32 one.
    #[test]
    fn composed_fallbacks_keep_their_gradients_in_f32_and_bf16() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, h, q, k) = (2, 3, 5, 7);
        let x = Var::from_vec(rand(&[b, h, q, k], 21), (b, h, q, k), &dev)?;
        let mask = AttnMask {
            batch: b,
            q_len: q,
            k_len: k,
            add: Arc::new(
                (0..b * q * k)
                    .map(|i| if i % 5 == 0 { -1e30 } else { 0.0 })
                    .collect(),
            ),
        };
        let (l, d) = (q, 8);
        let xr = Var::from_vec(rand(&[b, l, h, d], 22), (b, l, h, d), &dev)?;
        let angles = |p: usize, j: usize| (p as f32 + 1.0) * 0.3 / (j as f32 + 1.0);
        let table = RopeTable {
            batch: b,
            len: l,
            dim: d,
            cos: Arc::new(
                (0..b * l * d)
                    .map(|i| angles(i / d, i % (d / 2)).cos())
                    .collect(),
            ),
            sin: Arc::new(
                (0..b * l * d)
                    .map(|i| angles(i / d, i % (d / 2)).sin())
                    .collect(),
            ),
        };
        let w = Var::from_vec(rand(&[d], 23), d, &dev)?;
        let g = Var::from_vec(rand(&[4, 9], 24), (4, 9), &dev)?;
        let u = Var::from_vec(rand(&[4, 9], 25), (4, 9), &dev)?;
        let z = Var::from_vec(rand(&[6, 37], 26), (6, 37), &dev)?;
        let targets: Vec<u32> = (0..6).map(|i| (i * 7) % 37).collect();
        type Op<'a> = Box<dyn Fn(DType, bool) -> candle_core::Result<Tensor> + 'a>;
        let cast = |v: &Var, dt: DType| v.as_tensor().to_dtype(dt);
        let ops: Vec<(&str, Vec<&Var>, Op)> = vec![
            (
                "masked_softmax",
                vec![&x],
                Box::new(|dt, c| {
                    let s = cast(&x, dt)?;
                    if c {
                        composed_masked_softmax(&s, 0.25, Some(&mask))
                    } else {
                        masked_softmax(&s, 0.25, Some(&mask))
                    }
                }),
            ),
            (
                "rope",
                vec![&xr],
                Box::new(|dt, c| {
                    let s = cast(&xr, dt)?;
                    if c {
                        composed_rope(&s, &table)
                    } else {
                        rope(&s, &table)
                    }
                }),
            ),
            (
                "rms_norm",
                vec![&xr, &w],
                Box::new(|dt, c| {
                    let (s, ww) = (cast(&xr, dt)?, cast(&w, dt)?);
                    if c {
                        composed_rms_norm(&s, &ww, 1e-6)
                    } else {
                        rms_norm(&s, &ww, 1e-6)
                    }
                }),
            ),
            (
                "swiglu",
                vec![&g, &u],
                Box::new(|dt, c| {
                    let (gg, uu) = (cast(&g, dt)?, cast(&u, dt)?);
                    if c {
                        composed_swiglu(&gg, &uu)
                    } else {
                        swiglu(&gg, &uu)
                    }
                }),
            ),
            (
                "token_log_probs",
                vec![&z],
                Box::new(|dt, c| {
                    let s = cast(&z, dt)?;
                    if c {
                        composed_token_log_probs(&s, &targets, 0.7)
                    } else {
                        token_log_probs(&s, &targets, 0.7)
                    }
                }),
            ),
            (
                "token_entropy",
                vec![&z],
                Box::new(|dt, c| {
                    let s = cast(&z, dt)?;
                    if c {
                        composed_token_entropy(&s, 0.7)
                    } else {
                        token_entropy(&s, 0.7)
                    }
                }),
            ),
        ];
        for (name, vars, op) in &ops {
            let fused = op(DType::F32, false)?;
            let composed = op(DType::F32, true)?;
            let up = Tensor::from_vec(rand(fused.dims(), 27), fused.shape(), &dev)?;
            assert!(
                max_diff(&fused, &composed) < 1e-5,
                "{name}: {}",
                max_diff(&fused, &composed)
            );
            assert_same_grads(&fused, &composed, &up, vars, 1e-4)?;
            // bf16 compute from f32 vars: gradients reach the f32 vars, close to the f32 ones.
            let half = op(DType::BF16, false)?.to_dtype(DType::F32)?;
            let scale = fused.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            assert!(
                max_diff(&fused, &half) < 0.02 * scale,
                "{name} bf16: {}",
                max_diff(&fused, &half)
            );
            let g32 = (&fused * &up)?.sum_all()?.backward()?;
            let g16 = (&half * &up)?.sum_all()?.backward()?;
            for v in vars {
                let (Some(a), Some(c)) = (g32.get(v.as_tensor()), g16.get(v.as_tensor())) else {
                    panic!("{name}: no gradient in bf16");
                };
                assert_eq!(c.dtype(), DType::F32, "{name}: the master gradient is f32");
                let gs = a.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
                assert!(
                    max_diff(a, c) < 0.05 * gs,
                    "{name} bf16 grad: {} of {gs}",
                    max_diff(a, c)
                );
            }
        }
        Ok(())
    }
}
