//! The training graph as a timely dataflow (DESIGN: records, pipelining and policy versions):
//!
//! ```text
//! seeds --> [rollout: variant expansion + sampling, own thread] --ToScore--> [reward] --Scored-->
//!   [local norm] --> [global norm] --> [share across variants] --TrainRow--> [update: old
//!   log-probs + PPO + AdamW, own thread] --StepRecord--> metrics
//!                 ^                                                 |
//!                 '--------- published policy versions (weights) ---'
//! ```
//!
//! Rollout and update run on threads of their own (fed through [`offload_step`]); the reward and
//! advantage operators are ordinary timely operators on every worker. The update thread publishes
//! an immutable snapshot of the weights after each step; the rollout of step t uses exactly
//! version `max(0, t - max_staleness)`: with staleness 0 this is the synchronous on-policy loop
//! (bit-identical to [`super::steps::run_sequential`]); with 1 the rollout of step t+1 runs while
//! step t trains, and the run is still deterministic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Stream};

use shareflow_operators::policy::{Optimizer, Policy, PolicyError, PolicyModel, Processor};
use shareflow_operators::reward::RewardRule;
use shareflow_operators::rl::{PromptInput, UpdateRow, rollout_seed};
use shareflow_operators::{GroupShape, Issue, ScoreResponses, Scored, ToScore, TrainRow};
use shareflow_runtime::offload::{OffloadEnds, StepJob, StepReply, offload_step};
use shareflow_runtime::{ClusterConfig, Step, StepDriver};

use super::checkpoint::{Resume, Start, TrainState};
use super::steps::{
    Graded, GraphKind, Settings, StepRecord, evaluate, prompt_of, rollout_stats, update_step,
    variants_of,
};
use crate::advantages::{Estimator, advantage_stage};

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
}

/// Side data the rollout thread hands the update thread: each seed's prompts and responses.
struct StepTable {
    step: Step,
    prompts: BTreeMap<u32, Vec<PromptInput>>,
    responses: BTreeMap<(u32, u32, u32), Arc<Vec<u32>>>,
    rollout_seconds: f64,
    generated_tokens: usize,
    version: u64,
}

/// What a training run produced.
#[derive(Debug)]
pub struct Outcome {
    pub records: Vec<StepRecord>,
    pub val_before: Option<(f64, f64)>,
    pub val_after: Option<(f64, f64)>,
    pub model: PolicyModel,
    pub optimizer: Optimizer,
    /// Seconds the rollout and update threads were busy, and the wall time of the steps.
    pub rollout_busy: f64,
    pub update_busy: f64,
    pub wall: f64,
}

fn err(e: PolicyError) -> String {
    e.to_string()
}

/// Runs the graph from `start` (a fresh run, or a state restored from a checkpoint, and where
/// to stop). `on_record` sees every new step's record as it completes (progress, metrics file);
/// `on_save` gets the training state at save steps (every `save_freq` steps), at the stop step
/// and at the end (e.g. [`super::Checkpointer::save`]).
pub fn run_dataflow(
    s: &Settings,
    policy: Policy,
    optimizer: Optimizer,
    start: Start,
    on_record: impl Fn(&StepRecord) + Send + Sync + 'static,
    on_save: impl FnMut(&TrainState<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Outcome, String> {
    if s.graph == GraphKind::Sft {
        return Err("run_dataflow runs the RL graphs; use run_sft for --graph sft".into());
    }
    let estimator = match s.graph {
        GraphKind::ShareGrpo if s.local_advantage => Estimator::ShareGrpo(s.convention),
        GraphKind::ShareGrpo => Estimator::ShareGrpoGlobalOnly(s.convention),
        _ => Estimator::Grpo,
    };
    let shape = GroupShape {
        m: s.m as u32,
        n: s.n as u32,
    };
    run_graph(
        s,
        policy,
        optimizer,
        start,
        on_record,
        on_save,
        move |responses| {
            let scored = score_math(responses);
            advantage_stage(scored, estimator, Some(shape))
        },
    )
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
        format!("{:06}", self.b)
    }
}

/// The part of a training graph between rollout and update, which users rearrange: responses
/// (text + ground truth) in, training rows and issues out.
pub trait Middle:
    for<'s> Fn(
        Stream<'s, Step, Vec<ToScore<RespPayload>>>,
    ) -> (
        Stream<'s, Step, Vec<TrainRow<RespPayload>>>,
        Stream<'s, Step, Vec<Issue>>,
    ) + Send
    + Sync
    + 'static
{
}

