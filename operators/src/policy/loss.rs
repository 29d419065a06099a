//! The token-level clipped PPO objective of the R1-ShareVL / EasyR1 release, differentiable with
//! respect to the current policy's log-probabilities.
//!
//! Reference: `compute_policy_loss` and `compute_kl` of EasyR1 (`verl/trainer/core_algos.py`,
//! hiyouga/EasyR1; the R1-ShareVL release, HJYao00/R1-ShareVL, ships an older copy of the same
//! file) and the way `DataParallelPPOActor.update_policy` (`verl/workers/actor/dp_actor.py`)
//! combines them: `loss = pg_loss + kl_coef * masked_mean(kl)`, token-level means over the
//! mini-batch. Every operation here mirrors the reference's float32 arithmetic, including the
//! gradient conventions of `torch.clamp` (the gradient passes where `lo <= x <= hi`, boundaries
//! included) and of `torch.maximum` / `torch.minimum` (ties split the gradient in halves, which
//! candle's `maximum` / `minimum` also do). `Tensor::clamp` of candle is built from
//! `maximum` / `minimum`, so at a boundary it passes half the gradient; [`clamp`] here uses
//! `where_cond` instead to match torch.
//!
//! Differences from the reference, on purpose:
//! - `KlPenalty::Full` needs the full next-token distributions: per-token log-probabilities
//!   cannot express it (in the reference, `compute_kl(..., "full")` given per-token
//!   log-probabilities sums over the sequence instead of the vocabulary). [`kl_penalty`] returns
//!   an error for it; [`kl_penalty_full`] takes the logits and [`PpoTerms::with_kl_loss`] adds
//!   the result to the objective.
//! - `pg_loss` is the clipped policy-gradient term alone (as current EasyR1 reports it); the
//!   R1-ShareVL release reported `pg_loss + kl_coef * kl_loss` under that name. With the
//!   Share-GRPO setting (no KL loss) both are the same.
//! - The log-ratio is clamped to [-20, 20] before `exp` (current EasyR1); the release computes
//!   `exp` of the raw log-ratio. The loss and its gradient are the same unless `|log ratio| > 20`,
//!   where the release can overflow to `inf` and produce NaN gradients.

use std::str::FromStr;

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::error::{PolicyError, Result};

/// The KL estimators of EasyR1's `compute_kl`, by their configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlPenalty {
    /// `logp - ref_logp` (k1).
    Kl,
    /// `|logp - ref_logp|`.
    Abs,
    /// `0.5 * (logp - ref_logp)^2` (k2).
    Mse,
    /// `exp(ref - logp) - (ref - logp) - 1` (k3, J. Schulman), the log-ratio clamped to
    /// [-20, 20] and the result to [-10, 10].
    LowVarKl,
    /// `KL(pi || ref)` over the whole vocabulary: needs logits, see [`kl_penalty_full`].
    Full,
}

impl KlPenalty {
    /// The configuration name (`kl`, `abs`, `mse`, `low_var_kl`, `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kl => "kl",
            Self::Abs => "abs",
            Self::Mse => "mse",
            Self::LowVarKl => "low_var_kl",
            Self::Full => "full",
        }
    }
}

impl std::fmt::Display for KlPenalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KlPenalty {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "kl" => Self::Kl,
            "abs" => Self::Abs,
            "mse" => Self::Mse,
            "low_var_kl" => Self::LowVarKl,
            "full" => Self::Full,
            other => {
                return Err(PolicyError::Input(format!(
                    "unknown KL penalty `{other}`; expected one of kl, abs, mse, low_var_kl, full"
                )));
            }
        })
    }
}

/// The KL loss to a reference policy: `coef * masked_mean(kl_penalty(logp, ref_logp))`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlConfig {
    pub penalty: KlPenalty,
    pub coef: f64,
}

