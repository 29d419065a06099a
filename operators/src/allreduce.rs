//! The gradient all-reduce of data-parallel policy replicas, as plain types: what one micro-batch
//! contributes to a mini-batch ([`MicroResult`]), how replicas swap them ([`GradExchange`]), and
//! the fixed-order sum every replica applies ([`accumulate_in_order`]).
//!
//! A mini-batch is split into micro-batches (`micro_batch_size_per_device_for_update` rows).
//! Replica `r` of `R` computes the micro-batches whose index within the mini-batch is `r mod R`;
//! the replicas then swap their results and every replica sums **all** micro-batches' gradients
//! in micro-batch order, exactly as one replica computing them all would
//! ([`candle_core::backprop::GradStore::extend`]: `((g0 + g1) + g2) + ...`). The sum therefore
//! does not depend on the number of replicas, on which replica computed what, or on the order in
//! which results arrive: one worker, N workers and N processes apply bit-identical AdamW steps.
//! [`LocalExchange`] is the single replica; the dataflow's exchange is
//! [`crate::exchange_gradients`].

use serde::{Deserialize, Serialize};

use crate::policy::candle::{DType, Tensor, Var};
use crate::policy::{GradAccumulator, PolicyError, Result};

/// Which micro-batches a replica computes: replica `index` of `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRank {
    pub index: usize,
    pub replicas: usize,
}

impl ReplicaRank {
    /// The one replica of a run without data parallelism.
    pub const SINGLE: Self = Self {
        index: 0,
        replicas: 1,
    };

    /// Whether this replica computes micro-batch `micro` of a mini-batch.
    pub fn owns(&self, micro: usize) -> bool {
        micro % self.replicas.max(1) == self.index
    }
}

/// One micro-batch's contribution to its mini-batch.
#[derive(Debug, Clone)]
pub struct MicroResult {
    /// Index of the micro-batch within its mini-batch.
    pub micro: usize,
    /// Gradient of each trainable variable, in the optimizer's order (None: no gradient).
    pub grads: Vec<Option<Tensor>>,
    /// Loss terms already weighted by the micro-batch's share (summed over micro-batches in
    /// order by the caller).
    pub terms: Vec<f64>,
}

/// A [`MicroResult`] as plain numbers, for a record that crosses threads or processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroPayload {
    pub micro: usize,
    pub grads: Vec<Option<Vec<f32>>>,
    pub terms: Vec<f64>,
}

