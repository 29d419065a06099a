//! The policy update: the PPO loss (or, for SFT, the NLL; see [`Objective`]) over a step's
//! training rows and AdamW, then the next policy version.
//!
//! Input: the step's [`ReadyRow`]s (from any worker) and a side stream of records the graph
//! wants beside them (e.g. the step's [`crate::RolloutReport`]s, one per worker that sampled).
//! With one replica they are routed to worker 0, which runs the stage. With a replica on every
//! worker (data parallelism) they are broadcast: each replica computes its share of every
//! mini-batch's micro-batches and the replicas swap gradients through
//! [`crate::exchange_gradients`] before each AdamW step, so every replica applies the same
//! steps, bit for bit as one replica would ([`crate::allreduce`]). Replica 0 runs the
//! `after_step` hook; the first replica of each process publishes versions to its store; the
//! others only keep their weights in step. At the end of step `t` the rows are put in canonical order (seed, context, variant, sample), the PPO update
//! runs (`ppo_epochs` passes of mini-batches of micro-batches, one AdamW step per mini-batch; see
//! [`ppo_update_prepared`]), and version `t + 1` is published to the [`PolicyStore`] **before**
//! the step completes in the graph, so that its token on the feedback edge names weights that
//! exist. Then the graph's `after_step` hook sees the live model, the optimizer, the rows, the
//! side records and the update's statistics (metrics, evaluation, checkpoints) and returns the
//! step's output records. Runs on a thread of its own, which owns the live model and optimizer.

use std::time::Instant;

use timely::ExchangeData;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Map;

use shareflow_runtime::Step;
use shareflow_runtime::rng::DetRng;
use shareflow_runtime::stage::{
    StageContext, StageHandler, StageOutput, StageThread, offload_groups, start_stage,
};

use crate::allreduce::{GradExchange, LocalExchange, ReplicaRank};
use crate::exchange_gradients::{DataflowExchange, ExchangeGradients};
use crate::old_log_probs::ReadyRow;
use crate::policy::{Optimizer, PolicyModel};
use crate::policy_store::PolicyStore;
use crate::rl::{
    OldLogProbs, UpdateConfig, UpdateRow, UpdateStats, nll_update_replicated, ppo_update_replicated,
};

/// What the `after_step` hook sees.
#[derive(Debug)]
pub struct UpdateContext<'a, P, S> {
    pub step: Step,
    /// The live policy, now at version `step + 1`.
    pub model: &'a PolicyModel,
    pub optimizer: &'a Optimizer,
    /// The step's rows, canonical order.
    pub rows: &'a [ReadyRow<P>],
    /// The step's side records, in arrival order.
    pub side: Vec<S>,
    pub stats: UpdateStats,
    /// Seconds the update took (loss, backward, optimizer, snapshot).
    pub seconds: f64,
    /// The store the stage publishes to (older versions for checkpoints).
    pub store: &'a PolicyStore,
}

/// The hook called after each step's update (see the module documentation).
pub type AfterStep<P, S, R> =
    Box<dyn FnMut(UpdateContext<'_, P, S>) -> Result<Vec<R>, String> + Send>;

/// The thread side of [`PolicyUpdate`]: owns the live model and optimizer.
pub struct PolicyUpdater<P, S, R> {
    model: PolicyModel,
    optimizer: Optimizer,
    store: PolicyStore,
    cfg: UpdateConfig,
    objective: Objective,
    lr: Box<dyn Fn(Step) -> f64 + Send>,
    run_seed: u64,
    max_staleness: u64,
    after_step: AfterStep<P, S, R>,
    rows: Vec<ReadyRow<P>>,
    side: Vec<S>,
    busy: f64,
    rank: ReplicaRank,
    publishes: bool,
    exchange: Option<DataflowExchange>,
}

impl<P, S, R> std::fmt::Debug for PolicyUpdater<P, S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyUpdater")
            .field("version", &self.model.version())
            .finish_non_exhaustive()
    }
}

/// What an update stage minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// The PPO loss of the RL graphs ([`ppo_update_prepared`]), on rows with old log-probs.
    #[default]
    Ppo,
    /// The mean NLL of the rows' responses, one AdamW step per step ([`nll_update`]): SFT. The
    /// rows' old log-probs and advantages are not used.
    Nll,
}

/// Settings of a [`PolicyUpdater`].
pub struct UpdateSettings {
    pub cfg: UpdateConfig,
    pub objective: Objective,
    /// The learning rate of step `t`.
    pub lr: Box<dyn Fn(Step) -> f64 + Send>,
    /// Mini-batch shuffling draws from (run_seed, step, "update", 0).
    pub run_seed: u64,
    /// Versions older than `t + 1 - max_staleness` are dropped from the store after step `t`.
    pub max_staleness: u64,
}

