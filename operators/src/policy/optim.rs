//! The optimizer of the policy update: AdamW as `torch.optim.AdamW` computes it, global
//! gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`, the skip of non-finite steps of
//! EasyR1's `DataParallelPPOActor._optimizer_step`, gradient accumulation over micro-batches,
//! and checkpointable state.
//!
//! AdamW step, per parameter `p` with gradient `g` (torch `_single_tensor_adam` with decoupled
//! weight decay, same float32 operation order):
//! ```text
//! t += 1
//! p  = p * (1 - lr * wd)
//! m  = m + (g - m) * (1 - b1)                 // exp_avg.lerp_(g, 1 - b1)
//! v  = v * b2 + ((1 - b2) * g) * g            // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
//! p  = p + (-(lr / (1 - b1^t)) * m) / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//! `t` is counted per parameter: a parameter without a gradient in a step is left alone (no
//! decay, no moment update), as torch does for `p.grad is None`. candle-nn's `AdamW` computes the
//! same update mathematically but in another operation order (`sqrt(v / (1 - b2^t))`), keeps its
//! state private and has no checkpoint of it, hence this type.
//!
//! Clipping: `norm = sqrt(sum over parameters of |g|^2)`; the gradients are scaled by
//! `min(1, max_norm / (norm + 1e-6))`. A non-finite norm is [`PolicyError::NonFinite`] and the
//! step is skipped: parameters, moments and step counts stay as they were (EasyR1 skips the
//! update when `clip_grad_norm_` returns a non-finite norm).

use std::collections::{BTreeMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, TensorId, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::error::{PolicyError, Result};

/// AdamW and clipping settings; defaults are the R1-ShareVL / EasyR1 actor's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimConfig {
    /// Learning rate (1e-6).
    pub lr: f64,
    /// Moment decay rates (0.9, 0.999).
    pub betas: (f64, f64),
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (1e-2).
    pub weight_decay: f64,
    /// Global gradient-norm clip (1.0); `None` reports the norm without clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            max_grad_norm: Some(1.0),
        }
    }
}

impl OptimConfig {
    /// Checks `lr >= 0`, `0 <= beta < 1`, `eps >= 0`, `weight_decay >= 0`, `max_grad_norm > 0`.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(PolicyError::Input(format!("optimizer config: {what}")));
        let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_nonneg(self.lr) {
            return bad(format!("lr must be finite and >= 0, got {}", self.lr));
        }
        for (i, b) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("betas.{i} must be in [0, 1), got {b}"));
            }
        }
        if !finite_nonneg(self.eps) {
            return bad(format!("eps must be finite and >= 0, got {}", self.eps));
        }
        if !finite_nonneg(self.weight_decay) {
            return bad(format!(
                "weight_decay must be finite and >= 0, got {}",
                self.weight_decay
            ));
        }
        if let Some(n) = self.max_grad_norm
            && (n.is_nan() || n <= 0.0)
        {
            return bad(format!("max_grad_norm must be > 0, got {n}"));
        }
        Ok(())
    }
}

/// Shape of the learning-rate schedule after the warm-up (`lr_scheduler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// The peak learning rate until the end.
    #[default]
    Constant,
    /// Linear from the peak to `min_lr_ratio * peak`.
    Linear,
    /// Half a cosine from the peak to `min_lr_ratio * peak`.
    Cosine,
}

impl std::str::FromStr for LrDecay {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            other => Err(format!("{other:?}: expected constant, linear or cosine")),
        }
    }
}

/// Learning rate per training step, as a factor of the peak learning rate: a linear warm-up over
/// `warmup_steps` steps, then [`LrDecay`] over the remaining steps down to `min_lr_ratio`.
///
/// One factor per training step (not per optimizer step), as verl and EasyR1 step their
/// scheduler once per update. Step `t` (0-based) of the warm-up gets `(t + 1) / warmup_steps`, so
/// the first step already moves the weights (torch's `LambdaLR` warm-up gives step 0 a zero
/// rate). After it, with `p = (t - warmup) / (total - warmup)` in `[0, 1)`:
/// linear `1 - (1 - min) * p`, cosine `min + (1 - min) * (1 + cos(pi * p)) / 2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub decay: LrDecay,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_lr_ratio: f64,
}

impl Default for LrSchedule {
    /// Constant, no warm-up.
    fn default() -> Self {
        Self {
            decay: LrDecay::Constant,
            warmup_steps: 0,
            total_steps: 1,
            min_lr_ratio: 0.0,
        }
    }
}

