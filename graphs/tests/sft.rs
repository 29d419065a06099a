//! The `sft` graph (seeds -> variant -> prompt -> reference response -> NLL + AdamW, through the
//! graph builder) against a plain loop written out here: the reference responses of the embedded
//! task, token-weighted micro-batch means of the NLL, one AdamW step per step. Losses, gradient
//! norms and final weights must be bitwise equal, on 1 and 2 workers.

use std::sync::Arc;

use shareflow_graphs::train::steps::{TASK_SEED, prompt_of, sft_variant};
use shareflow_graphs::train::{GraphKind, Settings, Start, run_dataflow};
use shareflow_operators::policy::{Optimizer, Policy, PolicyModel};
use shareflow_operators::rl::{UpdateRow, nll_loss};
use shareflow_operators::task::{Seed, Split, reference_response, shapes_sample};

mod common;

use common::{TestResult, bits, load};

/// A step's mean NLL and gradient norm.
type LossAndNorm = (f64, f64);

/// The plain SFT loop: per step, the `batch` consecutive training questions, each under its SFT
/// variant's prompt with its reference response and the end-of-sequence token; returns the
/// model and each step's (mean NLL, gradient norm).
fn plain_sft(
    s: &Settings,
    policy: Policy,
    mut opt: Optimizer,
) -> Result<(PolicyModel, Vec<LossAndNorm>), Box<dyn std::error::Error>> {
    let model = policy.model;
    let mut processor = policy.processor;
    processor.set_image_backend(s.image_backend);
    let mut out = Vec::new();
    for step in 0..s.steps as u64 {
        let mut rows = Vec::new();
        for b in 0..s.batch as u64 {
            let sample = shapes_sample(TASK_SEED, Split::Train, step * s.batch as u64 + b);
            let variant = sft_variant(s, &Seed::from(sample.clone()), step);
            let prompt = prompt_of(s, &processor, &variant)?;
            let mut response = processor.encode(&reference_response(&sample))?;
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
        let mut loss = 0.0;
        for micro in refs.chunks(s.update.micro_batch_rows) {
            let (l, tokens) = nll_loss(&model, micro)?;
            let share = tokens as f64 / total as f64;
            loss += f64::from(l.to_scalar::<f32>()?) * share;
            acc.backward(&l, share)?;
        }
        opt.set_lr(s.optim.lr * s.lr_schedule.factor(step));
        let st = opt.step(&acc.take())?;
        out.push((loss, st.grad_norm));
    }
    Ok((model, out))
}

fn settings(workers: usize) -> Result<Settings, String> {
    let extra = vec![format!("trainer.workers={workers}")];
    common::config(
        GraphKind::Sft,
        &[
            "sft.steps=3",
            "sft.batch_size=3",
            // Two micro-batches of unequal size: the token weighting matters.
            "worker.actor.micro_batch_size_per_device_for_update=2",
            "sft.lr=0.01",
            "data.val_size=0",
            "trainer.val_before_train=false",
        ],
        &extra,
    )
    .map(|(_, s)| s)
}

#[test]
fn the_sft_graph_equals_the_plain_loop() -> TestResult {
    let s = settings(1)?;
    let (policy, opt) = load(&s)?;
    let (want_model, want) = plain_sft(&s, policy, opt)?;
    assert!(
        want.iter()
            .all(|(l, g)| l.is_finite() && *l > 0.0 && *g > 0.0)
    );
    let want_bits = bits(&want_model)?;
    for workers in [1, 2] {
        let s = settings(workers)?;
        let (policy, opt) = load(&s)?;
        let got = run_dataflow(&s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))?;
        let losses: Vec<(f64, f64)> = got
            .records
            .iter()
            .map(|r| (r.update.pg_loss, r.update.grad_norm))
            .collect();
        assert_eq!(losses, want, "{workers} workers");
        assert!(got.records.iter().all(|r| r.update.optimizer_steps == 1));
        assert_eq!(bits(&got.model)?, want_bits, "{workers} workers");
    }
    Ok(())
}
