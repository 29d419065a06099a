//! The stock graphs, each a walk of the data through public operators, top to bottom: for RL,
//! source -> expansion -> prompts -> rollout -> reward -> normalise -> share -> old log-probs
//! -> loss and optimizer; for SFT, source -> variant -> prompt -> reference response -> loss and
//! optimizer. A user's graph is a function of the same shape (see `examples/custom_graph.rs`).

use std::collections::BTreeMap;

use shareflow_operators::{GroupShape, RolloutReport, Scored, seed_key};
use shareflow_runtime::Step;
use shareflow_runtime::timely::ExchangeData;
use shareflow_runtime::timely::dataflow::Stream;
use shareflow_runtime::timely::dataflow::operators::Concat;
use shareflow_runtime::timely::dataflow::operators::core::OkErr;
use shareflow_runtime::timely::dataflow::operators::vec::Broadcast;
use shareflow_runtime::timely::dataflow::operators::vec::Map;
use shareflow_runtime::{GroupByKey, KeepIf};

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

/// DAPO's dynamic sampling (Yu et al., "DAPO"): `data.gen_batch_size` questions are sampled;
/// those whose rewards all tie (all-zero GRPO advantages, no signal) are dropped; while fewer than
/// `data.rollout_batch_size` questions are left, another round of `data.gen_batch_size` questions
/// is sampled, up to `algorithm.filter_groups.max_num_gen_batches` rounds (a round is its own
/// rollout stage, gated on the rounds before it); and the first `data.rollout_batch_size`
/// informative questions, in the step's seed order, are trained on. The loss is token-level
/// (`token-mean`) with the configured asymmetric clip (`clip_ratio_high`).
// `ok_err` splits by a `Result`; a variant is large, and that is fine here.
#[allow(clippy::result_large_err)]
pub fn dapo<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    let group = g.settings().n;
    let keep = g.settings().keep;
    let rounds = g.settings().gen_rounds.max(1);
    let per_round = g.settings().batch / rounds;
    let shape = GroupShape {
        m: 1,
        n: group as u32,
    };

    let mut later = g.seeds();
    let mut informative = None;
    let mut seen = None;
    let mut reports = None;
    let mut prompts = None;
    for round in 0..rounds {
        // This round's questions: the next `per_round` positions of the step.
        let (mut seeds, rest) = later.ok_err(move |s| {
            if (s.b as usize) < (round + 1) * per_round {
                Ok(s)
            } else {
                Err(s)
            }
        });
        later = rest;
        if let Some(seen) = seen.clone() {
            // Sample them only while the rounds before left fewer than `keep` informative
            // questions.
            // Every worker feeds seeds: the decision goes to all of them.
            let short = informative_count(seen)
                .map(move |n| ((), n < keep))
                .broadcast();
            seeds = seeds.keep_if(short, |_| ());
        }
        let variants = g.expand(seeds);
        let round_prompts = g.encode(variants)?;
        let (responses, round_reports) = g.rollout(round_prompts.clone())?;
        let scored = score_math(responses);
        let round_informative = drop_tied(scored.clone(), group);
        seen = Some(concat(seen, scored));
        informative = Some(concat(informative, round_informative));
        reports = Some(concat(reports, round_reports));
        prompts = Some(concat(prompts, round_prompts));
    }
    let (Some(informative), Some(reports), Some(prompts)) = (informative, reports, prompts) else {
        return Err("dapo needs at least one round of sampling".into());
    };
    // The step's informative questions, all of them, then the first `keep`.
    let kept = informative
        .group_by_key("FirstInformative", |_| (), |_| None)
        .flat_map(move |g| first_seeds(g.members, keep));
    let (rows, issues) = advantage_stage(kept, Estimator::Grpo, Some(shape));
    g.warn_issues(issues);
    let ready = g.old_log_probs(rows, prompts, None)?;
    g.update(ready, reports)
}

/// The responses of the seeds whose `n` rewards do not all tie.
fn drop_tied<'s, P: ExchangeData>(
    scored: Stream<'s, Step, Vec<Scored<P>>>,
    n: usize,
) -> Stream<'s, Step, Vec<Scored<P>>> {
    scored
        .group_by_key("DropTiedGroups", |s| s.seed.clone(), move |_| Some(n))
        .flat_map(|g| {
            if tied(&g.members) {
                Vec::new()
            } else {
                g.members
            }
        })
}

