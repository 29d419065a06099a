//! A user's reward closure in the stock Share-GRPO graph: exact-match accuracy on the boxed answer
//! plus a small bonus for short responses, instead of the `math` rule. Trains the embedded policy
//! for a few steps.
//!
//!     cargo run --release --example custom_reward [-- STEPS]

use shareflow::graphs::train::{
    Config, GraphBuilder, GraphKind, Settings, Start, run_graph, scored,
};
use shareflow::graphs::{Estimator, advantage_stage};
use shareflow::operators::policy::candle::Device;
use shareflow::operators::policy::{LoadOptions, Optimizer, Policy};
use shareflow::operators::reward::grader::extract_boxed_content;
use shareflow::operators::{GroupShape, StdConvention};
use shareflow::runtime::timely::dataflow::operators::vec::Map;

/// The user's reward: 1 for the right boxed answer, plus up to 0.2 for brevity.
fn my_reward(response: &str, answer: &str) -> (f64, f64, f64) {
    let boxed = extract_boxed_content(response);
    let accuracy = if boxed.trim() == answer.trim() {
        1.0
    } else {
        0.0
    };
    let format = if boxed != "None" { 1.0 } else { 0.0 };
    let brevity = 0.2 * (1.0 - (response.len() as f64 / 200.0).min(1.0));
    (accuracy + brevity, format, accuracy)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let steps = std::env::args().nth(1).unwrap_or_else(|| "4".into());
    let dir = std::env::temp_dir().join("shareflow-example-model");
    shareflow::embedded::unpack(&dir)?;
    let config = Config::resolve(
        None,
        &[
            format!("trainer.total_steps={steps}"),
            "data.rollout_batch_size=4".into(),
            "data.val_size=0".into(),
            "trainer.val_before_train=false".into(),
            "trainer.val_freq=0".into(),
            format!("worker.actor.model.model_path={}", dir.display()),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let settings =
        Settings::from_config(&config, GraphKind::ShareGrpo).map_err(anyhow::Error::msg)?;
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let optimizer = Optimizer::new(policy.model.trainable_vars(), settings.optim)?;
    let outcome = run_graph(
        &settings,
        policy,
        optimizer,
        Start::fresh(),
        |r| {
            println!(
                "step {}: my reward {:.3}, accuracy {:.3}",
                r.step + 1,
                r.rollout.reward_overall,
                r.rollout.reward_accuracy
            );
        },
        |_| Ok(()),
        |g: &mut GraphBuilder<'_>| {
            let (m, n) = (g.settings().m, g.settings().n);
            let shape = GroupShape {
                m: m as u32,
                n: n as u32,
            };
            let seeds = g.seeds();
            let variants = g.expand(seeds);
            let prompts = g.encode(variants)?;
            let (responses, reports) = g.rollout(prompts.clone())?;
            // The user's reward, in place of the stock `score_math`.
            let scored = responses.map(|x| {
                let (overall, format, accuracy) = my_reward(&x.response, &x.ground_truth);
                scored(x.payload, overall, format, accuracy)
            });
            let (rows, issues) = advantage_stage(
                scored,
                Estimator::ShareGrpo(StdConvention::Reference),
                Some(shape),
            );
            g.warn_issues(issues);
            let ready = g.old_log_probs(rows, prompts, Some(m * m * n))?;
            g.update(ready, reports)
        },
    )
    .map_err(anyhow::Error::msg)?;
    println!("{} steps done", outcome.records.len());
    Ok(())
}