impl<F> Middle for F where
    F: for<'s> Fn(
            Stream<'s, Step, Vec<ToScore<RespPayload>>>,
        ) -> (
            Stream<'s, Step, Vec<TrainRow<RespPayload>>>,
            Stream<'s, Step, Vec<Issue>>,
        ) + Send
        + Sync
        + 'static
{
}

/// Runs a training graph whose reward and advantage part is `middle` (see [`run_dataflow`] for
/// the stock one): seeds -> rollout thread -> `middle` -> update thread -> records, with policy
/// versions fed back from update to rollout. `start`, `on_record` and `on_save` as for
/// [`run_dataflow`].
pub fn run_graph(
    s: &Settings,
    policy: Policy,
    optimizer: Optimizer,
    start: Start,
    on_record: impl Fn(&StepRecord) + Send + Sync + 'static,
    on_save: impl FnMut(&TrainState<'_>) -> Result<(), String> + Send + 'static,
    middle: impl Middle,
) -> Result<Outcome, String> {
    let (first, end, restored, resume) = start.plan(s.steps as u64);
    let start = Instant::now();
    let (seed_jobs_tx, seed_jobs_rx) = unbounded::<StepJob<SeedRec>>();
    let (scored_tx, scored_rx) = unbounded::<StepReply<ToScore<RespPayload>>>();
    let (row_jobs_tx, row_jobs_rx) = unbounded::<StepJob<TrainRow<RespPayload>>>();
    let (rec_tx, rec_rx) = unbounded::<StepReply<StepRecord>>();
    let (weights_tx, weights_rx) = unbounded::<PolicyModel>();
    let (table_tx, table_rx) = bounded::<StepTable>(s.max_staleness + 2);

    let mut processor =
        Processor::load(&policy.dir, policy.model.config().vision.as_ref()).map_err(err)?;
    processor.set_image_backend(s.image_backend);
    let rs = s.clone();
    let rollout = std::thread::Builder::new()
        .name("shareflow-rollout".into())
        .spawn(move || {
            rollout_thread(
                &rs,
                &processor,
                seed_jobs_rx,
                scored_tx,
                weights_rx,
                table_tx,
            )
        })
        .map_err(|e| format!("cannot start the rollout thread: {e}"))?;
    let us = s.clone();
    let update = std::thread::Builder::new()
        .name("shareflow-update".into())
        .spawn(move || {
            update_thread(
                &us,
                policy,
                optimizer,
                row_jobs_rx,
                rec_tx,
                weights_tx,
                table_rx,
                resume,
                end,
                on_save,
            )
        })
        .map_err(|e| format!("cannot start the update thread: {e}"))?;

    let ends = Arc::new(Mutex::new(Some((
        OffloadEnds {
            jobs: seed_jobs_tx,
            replies: scored_rx,
        },
        OffloadEnds {
            jobs: row_jobs_tx,
            replies: rec_rx,
        },
    ))));
    let on_record = Arc::new(on_record);
    let records: Arc<Mutex<Vec<StepRecord>>> = Arc::new(Mutex::new(restored));
    let middle = Arc::new(middle);
    let batch = s.batch as u64;
    let in_flight = 1 + s.max_staleness as u64;
    let sink = Arc::clone(&records);
    let cluster = ClusterConfig::threads(s.workers);
    cluster
        .execute(move |worker| {
            let index = worker.index();
            let (rollout_ends, update_ends) = if index == 0 {
                ends.lock()
                    .ok()
                    .and_then(|mut e| e.take())
                    .map_or((None, None), |(a, b)| (Some(a), Some(b)))
            } else {
                (None, None)
            };
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            let on_record = Arc::clone(&on_record);
            let sink = Arc::clone(&sink);
            let middle = Arc::clone(&middle);
            worker.dataflow::<Step, _, _>(|scope| {
                let seeds = input.to_stream(scope).container::<Vec<SeedRec>>();
                let responses = offload_step(seeds.clone(), seeds.clone(), "Rollout", rollout_ends);
                let (rows, issues) = middle(responses);
                issues.inspect(|i| tracing::warn!("{i}"));
                let done = offload_step(rows, seeds, "Update", update_ends);
                done.inspect(move |r| {
                    on_record(r);
                    if let Ok(mut v) = sink.lock() {
                        v.push(r.clone());
                    }
                })
                .probe_with(&probe);
            });
            let mut driver = StepDriver::new(in_flight);
            driver.run_from(worker, &mut input, &probe, first, end, |step, input| {
                if index == 0 {
                    for seed in step_seeds(step, batch) {
                        input.send(seed);
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    let rollout = rollout
        .join()
        .map_err(|_| "the rollout thread panicked".to_string())?;
    let update = update
        .join()
        .map_err(|_| "the update thread panicked".to_string())?;
    // When one thread fails, the other stops with "... thread stopped": report the cause.
    let (rollout_busy, (model, optimizer, val_before, val_after, update_busy)) =
        match (rollout, update) {
            (Ok(r), Ok(u)) => (r, u),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
            (Err(r), Err(u)) => {
                return Err(if u.ends_with("thread stopped") { r } else { u });
            }
        };
    let mut records = records.lock().map(|v| v.clone()).unwrap_or_default();
    records.sort_by_key(|r| r.step);
    if records.len() as u64 != end {
        return Err(format!("only {} of {end} steps completed", records.len()));
    }
    Ok(Outcome {
        records,
        val_before,
        val_after,
        model,
        optimizer,
        rollout_busy,
        update_busy,
        wall: start.elapsed().as_secs_f64(),
    })
}

fn rollout_thread(
    s: &Settings,
    processor: &Processor,
    jobs: Receiver<StepJob<SeedRec>>,
    replies: Sender<StepReply<ToScore<RespPayload>>>,
    weights: Receiver<PolicyModel>,
    tables: Sender<StepTable>,
) -> Result<f64, String> {
    let mut versions: BTreeMap<u64, PolicyModel> = BTreeMap::new();
    let mut busy = 0.0;
    let mut params = s.sampling.clone();
    params.stop = processor.eos_ids();
    for job in jobs.iter() {
        let need = job.step.saturating_sub(s.max_staleness as u64);
        while !versions.contains_key(&need) {
            match weights.recv() {
                Ok(m) => {
                    versions.insert(m.version(), m);
                }
                Err(_) => return Err(format!("step {}: the update thread stopped", job.step)),
            }
        }
        versions.retain(|v, _| *v >= need);
        let Some(model) = versions.get(&need) else {
            return Err(format!("step {}: policy version {need} missing", job.step));
        };
        let t0 = Instant::now();
        let mut seeds = job.records;
        seeds.sort_by_key(|x| x.b);
        let mut out = Vec::new();
        let mut table = StepTable {
            step: job.step,
            prompts: BTreeMap::new(),
            responses: BTreeMap::new(),
            rollout_seconds: 0.0,
            generated_tokens: 0,
            version: need,
        };
        for seed in &seeds {
            let sample = s.train_data.train_seed(seed.index)?;
            let variants = variants_of(s, &sample, job.step);
            let prompts: Vec<PromptInput> = variants
                .iter()
                .map(|v| prompt_of(s, processor, v))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            let resp = rollout_seed(
                model, &sample.id, &prompts, s.n, &params, s.run_seed, job.step,
            )
            .map_err(err)?;
            for (j, rs) in resp.iter().enumerate() {
                for (i, r) in rs.iter().enumerate() {
                    table.generated_tokens += r.tokens.len();
                    let text = processor.decode(&r.tokens, true).map_err(err)?;
                    table
                        .responses
                        .insert((seed.b, j as u32, i as u32), Arc::new(r.tokens.clone()));
                    out.push(ToScore {
                        response: text,
                        ground_truth: sample.answer.clone(),
                        payload: RespPayload {
                            b: seed.b,
                            variant: j as u32,
                            sample: i as u32,
                            length: r.tokens.len() as u32,
                            overall: 0.0,
                            format: 0.0,
                            accuracy: 0.0,
                        },
                    });
                }
            }
            table.prompts.insert(seed.b, prompts);
        }
        let dt = t0.elapsed().as_secs_f64();
        busy += dt;
        table.rollout_seconds = dt;
        if tables.send(table).is_err() {
            return Err(format!("step {}: the update thread stopped", job.step));
        }
        if replies
            .send(StepReply {
                step: job.step,
                records: out,
            })
            .is_err()
        {
            break;
        }
    }
    Ok(busy)
}

type UpdateResult = (
    PolicyModel,
    Optimizer,
    Option<(f64, f64)>,
    Option<(f64, f64)>,
    f64,
);

#[allow(clippy::too_many_arguments)]
fn update_thread(
    s: &Settings,
    policy: Policy,
    mut opt: Optimizer,
    jobs: Receiver<StepJob<TrainRow<RespPayload>>>,
    replies: Sender<StepReply<StepRecord>>,
    weights: Sender<PolicyModel>,
    tables: Receiver<StepTable>,
    resume: Option<Resume>,
    end: Step,
    mut on_save: impl FnMut(&TrainState<'_>) -> Result<(), String>,
) -> Result<UpdateResult, String> {
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
    let mut model = policy.model;
    let processor = policy.processor;
    let staleness = s.max_staleness as u64;
    // The records so far and the older versions the rollout still needs (for checkpoints).
    let (mut history, mut recent, val_before) = match resume {
        Some(r) => {
            model.set_version(r.step);
            for v in &r.rollout_versions {
                let _ = weights.send(v.clone());
            }
            let current = model.snapshot().map_err(err)?;
            let _ = weights.send(current.clone());
            let mut recent = r.rollout_versions;
            recent.push(current);
            (r.records, recent, r.val_before)
        }
        None => {
            model.set_version(0);
            let current = model.snapshot().map_err(err)?;
            let _ = weights.send(current.clone());
            let val_before = if s.val_before_train {
                evaluate(s, &model, &processor).map_err(err)?
            } else {
                None
            };
            (Vec::new(), vec![current], val_before)
        }
    };
    recent.retain(|m| m.version() + staleness >= model.version());
    let mut busy = 0.0;
    let mut val_after = None;
    let mut pending_tables: BTreeMap<Step, StepTable> = BTreeMap::new();
    let mut last_step_end = Instant::now();
    for job in jobs.iter() {
        let step = job.step;
        while !pending_tables.contains_key(&step) {
            match tables.recv() {
                Ok(t) => {
                    pending_tables.insert(t.step, t);
                }
                Err(_) => return Err(format!("step {step}: the rollout thread stopped")),
            }
        }
        let Some(table) = pending_tables.remove(&step) else {
            return Err(format!("step {step}: rollout data missing"));
        };
        let t0 = Instant::now();
        let mut rows = job.records;
        rows.sort_by_key(|r| (r.payload.b, r.context, r.variant, r.sample));
        // Rollout statistics from each response's own row (context == variant).
        let mut groups: BTreeMap<u32, Vec<Vec<Graded>>> = BTreeMap::new();
        let mut lengths = Vec::new();
        for r in rows.iter().filter(|r| r.context == r.variant) {
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
        let update_rows: Vec<UpdateRow> = rows
            .iter()
            .map(|r| {
                let prompt = table
                    .prompts
                    .get(&r.payload.b)
                    .and_then(|p| p.get(r.context as usize))
                    .cloned();
                let response = table.responses.get(&(r.payload.b, r.variant, r.sample)).cloned();
                match (prompt, response) {
                    (Some(prompt), Some(response)) => Ok(UpdateRow {
                        prompt,
                        response,
                        advantage: r.advantage,
                    }),
                    _ => Err(format!(
                        "step {step}: row (seed {}, context {}, variant {}, sample {}) has no rollout data",
                        r.payload.b, r.context, r.variant, r.sample
                    )),
                }
            })
            .collect::<Result<_, _>>()?;
        let stats = update_step(s, &model, reference.as_ref(), &mut opt, &update_rows, step)
            .map_err(err)?;
        model.set_version(step + 1);
        let current = model.snapshot().map_err(err)?;
        let _ = weights.send(current.clone());
        recent.push(current);
        recent.retain(|m| m.version() + staleness > step);
        let update_seconds = t0.elapsed().as_secs_f64();
        busy += update_seconds;
        let last = step + 1 == s.steps as u64;
        let (val_accuracy, val_reward) =
            if last || (s.val_freq > 0 && (step + 1) % s.val_freq as u64 == 0) {
                match evaluate(s, &model, &processor).map_err(err)? {
                    Some((a, r)) => {
                        val_after = Some((a, r));
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
            rollout_version: table.version,
            rollout: rollout_stats(&groups, &lengths),
            update: stats,
            val_accuracy,
            val_reward,
            rollout_seconds: table.rollout_seconds,
            update_seconds,
            step_seconds: last_step_end.elapsed().as_secs_f64(),
            generated_tokens: table.generated_tokens,
        };
        history.push(record.clone());
        if last || step + 1 == end || (s.save_freq > 0 && (step + 1) % s.save_freq as u64 == 0) {
            on_save(&TrainState {
                step: step + 1,
                model: &model,
                optimizer: &opt,
                rollout_versions: recent.iter().filter(|m| m.version() <= step).collect(),
                records: &history,
                val_before,
            })?;
        }
        last_step_end = Instant::now();
        if replies
            .send(StepReply {
                step,
                records: vec![record],
            })
            .is_err()
        {
            break;
        }
    }
    Ok((model, opt, val_before, val_after, busy))
}
