//! Building blocks shared by the text decoder and the vision tower, written only with candle ops
//! that have a backward pass (TECH_NOTES: the fused softmax / rms_norm / rope drop gradients).

use candle_core::{D, DType, Tensor};

use super::error::Result;
use super::kernels::{self, AttnMask};
use super::weights::ParamStore;

/// `y = x W^T + b` over the last dimension of `x` (any leading dimensions).
#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` of shape (out, in) and, with `bias`, `{prefix}.bias`.
    pub fn load(
        p: &ParamStore,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = p.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = if bias {
            Some(p.get(&format!("{prefix}.bias"), &[d_out])?)
        } else {
            None
        };
        Ok(Self { w, b })
    }

    /// A linear map sharing `w` (tied embeddings).
    pub fn from_weight(w: Tensor) -> Self {
        Self { w, b: None }
    }

    /// A linear map of weight (out, in) and an optional bias (out).
    pub fn new(w: Tensor, b: Option<Tensor>) -> Self {
        Self { w, b }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let d_in = dims.last().copied().unwrap_or(0);
        let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
        let x2 = x.reshape((rows, d_in))?;
        // Weights follow the activations' dtype (f32 master weights, bf16 compute): a no-op in
        // f32, and the cast's backward hands the gradient to the f32 weight.
        let mut y = x2.matmul(&self.w.to_dtype(x.dtype())?.t()?)?;
        if let Some(b) = &self.b {
            y = y.broadcast_add(&b.to_dtype(x.dtype())?)?;
        }
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.w.dim(0)?;
        }
        Ok(y.reshape(out)?)
    }
}

/// HF's Qwen2RMSNorm: `w * x / sqrt(mean(x^2) + eps)`, differentiable.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(p: &ParamStore, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: p.get(name, &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kernels::rms_norm(x, &self.w, self.eps)?)
    }
}

/// `torch.nn.LayerNorm` with weight and bias over the last dimension, differentiable (composed
/// ops: candle's fused layer norm has no backward).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both of length `dim`.
    pub fn load(p: &ParamStore, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: p.get(&format!("{prefix}.weight"), &[dim])?,
            b: p.get(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    /// In f32 whatever the activations' dtype, rounded to it at the end (as torch's layer norm
    /// computes a bf16 input).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(y.broadcast_mul(&self.w.to_dtype(DType::F32)?)?
            .broadcast_add(&self.b.to_dtype(DType::F32)?)?
            .to_dtype(dtype)?)
    }
}

/// `[-x2, x1]` for `x = [x1, x2]` split in halves of the last dimension.
pub fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

/// Rotary embedding `x * cos + rotate_half(x) * sin` (cos/sin broadcast against x).
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok((x.broadcast_mul(cos)? + rotate_half(x)?.broadcast_mul(sin)?)?)
}

/// Scaled dot-product attention over (batch, heads, len, head_dim) with an optional additive
/// mask shared by the heads; softmax in f32, the products in the inputs' dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&AttnMask>) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let scale = 1.0 / (d as f64).sqrt();
    // The matmuls read transposed and narrowed (KV-cache) keys and values through their
    // strides; copying them contiguous cost more than the attention on every decoding step.
    let scores = q.contiguous()?.matmul(&row_major(k)?.t()?)?;
    let probs = kernels::masked_softmax(&scores.to_dtype(DType::F32)?, scale, mask)?;
    Ok(probs.to_dtype(v.dtype())?.matmul(&row_major(v)?)?)
}

/// `t` (batch, heads, len, dim) as it is when its rows are contiguous and its batches evenly
/// spaced (a contiguous tensor, or the filled part of a KV cache), which matmul reads in place;
/// a contiguous copy otherwise.
fn row_major(t: &Tensor) -> Result<Tensor> {
    if let ([_, h, _, d], [s0, s1, s2, 1]) = (t.dims(), t.stride())
        && *s2 == *d
        && *s0 == s1 * h
    {
        return Ok(t.clone());
    }
    Ok(t.contiguous()?)
}

/// Gated MLP `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl GatedMlp {
    pub fn load(
        p: &ParamStore,
        prefix: &str,
        dim: usize,
        hidden: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(p, &format!("{prefix}.gate_proj"), dim, hidden, bias)?,
            up: Linear::load(p, &format!("{prefix}.up_proj"), dim, hidden, bias)?,
            down: Linear::load(p, &format!("{prefix}.down_proj"), hidden, dim, bias)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        self.down.forward(&kernels::swiglu(&g, &u)?)
    }
}