/// Clipping parameters of the PPO objective (EasyR1 `actor.clip_ratio_*`) and the optional KL
/// loss (`actor.use_kl_loss`, `kl_penalty`, `kl_coef`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PpoConfig {
    /// The ratio is clipped below at `1 - clip_ratio_low` (0.2).
    pub clip_ratio_low: f64,
    /// The ratio is clipped above at `1 + clip_ratio_high` (0.3, DAPO's clip-higher).
    pub clip_ratio_high: f64,
    /// Dual-clip bound for negative advantages: the per-token loss is at most
    /// `-advantage * clip_ratio_dual` (3.0).
    pub clip_ratio_dual: f64,
    /// KL loss to the reference policy; `None` (the Share-GRPO run) disables it.
    pub kl: Option<KlConfig>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            clip_ratio_low: 0.2,
            clip_ratio_high: 0.3,
            clip_ratio_dual: 3.0,
            kl: None,
        }
    }
}

impl PpoConfig {
    /// Checks the ranges the formulas need: `0 <= clip_ratio_low < 1`, `clip_ratio_high >= 0`,
    /// `clip_ratio_dual > 1`, a finite KL coefficient.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(PolicyError::Input(format!("PPO config: {what}")));
        if !(0.0..1.0).contains(&self.clip_ratio_low) {
            return bad(format!(
                "clip_ratio_low must be in [0, 1), got {}",
                self.clip_ratio_low
            ));
        }
        if !(self.clip_ratio_high >= 0.0 && self.clip_ratio_high.is_finite()) {
            return bad(format!(
                "clip_ratio_high must be finite and >= 0, got {}",
                self.clip_ratio_high
            ));
        }
        if !(self.clip_ratio_dual > 1.0 && self.clip_ratio_dual.is_finite()) {
            return bad(format!(
                "clip_ratio_dual must be finite and > 1, got {}",
                self.clip_ratio_dual
            ));
        }
        if let Some(kl) = &self.kl
            && !kl.coef.is_finite()
        {
            return bad(format!("kl coef must be finite, got {}", kl.coef));
        }
        Ok(())
    }
}

/// The objective of one (micro-)batch and the reference's metrics.
#[derive(Debug, Clone)]
pub struct PpoTerms {
    /// Scalar to call `backward()` on: `pg_loss + kl_coef * kl_loss` (float32).
    pub loss: Tensor,
    /// `actor/pg_loss`: masked token mean of the clipped per-token policy-gradient loss.
    pub pg_loss: f64,
    /// `actor/pg_clipfrac_higher`: fraction of valid tokens where `-A * ratio <
    /// -A * clipped_ratio`, i.e. the PPO clip replaced the unclipped term.
    pub pg_clipfrac_higher: f64,
    /// `actor/pg_clipfrac_lower`: fraction of valid tokens with `A < 0` where the dual clip
    /// (`-A * clip_ratio_dual`) bounded the loss.
    pub pg_clipfrac_lower: f64,
    /// `actor/ppo_kl`: masked mean of `old_logp - logp`.
    pub ppo_kl: f64,
    /// `actor/entropy_loss`: masked mean of `-logp` (the reference's entropy estimator).
    pub entropy_loss: f64,
    /// `actor/kl_loss`: masked mean of the KL penalty, when a KL loss is configured.
    pub kl_loss: Option<f64>,
}

impl PpoTerms {
    /// Adds `coef * masked_mean(kld, mask)` to the loss and records `kl_loss`, for a per-token
    /// KL computed elsewhere (e.g. [`kl_penalty_full`]). Errors if a KL loss is already there.
    pub fn with_kl_loss(mut self, kld: &Tensor, mask: &Tensor, coef: f64) -> Result<Self> {
        if self.kl_loss.is_some() {
            return Err(PolicyError::Input(
                "PPO terms already hold a KL loss (PpoConfig::kl was set)".into(),
            ));
        }
        let kl_loss = masked_mean(&kld.to_dtype(DType::F32)?, &mask.to_dtype(DType::F32)?)?;
        self.kl_loss = Some(scalar(&kl_loss)?);
        self.loss = self.loss.add(&kl_loss.affine(coef, 0.0)?)?;
        Ok(self)
    }
}

/// `sum(x * mask) / (sum(mask) + 1e-8)` over all elements (EasyR1 `VF.masked_mean`), a scalar.
/// `mask` broadcasts against `x`.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let num = x.broadcast_mul(mask)?.sum_all()?;
    let den = mask.sum_all()?.affine(1.0, 1e-8)?;
    Ok(num.div(&den)?)
}