/// The number of the step's seeds in `scored` whose rewards do not all tie (one count per step,
/// on one worker, once the step's responses are all in).
fn informative_count<'s, P: ExchangeData>(
    scored: Stream<'s, Step, Vec<Scored<P>>>,
) -> Stream<'s, Step, Vec<usize>> {
    scored
        .group_by_key("CountInformative", |_| (), |_| None)
        .map(|g| {
            let mut by_seed: BTreeMap<&str, Vec<&Scored<P>>> = BTreeMap::new();
            for s in &g.members {
                by_seed.entry(s.seed.as_str()).or_default().push(s);
            }
            by_seed
                .values()
                .filter(|m| !m.windows(2).all(|w| w[0].reward == w[1].reward))
                .count()
        })
}

fn tied<P>(members: &[Scored<P>]) -> bool {
    members.windows(2).all(|w| w[0].reward == w[1].reward)
}

fn concat<'s, D: Clone + 'static>(
    a: Option<Stream<'s, Step, Vec<D>>>,
    b: Stream<'s, Step, Vec<D>>,
) -> Stream<'s, Step, Vec<D>> {
    match a {
        Some(a) => a.concat(b),
        None => b,
    }
}

/// The responses of the first `keep` seeds (by seed key, i.e. position in the step).
fn first_seeds<P>(mut scored: Vec<Scored<P>>, keep: usize) -> Vec<Scored<P>> {
    if keep == 0 {
        return Vec::new();
    }
    scored.sort_by(|a, b| (&a.seed, a.variant, a.sample).cmp(&(&b.seed, b.variant, b.sample)));
    let mut seeds: Vec<&str> = scored.iter().map(|s| s.seed.as_str()).collect();
    seeds.dedup();
    if let Some(last) = seeds.get(keep - 1).map(|s| s.to_string()) {
        scored.retain(|s| s.seed <= last);
    }
    scored
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

/// Adaptive Share-GRPO (compute-aware): each seed's first variant is sampled n times; only a
/// seed whose n rewards all tie (no advantage signal) expands to its other m - 1 variants,
/// sampled in a second rollout pass. Seeds with a signal train like Share-GRPO with one variant
/// (n rows); expanded ones like Share-GRPO (m * m * n rows). Every seed's m variants are drawn
/// as Share-GRPO draws them, so the first is the same variant and the saving is exactly the
/// skipped variants' (m - 1) * n rollouts.
// `ok_err` splits by a `Result`; a variant is large, and that is fine here.
#[allow(clippy::result_large_err)]
pub fn adaptive_share<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    let (m, n) = (g.settings().m, g.settings().n);
    let estimator = estimator(g.settings());

    let seeds = g.seeds();
    let variants = g.expand(seeds);
    let (first, rest) = variants.ok_err(|v| if v.variant.k == 0 { Ok(v) } else { Err(v) });
    let first_prompts = g.encode_grouped(first, Some(1))?;
    let (first_responses, first_reports) = g.rollout_grouped(first_prompts.clone(), Some(1))?;
    let first_scored = score_math(first_responses);
    // Expand a seed when its first n rewards tie.
    let expand = first_scored
        .clone()
        .group_by_key("FirstVariantTies", |s| s.seed.clone(), move |_| Some(n))
        .map(|g| {
            let tied = tied(&g.members);
            (g.key, tied)
        })
        // To every worker: the seed's owner holds its other variants.
        .broadcast();
    let rest = rest.keep_if(expand, |v| seed_key(v.b));
    let rest_prompts = g.encode_grouped(rest, Some(m - 1))?;
    let (rest_responses, rest_reports) = g.rollout_grouped(rest_prompts.clone(), Some(m - 1))?;
    let scored = first_scored.concat(score_math(rest_responses));
    // The number of variants differs by seed: groups leave at the step's end.
    let (rows, issues) = advantage_stage(scored, estimator, None);
    g.warn_issues(issues);
    let prompts = first_prompts.concat(rest_prompts);
    let ready = g.old_log_probs(rows, prompts, None)?;
    g.update(ready, first_reports.concat(rest_reports))
}

/// SFT: each seed's question (one variant, augmented like the RL variants with `sft.augment`)
/// with its reference response; the loss is the token-level mean NLL of the responses, one AdamW
/// step per step (the update's objective for this graph). No rollout: the step's report stream
/// is empty.
pub fn sft<'s>(g: &mut GraphBuilder<'s>) -> GraphResult<'s> {
    let seeds = g.seeds();
    let variants = g.expand(seeds.clone());
    let prompts = g.encode(variants)?;
    let rows = g.supervised_rows(prompts);
    g.update(rows, seeds.flat_map(|_| None::<RolloutReport>))
}