impl LrSchedule {
    /// Checks `0 <= min_lr_ratio <= 1` and `warmup_steps <= total_steps`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(PolicyError::Input(format!(
                "lr schedule: min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            )));
        }
        if self.warmup_steps > self.total_steps {
            return Err(PolicyError::Input(format!(
                "lr schedule: {} warm-up steps is more than the {} training steps",
                self.warmup_steps, self.total_steps
            )));
        }
        Ok(())
    }

    /// The factor of the peak learning rate at training step `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let p = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let min = self.min_lr_ratio;
        match self.decay {
            LrDecay::Constant => 1.0,
            LrDecay::Linear => 1.0 - (1.0 - min) * p,
            LrDecay::Cosine => min + (1.0 - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients before clipping (`actor/grad_norm`).
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Factor the gradients were scaled by (1 when clipping was not active).
    pub clip_coef: f64,
    /// Parameters that had a gradient and were updated.
    pub updated: usize,
}

/// Moments of one parameter, flattened in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarState {
    /// Steps this parameter took (torch's per-parameter `step`).
    pub step: u64,
    pub shape: Vec<usize>,
    /// First moment (`exp_avg`).
    pub exp_avg: Vec<f32>,
    /// Second moment (`exp_avg_sq`).
    pub exp_avg_sq: Vec<f32>,
}

/// Checkpointable optimizer state: the learning rate, the number of steps taken and the moments
/// of every parameter that has taken a step, by parameter name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimState {
    pub lr: f64,
    pub steps: u64,
    pub vars: BTreeMap<String, VarState>,
}

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    step: u64,
    /// `(exp_avg, exp_avg_sq)`, float32, allocated at the first step.
    moments: Option<(Tensor, Tensor)>,
}

/// AdamW with global-norm clipping over named candle `Var`s.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    slots: Vec<Slot>,
    steps: u64,
}

