//! The stock RL graphs, each a walk of the data through public operators, top to bottom:
//! source -> expansion -> prompts -> rollout -> reward -> normalise -> share -> old log-probs
//! -> loss and optimizer. A user's graph is a function of the same shape (see
//! `examples/custom_graph.rs`).

use shareflow_operators::GroupShape;

use crate::advantages::{Estimator, advantage_stage};
use crate::train::dataflow::{GraphBuilder, GraphResult, estimator, score_math};

/// Share-GRPO: each seed expands to m variants, n responses each; rewards are normalised within
/// each variant (local) and across the seed (global), and every response is trained under every
/// variant's prompt (m * m * n rows per seed).
pub fn share_grpo<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    let (m, n) = (g.settings().m, g.settings().n);
    let shape = GroupShape {
        m: m as u32,
        n: n as u32,
    };
    let estimator = estimator(g.settings());

    let seeds = g.seeds();
    let variants = g.expand(seeds);
    let prompts = g.encode(variants)?;
    let (responses, reports) = g.rollout(prompts.clone())?;
    let scored = score_math(responses);
    let (rows, issues) = advantage_stage(scored, estimator, Some(shape));
    g.warn_issues(issues);
    let ready = g.old_log_probs(rows, prompts, Some(m * m * n))?;
    g.update(ready, reports)
}

/// GRPO: the original question only, `n * question_num` responses, one normalisation per seed
/// and one row per response.
pub fn grpo<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    one_group_per_seed(g, Estimator::Grpo)
}

/// Dr. GRPO: GRPO's walk with `r - mean` advantages; its length-free loss normalisation is the
/// update's `worker.actor.loss_agg_mode` (seq-mean-token-sum-norm by default for this graph).
pub fn dr_grpo<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    one_group_per_seed(g, Estimator::DrGrpo)
}

/// RLOO: GRPO's walk with a leave-one-out baseline.
pub fn rloo<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    one_group_per_seed(g, Estimator::Rloo)
}

/// The walk of the one-group-per-seed graphs: the original question, one normalisation of the
/// seed's responses by `estimator`, one row per response.
fn one_group_per_seed<'s>(g: &mut GraphBuilder<'s>, estimator: Estimator) -> GraphResult<'s> {
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
    let (rows, issues) = advantage_stage(scored, estimator, Some(shape));
    g.warn_issues(issues);
    let ready = g.old_log_probs(rows, prompts, Some(group))?;
    g.update(ready, reports)
}
