//! The policy-side steps of an RL training step, as plain functions the dataflow operators (and a
//! sequential reference loop) call: sampling a seed's responses ([`rollout_seed`]) and the PPO
//! update over a step's training rows ([`ppo_update`]: recompute old log-probs, then mini-batches
//! of micro-batches, gradient accumulation, AdamW), and the supervised update of SFT
//! ([`nll_update`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shareflow_runtime::rng::DetRng;

use crate::allreduce::{GradExchange, LocalExchange, MicroResult, MiniBatchSum};
use crate::policy::candle::{Tensor, Var};
use crate::policy::{
    GradAccumulator, Optimizer, PixelValues, PolicyError, PolicyModel, PpoConfig, Result,
    SamplingParams, ScoreOptions, Sequence, ppo_loss,
};

/// One variant's prompt, ready for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptInput {
    /// Token ids (chat template applied, image placeholders expanded).
    pub ids: Arc<Vec<u32>>,
    /// Pixel values of the prompt's images.
    pub images: Arc<Vec<PixelValues>>,
}

/// One sampled response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Response tokens (including the stop token when one ended it).
    pub tokens: Vec<u32>,
    /// Sampler log-probs, one per token.
    pub log_probs: Vec<f32>,
    /// Whether a stop token ended it.
    pub stopped: bool,
    /// The policy version that generated it.
    pub version: u64,
}

/// Samples `n` responses for each of a seed's variants in one batch. Response i of variant j uses
/// the random stream (run_seed, step, (seed, j), i), so it does not depend on which worker or
/// batch produced it; the batch is always exactly one seed's m*n prompts, so padding (and thus
/// floating-point rounding) is the same wherever it runs. Returns `[j][i]`.
pub fn rollout_seed(
    model: &PolicyModel,
    seed: &str,
    variants: &[PromptInput],
    n: usize,
    params: &SamplingParams,
    run_seed: u64,
    step: u64,
) -> Result<Vec<Vec<Response>>> {
    let mut inputs: Vec<(&[u32], &[PixelValues])> = Vec::with_capacity(variants.len() * n);
    let mut rngs = Vec::with_capacity(variants.len() * n);
    for (j, v) in variants.iter().enumerate() {
        for i in 0..n {
            inputs.push((v.ids.as_slice(), v.images.as_slice()));
            rngs.push(DetRng::derive(run_seed, step, &(seed, j), i as u64));
        }
    }
    let gens = model.generate(&inputs, params, &mut rngs)?;
    let mut out: Vec<Vec<Response>> = (0..variants.len()).map(|_| Vec::with_capacity(n)).collect();
    for (idx, g) in gens.into_iter().enumerate() {
        out[idx / n.max(1)].push(Response {
            tokens: g.tokens,
            log_probs: g.log_probs,
            stopped: g.stopped,
            version: g.policy_version,
        });
    }
    Ok(out)
}

/// A training row as the update needs it: a response under a (possibly other variant's) prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRow {
    pub prompt: PromptInput,
    pub response: Arc<Vec<u32>>,
    pub advantage: f64,
}

/// Settings of [`ppo_update`] (EasyR1's `worker.actor.*` names in the comments).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// Clipping and KL settings.
    pub ppo: PpoConfig,
    /// Rows per optimizer step (`global_batch_size`).
    pub mini_batch_rows: usize,
    /// Rows per forward/backward pass (`micro_batch_size_per_device_for_update`).
    pub micro_batch_rows: usize,
    /// Passes over the step's rows (`ppo_epochs`).
    pub ppo_epochs: usize,
    /// Temperature the log-probs are computed at (the rollout temperature, as verl does).
    pub temperature: f64,
    /// Shuffle rows between mini-batches (`shuffle`), from the step's random stream.
    pub shuffle: bool,
    /// How token losses are averaged over a mini-batch (`loss_agg_mode`).
    pub loss_agg: LossAgg,
}

/// How a mini-batch's per-token losses become its loss (verl's `loss_agg_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossAgg {
    /// The mean over the mini-batch's response tokens (`token-mean`; the reference's, and DAPO's
    /// token-level loss).
    #[default]
    TokenMean,
    /// Each response's token sum over a constant `max_tokens`, averaged over the mini-batch's
    /// responses (`seq-mean-token-sum-norm`; Dr. GRPO's length-free normalisation, with
    /// `max_tokens` = the maximum response length).
    SeqMeanTokenSumNorm { max_tokens: usize },
}

