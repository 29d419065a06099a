//! The training graph as a timely dataflow of operators (DESIGN: records, pipelining and policy
//! versions). Every stage is a public operator of `shareflow-operators`; [`GraphBuilder`] wires
//! them to a run's policy, data, checkpoints and metrics, and a graph is a function that walks
//! the data through them (the stock ones are in [`crate::share_grpo`]):
//!
//! ```text
//! seeds -> [expand variants] -> [encode prompts*] -> [rollout*] -> [reward] -> [local norm]
//!   -> [global norm] -> [share across variants] -> [old log-probs*] -> [loss + AdamW*] -> records
//!                                     ^                                         |
//!                                     '---- policy versions (feedback edge) ----'
//! ```
//!
//! Stages marked * run on threads of their own (the async-operator pattern of
//! [`shareflow_runtime::stage`]), seed by seed as each seed's input is complete, so that a seed's
//! old log-probs are computed while other seeds are still sampling. The optimizer publishes each
//! version's immutable snapshot to a [`PolicyStore`] and its token travels the feedback edge with
//! lag `1 + max_staleness`: the rollout of step t uses exactly version `max(0, t -
//! max_staleness)`. With staleness 0 this is the synchronous on-policy loop (bit-identical to
//! [`super::steps::run_sequential`]); with 1 the rollout of step t+1 runs while step t trains, and
//! the run is still deterministic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Scope, Stream};

use shareflow_operators::allreduce::ReplicaRank;
use shareflow_operators::policy::{Optimizer, Policy, PolicyError, PolicyModel, Processor};
use shareflow_operators::policy_update::{Objective, UpdateSettings};
use shareflow_operators::reward::RewardRule;
use shareflow_operators::rl::UpdateRow;
use shareflow_operators::{
    EncodePrompts, ExpandVariants, Issue, OldLogProbScorer, PolicyStore, PolicyUpdate,
    PolicyUpdater, PromptEncoder, PromptItem, ReadyRow, ResponseTokens, Rollout, RolloutReport,
    Sampler, ScoreOldLogProbs, ScoreResponses, Scored, SeedItem, ToScore, TrainRow, UpdateContext,
    VariantItem,
};
use shareflow_runtime::stage::{Failure, Span, StageContext, StageThread, Timeline};
use shareflow_runtime::{
    ClusterConfig, PolicyVersion, SeedPlacement, Step, StepDriver, VersionLoop, VersionPublish,
    version_loop,
};

use super::checkpoint::{Resume, Start, TrainState};
use super::steps::{
    Graded, GraphKind, Settings, StepRecord, evaluate, prompt_of, rollout_stats, variants_of,
};
use crate::advantages::Estimator;

/// A seed question of a step: its position in the step and its position in the training source
/// (see [`super::data`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRec {
    pub b: u32,
    pub index: u64,
}

/// The seed questions of step `step`: `batch` consecutive training positions.
pub fn step_seeds(step: Step, batch: u64) -> impl Iterator<Item = SeedRec> {
    (0..batch).map(move |b| SeedRec {
        b: b as u32,
        index: step * batch + b,
    })
}

/// What a response carries through reward and normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RespPayload {
    pub b: u32,
    pub variant: u32,
    pub sample: u32,
    pub length: u32,
    pub overall: f64,
    pub format: f64,
    pub accuracy: f64,
    /// The response's tokens (the loss scores them).
    pub tokens: Vec<u32>,
}

impl ResponseTokens for RespPayload {
    fn response_tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// What a training run produced.
#[derive(Debug)]
pub struct Outcome {
    pub records: Vec<StepRecord>,
    pub val_before: Option<(f64, f64)>,
    pub val_after: Option<(f64, f64)>,
    pub model: PolicyModel,
    pub optimizer: Optimizer,
    /// Seconds the rollout and update stages were busy, and the wall time of the steps.
    pub rollout_busy: f64,
    pub update_busy: f64,
    /// Seconds the old-log-prob stage was busy (0 for SFT).
    pub old_log_prob_busy: f64,
    /// The stage threads' busy spans (seconds since the run started; empty for SFT).
    pub timeline: Vec<Span>,
    pub wall: f64,
}

fn err(e: PolicyError) -> String {
    e.to_string()
}

/// A stock graph function.
type StockGraph = for<'s> fn(&mut GraphBuilder<'s>) -> GraphResult<'s>;