impl std::fmt::Debug for UpdateSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateSettings")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<P, S, R> PolicyUpdater<P, S, R> {
    /// The stage's state: the live `model` (its version set to the steps done), its optimizer,
    /// the store to publish to. The caller publishes the starting version(s) to `store`.
    pub fn new(
        model: PolicyModel,
        optimizer: Optimizer,
        store: PolicyStore,
        settings: UpdateSettings,
        after_step: impl FnMut(UpdateContext<'_, P, S>) -> Result<Vec<R>, String> + Send + 'static,
    ) -> Self {
        Self {
            model,
            optimizer,
            store,
            cfg: settings.cfg,
            objective: settings.objective,
            lr: settings.lr,
            run_seed: settings.run_seed,
            max_staleness: settings.max_staleness,
            after_step: Box::new(after_step),
            rows: Vec::new(),
            side: Vec::new(),
            busy: 0.0,
            rank: ReplicaRank::SINGLE,
            publishes: true,
            exchange: None,
        }
    }

    /// The same stage as replica `rank` of a data-parallel update (see the module
    /// documentation): `model` and `optimizer` must equal replica 0's bit for bit. Only replica
    /// 0 calls `after_step`; which replicas publish versions is [`PolicyUpdater::publishing`].
    pub fn with_rank(mut self, rank: ReplicaRank) -> Self {
        self.rank = rank;
        self
    }

    /// Whether this replica publishes its versions to its store (default: yes). In a run of
    /// several processes each process's first replica publishes to that process's store.
    pub fn publishing(mut self, publishes: bool) -> Self {
        self.publishes = publishes;
        self
    }

    /// This replica's rank.
    pub fn rank(&self) -> ReplicaRank {
        self.rank
    }

    /// The live model and optimizer, and the seconds spent updating.
    pub fn into_parts(self) -> (PolicyModel, Optimizer, f64) {
        (self.model, self.optimizer, self.busy)
    }
}

/// What the stage's operator collects.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum UpdateIn<P, S> {
    Row(ReadyRow<P>),
    Side(S),
}

impl<P, S, R> StageHandler<(), UpdateIn<P, S>, R> for PolicyUpdater<P, S, R> {
    fn group(
        &mut self,
        _step: Step,
        _key: (),
        records: Vec<UpdateIn<P, S>>,
        _out: &StageOutput<R>,
    ) -> Result<(), String> {
        for r in records {
            match r {
                UpdateIn::Row(r) => self.rows.push(r),
                UpdateIn::Side(s) => self.side.push(s),
            }
        }
        Ok(())
    }

    fn end_of_step(&mut self, step: Step, out: &StageOutput<R>) -> Result<(), String> {
        let t0 = Instant::now();
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by(|a, b| {
            (&a.row.seed, a.row.context, a.row.variant, a.row.sample).cmp(&(
                &b.row.seed,
                b.row.context,
                b.row.variant,
                b.row.sample,
            ))
        });
        let inputs: Vec<UpdateRow> = rows.iter().map(|r| r.input.clone()).collect();
        self.optimizer.set_lr((self.lr)(step));
        let mut local = LocalExchange;
        let exchange: &mut dyn GradExchange = match &mut self.exchange {
            Some(e) => {
                e.begin_step(step);
                e
            }
            None => &mut local,
        };
        let stats = match self.objective {
            Objective::Ppo => {
                let lp = OldLogProbs {
                    old: rows.iter().map(|r| r.old.clone()).collect(),
                    reference: rows.iter().filter_map(|r| r.reference.clone()).collect(),
                };
                let mut rng = DetRng::derive(self.run_seed, step, "update", 0);
                ppo_update_replicated(
                    &self.model,
                    &mut self.optimizer,
                    &inputs,
                    &lp,
                    &self.cfg,
                    &mut rng,
                    exchange,
                )
            }
            Objective::Nll => nll_update_replicated(
                &self.model,
                &mut self.optimizer,
                &inputs,
                self.cfg.micro_batch_rows,
                exchange,
            ),
        }
        .map_err(|e| format!("step {step}: the update: {e}"))?;
        if let Some(e) = &mut self.exchange {
            e.end_step(step);
        }
        self.model.set_version(step + 1);
        if self.publishes {
            let snapshot = self
                .model
                .snapshot()
                .map_err(|e| format!("step {step}: snapshotting the policy: {e}"))?;
            self.store.publish(snapshot);
            self.store
                .retain_from((step + 1).saturating_sub(self.max_staleness));
        }
        let seconds = t0.elapsed().as_secs_f64();
        if self.rank.index != 0 {
            // A replica keeps its weights in step; replica 0 reports.
            self.busy += seconds;
            self.side.clear();
            return Ok(());
        }
        self.busy += seconds;
        let records = (self.after_step)(UpdateContext {
            step,
            model: &self.model,
            optimizer: &self.optimizer,
            rows: &rows,
            side: std::mem::take(&mut self.side),
            stats,
            seconds,
            store: &self.store,
        })?;
        out.emit(step, records);
        Ok(())
    }
}

