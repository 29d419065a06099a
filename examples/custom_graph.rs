//! A rearranged training graph: GRPO plus a filter, written here, that drops the questions whose
//! rewards all tie (their GRPO advantages are all zero: DAPO's dynamic-sampling filter), then
//! trains the embedded policy for a few steps. Only public APIs: the stock reward stage
//! (`score_math`), a `GroupByKey` from the runtime, the stock advantage stage, `run_graph`.
//!
//!     cargo run --release --example custom_graph [-- STEPS]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shareflow::graphs::train::{Config, GraphKind, Settings, Start, run_graph, score_math};
use shareflow::graphs::{Estimator, advantage_stage};
use shareflow::operators::GroupShape;
use shareflow::operators::policy::candle::Device;
use shareflow::operators::policy::{LoadOptions, Optimizer, Policy};
use shareflow::runtime::GroupByKey;
use shareflow::runtime::timely::dataflow::operators::vec::Map;

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
    let settings = Settings::from_config(&config, GraphKind::Grpo).map_err(anyhow::Error::msg)?;
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let optimizer = Optimizer::new(policy.model.trainable_vars(), settings.optim)?;
    let group = settings.m * settings.n;
    let shape = GroupShape {
        m: settings.m as u32,
        n: settings.n as u32,
    };

    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dropped);
    let outcome = run_graph(
        &settings,
        policy,
        optimizer,
        Start::fresh(),
        |r| {
            println!(
                "step {}: reward {:.3}, {} response tokens trained on",
                r.step + 1,
                r.rollout.reward_overall,
                r.update.response_tokens
            );
        },
        |_| Ok(()),
        move |responses| {
            let counter = Arc::clone(&counter);
            let scored = score_math(responses);
            // The filter: group each question's responses, keep the group only if its rewards
            // differ. (A group whose rewards tie would get all-zero GRPO advantages.)
            let kept = scored
                .group_by_key("DropTiedGroups", |s| s.seed.clone(), move |_| Some(group))
                .flat_map(move |g| {
                    let tied = g.members.windows(2).all(|w| w[0].reward == w[1].reward);
                    if tied {
                        counter.fetch_add(1, Ordering::Relaxed);
                        Vec::new()
                    } else {
                        g.members
                    }
                });
            advantage_stage(kept, Estimator::Grpo, Some(shape))
        },
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "{} steps; {} of {} questions dropped because their rewards all tied",
        outcome.records.len(),
        dropped.load(Ordering::Relaxed),
        outcome.records.len() * settings.batch
    );
    Ok(())
}