/// What a graph function returns: the records of [`GraphBuilder::update`].
pub type GraphResult<'s> = Result<Stream<'s, Step, Vec<StepRecord>>, String>;

/// What [`GraphBuilder::rollout`] returns: the responses, ready for a reward stage, and the step
/// reports [`GraphBuilder::update`] wants.
pub type RolloutResult<'s> = Result<
    (
        Stream<'s, Step, Vec<ToScore<RespPayload>>>,
        Stream<'s, Step, Vec<RolloutReport>>,
    ),
    String,
>;

/// A checkpoint writer (see [`run_dataflow`]'s `on_save`).
type OnSave = Box<dyn FnMut(&TrainState<'_>) -> Result<(), String> + Send>;

/// Runs the stock graph of `s.graph` from `start` (a fresh run, or a state restored from a
/// checkpoint, and where to stop). `on_record` sees every new step's record as it completes
/// (progress, metrics file); `on_save` gets the training state at save steps (every `save_freq`
/// steps), at the stop step and at the end (e.g. [`super::Checkpointer::save`]).
pub fn run_dataflow(
    s: &Settings,
    policy: Policy,
    optimizer: Optimizer,
    start: Start,
    on_record: impl Fn(&StepRecord) + Send + Sync + 'static,
    on_save: impl FnMut(&TrainState<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Outcome, String> {
    let graph: StockGraph = match s.graph {
        GraphKind::ShareGrpo => crate::share_grpo::share_grpo,
        GraphKind::Grpo => crate::share_grpo::grpo,
        GraphKind::DrGrpo => crate::share_grpo::dr_grpo,
        GraphKind::Rloo => crate::share_grpo::rloo,
        GraphKind::Dapo => crate::share_grpo::dapo,
        GraphKind::AdaptiveShare => crate::share_grpo::adaptive_share,
        GraphKind::Sft => crate::share_grpo::sft,
    };
    run_graph(s, policy, optimizer, start, on_record, on_save, graph)
}

/// The advantage estimator the settings ask for (`algorithm.local_advantage`, `algorithm.std`).
pub fn estimator(s: &Settings) -> Estimator {
    match s.graph {
        GraphKind::ShareGrpo | GraphKind::AdaptiveShare if s.local_advantage => {
            Estimator::ShareGrpo(s.convention)
        }
        GraphKind::ShareGrpo | GraphKind::AdaptiveShare => {
            Estimator::ShareGrpoGlobalOnly(s.convention)
        }
        GraphKind::DrGrpo => Estimator::DrGrpo,
        GraphKind::Rloo => Estimator::Rloo,
        GraphKind::Grpo | GraphKind::Dapo | GraphKind::Sft => Estimator::Grpo,
    }
}

/// The stock reward stage: the `math` rule, with each response's reward components kept in its
/// payload for the metrics.
pub fn score_math<'scope>(
    responses: Stream<'scope, Step, Vec<ToScore<RespPayload>>>,
) -> Stream<'scope, Step, Vec<Scored<RespPayload>>> {
    responses
        .score_responses(RewardRule::Math)
        .map(|x| scored(x.payload, x.score.overall, x.score.format, x.score.accuracy))
}

/// A response's [`Scored`] record with its reward components.
pub fn scored(
    payload: RespPayload,
    overall: f64,
    format: f64,
    accuracy: f64,
) -> Scored<RespPayload> {
    Scored {
        seed: payload.seed_key(),
        variant: payload.variant,
        sample: payload.sample,
        reward: overall,
        payload: RespPayload {
            overall,
            format,
            accuracy,
            ..payload
        },
    }
}

impl RespPayload {
    /// The group key of the response's seed question (its position in the step).
    pub fn seed_key(&self) -> String {
        shareflow_operators::seed_key(self.b)
    }
}

/// A training graph: on every worker, walks the data from [`GraphBuilder::seeds`] through
/// operators to [`GraphBuilder::update`], whose records it returns (see [`crate::share_grpo`]).
pub trait TrainGraph:
    for<'s> Fn(&mut GraphBuilder<'s>) -> GraphResult<'s> + Send + Sync + 'static
{
}

impl<F> TrainGraph for F where
    F: for<'s> Fn(&mut GraphBuilder<'s>) -> GraphResult<'s> + Send + Sync + 'static
{
}