/// The update stage's outputs.
pub type UpdateStreams<'scope, P, S, R> = (
    Stream<'scope, Step, Vec<R>>,
    Option<StageThread<PolicyUpdater<P, S, R>>>,
);

/// Extension trait: the PPO update and the optimizer step.
pub trait PolicyUpdate<'scope, P> {
    /// `side`: records handed to the hook beside the rows. `ticks`: a record per step that must
    /// update even without rows (e.g. the step's seeds), so that every step publishes its
    /// version. `replicas` 1: rows, side records and ticks from every worker are routed to
    /// worker 0, which runs the stage: `updater` there; None elsewhere. `replicas` = the number
    /// of workers: every worker runs replica `worker index` ([`PolicyUpdater::with_rank`]) and
    /// gets every record. Returns the hook's records and the stage's thread (join it for the
    /// final model and optimizer).
    fn policy_update<S, T, R>(
        self,
        side: Stream<'scope, Step, Vec<S>>,
        ticks: Stream<'scope, Step, Vec<T>>,
        updater: Option<PolicyUpdater<P, S, R>>,
        replicas: usize,
        ctx: &StageContext,
    ) -> Result<UpdateStreams<'scope, P, S, R>, String>
    where
        S: ExchangeData + Clone + Send,
        T: Clone + 'static,
        R: Clone + Send + 'static;
}

impl<'scope, P: ExchangeData + Clone + Send> PolicyUpdate<'scope, P>
    for Stream<'scope, Step, Vec<ReadyRow<P>>>
{
    fn policy_update<S, T, R>(
        self,
        side: Stream<'scope, Step, Vec<S>>,
        ticks: Stream<'scope, Step, Vec<T>>,
        updater: Option<PolicyUpdater<P, S, R>>,
        replicas: usize,
        ctx: &StageContext,
    ) -> Result<UpdateStreams<'scope, P, S, R>, String>
    where
        S: ExchangeData + Clone + Send,
        T: Clone + 'static,
        R: Clone + Send + 'static,
    {
        let peers = self.scope().peers();
        if replicas <= 1 {
            let (ends, thread) = start_stage("update", updater, ctx)?;
            let items = self.map(UpdateIn::Row).concat(side.map(UpdateIn::Side));
            let out = offload_groups(
                items,
                ticks.map(|_| ()),
                Exchange::new(|_: &UpdateIn<P, S>| 0),
                Exchange::new(|_: &()| 0),
                "PolicyUpdate",
                |_: &UpdateIn<P, S>| (),
                |_, _| false,
                ends,
            );
            return Ok((out, thread));
        }
        if replicas != peers {
            return Err(format!(
                "policy_update: {replicas} replicas on {peers} workers (use 1, or one per worker)"
            ));
        }
        let Some(mut updater) = updater else {
            return Err(
                "policy_update: a data-parallel update needs a replica on every worker".into(),
            );
        };
        let rank = updater.rank();
        if rank.replicas != replicas || rank.index != self.scope().index() {
            return Err(format!(
                "policy_update: worker {} was given replica {} of {}",
                self.scope().index(),
                rank.index,
                rank.replicas
            ));
        }
        let ticks = ticks.map(|_| ()).broadcast();
        updater.exchange = Some(ticks.clone().exchange_gradients(rank, ctx.failure.clone()));
        let (ends, thread) = start_stage("update", Some(updater), ctx)?;
        let items = self
            .map(UpdateIn::Row)
            .concat(side.map(UpdateIn::Side))
            .broadcast();
        let out = offload_groups(
            items,
            ticks,
            Pipeline,
            Pipeline,
            "PolicyUpdate",
            |_: &UpdateIn<P, S>| (),
            |_, _| false,
            ends,
        );
        Ok((out, thread))
    }
}