/// Means over the optimizer steps of one update (names as the reference logs them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub pg_loss: f64,
    pub pg_clipfrac_higher: f64,
    pub pg_clipfrac_lower: f64,
    pub ppo_kl: f64,
    pub entropy_loss: f64,
    /// The KL loss to the reference policy before its coefficient (0 without one).
    #[serde(default)]
    pub kl_loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub optimizer_steps: usize,
    /// Optimizer steps skipped because the gradient norm was not finite.
    pub skipped_steps: usize,
    pub response_tokens: usize,
}

fn sequences(rows: &[&UpdateRow]) -> (Vec<Vec<u32>>, Vec<usize>) {
    let mut ids = Vec::with_capacity(rows.len());
    let mut plens = Vec::with_capacity(rows.len());
    for r in rows {
        let mut s = r.prompt.ids.as_ref().clone();
        s.extend(r.response.iter());
        plens.push(r.prompt.ids.len());
        ids.push(s);
    }
    (ids, plens)
}

/// Calls `f` with the rows as model sequences (prompt then response).
fn with_sequences<T>(
    rows: &[&UpdateRow],
    f: impl FnOnce(&[Sequence<'_>]) -> Result<T>,
) -> Result<T> {
    let (ids, plens) = sequences(rows);
    let batch: Vec<Sequence<'_>> = ids
        .iter()
        .zip(&plens)
        .zip(rows)
        .map(|((ids, &p), r)| Sequence {
            ids,
            prompt_len: p,
            images: &r.prompt.images,
        })
        .collect();
    f(&batch)
}

fn score_rows(
    model: &PolicyModel,
    rows: &[&UpdateRow],
    temperature: f64,
) -> Result<crate::policy::Scores> {
    let opts = ScoreOptions {
        temperature,
        ..ScoreOptions::default()
    };
    with_sequences(rows, |batch| model.score(batch, &opts))
}

/// The PPO update of one step: old log-probs of every row under the current policy (the
/// reference recomputes them rather than trusting the sampler), then `ppo_epochs` passes of
/// mini-batches; each mini-batch (its rows of one prompt put together) is split into
/// micro-batches whose losses are scaled by their share of the mini-batch's response tokens (a
/// token-level mean over the mini-batch), summed, and applied with one AdamW step. A mini-batch whose gradient norm is not finite is skipped (the
/// parameters stay as they were) and counted.
pub fn ppo_update(
    model: &PolicyModel,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    cfg: &UpdateConfig,
    rng: &mut DetRng,
) -> Result<UpdateStats> {
    ppo_update_with_reference(model, None, opt, rows, cfg, rng)
}

/// [`ppo_update`] with a frozen reference policy for the KL loss (`cfg.ppo.kl`): each row's
/// reference log-probs are computed once, before the first mini-batch, at the rollout
/// temperature (as verl's reference worker does), and every micro-batch's loss adds
/// `kl.coef * masked_mean(kl_penalty(logp, ref_logp))`. A configured KL loss without a reference
/// is an error.
pub fn ppo_update_with_reference(
    model: &PolicyModel,
    reference: Option<&PolicyModel>,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    cfg: &UpdateConfig,
    rng: &mut DetRng,
) -> Result<UpdateStats> {
    let reference = match (&cfg.ppo.kl, reference) {
        (Some(kl), None) => {
            return Err(PolicyError::Input(format!(
                "ppo_update: a `{}` KL loss is configured but no reference policy was given",
                kl.penalty
            )));
        }
        (Some(_), Some(r)) => Some(r),
        (None, _) => None,
    };
    if rows.is_empty() {
        return Ok(UpdateStats::default());
    }
    if cfg.mini_batch_rows == 0 || cfg.micro_batch_rows == 0 {
        return Err(PolicyError::Input(
            "ppo_update: mini- and micro-batch sizes must be positive".into(),
        ));
    }
    let refs: Vec<&UpdateRow> = rows.iter().collect();
    let lp = old_log_probs(model, reference, &refs, cfg)?;
    ppo_update_prepared(model, opt, rows, &lp, cfg, rng)
}

/// The log-probs a PPO update needs before its first mini-batch, one vector per row: the policy's
/// own (`old`, under the weights the update starts from) and, with a KL loss, the reference
/// policy's (`reference`; empty without one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OldLogProbs {
    pub old: Vec<Vec<f32>>,
    pub reference: Vec<Vec<f32>>,
}

impl OldLogProbs {
    /// Appends another batch of rows' log-probs.
    pub fn extend(&mut self, other: OldLogProbs) {
        self.old.extend(other.old);
        self.reference.extend(other.reference);
    }
}

/// Old (and reference) log-probs of `rows`, micro-batch by micro-batch
/// (`cfg.micro_batch_rows`), without a gradient, at `cfg.temperature`. The micro-batches pad to
/// their longest row, so the figures depend on how rows are batched: the stock graphs score each
/// seed's rows (canonical order) on their own, as soon as the seed is complete.
pub fn old_log_probs(
    model: &PolicyModel,
    reference: Option<&PolicyModel>,
    rows: &[&UpdateRow],
    cfg: &UpdateConfig,
) -> Result<OldLogProbs> {
    if cfg.micro_batch_rows == 0 {
        return Err(PolicyError::Input(
            "old_log_probs: the micro-batch size must be positive".into(),
        ));
    }
    let mut out = OldLogProbs {
        old: Vec::with_capacity(rows.len()),
        reference: Vec::new(),
    };
    for chunk in rows.chunks(cfg.micro_batch_rows) {
        let s = score_rows(model, chunk, cfg.temperature)?;
        for b in 0..chunk.len() {
            out.old.push(s.row(b)?);
        }
        if let Some(r) = reference {
            let s = score_rows(r, chunk, cfg.temperature)?;
            for b in 0..chunk.len() {
                out.reference.push(s.row(b)?);
            }
        }
    }
    Ok(out)
}

/// The rows of a mini-batch with the rows of each prompt next to each other (prompts in the
/// order they first appear, rows in their order), so that its micro-batches share prompts, which
/// the model then runs once ([`crate::policy::ScoreOptions::share_prompts`]). The mini-batch's
/// rows, and so its gradient, are the same: only which micro-batch adds which row changes.
fn prompts_together(mini: &[usize], rows: &[UpdateRow]) -> Vec<usize> {
    let same = |a: &PromptInput, b: &PromptInput| {
        (Arc::ptr_eq(&a.ids, &b.ids) && Arc::ptr_eq(&a.images, &b.images)) || a == b
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &r in mini {
        match groups
            .iter_mut()
            .find(|g| same(&rows[g[0]].prompt, &rows[r].prompt))
        {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.concat()
}

/// The PPO update of one step given its rows' [`OldLogProbs`] (row by row; the reference's
/// exactly when `cfg.ppo.kl` is set): `ppo_epochs` passes of mini-batches, as
/// [`ppo_update_with_reference`] describes.
pub fn ppo_update_prepared(
    model: &PolicyModel,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    lp: &OldLogProbs,
    cfg: &UpdateConfig,
    rng: &mut DetRng,
) -> Result<UpdateStats> {
    ppo_update_replicated(model, opt, rows, lp, cfg, rng, &mut LocalExchange)
}

/// [`ppo_update_prepared`] on one of several data-parallel replicas: every replica is called with
/// the same rows, log-probs and random stream, computes the micro-batches its rank owns, and
/// swaps results through `exchange` before each AdamW step (see [`crate::allreduce`]). Every
/// replica ends with the weights, optimizer state and statistics one replica alone would have,
/// bit for bit.
pub fn ppo_update_replicated(
    model: &PolicyModel,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    lp: &OldLogProbs,
    cfg: &UpdateConfig,
    rng: &mut DetRng,
    exchange: &mut dyn GradExchange,
) -> Result<UpdateStats> {
    if rows.is_empty() {
        return Ok(UpdateStats::default());
    }
    if cfg.mini_batch_rows == 0 || cfg.micro_batch_rows == 0 {
        return Err(PolicyError::Input(
            "ppo_update: mini- and micro-batch sizes must be positive".into(),
        ));
    }
    let want_ref = if cfg.ppo.kl.is_some() { rows.len() } else { 0 };
    if lp.old.len() != rows.len() || lp.reference.len() != want_ref {
        return Err(PolicyError::Input(format!(
            "ppo_update: {} rows but {} old and {} reference log-prob rows (expected {want_ref})",
            rows.len(),
            lp.old.len(),
            lp.reference.len()
        )));
    }
    let reference = cfg.ppo.kl.is_some().then_some(());
    let old = &lp.old;
    let ref_lp = &lp.reference;
    let device = model.device().clone();
    let vars: Vec<Var> = opt.vars().map(|(_, v)| v.clone()).collect();
    let rank = exchange.rank();
    let padded = |src: &[Vec<f32>], micro: &[usize], t: usize| -> Result<Tensor> {
        let mut flat = Vec::with_capacity(micro.len() * t);
        for &r in micro {
            let mut o = src[r].clone();
            o.resize(t, 0.0);
            flat.extend(o);
        }
        Ok(Tensor::from_vec(flat, (micro.len(), t), &device)?)
    };
    let mut stats = UpdateStats::default();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut round = 0u64;
    for _ in 0..cfg.ppo_epochs.max(1) {
        if cfg.shuffle {
            rng.shuffle(&mut order);
        }
        for mini in order.chunks(cfg.mini_batch_rows) {
            let tokens: usize = mini.iter().map(|&r| rows[r].response.len()).sum();
            if tokens == 0 {
                continue;
            }
            let mini = &prompts_together(mini, rows);
            let micros: Vec<&[usize]> = mini.chunks(cfg.micro_batch_rows).collect();
            let mut sum = MiniBatchSum::new(opt.accumulator(), 6, rank);
            for (index, micro) in micros.iter().enumerate() {
                if !rank.owns(index) {
                    continue;
                }
                let mrows: Vec<&UpdateRow> = micro.iter().map(|&r| &rows[r]).collect();
                let s = score_rows(model, &mrows, cfg.temperature)?;
                let t = s.log_probs.dim(1)?;
                let adv: Vec<f32> = micro.iter().map(|&r| rows[r].advantage as f32).collect();
                let old_t = padded(old, micro, t)?;
                let ref_t = match reference {
                    Some(_) => Some(padded(ref_lp, micro, t)?),
                    None => None,
                };
                let adv_t = Tensor::from_vec(adv, micro.len(), &device)?;
                let terms = ppo_loss(
                    &s.log_probs,
                    &old_t,
                    &adv_t,
                    &s.mask,
                    ref_t.as_ref(),
                    &cfg.ppo,
                )?;
                let micro_tokens: usize = micro.iter().map(|&r| rows[r].response.len()).sum();
                // `terms.loss` is the micro-batch's token mean: its share of the mini-batch loss.
                let share = micro_tokens as f64 / tokens as f64;
                let loss_share = match cfg.loss_agg {
                    LossAgg::TokenMean => share,
                    LossAgg::SeqMeanTokenSumNorm { max_tokens } => {
                        micro_tokens as f64 / (mini.len() * max_tokens.max(1)) as f64
                    }
                };
                if !terms.pg_loss.is_finite() {
                    return Err(PolicyError::NonFinite(format!(
                        "policy loss {} in a micro-batch of {} rows",
                        terms.pg_loss,
                        micro.len()
                    )));
                }
                // The losses as optimised; the per-token statistics as token means.
                let weighted = vec![
                    terms.pg_loss * loss_share,
                    terms.pg_clipfrac_higher * share,
                    terms.pg_clipfrac_lower * share,
                    terms.ppo_kl * share,
                    terms.entropy_loss * share,
                    terms.kl_loss.unwrap_or(0.0) * loss_share,
                ];
                let grads = GradAccumulator::grads_of(&terms.loss, loss_share, &vars)?;
                sum.push(
                    &vars,
                    MicroResult {
                        micro: index,
                        grads,
                        terms: weighted,
                    },
                )?;
            }
            let (grads, terms_sum) = sum.finish(exchange, round, micros.len(), &vars)?;
            round += 1;
            match opt.step(&grads) {
                Ok(st) => {
                    stats.grad_norm += st.grad_norm;
                    stats.lr = st.lr;
                    stats.optimizer_steps += 1;
                }
                Err(PolicyError::NonFinite(msg)) => {
                    tracing::warn!("skipping an optimizer step: {msg}");
                    stats.skipped_steps += 1;
                }
                Err(e) => return Err(e),
            }
            stats.pg_loss += terms_sum[0];
            stats.pg_clipfrac_higher += terms_sum[1];
            stats.pg_clipfrac_lower += terms_sum[2];
            stats.ppo_kl += terms_sum[3];
            stats.entropy_loss += terms_sum[4];
            stats.kl_loss += terms_sum[5];
            stats.response_tokens += tokens;
        }
    }
    let n = (stats.optimizer_steps + stats.skipped_steps).max(1) as f64;
    stats.pg_loss /= n;
    stats.pg_clipfrac_higher /= n;
    stats.pg_clipfrac_lower /= n;
    stats.ppo_kl /= n;
    stats.entropy_loss /= n;
    stats.kl_loss /= n;
    if stats.optimizer_steps > 0 {
        stats.grad_norm /= stats.optimizer_steps as f64;
    }
    Ok(stats)
}

/// Mean token-level negative log-likelihood of the rows' responses (SFT, via
/// [`crate::policy::sft_loss`]), with a gradient; and the number of response tokens.
pub fn nll_loss(model: &PolicyModel, rows: &[&UpdateRow]) -> Result<(Tensor, usize)> {
    let (loss, tokens) = with_sequences(rows, |batch| crate::policy::sft_loss(model, batch))?;
    Ok((loss, tokens as usize))
}

/// One AdamW step on the token-level mean negative log-likelihood of the rows' responses given
/// their prompts (SFT): micro-batches of `micro_batch_rows` rows in the rows' order, each
/// micro-batch's mean weighted by its share of the response tokens. The statistics' `pg_loss` is
/// the mean NLL. A non-finite loss is an error: SFT has no step it may skip.
pub fn nll_update(
    model: &PolicyModel,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    micro_batch_rows: usize,
) -> Result<UpdateStats> {
    nll_update_replicated(model, opt, rows, micro_batch_rows, &mut LocalExchange)
}

/// [`nll_update`] on one of several data-parallel replicas (as [`ppo_update_replicated`]).
pub fn nll_update_replicated(
    model: &PolicyModel,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    micro_batch_rows: usize,
    exchange: &mut dyn GradExchange,
) -> Result<UpdateStats> {
    if micro_batch_rows == 0 {
        return Err(PolicyError::Input(
            "nll_update: the micro-batch size must be positive".into(),
        ));
    }
    let refs: Vec<&UpdateRow> = rows.iter().collect();
    let total: usize = rows.iter().map(|r| r.response.len()).sum();
    let vars: Vec<Var> = opt.vars().map(|(_, v)| v.clone()).collect();
    let rank = exchange.rank();
    let micros: Vec<&[&UpdateRow]> = refs.chunks(micro_batch_rows).collect();
    let mut sum = MiniBatchSum::new(opt.accumulator(), 1, rank);
    for (index, micro) in micros.iter().enumerate() {
        if !rank.owns(index) {
            continue;
        }
        let (loss, tokens) = nll_loss(model, micro)?;
        let share = tokens as f64 / total.max(1) as f64;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(PolicyError::NonFinite(format!(
                "SFT loss {value} in a micro-batch of {} rows",
                micro.len()
            )));
        }
        let grads = GradAccumulator::grads_of(&loss, share, &vars)?;
        sum.push(
            &vars,
            MicroResult {
                micro: index,
                grads,
                terms: vec![value * share],
            },
        )?;
    }
    let (grads, loss_sum) = sum.finish(exchange, 0, micros.len(), &vars)?;
    let st = opt.step(&grads)?;
    Ok(UpdateStats {
        pg_loss: loss_sum[0],
        grad_norm: st.grad_norm,
        lr: st.lr,
        optimizer_steps: 1,
        response_tokens: total,
        ..UpdateStats::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prompt: &PromptInput, response: u32) -> UpdateRow {
        UpdateRow {
            prompt: prompt.clone(),
            response: Arc::new(vec![response]),
            advantage: 0.0,
        }
    }

    #[test]
    fn a_mini_batchs_rows_of_one_prompt_come_together_in_order() {
        let prompt = |ids: Vec<u32>| PromptInput {
            ids: Arc::new(ids),
            images: Arc::new(Vec::new()),
        };
        let (a, b, c) = (prompt(vec![1, 2]), prompt(vec![3]), prompt(vec![1, 2, 3]));
        // Row 5's prompt equals a's by value, not by address.
        let a_copy = prompt(vec![1, 2]);
        let rows = vec![
            row(&a, 0),
            row(&b, 1),
            row(&a, 2),
            row(&c, 3),
            row(&b, 4),
            row(&a_copy, 5),
        ];
        assert_eq!(
            prompts_together(&[4, 0, 3, 1, 5, 2], &rows),
            vec![4, 1, 0, 5, 2, 3]
        );
        assert_eq!(prompts_together(&[3], &rows), vec![3]);
    }
}