/// What the stages of a run own on worker 0 (taken once): replica 0 and what it reports to.
struct Parts {
    model: PolicyModel,
    optimizer: Optimizer,
    on_save: OnSave,
    history: Vec<StepRecord>,
    val_before: Option<(f64, f64)>,
    end: Step,
}

type StockUpdater = PolicyUpdater<RespPayload, RolloutReport, StepRecord>;

/// The stage threads of a run, joined at its end.
#[derive(Default)]
struct Joins {
    encode: Vec<StageThread<PromptEncoder>>,
    rollout: Vec<StageThread<Sampler>>,
    old_log_probs: Vec<StageThread<OldLogProbScorer>>,
    update: Vec<StageThread<StockUpdater>>,
}

/// The operators of a training run, bound to its settings, policy, data, checkpoints and metrics.
/// A graph function gets one on every worker and calls its methods in the data's order (the
/// stock graphs in [`crate::share_grpo`] show the walk). Between them, any public operator
/// (reward rules, normalisations, filters, a user's own) transforms the streams. Each worker
/// owns the seeds [`shareflow_runtime::seed_owner`] gives it: it feeds them, encodes their
/// prompts, samples their responses and scores their old log-probs, on stage threads of its own
/// that share the run's published policy versions. Every worker also holds a policy replica for
/// the update (data parallelism; replica 0 evaluates and checkpoints, each process's first
/// replica publishes versions; none under `trainer.placement=split`, where worker 0 alone
/// updates and owns no seeds), whose gradients are summed in a fixed order. A seed's results do not depend on which worker owns
/// it, and the update's sum not on how many replicas computed it, so a run is bitwise the same
/// on any number of workers.
pub struct GraphBuilder<'scope> {
    settings: Arc<Settings>,
    seeds: Stream<'scope, Step, Vec<SeedItem>>,
    versions: Stream<'scope, Step, Vec<PolicyVersion>>,
    version_loop: Option<VersionLoop<'scope>>,
    ctx: StageContext,
    store: PolicyStore,
    processor: Arc<Processor>,
    /// The frozen KL reference policy (with a KL loss), shared by the workers' scorers.
    reference: Option<PolicyModel>,
    parts: Option<Parts>,
    /// This worker's policy replica (model and optimizer) on workers other than 0.
    replica: Option<(PolicyModel, Optimizer)>,
    joins: Arc<Mutex<Joins>>,
    val_after: Arc<Mutex<Option<(f64, f64)>>>,
}

impl std::fmt::Debug for GraphBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphBuilder")
            .field("graph", &self.settings.graph)
            .finish_non_exhaustive()
    }
}

fn push<T>(joins: &Mutex<Joins>, thread: Option<T>, slot: impl FnOnce(&mut Joins) -> &mut Vec<T>) {
    if let (Some(t), Ok(mut j)) = (thread, joins.lock()) {
        slot(&mut j).push(t);
    }
}

impl<'scope> GraphBuilder<'scope> {
    /// The run's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The run's failure flag (a user's stage can stop the run with a clear error).
    pub fn failure(&self) -> &Failure {
        &self.ctx.failure
    }

    /// The run's stage context (failure flag, timeline), for a user's own stage operators.
    pub fn stage_context(&self) -> &StageContext {
        &self.ctx
    }

