//! The PPO update's loss aggregation (`worker.actor.loss_agg_mode`) against closed forms: at the
//! first mini-batch the ratio is 1 (old log-probs are the policy's own), so the clipped objective
//! is `-A` per token and the loss is a weighted sum of the rows' advantages.
//! - `token-mean`: `-sum_i A_i len_i / sum_i len_i` (the reference's; DAPO's token-level loss);
//! - `seq-mean-token-sum-norm`: `-sum_i A_i len_i / (rows * L)` (Dr. GRPO, L = max length).

mod common;

use std::sync::Arc;

use candle_core::Device;
use common::golden_dir;
use shareflow_operators::policy::{LoadOptions, OptimConfig, Optimizer, PolicyModel, PpoConfig};
use shareflow_operators::rl::{
    LossAgg, PromptInput, UpdateConfig, UpdateRow, old_log_probs, ppo_update_prepared,
};
use shareflow_runtime::DetRng;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn rows() -> Vec<UpdateRow> {
    // Responses of different lengths, so that the two aggregations differ.
    let spec: [(&[u32], &[u32], f64); 4] = [
        (&[5, 9, 12], &[7, 3], 1.5),
        (&[5, 9, 12], &[8, 2, 11, 4, 6], -0.5),
        (&[4, 13], &[10], 0.75),
        (&[4, 13], &[14, 15, 16, 17, 18, 19, 20], -1.25),
    ];
    spec.iter()
        .map(|(p, r, a)| UpdateRow {
            prompt: PromptInput {
                ids: Arc::new(p.to_vec()),
                images: Arc::new(Vec::new()),
            },
            response: Arc::new(r.to_vec()),
            advantage: *a,
        })
        .collect()
}

fn pg_loss(agg: LossAgg, micro: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let dir = golden_dir().join("tiny-qwen2");
    let model = PolicyModel::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let mut opt = Optimizer::new(model.trainable_vars(), OptimConfig::default())?;
    let rows = rows();
    let cfg = UpdateConfig {
        ppo: PpoConfig::default(),
        mini_batch_rows: rows.len(),
        micro_batch_rows: micro,
        ppo_epochs: 1,
        temperature: 1.0,
        shuffle: false,
        loss_agg: agg,
    };
    let refs: Vec<&UpdateRow> = rows.iter().collect();
    let lp = old_log_probs(&model, None, &refs, &cfg)?;
    let stats = ppo_update_prepared(
        &model,
        &mut opt,
        &rows,
        &lp,
        &cfg,
        &mut DetRng::from_seed(0),
    )?;
    assert_eq!(stats.optimizer_steps, 1);
    Ok(stats.pg_loss)
}

#[test]
fn loss_aggregation_modes_match_their_closed_forms_for_any_micro_batching() -> TestResult {
    let rows = rows();
    let weighted: f64 = rows
        .iter()
        .map(|r| r.advantage * r.response.len() as f64)
        .sum();
    let tokens: usize = rows.iter().map(|r| r.response.len()).sum();
    let max_tokens = 8;
    let token_mean = -weighted / tokens as f64;
    let sum_norm = -weighted / (rows.len() * max_tokens) as f64;
    assert!(
        (token_mean - sum_norm).abs() > 0.1,
        "the cases must tell the modes apart"
    );
    for micro in [1, 2, 4] {
        let got = pg_loss(LossAgg::TokenMean, micro)?;
        assert!(
            (got - token_mean).abs() < 1e-5,
            "token-mean, micro {micro}: {got} vs {token_mean}"
        );
        let got = pg_loss(LossAgg::SeqMeanTokenSumNorm { max_tokens }, micro)?;
        assert!(
            (got - sum_norm).abs() < 1e-5,
            "seq-mean-token-sum-norm, micro {micro}: {got} vs {sum_norm}"
        );
    }
    Ok(())
}