impl Optimizer {
    /// An optimizer over named variables. Names must be unique; they key the checkpoint state.
    pub fn new(vars: impl IntoIterator<Item = (String, Var)>, cfg: OptimConfig) -> Result<Self> {
        cfg.validate()?;
        let mut seen = HashSet::new();
        let mut slots = Vec::new();
        for (name, var) in vars {
            if !var.dtype().is_float() {
                return Err(PolicyError::Input(format!(
                    "optimizer: variable `{name}` has dtype {:?}, expected a float type",
                    var.dtype()
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(PolicyError::Input(format!(
                    "optimizer: variable name `{name}` given twice"
                )));
            }
            slots.push(Slot {
                name,
                var,
                step: 0,
                moments: None,
            });
        }
        Ok(Self {
            cfg,
            slots,
            steps: 0,
        })
    }

    /// An optimizer over all variables of a `VarMap`, named by their VarMap names (in sorted
    /// order).
    pub fn from_varmap(varmap: &VarMap, cfg: OptimConfig) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| PolicyError::Input("optimizer: VarMap lock poisoned".into()))?;
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        drop(data);
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Self::new(vars, cfg)
    }

    /// An optimizer over unnamed variables (e.g. `varmap.all_vars()`), named `"0"`, `"1"`, ...
    /// in the given order. The state is only portable if that order is reproducible (the order
    /// of `VarMap::all_vars` is not: prefer [`Optimizer::from_varmap`] for checkpoints).
    pub fn from_vars(vars: Vec<Var>, cfg: OptimConfig) -> Result<Self> {
        Self::new(
            vars.into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v)),
            cfg,
        )
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Sets the learning rate of the next steps (for a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Steps taken (skipped steps not counted).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The variables, with their names.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.var))
    }

    /// An empty accumulator for the gradients of these variables.
    pub fn accumulator(&self) -> GradAccumulator {
        GradAccumulator::new(self.slots.iter().map(|s| &s.var))
    }

    /// The gradients of the variables present in `grads`, as float32, shapes checked.
    fn collect(&self, grads: &GradStore) -> Result<Vec<Option<Tensor>>> {
        self.slots
            .iter()
            .map(|s| {
                grads
                    .get(s.var.as_tensor())
                    .map(|g| {
                        if g.shape() != s.var.shape() {
                            return Err(PolicyError::Input(format!(
                                "optimizer: gradient of `{}` has shape {:?}, the variable {:?}",
                                s.name,
                                g.dims(),
                                s.var.dims()
                            )));
                        }
                        Ok(g.to_dtype(DType::F32)?)
                    })
                    .transpose()
            })
            .collect()
    }

    /// Global L2 norm of the gradients of the variables in `grads` (float32 squares summed per
    /// variable, then in f64 across variables).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        norm_of(&self.collect(grads)?)
    }

    /// Clips the gradients to the global norm and applies one AdamW step to every variable that
    /// has a gradient in `grads`. On a non-finite gradient norm nothing changes and the result
    /// is [`PolicyError::NonFinite`].
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        self.cfg.validate()?;
        let gs = self.collect(grads)?;
        let grad_norm = norm_of(&gs)?;
        if !grad_norm.is_finite() {
            return Err(PolicyError::NonFinite(format!(
                "gradient norm is {grad_norm}; optimizer step skipped, parameters unchanged"
            )));
        }
        let clip_coef = match self.cfg.max_grad_norm {
            Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let OptimConfig {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay,
            ..
        } = self.cfg;
        // Compute every update first, then write: an error leaves all parameters untouched.
        let mut updates = Vec::new();
        for (idx, (slot, g)) in self.slots.iter().zip(gs).enumerate() {
            let Some(g) = g else { continue };
            let g = if clip_coef < 1.0 {
                g.affine(clip_coef, 0.0)?
            } else {
                g
            };
            let p = slot.var.as_detached_tensor();
            let p32 = p.to_dtype(DType::F32)?;
            let (m, v) = match &slot.moments {
                Some((m, v)) => (m.clone(), v.clone()),
                None => (p32.zeros_like()?, p32.zeros_like()?),
            };
            let step = slot.step + 1;
            let p32 = p32.affine(1.0 - lr * weight_decay, 0.0)?;
            let m = m.add(&g.sub(&m)?.affine(1.0 - b1, 0.0)?)?;
            let v = v.affine(b2, 0.0)?.add(&g.affine(1.0 - b2, 0.0)?.mul(&g)?)?;
            let bias1 = 1.0 - b1.powf(step as f64);
            let bias2_sqrt = (1.0 - b2.powf(step as f64)).sqrt();
            let step_size = lr / bias1;
            let bias2_sqrt = Tensor::new(bias2_sqrt as f32, p32.device())?;
            let denom = v.sqrt()?.broadcast_div(&bias2_sqrt)?.affine(1.0, eps)?;
            let p32 = p32.add(&m.affine(-step_size, 0.0)?.div(&denom)?)?;
            updates.push((idx, p32.to_dtype(p.dtype())?, m, v, step));
        }
        let updated = updates.len();
        for (idx, p, m, v, step) in updates {
            let slot = &mut self.slots[idx];
            slot.var.set(&p)?;
            slot.moments = Some((m, v));
            slot.step = step;
        }
        self.steps += 1;
        Ok(StepStats {
            grad_norm,
            lr,
            clip_coef,
            updated,
        })
    }

    /// An optimizer over `vars` (a replica's, named and ordered as this one's) in exactly this
    /// one's state: configuration, learning rate, step counts and moments.
    pub fn replica_for(&self, vars: Vec<(String, Var)>) -> Result<Self> {
        let mut o = Self::new(vars, self.cfg)?;
        o.load_state(&self.state()?)?;
        Ok(o)
    }

    /// The state to checkpoint (copies the moments to the host).
    pub fn state(&self) -> Result<OptimState> {
        let mut vars = BTreeMap::new();
        for s in &self.slots {
            if let Some((m, v)) = &s.moments {
                vars.insert(
                    s.name.clone(),
                    VarState {
                        step: s.step,
                        shape: s.var.dims().to_vec(),
                        exp_avg: m.flatten_all()?.to_vec1::<f32>()?,
                        exp_avg_sq: v.flatten_all()?.to_vec1::<f32>()?,
                    },
                );
            }
        }
        Ok(OptimState {
            lr: self.cfg.lr,
            steps: self.steps,
            vars,
        })
    }

    /// Restores a state from [`Optimizer::state`]: learning rate, step counts and moments.
    /// Variables absent from `state` start afresh; a name the optimizer does not know, or a
    /// shape that differs, is an error (and nothing is changed).
    pub fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut loaded: Vec<Option<(u64, Tensor, Tensor)>> = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let Some(vs) = state.vars.get(&s.name) else {
                loaded.push(None);
                continue;
            };
            let n: usize = s.var.dims().iter().product();
            if vs.shape != s.var.dims() || vs.exp_avg.len() != n || vs.exp_avg_sq.len() != n {
                return Err(PolicyError::Input(format!(
                    "optimizer state: `{}` has shape {:?} ({} / {} moment values), the variable \
                     {:?}",
                    s.name,
                    vs.shape,
                    vs.exp_avg.len(),
                    vs.exp_avg_sq.len(),
                    s.var.dims()
                )));
            }
            let dev = s.var.device();
            let m = Tensor::from_slice(&vs.exp_avg, s.var.shape(), dev)?;
            let v = Tensor::from_slice(&vs.exp_avg_sq, s.var.shape(), dev)?;
            loaded.push(Some((vs.step, m, v)));
        }
        let known: HashSet<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
        if let Some(unknown) = state.vars.keys().find(|k| !known.contains(k.as_str())) {
            return Err(PolicyError::Input(format!(
                "optimizer state: variable `{unknown}` is not optimized here"
            )));
        }
        for (slot, l) in self.slots.iter_mut().zip(loaded) {
            match l {
                Some((step, m, v)) => {
                    slot.step = step;
                    slot.moments = Some((m, v));
                }
                None => {
                    slot.step = 0;
                    slot.moments = None;
                }
            }
        }
        self.cfg.lr = state.lr;
        self.steps = state.steps;
        Ok(())
    }
}