    /// The seed questions of each step (`data.rollout_batch_size` of them, in training-source
    /// order), each on the worker that owns it ([`shareflow_runtime::seed_owner`] of its key).
    pub fn seeds(&self) -> Stream<'scope, Step, Vec<SeedItem>> {
        self.seeds.clone()
    }

    /// Variant expansion as the run's graph kind asks: Share-GRPO's m variants (rewrites and
    /// compensated visual transforms at `worker.rollout.transform_prob`), or the original question
    /// alone. A graph with its own expansion calls [`ExpandVariants::expand_variants`] instead.
    pub fn expand(
        &self,
        seeds: Stream<'scope, Step, Vec<SeedItem>>,
    ) -> Stream<'scope, Step, Vec<VariantItem>> {
        let s = Arc::clone(&self.settings);
        seeds.expand_variants(move |step, seed| variants_of(&s, seed, step))
    }

    /// The variants each seed has (m; 1 for GRPO).
    pub fn variants_per_seed(&self) -> usize {
        self.settings.m
    }

    /// The workers that own seeds: all of them, or workers 1.. under `trainer.placement=split`.
    pub fn seed_placement(&self) -> SeedPlacement {
        placement(&self.settings, self.seeds.scope().peers())
    }

    /// Prompt encoding with the checkpoint's processor, `data.max_prompt_length` and
    /// `data.truncation`.
    pub fn encode(
        &mut self,
        variants: Stream<'scope, Step, Vec<VariantItem>>,
    ) -> Result<Stream<'scope, Step, Vec<PromptItem>>, String> {
        let per_seed = Some(self.variants_per_seed());
        self.encode_grouped(variants, per_seed)
    }

    /// [`GraphBuilder::encode`] for a stream with `per_seed` variants per seed (None: unknown,
    /// each step's seeds go at its end).
    pub fn encode_grouped(
        &mut self,
        variants: Stream<'scope, Step, Vec<VariantItem>>,
        per_seed: Option<usize>,
    ) -> Result<Stream<'scope, Step, Vec<PromptItem>>, String> {
        let encoder = {
            let s = Arc::clone(&self.settings);
            let processor = Arc::clone(&self.processor);
            Some(PromptEncoder::new(move |v| {
                prompt_of(&s, &processor, v).map_err(|e| e.to_string())
            }))
        };
        let (prompts, thread) = variants.encode_prompts(encoder, per_seed, &self.ctx)?;
        push(&self.joins, thread, |j| &mut j.encode);
        Ok(prompts)
    }

    /// Rollout: `worker.rollout.n` responses per variant at the run's sampling settings, with
    /// the version `trainer.max_staleness` allows. Returns the responses, ready for a reward
    /// stage, and the step reports [`GraphBuilder::update`] wants.
    pub fn rollout(
        &mut self,
        prompts: Stream<'scope, Step, Vec<PromptItem>>,
    ) -> RolloutResult<'scope> {
        let per_seed = Some(self.variants_per_seed());
        self.rollout_grouped(prompts, per_seed)
    }

    /// [`GraphBuilder::rollout`] for a stream with `per_seed` prompts per seed (None: unknown,
    /// each step's seeds go at its end). A graph may have several rollout stages (e.g. a second
    /// pass for some seeds); each runs on a thread of its own.
    pub fn rollout_grouped(
        &mut self,
        prompts: Stream<'scope, Step, Vec<PromptItem>>,
        per_seed: Option<usize>,
    ) -> RolloutResult<'scope> {
        let s = &self.settings;
        let sampler = {
            let mut params = s.sampling.clone();
            params.stop = self.processor.eos_ids();
            let processor = Arc::clone(&self.processor);
            Some(Sampler::new(
                self.store.clone(),
                self.ctx.failure.clone(),
                s.n,
                params,
                s.run_seed,
                s.max_staleness as u64,
                move |tokens| processor.decode(tokens, true).map_err(|e| e.to_string()),
            ))
        };
        let (responses, reports, thread) =
            prompts.rollout(self.versions.clone(), sampler, per_seed, &self.ctx)?;
        push(&self.joins, thread, |j| &mut j.rollout);
        let responses = responses.map(|r| ToScore {
            response: r.text,
            ground_truth: r.answer,
            payload: RespPayload {
                b: r.b,
                variant: r.variant,
                sample: r.sample,
                length: r.tokens.len() as u32,
                overall: 0.0,
                format: 0.0,
                accuracy: 0.0,
                tokens: r.tokens,
            },
        });
        Ok((responses, reports))
    }

    /// Logs the issues (dropped groups with the reason) as warnings.
    pub fn warn_issues(&self, issues: Stream<'scope, Step, Vec<Issue>>) {
        issues.inspect(|i| tracing::warn!("{i}"));
    }

    /// SFT's training rows: each prompt (one variant per seed) with its seed's reference
    /// response ([`shareflow_operators::task::Seed::reference`]) and the end-of-sequence token,
    /// ready for an update with the NLL objective. A seed without a reference stops the run with
    /// an error naming it.
    pub fn supervised_rows(
        &self,
        prompts: Stream<'scope, Step, Vec<PromptItem>>,
    ) -> Stream<'scope, Step, Vec<ReadyRow<RespPayload>>> {
        let processor = Arc::clone(&self.processor);
        let failure = self.ctx.failure.clone();
        prompts.flat_map(move |p| {
            let tokens = match &p.seed.reference {
                None => Err(format!(
                    "seed `{}` has no reference response: --graph sft needs a source that has \
                     them (data.train_files=shapes)",
                    p.seed.id
                )),
                Some(text) => processor.encode(text).map_err(|e| {
                    format!(
                        "seed `{}`: tokenizing its reference response: {e}",
                        p.seed.id
                    )
                }),
            };
            let mut tokens = match tokens {
                Ok(t) => t,
                Err(e) => {
                    failure.set(e);
                    return None;
                }
            };
            tokens.extend(processor.eos_ids().first().copied());
            let payload = RespPayload {
                b: p.b,
                variant: p.k,
                sample: 0,
                length: tokens.len() as u32,
                overall: 0.0,
                format: 0.0,
                accuracy: 0.0,
                tokens: tokens.clone(),
            };
            Some(ReadyRow {
                row: TrainRow {
                    seed: p.key,
                    context: p.k,
                    variant: p.k,
                    sample: 0,
                    advantage: 0.0,
                    payload,
                },
                input: UpdateRow {
                    prompt: p.prompt,
                    response: Arc::new(tokens),
                    advantage: 0.0,
                },
                old: Vec::new(),
                reference: None,
            })
        })
    }

    /// Old log-probs (and the KL reference's) of each row, seed by seed; `rows_per_seed`, when
    /// the graph knows it (no filter in between), lets a seed go as soon as its rows are there.
    pub fn old_log_probs(
        &mut self,
        rows: Stream<'scope, Step, Vec<TrainRow<RespPayload>>>,
        prompts: Stream<'scope, Step, Vec<PromptItem>>,
        rows_per_seed: Option<usize>,
    ) -> Result<Stream<'scope, Step, Vec<ReadyRow<RespPayload>>>, String> {
        let scorer = Some(OldLogProbScorer::new(
            self.store.clone(),
            self.reference.clone(),
            self.settings.update.clone(),
            self.ctx.failure.clone(),
        )?);
        let (ready, thread) = rows.old_log_probs(
            prompts,
            scorer,
            rows_per_seed,
            Some(self.variants_per_seed()),
            self.seed_placement(),
            &self.ctx,
        )?;
        push(&self.joins, thread, |j| &mut j.old_log_probs);
        Ok(ready)
    }

    /// The PPO loss and AdamW (`worker.actor.*`), then the step's record: rollout statistics
    /// from the rows' rewards, the update's statistics, evaluation at `trainer.val_freq`,
    /// checkpoints at `trainer.save_freq`. Closes the policy-version feedback edge. Call once.
    pub fn update(
        &mut self,
        rows: Stream<'scope, Step, Vec<ReadyRow<RespPayload>>>,
        reports: Stream<'scope, Step, Vec<RolloutReport>>,
    ) -> Result<Stream<'scope, Step, Vec<StepRecord>>, String> {
        let Some(versions) = self.version_loop.take() else {
            return Err("GraphBuilder::update may be called once per graph".into());
        };
        let scope = self.seeds.scope();
        // Split placement: worker 0 alone updates (its `parts`; no replicas elsewhere).
        let replicas = if self.settings.split {
            1
        } else {
            scope.peers()
        };
        let rank = ReplicaRank {
            index: scope.index(),
            replicas,
        };
        // The first worker of each process publishes versions to that process's store.
        let publishes = rank.index.is_multiple_of(self.settings.workers.max(1));
        let updater = match (self.parts.take(), self.replica.take()) {
            (Some(p), _) => Some(self.stock_updater(p)),
            (None, Some((model, optimizer))) => Some(PolicyUpdater::new(
                model,
                optimizer,
                self.store.clone(),
                self.update_settings(),
                |_: UpdateContext<'_, RespPayload, RolloutReport>| Ok(Vec::new()),
            )),
            (None, None) => None,
        }
        .map(|u| u.with_rank(rank).publishing(publishes));
        let (records, thread) =
            rows.policy_update(reports, self.seeds.clone(), updater, replicas, &self.ctx)?;
        push(&self.joins, thread, |j| &mut j.update);
        records.clone().publish_versions(versions);
        Ok(records)
    }

    fn update_settings(&self) -> UpdateSettings {
        let s = Arc::clone(&self.settings);
        UpdateSettings {
            cfg: s.update.clone(),
            objective: if s.graph == GraphKind::Sft {
                Objective::Nll
            } else {
                Objective::Ppo
            },
            run_seed: s.run_seed,
            max_staleness: s.max_staleness as u64,
            lr: Box::new(move |step| s.optim.lr * s.lr_schedule.factor(step)),
        }
    }

    fn stock_updater(&self, p: Parts) -> StockUpdater {
        let s = Arc::clone(&self.settings);
        let processor = Arc::clone(&self.processor);
        let val_after = Arc::clone(&self.val_after);
        let Parts {
            model,
            optimizer,
            mut on_save,
            mut history,
            val_before,
            end,
            ..
        } = p;
        let mut last_step_end = Instant::now();
        let sft = s.graph == GraphKind::Sft;
        let settings = self.update_settings();
        PolicyUpdater::new(
            model,
            optimizer,
            self.store.clone(),
            settings,
            move |ctx: UpdateContext<'_, RespPayload, RolloutReport>| {
                let step = ctx.step;
                // Rollout statistics from each response's own row (context == variant).
                let mut groups: BTreeMap<u32, Vec<Vec<Graded>>> = BTreeMap::new();
                let mut lengths = Vec::new();
                for r in ctx.rows.iter().map(|r| &r.row) {
                    if r.context != r.variant {
                        continue;
                    }
                    let g = groups.entry(r.payload.b).or_default();
                    while g.len() <= r.variant as usize {
                        g.push(Vec::new());
                    }
                    g[r.variant as usize].push(Graded {
                        text: String::new(),
                        length: r.payload.length as usize,
                        overall: r.payload.overall,
                        format: r.payload.format,
                        accuracy: r.payload.accuracy,
                    });
                    lengths.push(r.payload.length as usize);
                }
                let groups: Vec<Vec<Vec<Graded>>> = groups.into_values().collect();
                // One report per rollout stage of the graph.
                let report = ctx.side.into_iter().fold(
                    RolloutReport {
                        step,
                        version: step.saturating_sub(s.max_staleness as u64),
                        ..RolloutReport::default()
                    },
                    |mut a, r| {
                        a.seconds += r.seconds;
                        a.responses += r.responses;
                        a.generated_tokens += r.generated_tokens;
                        a
                    },
                );
                let last = step + 1 == s.steps as u64;
                let (val_accuracy, val_reward) =
                    if last || (s.val_freq > 0 && (step + 1).is_multiple_of(s.val_freq as u64)) {
                        match evaluate(&s, ctx.model, &processor).map_err(err)? {
                            Some((a, r)) => {
                                if let Ok(mut v) = val_after.lock() {
                                    *v = Some((a, r));
                                }
                                (Some(a), Some(r))
                            }
                            None => (None, None),
                        }
                    } else {
                        (None, None)
                    };
                let record = StepRecord {
                    step,
                    policy_version: step + 1,
                    rollout_version: report.version,
                    rollout: if sft {
                        Default::default()
                    } else {
                        rollout_stats(&groups, &lengths)
                    },
                    update: ctx.stats,
                    val_accuracy,
                    val_reward,
                    rollout_seconds: report.seconds,
                    update_seconds: ctx.seconds,
                    step_seconds: last_step_end.elapsed().as_secs_f64(),
                    generated_tokens: report.generated_tokens,
                };
                history.push(record.clone());
                if last
                    || step + 1 == end
                    || (s.save_freq > 0 && (step + 1).is_multiple_of(s.save_freq as u64))
                {
                    let older = ctx.store.versions(..=step);
                    on_save(&TrainState {
                        step: step + 1,
                        model: ctx.model,
                        optimizer: ctx.optimizer,
                        rollout_versions: older.iter().collect(),
                        records: &history,
                        val_before,
                    })?;
                }
                last_step_end = Instant::now();
                Ok(vec![record])
            },
        )
    }
}

