//! Old log-probs: each training row's log-probs under the policy the step's update starts from
//! (and, with a KL loss, under the frozen reference policy), computed seed by seed as soon as a
//! seed's rows and prompts are all there, while other seeds are still sampling or scoring.
//!
//! Input: [`TrainRow`]s (from any worker; each is routed to its seed's owner,
//! [`shareflow_runtime::seed_owner`]) and the step's [`PromptItem`]s, on their seed's owner (a row
//! is scored under its context's prompt). Every worker runs the stage for the seeds it owns. Output: [`ReadyRow`],
//! the row with its model inputs and log-probs. At step `t` the policy is version `t` from the
//! [`PolicyStore`] (the optimizer stage publishes it when step `t - 1` is done). A seed's rows
//! are scored in canonical order (context, variant, sample) in micro-batches of
//! `micro_batch_rows`, so the figures do not depend on arrival order. Runs on a thread of its
//! own.

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Exchange};

use shareflow_runtime::stage::{
    Failure, StageContext, StageHandler, StageOutput, StageThread, offload_groups, start_stage,
};
use shareflow_runtime::{SeedPlacement, Step};

use crate::encode::PromptItem;
use crate::policy::PolicyModel;
use crate::policy_store::PolicyStore;
use crate::records::TrainRow;
use crate::rl::{UpdateConfig, UpdateRow, old_log_probs};

/// A payload that carries its response's tokens (the rows' payload type of a training graph).
pub trait ResponseTokens {
    fn response_tokens(&self) -> &[u32];
}

/// A training row ready for the loss.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadyRow<P> {
    pub row: TrainRow<P>,
    /// The model inputs: the context's prompt and the response.
    pub input: UpdateRow,
    /// Log-probs under the step's starting policy.
    pub old: Vec<f32>,
    /// Log-probs under the reference policy (with a KL loss).
    pub reference: Option<Vec<f32>>,
}

/// What the stage's operator groups by seed.
#[derive(Debug, Clone)]
pub enum OldLogProbIn<P> {
    Row(TrainRow<P>),
    Prompt(PromptItem),
}

/// The thread side of [`ScoreOldLogProbs`].
pub struct OldLogProbScorer {
    store: PolicyStore,
    reference: Option<PolicyModel>,
    cfg: UpdateConfig,
    failure: Failure,
    busy: f64,
    /// The policy of the step being scored (version = step).
    current: Option<PolicyModel>,
}

impl std::fmt::Debug for OldLogProbScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OldLogProbScorer")
    }
}

impl OldLogProbScorer {
    /// Scores with the store's version `t` at step `t`, and with `reference` when `cfg.ppo.kl`
    /// is set (it must be given then).
    pub fn new(
        store: PolicyStore,
        reference: Option<PolicyModel>,
        cfg: UpdateConfig,
        failure: Failure,
    ) -> Result<Self, String> {
        if cfg.ppo.kl.is_some() && reference.is_none() {
            return Err("a KL loss is configured but no reference policy was given".into());
        }
        Ok(Self {
            store,
            reference,
            cfg,
            failure,
            busy: 0.0,
            current: None,
        })
    }

    /// Seconds spent scoring so far.
    pub fn busy_seconds(&self) -> f64 {
        self.busy
    }
}