/// `torch.clamp(x, lo, hi)` with torch's gradient: `x` where `lo <= x <= hi` (gradient 1,
/// boundaries included), the bound elsewhere (gradient 0); NaN stays NaN.
pub fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let bound = |v: f64| -> Result<Tensor> {
        Ok(Tensor::new(v as f32, x.device())?
            .to_dtype(x.dtype())?
            .broadcast_as(x.shape())?)
    };
    let (lo_t, hi_t) = (bound(lo)?, bound(hi)?);
    let low = x.lt(&lo_t)?.where_cond(&lo_t, x)?;
    Ok(x.gt(&hi_t)?.where_cond(&hi_t, &low)?)
}

/// `|x|` with torch's gradient (`sign(x)`, 0 at 0; candle's `abs` passes +1 at 0).
fn abs(x: &Tensor) -> Result<Tensor> {
    let pos = x.gt(0.0)?.where_cond(x, &x.neg()?)?;
    Ok(x.eq(0.0)?.where_cond(&x.zeros_like()?, &pos)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

/// Per-token KL penalty between the current and the reference policy (EasyR1 `compute_kl`),
/// in float32, differentiable w.r.t. `log_probs`. Shapes must agree. `KlPenalty::Full` is an
/// error here: use [`kl_penalty_full`] with the logits.
pub fn kl_penalty(log_probs: &Tensor, ref_log_probs: &Tensor, kind: KlPenalty) -> Result<Tensor> {
    if log_probs.shape() != ref_log_probs.shape() {
        return Err(PolicyError::Input(format!(
            "kl_penalty: log_probs {:?} and ref_log_probs {:?} differ in shape",
            log_probs.dims(),
            ref_log_probs.dims()
        )));
    }
    let lp = log_probs.to_dtype(DType::F32)?;
    let rp = ref_log_probs.to_dtype(DType::F32)?;
    Ok(match kind {
        KlPenalty::Kl => lp.sub(&rp)?,
        KlPenalty::Abs => abs(&lp.sub(&rp)?)?,
        KlPenalty::Mse => lp.sub(&rp)?.sqr()?.affine(0.5, 0.0)?,
        KlPenalty::LowVarKl => {
            let kl = clamp(&rp.sub(&lp)?, -20.0, 20.0)?;
            let kld = kl.exp()?.sub(&kl)?.affine(1.0, -1.0)?;
            clamp(&kld, -10.0, 10.0)?
        }
        KlPenalty::Full => {
            return Err(PolicyError::Input(
                "KL penalty `full` needs the full next-token distributions, not per-token \
                 log-probabilities: compute it with kl_penalty_full(logits, ref_logits) and add \
                 it with PpoTerms::with_kl_loss"
                    .into(),
            ));
        }
    })
}

/// Per-token `KL(pi || ref) = sum_v pi_v (log pi_v - log ref_v)` from logits of shape
/// `(.., vocab)` (EasyR1's `F.kl_div(ref_logp, logp, log_target=True).sum(-1)` with full
/// distributions). Both inputs are normalised with `log_softmax` over the last dimension
/// (log-probabilities pass through unchanged); apply the sampling temperature before.
/// Differentiable w.r.t. `logits`; returns the shape without the last dimension.
pub fn kl_penalty_full(logits: &Tensor, ref_logits: &Tensor) -> Result<Tensor> {
    if logits.shape() != ref_logits.shape() || logits.rank() == 0 {
        return Err(PolicyError::Input(format!(
            "kl_penalty_full: logits {:?} and ref_logits {:?} must have the same shape (.., vocab)",
            logits.dims(),
            ref_logits.dims()
        )));
    }
    let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let rp = candle_nn::ops::log_softmax(&ref_logits.to_dtype(DType::F32)?, D::Minus1)?;
    Ok(lp.exp()?.mul(&lp.sub(&rp)?)?.sum(D::Minus1)?)
}

/// The clipped PPO objective with dual clip, token-level mean over the valid tokens of the
/// batch (EasyR1 `compute_policy_loss`, `loss_type = default`, `loss_avg_mode = token`), plus
/// `kl_coef * masked_mean(kl_penalty)` when `cfg.kl` is set (then `ref_log_probs` is required;
/// without `cfg.kl` it is ignored).
///
/// Shapes: `log_probs`, `old_log_probs`, `mask` (and `ref_log_probs`) `(B, T)`; `advantages`
/// `(B)` (one per sequence) or `(B, T)`. All are computed in float32; only `log_probs` should
/// carry a gradient (the others are data). To split a mini-batch into micro-batches, scale each
/// micro-batch's loss by its share of the mini-batch's valid tokens (see
/// `GradAccumulator::token_share`).
pub fn ppo_loss(
    log_probs: &Tensor,
    old_log_probs: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    ref_log_probs: Option<&Tensor>,
    cfg: &PpoConfig,
) -> Result<PpoTerms> {
    cfg.validate()?;
    let (b, t) = log_probs.dims2().map_err(|_| {
        PolicyError::Input(format!(
            "ppo_loss: log_probs must be (batch, tokens), got {:?}",
            log_probs.dims()
        ))
    })?;
    for (name, x) in [("old_log_probs", old_log_probs), ("mask", mask)]
        .into_iter()
        .chain(ref_log_probs.map(|r| ("ref_log_probs", r)))
    {
        if x.dims() != [b, t] {
            return Err(PolicyError::Input(format!(
                "ppo_loss: {name} has shape {:?}, log_probs {:?}",
                x.dims(),
                [b, t]
            )));
        }
    }
    let adv = advantages.to_dtype(DType::F32)?;
    let adv = match adv.dims() {
        [bb] if *bb == b => adv.reshape((b, 1))?.broadcast_as((b, t))?,
        [bb, tt] if *bb == b && *tt == t => adv,
        other => {
            return Err(PolicyError::Input(format!(
                "ppo_loss: advantages must be ({b}) or ({b}, {t}), got {other:?}"
            )));
        }
    };
    let lp = log_probs.to_dtype(DType::F32)?;
    let old = old_log_probs.to_dtype(DType::F32)?;
    let mask = mask.to_dtype(DType::F32)?;

    let neg_kl = lp.sub(&old)?;
    let ratio = clamp(&neg_kl, -20.0, 20.0)?.exp()?;
    let lo = (1.0 - cfg.clip_ratio_low).ln();
    let hi = (1.0 + cfg.clip_ratio_high).ln();
    let clipped_ratio = clamp(&neg_kl, lo, hi)?.exp()?;

    let neg_adv = adv.neg()?;
    let pg1 = neg_adv.mul(&ratio)?;
    let pg2 = neg_adv.mul(&clipped_ratio)?;
    let pg3 = neg_adv.affine(cfg.clip_ratio_dual, 0.0)?;
    let higher = pg1.maximum(&pg2)?;
    let lower = higher.minimum(&pg3)?;
    let adv_neg = adv.lt(0.0)?;
    let per_token = adv_neg.where_cond(&lower, &higher)?;
    let pg_loss = masked_mean(&per_token, &mask)?;

    // Metrics, on detached values.
    let clip_higher = pg1.detach().lt(&pg2.detach())?.to_dtype(DType::F32)?;
    let clip_lower = higher
        .detach()
        .gt(&pg3)?
        .to_dtype(DType::F32)?
        .mul(&adv_neg.to_dtype(DType::F32)?)?;
    let lp_d = lp.detach();
    let ppo_kl = masked_mean(&neg_kl.detach().neg()?, &mask)?;
    let entropy = masked_mean(&lp_d.neg()?, &mask)?;

    let mut terms = PpoTerms {
        pg_loss: scalar(&pg_loss)?,
        pg_clipfrac_higher: scalar(&masked_mean(&clip_higher, &mask)?)?,
        pg_clipfrac_lower: scalar(&masked_mean(&clip_lower, &mask)?)?,
        ppo_kl: scalar(&ppo_kl)?,
        entropy_loss: scalar(&entropy)?,
        kl_loss: None,
        loss: pg_loss,
    };
    if let Some(kl) = &cfg.kl {
        let Some(ref_lp) = ref_log_probs else {
            return Err(PolicyError::Input(format!(
                "ppo_loss: a `{}` KL loss is configured but no ref_log_probs were given",
                kl.penalty
            )));
        };
        let kld = kl_penalty(&lp, ref_lp, kl.penalty)?;
        terms = terms.with_kl_loss(&kld, &mask, kl.coef)?;
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).expect("tensor")
    }

    #[test]
    fn clamp_passes_gradient_at_the_bounds_like_torch() -> Result<()> {
        let x = Var::from_slice(&[-2.0f32, -1.0, 0.5, 1.0, 2.0], 5, &Device::Cpu)?;
        let y = clamp(x.as_tensor(), -1.0, 1.0)?;
        assert_eq!(y.to_vec1::<f32>()?, [-1.0, -1.0, 0.5, 1.0, 1.0]);
        let g = y.sum_all()?.backward()?;
        let g = g
            .get(x.as_tensor())
            .ok_or_else(|| PolicyError::Input("no grad".into()))?;
        assert_eq!(g.to_vec1::<f32>()?, [0.0, 1.0, 1.0, 1.0, 0.0]);
        Ok(())
    }

    #[test]
    fn abs_has_zero_gradient_at_zero() -> Result<()> {
        let x = Var::from_slice(&[-2.0f32, 0.0, 3.0], 3, &Device::Cpu)?;
        let g = abs(x.as_tensor())?.sum_all()?.backward()?;
        let g = g
            .get(x.as_tensor())
            .ok_or_else(|| PolicyError::Input("no grad".into()))?;
        assert_eq!(g.to_vec1::<f32>()?, [-1.0, 0.0, 1.0]);
        Ok(())
    }

    #[test]
    fn full_kl_is_an_error_for_per_token_input() {
        let a = t(&[-1.0, -2.0], (1, 2));
        let err = kl_penalty(&a, &a, KlPenalty::Full);
        assert!(matches!(err, Err(PolicyError::Input(m)) if m.contains("kl_penalty_full")));
    }

    #[test]
    fn shapes_and_config_are_checked() {
        let lp = t(&[-1.0, -2.0, -3.0, -4.0], (2, 2));
        let mask = t(&[1.0, 1.0, 1.0, 0.0], (2, 2));
        let adv = Tensor::from_slice(&[1.0f32, -1.0, 0.5], 3, &Device::Cpu).expect("adv");
        let cfg = PpoConfig::default();
        assert!(ppo_loss(&lp, &lp, &adv, &mask, None, &cfg).is_err());
        let adv = Tensor::from_slice(&[1.0f32, -1.0], 2, &Device::Cpu).expect("adv");
        let bad = PpoConfig {
            clip_ratio_low: 1.0,
            ..cfg
        };
        assert!(ppo_loss(&lp, &lp, &adv, &mask, None, &bad).is_err());
        let with_kl = PpoConfig {
            kl: Some(KlConfig {
                penalty: KlPenalty::LowVarKl,
                coef: 0.1,
            }),
            ..cfg
        };
        assert!(ppo_loss(&lp, &lp, &adv, &mask, None, &with_kl).is_err());
        assert!(ppo_loss(&lp, &lp, &adv, &mask, Some(&lp), &with_kl).is_ok());
    }

    #[test]
    fn on_policy_loss_is_minus_mean_advantage() -> Result<()> {
        let lp = t(&[-1.0, -2.0, -3.0, -4.0], (2, 2));
        let mask = t(&[1.0, 1.0, 1.0, 0.0], (2, 2));
        let adv = Tensor::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu)?;
        let terms = ppo_loss(&lp, &lp, &adv, &mask, None, &PpoConfig::default())?;
        // (-1 - 1 + 2) / 3 = 0
        assert!(terms.pg_loss.abs() < 1e-7);
        assert_eq!(terms.pg_clipfrac_higher, 0.0);
        assert_eq!(terms.pg_clipfrac_lower, 0.0);
        assert!((terms.entropy_loss - 2.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn kl_penalty_names_round_trip() -> Result<()> {
        for k in [
            KlPenalty::Kl,
            KlPenalty::Abs,
            KlPenalty::Mse,
            KlPenalty::LowVarKl,
            KlPenalty::Full,
        ] {
            assert_eq!(k.as_str().parse::<KlPenalty>()?, k);
            let json = serde_json::to_string(&k).map_err(|e| PolicyError::Input(e.to_string()))?;
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert!("k3".parse::<KlPenalty>().is_err());
        Ok(())
    }
}
