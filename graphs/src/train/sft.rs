//! The `sft` graph: supervised fine-tuning on the task's reference responses (token-level mean
//! negative log-likelihood of the response given the prompt), the warm start of the embedded
//! policy. Seeds flow through the dataflow to an update thread, like the RL graphs' update.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::unbounded;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use shareflow_operators::policy::{Optimizer, Policy, PolicyError};
use shareflow_operators::rl::{UpdateRow, nll_loss};
use shareflow_operators::task::{Seed, Split, reference_response, shapes_sample};
use shareflow_runtime::offload::{OffloadEnds, StepJob, StepReply, offload_step};
use shareflow_runtime::{ClusterConfig, Step, StepDriver};

use super::checkpoint::{Start, TrainState};
use super::dataflow::{Outcome, SeedRec, step_seeds};
use super::steps::{Settings, StepRecord, TASK_SEED, evaluate, prompt_of, sft_variant};
use shareflow_operators::rl::UpdateStats;

fn err(e: PolicyError) -> String {
    e.to_string()
}

/// Runs SFT for `settings.steps` steps of `settings.batch` questions, from `start`; `on_record`
/// and `on_save` as for [`super::run_dataflow`].
pub fn run_sft(
    s: &Settings,
    policy: Policy,
    optimizer: Optimizer,
    start: Start,
    on_record: impl Fn(&StepRecord) + Send + Sync + 'static,
    mut on_save: impl FnMut(&TrainState<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Outcome, String> {
    let (first, end, restored, resume) = start.plan(s.steps as u64);
    let start = Instant::now();
    let (jobs_tx, jobs_rx) = unbounded::<StepJob<SeedRec>>();
    let (rep_tx, rep_rx) = unbounded::<StepReply<StepRecord>>();
    let us = s.clone();
    let thread = std::thread::Builder::new()
        .name("shareflow-sft".into())
        .spawn(move || -> Result<_, String> {
            let mut model = policy.model;
            let processor = policy.processor;
            let mut opt = optimizer;
            let (mut history, val_before) = match resume {
                Some(r) => {
                    model.set_version(r.step);
                    (r.records, r.val_before)
                }
                None if us.val_before_train => {
                    (Vec::new(), evaluate(&us, &model, &processor).map_err(err)?)
                }
                None => (Vec::new(), None),
            };
            let mut busy = 0.0;
            for job in jobs_rx.iter() {
                let t0 = Instant::now();
                let mut seeds = job.records;
                seeds.sort_by_key(|x| x.b);
                let mut rows = Vec::with_capacity(seeds.len());
                for seed in &seeds {
                    let sample = shapes_sample(TASK_SEED, Split::Train, seed.index);
                    let v = sft_variant(&us, &Seed::from(sample.clone()), job.step);
                    let prompt = prompt_of(&us, &processor, &v).map_err(err)?;
                    let mut response = processor
                        .encode(&reference_response(&sample))
                        .map_err(err)?;
                    response.extend(processor.eos_ids().first().copied());
                    rows.push(UpdateRow {
                        prompt,
                        response: Arc::new(response),
                        advantage: 0.0,
                    });
                }
                let refs: Vec<&UpdateRow> = rows.iter().collect();
                let total: usize = rows.iter().map(|r| r.response.len()).sum();
                let mut acc = opt.accumulator();
                let mut loss_sum = 0.0;
                for micro in refs.chunks(us.update.micro_batch_rows) {
                    let (loss, tokens) = nll_loss(&model, micro).map_err(err)?;
                    let share = tokens as f64 / total.max(1) as f64;
                    loss_sum +=
                        f64::from(loss.to_scalar::<f32>().map_err(|e| e.to_string())?) * share;
                    acc.backward(&loss, share).map_err(err)?;
                }
                opt.set_lr(us.optim.lr * us.lr_schedule.factor(job.step));
                let st = opt.step(&acc.take()).map_err(err)?;
                model.set_version(job.step + 1);
                let update_seconds = t0.elapsed().as_secs_f64();
                busy += update_seconds;
                let last = job.step + 1 == us.steps as u64;
                let (val_accuracy, val_reward) =
                    if last || (us.val_freq > 0 && (job.step + 1) % us.val_freq as u64 == 0) {
                        let v = evaluate(&us, &model, &processor).map_err(err)?;
                        (v.map(|x| x.0), v.map(|x| x.1))
                    } else {
                        (None, None)
                    };
                let record = StepRecord {
                    step: job.step,
                    policy_version: job.step + 1,
                    update: UpdateStats {
                        pg_loss: loss_sum,
                        grad_norm: st.grad_norm,
                        lr: st.lr,
                        optimizer_steps: 1,
                        response_tokens: total,
                        ..UpdateStats::default()
                    },
                    val_accuracy,
                    val_reward,
                    update_seconds,
                    step_seconds: update_seconds,
                    ..StepRecord::default()
                };
                history.push(record.clone());
                if last
                    || job.step + 1 == end
                    || (us.save_freq > 0 && (job.step + 1) % us.save_freq as u64 == 0)
                {
                    on_save(&TrainState {
                        step: job.step + 1,
                        model: &model,
                        optimizer: &opt,
                        rollout_versions: Vec::new(),
                        records: &history,
                        val_before,
                    })?;
                }
                if rep_tx
                    .send(StepReply {
                        step: job.step,
                        records: vec![record],
                    })
                    .is_err()
                {
                    break;
                }
            }
            Ok((model, opt, val_before, busy))
        })
        .map_err(|e| format!("cannot start the SFT thread: {e}"))?;

    let ends = Arc::new(Mutex::new(Some(OffloadEnds {
        jobs: jobs_tx,
        replies: rep_rx,
    })));
    let on_record = Arc::new(on_record);
    let records: Arc<Mutex<Vec<StepRecord>>> = Arc::new(Mutex::new(restored));
    let sink = Arc::clone(&records);
    let batch = s.batch as u64;
    ClusterConfig::threads(s.workers)
        .execute(move |worker| {
            let index = worker.index();
            let my_ends = if index == 0 {
                ends.lock().ok().and_then(|mut e| e.take())
            } else {
                None
            };
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            let on_record = Arc::clone(&on_record);
            let sink = Arc::clone(&sink);
            worker.dataflow::<Step, _, _>(|scope| {
                let seeds = input.to_stream(scope).container::<Vec<SeedRec>>();
                offload_step(seeds.clone(), seeds, "SftUpdate", my_ends)
                    .inspect(move |r: &StepRecord| {
                        on_record(r);
                        if let Ok(mut v) = sink.lock() {
                            v.push(r.clone());
                        }
                    })
                    .probe_with(&probe);
            });
            StepDriver::new(1).run_from(worker, &mut input, &probe, first, end, |step, input| {
                if index == 0 {
                    for seed in step_seeds(step, batch) {
                        input.send(seed);
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    let (model, optimizer, val_before, busy) = thread
        .join()
        .map_err(|_| "the SFT thread panicked".to_string())??;
    let mut records = records.lock().map(|v| v.clone()).unwrap_or_default();
    records.sort_by_key(|r| r.step);
    Ok(Outcome {
        records,
        val_before,
        val_after: None,
        model,
        optimizer,
        rollout_busy: 0.0,
        old_log_prob_busy: 0.0,
        timeline: Vec::new(),
        update_busy: busy,
        wall: start.elapsed().as_secs_f64(),
    })
}