impl<P: ResponseTokens + Clone + Send> StageHandler<String, OldLogProbIn<P>, ReadyRow<P>>
    for OldLogProbScorer
{
    fn prepare(&mut self, step: Step) -> Result<(), String> {
        if self.current.as_ref().map(PolicyModel::version) != Some(step) {
            self.current = Some(self.store.wait(step, &self.failure)?);
        }
        Ok(())
    }

    fn group(
        &mut self,
        step: Step,
        key: String,
        records: Vec<OldLogProbIn<P>>,
        out: &StageOutput<ReadyRow<P>>,
    ) -> Result<(), String> {
        let mut prompts = BTreeMap::new();
        let mut rows = Vec::new();
        for r in records {
            match r {
                OldLogProbIn::Prompt(p) => {
                    prompts.insert(p.k, p.prompt);
                }
                OldLogProbIn::Row(r) => rows.push(r),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_by_key(|r| (r.context, r.variant, r.sample));
        let inputs: Vec<UpdateRow> = rows
            .iter()
            .map(|r| match prompts.get(&r.context) {
                Some(prompt) => Ok(UpdateRow {
                    prompt: prompt.clone(),
                    response: std::sync::Arc::new(r.payload.response_tokens().to_vec()),
                    advantage: r.advantage,
                }),
                None => Err(format!(
                    "step {step}: row (seed {key}, context {}, variant {}, sample {}) has no \
                     prompt for its context",
                    r.context, r.variant, r.sample
                )),
            })
            .collect::<Result<_, _>>()?;
        let Some(model) = self.current.as_ref() else {
            return Err(format!("step {step}: policy version {step} not prepared"));
        };
        let t0 = std::time::Instant::now();
        let refs: Vec<&UpdateRow> = inputs.iter().collect();
        let lp = old_log_probs(model, self.reference.as_ref(), &refs, &self.cfg)
            .map_err(|e| format!("step {step}: old log-probs of seed {key}: {e}"))?;
        self.busy += t0.elapsed().as_secs_f64();
        let mut reference = lp.reference.into_iter();
        let ready = rows
            .into_iter()
            .zip(inputs)
            .zip(lp.old)
            .map(|((row, input), old)| ReadyRow {
                row,
                input,
                old,
                reference: reference.next(),
            })
            .collect();
        out.emit(step, ready);
        Ok(())
    }

    fn end_of_step(&mut self, _step: Step, _out: &StageOutput<ReadyRow<P>>) -> Result<(), String> {
        // The next step needs the next version.
        self.current = None;
        Ok(())
    }
}

/// The old-log-prob stage's outputs.
pub type OldLogProbStreams<'scope, P> = (
    Stream<'scope, Step, Vec<ReadyRow<P>>>,
    Option<StageThread<OldLogProbScorer>>,
);

/// Extension trait: old (and reference) log-probs of training rows.
pub trait ScoreOldLogProbs<'scope, P> {
    /// `prompts`: the step's prompts, each on its seed's owner worker (`placement`'s owner of
    /// the seed key). `scorer` on every worker that owns seeds (rows are routed to their seed's
    /// owner); a worker without one must own none. `rows_per_seed` and `variants_per_seed`, when
    /// both known, let a seed go as soon as it is complete.
    #[allow(clippy::too_many_arguments)]
    fn old_log_probs(
        self,
        prompts: Stream<'scope, Step, Vec<PromptItem>>,
        scorer: Option<OldLogProbScorer>,
        rows_per_seed: Option<usize>,
        variants_per_seed: Option<usize>,
        placement: SeedPlacement,
        ctx: &StageContext,
    ) -> Result<OldLogProbStreams<'scope, P>, String>;
}

impl<'scope, P> ScoreOldLogProbs<'scope, P> for Stream<'scope, Step, Vec<TrainRow<P>>>
where
    P: ResponseTokens + timely::ExchangeData + Clone + Send,
{
    fn old_log_probs(
        self,
        prompts: Stream<'scope, Step, Vec<PromptItem>>,
        scorer: Option<OldLogProbScorer>,
        rows_per_seed: Option<usize>,
        variants_per_seed: Option<usize>,
        placement: SeedPlacement,
        ctx: &StageContext,
    ) -> Result<OldLogProbStreams<'scope, P>, String> {
        let (ends, thread) = start_stage("old-log-probs", scorer, ctx)?;
        let ticks = prompts.clone().map(|_| ());
        let items = self
            .exchange(move |r| placement.owner(&r.seed) as u64)
            .map(OldLogProbIn::Row)
            .concat(prompts.map(OldLogProbIn::Prompt));
        let whole = rows_per_seed.zip(variants_per_seed).map(|(r, v)| r + v);
        let ready = offload_groups(
            items,
            ticks,
            Pipeline,
            Pipeline,
            "OldLogProbs",
            |x: &OldLogProbIn<P>| match x {
                OldLogProbIn::Row(r) => r.seed.clone(),
                OldLogProbIn::Prompt(p) => p.key.clone(),
            },
            move |_, len| whole == Some(len),
            ends,
        );
        Ok((ready, thread))
    }
}