fn norm_of(gs: &[Option<Tensor>]) -> Result<f64> {
    let sq: Vec<Tensor> = gs
        .iter()
        .flatten()
        .map(|g| g.sqr()?.sum_all())
        .collect::<candle_core::Result<_>>()?;
    if sq.is_empty() {
        return Ok(0.0);
    }
    let sq = Tensor::stack(&sq, 0)?.to_vec1::<f32>()?;
    Ok(sq.iter().map(|&s| f64::from(s)).sum::<f64>().sqrt())
}

/// Back-propagates `share * loss` (`loss` itself when `share` is 1).
fn scaled_backward(loss: &Tensor, share: f64) -> Result<GradStore> {
    Ok(if share == 1.0 {
        loss.backward()?
    } else {
        loss.affine(share, 0.0)?.backward()?
    })
}

/// Sums the gradients of several `backward()` calls (micro-batches) for a set of variables;
/// gradients of other tensors in the stores (candle also records them for constants) are
/// dropped.
#[derive(Debug)]
pub struct GradAccumulator {
    ids: HashSet<TensorId>,
    grads: GradStore,
    micro_batches: usize,
}

impl GradAccumulator {
    /// An empty accumulator for `vars`.
    pub fn new<'a>(vars: impl IntoIterator<Item = &'a Var>) -> Self {
        Self {
            ids: vars.into_iter().map(|v| v.as_tensor().id()).collect(),
            grads: GradStore::default(),
            micro_batches: 0,
        }
    }

    /// A micro-batch's share of the mini-batch's token-mean loss: its valid tokens over the
    /// mini-batch's (EasyR1 scales each micro-batch loss by `sum(mask) / total_tokens`, which
    /// makes the accumulated gradient that of the token mean over the whole mini-batch).
    pub fn token_share(micro_batch_mask: &Tensor, mini_batch_tokens: f64) -> Result<f64> {
        if mini_batch_tokens.is_nan() || mini_batch_tokens <= 0.0 {
            return Err(PolicyError::Input(format!(
                "token_share: the mini-batch has {mini_batch_tokens} valid tokens"
            )));
        }
        let n = micro_batch_mask
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        Ok(n / mini_batch_tokens)
    }

    /// Back-propagates `share * loss` and adds the gradients.
    pub fn backward(&mut self, loss: &Tensor, share: f64) -> Result<()> {
        self.add(scaled_backward(loss, share)?)
    }

    /// Adds the gradients of one `backward()` call.
    pub fn add(&mut self, grads: GradStore) -> Result<()> {
        let mut kept = GradStore::default();
        for &id in grads.get_ids() {
            if self.ids.contains(&id)
                && let Some(g) = grads.get_id(id)
            {
                kept.insert_id(id, g.clone());
            }
        }
        self.grads.extend(kept)?;
        self.micro_batches += 1;
        Ok(())
    }

    /// Adds one micro-batch's gradients given per variable (`grads[i]` of `vars[i]`; None: no
    /// gradient), as [`GradAccumulator::add`] adds a `backward()` result: the same sums, so
    /// gradients that went through a replica exchange accumulate bit for bit as local ones.
    pub fn add_slots(&mut self, vars: &[Var], grads: Vec<Option<Tensor>>) -> Result<()> {
        let mut store = GradStore::default();
        for (v, g) in vars.iter().zip(grads) {
            if let Some(g) = g {
                store.insert_id(v.as_tensor().id(), g);
            }
        }
        self.add(store)
    }

    /// The gradients of `share * loss` (as [`GradAccumulator::backward`] computes them) per
    /// variable of `vars`, in that order: one micro-batch's result for a replica exchange.
    pub fn grads_of(loss: &Tensor, share: f64, vars: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let grads = scaled_backward(loss, share)?;
        Ok(vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect())
    }

    /// Number of gradient stores added since the last [`GradAccumulator::take`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The accumulated gradients.
    pub fn grads(&self) -> &GradStore {
        &self.grads
    }

    /// Returns the accumulated gradients and starts over (`zero_grad`).
    pub fn take(&mut self) -> GradStore {
        self.micro_batches = 0;
        std::mem::take(&mut self.grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Init;

    #[test]
    fn from_varmap_names_variables_in_sorted_order() -> Result<()> {
        let vm = VarMap::new();
        vm.get(
            (2, 3),
            "z.weight",
            Init::Const(1.0),
            DType::F32,
            &Device::Cpu,
        )?;
        vm.get(4, "a.bias", Init::Const(0.0), DType::F32, &Device::Cpu)?;
        let opt = Optimizer::from_varmap(&vm, OptimConfig::default())?;
        let names: Vec<&str> = opt.vars().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.bias", "z.weight"]);
        let opt = Optimizer::from_vars(vm.all_vars(), OptimConfig::default())?;
        assert_eq!(opt.vars().count(), 2);
        Ok(())
    }

    #[test]
    fn config_is_validated() {
        let ok = OptimConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            OptimConfig { lr: -1.0, ..ok },
            OptimConfig {
                betas: (1.0, 0.999),
                ..ok
            },
            OptimConfig {
                max_grad_norm: Some(0.0),
                ..ok
            },
            OptimConfig {
                max_grad_norm: Some(f64::NAN),
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duplicate_names_are_rejected() -> Result<()> {
        let v = Var::zeros(2, DType::F32, &Device::Cpu)?;
        let err = Optimizer::new(
            [("w".to_string(), v.clone()), ("w".to_string(), v)],
            OptimConfig::default(),
        );
        assert!(err.is_err());
        Ok(())
    }

    #[test]
    fn lr_schedule_warms_up_then_decays_to_the_floor() {
        let sched = |decay| LrSchedule {
            decay,
            warmup_steps: 4,
            total_steps: 14,
            min_lr_ratio: 0.1,
        };
        for decay in [LrDecay::Constant, LrDecay::Linear, LrDecay::Cosine] {
            let s = sched(decay);
            let f: Vec<f64> = (0..14).map(|t| s.factor(t)).collect();
            assert_eq!(&f[..4], &[0.25, 0.5, 0.75, 1.0], "{decay:?}");
            assert!(f.iter().all(|&x| x > 0.0 && x <= 1.0), "{decay:?}: {f:?}");
            assert!(
                f.windows(2).skip(4).all(|w| w[1] <= w[0]),
                "{decay:?}: {f:?}"
            );
        }
        assert!(
            (0..14)
                .skip(4)
                .all(|t| sched(LrDecay::Constant).factor(t) == 1.0)
        );
        // Halfway through the decay: linear 1 - 0.9 / 2, cosine 0.1 + 0.9 / 2.
        assert!((sched(LrDecay::Linear).factor(9) - 0.55).abs() < 1e-12);
        assert!((sched(LrDecay::Cosine).factor(9) - 0.55).abs() < 1e-12);
        // A quarter of the way: cosine stays above linear.
        let (lin, cos) = (
            sched(LrDecay::Linear).factor(6),
            sched(LrDecay::Cosine).factor(6),
        );
        assert!((lin - 0.82).abs() < 1e-12 && cos > lin, "{lin} {cos}");
        // Past the end the floor holds.
        assert!((sched(LrDecay::Cosine).factor(20) - 0.1).abs() < 1e-12);
        assert!(LrSchedule::default().factor(0) == 1.0);
        assert!(
            LrSchedule {
                min_lr_ratio: 1.5,
                ..sched(LrDecay::Linear)
            }
            .validate()
            .is_err()
        );
        assert!(
            LrSchedule {
                warmup_steps: 15,
                ..sched(LrDecay::Linear)
            }
            .validate()
            .is_err()
        );
        assert_eq!("cosine".parse::<LrDecay>(), Ok(LrDecay::Cosine));
        assert!(
            "step"
                .parse::<LrDecay>()
                .expect_err("an unknown schedule")
                .contains("constant, linear or cosine")
        );
    }
}