/// The workers that own seeds among `peers` (see [`GraphBuilder::seed_placement`]).
fn placement(s: &Settings, peers: usize) -> SeedPlacement {
    if s.split && peers > 1 {
        SeedPlacement {
            first: 1,
            count: peers - 1,
        }
    } else {
        SeedPlacement::all(peers)
    }
}

/// Runs a training graph (see [`TrainGraph`]; [`run_dataflow`] runs the stock ones) from
/// `start`, with `on_record` and `on_save` as for [`run_dataflow`].
pub fn run_graph(
    s: &Settings,
    policy: Policy,
    optimizer: Optimizer,
    start: Start,
    on_record: impl Fn(&StepRecord) + Send + Sync + 'static,
    on_save: impl FnMut(&TrainState<'_>) -> Result<(), String> + Send + 'static,
    graph: impl TrainGraph,
) -> Result<Outcome, String> {
    if s.split && (s.workers < 2 || s.processes > 1) {
        return Err(format!(
            "`trainer.placement` = split needs 2 workers or more in one process (trainer.workers \
             is {}, --processes {}): use colocated, or --workers 2",
            s.workers, s.processes
        ));
    }
    let (first, end, restored, resume) = start.plan(s.steps as u64);
    let t_start = Instant::now();
    let mut processor = policy.processor;
    processor.set_image_backend(s.image_backend);
    let reference = super::steps::load_reference(
        s,
        &policy.dir,
        policy.model.device(),
        policy.model.compute_dtype(),
    )
    .map_err(|e| {
        format!(
            "loading the KL reference policy from {}: {e}",
            policy.dir.display()
        )
    })?;
    let store = PolicyStore::new();
    let mut model = policy.model;
    let (history, val_before) = match resume {
        Some(Resume {
            step,
            rollout_versions,
            records,
            val_before,
        }) => {
            model.set_version(step);
            for v in rollout_versions {
                store.publish(v);
            }
            (records, val_before)
        }
        None => {
            model.set_version(0);
            let val_before = if s.val_before_train && s.process == 0 {
                evaluate(s, &model, &processor).map_err(err)?
            } else {
                None
            };
            (Vec::new(), val_before)
        }
    };
    store.publish(model.snapshot().map_err(err)?);
    // Data parallelism: every other worker trains a replica of its own, equal bit for bit
    // (worker 0, on process 0, trains `model` itself).
    let leader = s.process == 0;
    let mut replicas = Vec::new();
    let local_replicas = if s.split { 0 } else { s.workers.max(1) };
    for _ in usize::from(leader)..local_replicas {
        let m = model.replica().map_err(err)?;
        let o = optimizer.replica_for(m.trainable_vars()).map_err(err)?;
        replicas.push(Some((m, o)));
    }
    let replicas = Arc::new(Mutex::new(replicas));
    let parts = Arc::new(Mutex::new(Some(Parts {
        model,
        optimizer,
        on_save: Box::new(on_save),
        history,
        val_before,
        end,
    })));
    let settings = Arc::new(s.clone());
    let processor = Arc::new(processor);
    let joins: Arc<Mutex<Joins>> = Arc::default();
    let val_after: Arc<Mutex<Option<(f64, f64)>>> = Arc::default();
    let ctx = StageContext {
        failure: Failure::default(),
        timeline: Timeline::new(),
    };
    let failure = ctx.failure.clone();
    let on_record = Arc::new(on_record);
    let records: Arc<Mutex<Vec<StepRecord>>> = Arc::new(Mutex::new(restored));
    let graph = Arc::new(graph);
    let in_flight = 1 + s.max_staleness as u64;
    let (sink, run_joins, run_ctx, run_val_after) = (
        Arc::clone(&records),
        Arc::clone(&joins),
        ctx.clone(),
        Arc::clone(&val_after),
    );
    let cluster = ClusterConfig {
        workers: s.workers,
        processes: s.processes,
        process: s.process,
        hostfile: s.hostfile.clone(),
    };
    let process_first = s.process * s.workers;
    let processes = s.processes;
    let cluster_failure = failure.clone();
    // timely's TCP threads panic when a peer process dies (its socket closes); the run then
    // stops with an error that says so, within seconds, instead of a panic.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        cluster.execute(move |worker| {
            let index = worker.index();
            let (parts, replica) = if index == 0 {
                (parts.lock().ok().and_then(|mut p| p.take()), None)
            } else {
                // This process's replicas, by local worker index (worker 0 has none).
                let local = index - process_first;
                let slot = if leader { local - 1 } else { local };
                let r = replicas
                    .lock()
                    .ok()
                    .and_then(|mut r| r.get_mut(slot).and_then(Option::take));
                (None, r)
            };
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            let on_record = Arc::clone(&on_record);
            let sink = Arc::clone(&sink);
            worker.dataflow::<Step, _, _>(|scope: Scope<'_, Step>| {
                let seeds = input.to_stream(scope).container::<Vec<SeedItem>>();
                let (version_loop, versions) = version_loop(scope, settings.max_staleness as u64);
                let mut g = GraphBuilder {
                    settings: Arc::clone(&settings),
                    seeds: seeds.clone(),
                    versions,
                    version_loop: Some(version_loop),
                    ctx: run_ctx.clone(),
                    store: store.clone(),
                    processor: Arc::clone(&processor),
                    reference: reference.clone(),
                    parts,
                    replica,
                    joins: Arc::clone(&run_joins),
                    val_after: Arc::clone(&run_val_after),
                };
                let out = match graph(&mut g) {
                    Ok(records) if g.version_loop.is_none() => records,
                    Ok(records) => {
                        run_ctx.failure.set(
                            "the training graph must end with GraphBuilder::update".to_string(),
                        );
                        if let Some(l) = g.version_loop.take() {
                            records.clone().publish_versions(l);
                        }
                        records
                    }
                    Err(e) => {
                        run_ctx.failure.set(e);
                        if let Some(l) = g.version_loop.take() {
                            seeds.clone().publish_versions(l);
                        }
                        seeds.flat_map(|_| None::<StepRecord>)
                    }
                };
                out.inspect(move |r| {
                    on_record(r);
                    if let Ok(mut v) = sink.lock() {
                        v.push(r.clone());
                    }
                })
                .probe_with(&probe);
            });
            let mut driver = StepDriver::new(in_flight);
            let feed_failure = run_ctx.failure.clone();
            let batch = settings.batch as u64;
            let data = Arc::clone(&settings.train_data);
            let owners = placement(&settings, worker.peers());
            driver.run_from(worker, &mut input, &probe, first, end, |step, input| {
                if feed_failure.is_set() {
                    return;
                }
                // This worker's seeds of the step.
                let mine = step_seeds(step, batch)
                    .filter(|s| owners.owner(&shareflow_operators::seed_key(s.b)) == index);
                for seed in mine {
                    match data.train_seed(seed.index) {
                        Ok(x) => input.send(SeedItem {
                            b: seed.b,
                            index: seed.index,
                            seed: Arc::new(x),
                        }),
                        Err(e) => {
                            feed_failure.set(e);
                            break;
                        }
                    }
                }
            });
        })
    }));
    match ran {
        Ok(r) => {
            r.map_err(|e| e.to_string())?;
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the communication threads stopped".into());
            let e = if processes > 1 {
                format!(
                    "the cluster stopped ({what}): another process of the run exited or its \
                     connection dropped; restart every process with --resume auto to continue \
                     from the last checkpoint"
                )
            } else {
                format!("the dataflow stopped: {what}")
            };
            cluster_failure.set(e.clone());
            return Err(e);
        }
    }
    let joins = std::mem::take(&mut *joins.lock().map_err(|_| "a stage thread panicked")?);
    let mut errors = Vec::new();
    let mut rollout_busy = 0.0;
    for t in joins.rollout {
        match t.join() {
            Ok(h) => rollout_busy += h.busy_seconds(),
            Err(e) => errors.push(e),
        }
    }
    let mut old_log_prob_busy = 0.0;
    for t in joins.old_log_probs {
        match t.join() {
            Ok(h) => old_log_prob_busy += h.busy_seconds(),
            Err(e) => errors.push(e),
        }
    }
    for t in joins.encode {
        if let Err(e) = t.join() {
            errors.push(e);
        }
    }
    let mut trained = None;
    for t in joins.update {
        match t.join() {
            // This process's first replica (replica 0 on process 0); all are equal bit for bit.
            Ok(h) => {
                let index = h.rank().index;
                if trained.as_ref().is_none_or(|(i, _)| index < *i) {
                    trained = Some((index, h.into_parts()));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(e) = failure.get().or_else(|| errors.into_iter().next()) {
        return Err(e);
    }
    let Some((_, (model, optimizer, update_busy))) = trained else {
        return Err("the training graph has no update stage".into());
    };
    let mut records = records.lock().map(|v| v.clone()).unwrap_or_default();
    records.sort_by_key(|r| r.step);
    // Only process 0 (worker 0's replica) reports steps.
    if leader && records.len() as u64 != end {
        return Err(format!("only {} of {end} steps completed", records.len()));
    }
    let val_after = val_after.lock().ok().and_then(|v| *v);
    Ok(Outcome {
        records,
        val_before,
        val_after,
        model,
        optimizer,
        rollout_busy,
        update_busy,
        old_log_prob_busy,
        wall: t_start.elapsed().as_secs_f64(),
        timeline: ctx.timeline.spans(),
    })
}
