//! A rearranged training graph: GRPO plus a filter, written here, that drops the questions whose
//! rewards all tie (their GRPO advantages are all zero: DAPO's dynamic-sampling filter), then
//! trains the embedded policy for a few steps. Only public APIs: the `GraphBuilder`'s stages, the
//! stock reward stage (`score_math`), a `GroupByKey` from the runtime and the stock advantage
//! stage, run by `run_graph` with the same driver, checkpoints and metrics as `shareflow train`.
//!
//!     cargo run --release --example custom_graph [-- STEPS]

use std::sync::atomic::{AtomicUsize, Ordering};

use shareflow::graphs::train::{
    Config, GraphBuilder, GraphKind, GraphResult, Outcome, Settings, Start, run_graph, score_math,
};
use shareflow::graphs::{Estimator, advantage_stage};
use shareflow::operators::GroupShape;
use shareflow::operators::policy::candle::Device;
use shareflow::operators::policy::{LoadOptions, Optimizer, Policy};
use shareflow::runtime::GroupByKey;
use shareflow::runtime::timely::dataflow::operators::vec::Map;

/// Questions dropped because their rewards all tied.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// The graph, top to bottom as the data walks it.
fn grpo_without_tied_groups<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    let group = g.settings().n;
    let shape = GroupShape {
        m: 1,
        n: group as u32,
    };
    let seeds = g.seeds();
    let variants = g.expand(seeds);
    let prompts = g.encode(variants)?;
    let (responses, reports) = g.rollout(prompts.clone())?;
    let scored = score_math(responses);
    // The filter: group each question's responses, keep the group only if its rewards differ.
    let kept = scored
        .group_by_key("DropTiedGroups", |s| s.seed.clone(), move |_| Some(group))
        .flat_map(|g| {
            if g.members.windows(2).all(|w| w[0].reward == w[1].reward) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            } else {
                g.members
            }
        });
    let (rows, issues) = advantage_stage(kept, Estimator::Grpo, Some(shape));
    g.warn_issues(issues);
    // A dropped seed has no rows, so the row count per seed is unknown (None): old log-probs
    // then run at the step's end.
    let ready = g.old_log_probs(rows, prompts, None)?;
    g.update(ready, reports)
}

/// Trains the embedded policy for `steps` steps of 4 questions with the graph; returns the run's
/// outcome and the number of questions dropped.
pub fn run(steps: usize) -> anyhow::Result<(Outcome, usize)> {
    let dir = std::env::temp_dir().join(format!("shareflow-example-model-{}", std::process::id()));
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
    let before = DROPPED.load(Ordering::Relaxed);
    let outcome = run_graph(
        &settings,
        policy,
        optimizer,
        Start::fresh(),
        |_| {},
        |_| Ok(()),
        grpo_without_tied_groups,
    )
    .map_err(anyhow::Error::msg)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((outcome, DROPPED.load(Ordering::Relaxed) - before))
}

#[allow(clippy::print_stdout, dead_code)]
fn main() -> anyhow::Result<()> {
    let steps = std::env::args()
        .nth(1)
        .map_or(Ok(4), |s| s.parse::<usize>())?;
    let (outcome, dropped) = run(steps)?;
    for r in &outcome.records {
        println!(
            "step {}: reward {:.3}, {} of 4 questions trained on, {} response tokens",
            r.step + 1,
            r.rollout.reward_overall,
            r.rollout.seeds,
            r.update.response_tokens
        );
    }
    println!(
        "{} steps; {dropped} of {} questions dropped because their rewards all tied",
        outcome.records.len(),
        outcome.records.len() * 4
    );
    Ok(())
}
