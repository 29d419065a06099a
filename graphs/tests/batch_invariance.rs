//! A row's log-probabilities must not depend on the batch it is scored in: PPO's ratio compares
//! log-probs of the same rows scored in different mini-batches (old log-probs in canonical order,
//! new ones after a shuffle), and the KL loss compares two models' batches. This once failed on
//! 2 threads: a fused kernel's parallel split left the tail of its output unwritten when the
//! length was not a multiple of its chunk, so the last rows of a large batch were garbage.

mod common;

use common::{TINY, fixture};
use shareflow_graphs::train::GraphKind;
use shareflow_graphs::train::steps::{prompt_of, step_questions, variants_of};
use shareflow_operators::policy::candle::Device;
use shareflow_operators::policy::{LoadOptions, PolicyModel, Processor, ScoreOptions, Sequence};

#[test]
fn a_rows_log_probs_do_not_depend_on_its_batch() -> Result<(), Box<dyn std::error::Error>> {
    let (_, s) = common::config(GraphKind::ShareGrpo, TINY, &[])?;
    let model = PolicyModel::load(&fixture(), &Device::Cpu, LoadOptions::default())?;
    let processor = Processor::load(&fixture(), model.config().vision.as_ref())?;
    let mut prompts = Vec::new();
    for q in step_questions(&s, 0)? {
        for v in variants_of(&s, &q, 0) {
            prompts.push(prompt_of(&s, &processor, &v)?);
        }
    }
    // Batch shapes vary with the response lengths; which shapes hit a kernel's partial tail
    // depends on the thread count, so try several.
    for extra in 0..8 {
        check(&model, &prompts, extra)?;
    }
    Ok(())
}

fn check(
    model: &PolicyModel,
    prompts: &[shareflow_operators::rl::PromptInput],
    extra: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    // Real prompts with images (rewrites give them different lengths) and responses of
    // different lengths, so the batch is padded.
    let mut seqs = Vec::new();
    {
        for p in prompts {
            let mut ids = p.ids.as_ref().clone();
            let k = seqs.len() as u32;
            ids.extend((0..1 + extra + k % 3).map(|i| (i * 37 + k * 11) % 400 + 1));
            seqs.push((ids, p.ids.len(), p.images.clone()));
        }
    }
    assert!(seqs.len() >= 4, "{} sequences", seqs.len());
    let seq = |i: usize| Sequence {
        ids: &seqs[i].0,
        prompt_len: seqs[i].1,
        images: &seqs[i].2,
    };
    let opts = ScoreOptions {
        temperature: 1.0,
        ..ScoreOptions::default()
    };
    let alone: Vec<Vec<f32>> = (0..seqs.len())
        .map(|i| model.score(&[seq(i)], &opts)?.row(0))
        .collect::<Result<_, _>>()?;
    // Every order of the first four, and all of them together.
    let batches: Vec<Vec<usize>> = vec![
        vec![0, 1, 2, 3],
        vec![3, 2, 1, 0],
        vec![1, 3, 0, 2],
        (0..seqs.len()).collect(),
    ];
    for batch in batches {
        let rows: Vec<Sequence<'_>> = batch.iter().map(|&i| seq(i)).collect();
        let scores = model.score(&rows, &opts)?;
        for (b, &i) in batch.iter().enumerate() {
            let got = scores.row(b)?;
            assert_eq!(got.len(), alone[i].len());
            for (t, (g, a)) in got.iter().zip(&alone[i]).enumerate() {
                assert!(
                    (g - a).abs() <= 1e-4,
                    "extra {extra}, batch {batch:?}: row {i} token {t}: {g} in the batch, {a} \
                     alone"
                );
            }
        }
    }
    Ok(())
}