impl MicroResult {
    /// The gradients copied to the host as f32 (exact for f32 and bf16 variables).
    pub fn to_payload(&self) -> Result<MicroPayload> {
        let grads = self
            .grads
            .iter()
            .map(|g| {
                g.as_ref()
                    .map(|g| g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
                    .transpose()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(MicroPayload {
            micro: self.micro,
            grads,
            terms: self.terms.clone(),
        })
    }

    /// Rebuilds a result for `vars` (shape, dtype and device of each gradient from its
    /// variable); a payload of another shape is an error.
    pub fn from_payload(p: MicroPayload, vars: &[Var]) -> Result<Self> {
        if p.grads.len() != vars.len() {
            return Err(PolicyError::Input(format!(
                "gradient exchange: a micro-batch result has {} gradients, the model {} \
                 trainable variables (replicas of different models?)",
                p.grads.len(),
                vars.len()
            )));
        }
        let grads = p
            .grads
            .into_iter()
            .zip(vars)
            .map(|(g, v)| {
                g.map(|g| {
                    if g.len() != v.elem_count() {
                        return Err(PolicyError::Input(format!(
                            "gradient exchange: a gradient of {} values for a variable of shape \
                             {:?}",
                            g.len(),
                            v.dims()
                        )));
                    }
                    Ok(Tensor::from_vec(g, v.shape(), v.device())?.to_dtype(v.dtype())?)
                })
                .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            micro: p.micro,
            grads,
            terms: p.terms,
        })
    }
}

/// How the replicas of a data-parallel update swap their micro-batch results.
pub trait GradExchange {
    /// This replica's rank (which micro-batches it computes).
    fn rank(&self) -> ReplicaRank;

    /// Hands over this replica's results for round `round` (one round per mini-batch of the
    /// step, counted from 0 across epochs) and returns the results of all `count` micro-batches
    /// of the mini-batch, in micro-batch order. Every replica calls it for every round.
    fn all_gather(
        &mut self,
        round: u64,
        mine: Vec<MicroResult>,
        count: usize,
        vars: &[Var],
    ) -> Result<Vec<MicroResult>>;
}

/// The exchange of a single replica: it computes every micro-batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExchange;

impl GradExchange for LocalExchange {
    fn rank(&self) -> ReplicaRank {
        ReplicaRank::SINGLE
    }

    fn all_gather(
        &mut self,
        _round: u64,
        mine: Vec<MicroResult>,
        count: usize,
        _vars: &[Var],
    ) -> Result<Vec<MicroResult>> {
        check_complete(mine, count)
    }
}

/// Sorts `results` by micro-batch index and checks that micro-batches `0..count` are there
/// exactly once.
pub fn check_complete(mut results: Vec<MicroResult>, count: usize) -> Result<Vec<MicroResult>> {
    results.sort_by_key(|r| r.micro);
    let ok = results.len() == count && results.iter().enumerate().all(|(i, r)| r.micro == i);
    if !ok {
        let got: Vec<usize> = results.iter().map(|r| r.micro).collect();
        return Err(PolicyError::Input(format!(
            "gradient exchange: expected micro-batches 0..{count}, got {got:?}"
        )));
    }
    Ok(results)
}

/// This replica's results and the other replicas' payloads of one round, as every
/// micro-batch's result in micro-batch order (see [`check_complete`]).
pub fn merge_results(
    mine: Vec<MicroResult>,
    theirs: Vec<MicroPayload>,
    count: usize,
    vars: &[Var],
) -> Result<Vec<MicroResult>> {
    let mut all = mine;
    for p in theirs {
        all.push(MicroResult::from_payload(p, vars)?);
    }
    check_complete(all, count)
}

/// Sums the micro-batches' gradients in order into `acc` and their terms into `terms` (each
/// slot `terms[k] += r.terms[k]`, in micro-batch order).
pub fn accumulate_in_order(
    acc: &mut GradAccumulator,
    vars: &[Var],
    results: Vec<MicroResult>,
    terms: &mut [f64],
) -> Result<()> {
    for r in results {
        for (slot, v) in terms.iter_mut().zip(&r.terms) {
            *slot += v;
        }
        acc.add_slots(vars, r.grads)?;
    }
    Ok(())
}

/// One mini-batch's sum, micro-batch by micro-batch. A single replica adds each result as it is
/// computed (one micro-batch's gradients held at a time, as plain gradient accumulation does);
/// a replica of several keeps its own results until the exchange, then sums all in order.
#[derive(Debug)]
pub struct MiniBatchSum {
    acc: GradAccumulator,
    terms: Vec<f64>,
    mine: Vec<MicroResult>,
    added: usize,
    stream: bool,
}

impl MiniBatchSum {
    /// An empty sum into `acc` with `terms` loss slots, for a replica of `rank`.
    pub fn new(acc: GradAccumulator, terms: usize, rank: ReplicaRank) -> Self {
        Self {
            acc,
            terms: vec![0.0; terms],
            mine: Vec::new(),
            added: 0,
            stream: rank.replicas <= 1,
        }
    }

    /// Adds (or keeps for the exchange) the result of one of this replica's micro-batches, in
    /// micro-batch order.
    pub fn push(&mut self, vars: &[Var], r: MicroResult) -> Result<()> {
        if self.stream {
            self.added += 1;
            accumulate_in_order(&mut self.acc, vars, vec![r], &mut self.terms)
        } else {
            self.mine.push(r);
            Ok(())
        }
    }

    /// The mini-batch's summed gradients and terms, after swapping results of round `round`
    /// through `exchange` (several replicas) or checking that all `count` were added (one).
    pub fn finish(
        mut self,
        exchange: &mut dyn GradExchange,
        round: u64,
        count: usize,
        vars: &[Var],
    ) -> Result<(crate::policy::candle::backprop::GradStore, Vec<f64>)> {
        if self.stream {
            if self.added != count {
                return Err(PolicyError::Input(format!(
                    "gradient sum: {} of {count} micro-batches added",
                    self.added
                )));
            }
        } else {
            let all = exchange.all_gather(round, std::mem::take(&mut self.mine), count, vars)?;
            accumulate_in_order(&mut self.acc, vars, all, &mut self.terms)?;
        }
        Ok((self.acc.take(), self.terms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::candle::Device;

    fn var(values: &[f32]) -> Var {
        Var::from_slice(values, values.len(), &Device::Cpu).expect("var")
    }

    #[test]
    fn owners_split_micro_batches_round_robin() {
        let r = |index| ReplicaRank { index, replicas: 3 };
        let owned: Vec<Vec<usize>> = (0..3)
            .map(|i| (0..7).filter(|&m| r(i).owns(m)).collect())
            .collect();
        assert_eq!(owned, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        assert!((0..5).all(|m| ReplicaRank::SINGLE.owns(m)));
    }

    #[test]
    fn payload_round_trips_exactly_and_checks_shapes() -> Result<()> {
        let vars = [var(&[0.0; 3]), var(&[0.0; 2])];
        let g = Tensor::from_slice(&[1.5f32, -2.25e-8, 3.0], 3, &Device::Cpu)?;
        let r = MicroResult {
            micro: 2,
            grads: vec![Some(g.clone()), None],
            terms: vec![0.5, 0.25],
        };
        let back = MicroResult::from_payload(r.to_payload()?, &vars)?;
        assert_eq!(back.micro, 2);
        assert_eq!(back.terms, vec![0.5, 0.25]);
        assert!(back.grads[1].is_none());
        let got = back.grads[0].as_ref().expect("gradient").to_vec1::<f32>()?;
        assert_eq!(got, g.to_vec1::<f32>()?);
        let mut bad = r.to_payload()?;
        bad.grads[0] = Some(vec![1.0; 4]);
        assert!(MicroResult::from_payload(bad, &vars).is_err());
        Ok(())
    }

    #[test]
    fn incomplete_rounds_are_refused() {
        let r = |micro| MicroResult {
            micro,
            grads: Vec::new(),
            terms: Vec::new(),
        };
        assert!(check_complete(vec![r(1), r(0)], 2).is_ok());
        assert!(check_complete(vec![r(0), r(0)], 2).is_err());
        assert!(check_complete(vec![r(0)], 2).is_err());
    }
}
