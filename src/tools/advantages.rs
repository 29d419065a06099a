//! `shareflow advantages`: Share-GRPO (or GRPO) advantages of a rollout dump, through the dataflow.
//!
//! Input: JSON lines `{"seed": string, "variant": int, "sample": int, "reward": float}`, the m*n
//! responses of each seed (m, n inferred per seed, checked). Output: one JSON line per training
//! row `{"seed", "context", "variant", "sample", "advantage"}`, m*m*n per seed for Share-GRPO, in
//! (seed in order of first appearance, context, variant, sample) order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use shareflow_graphs::{Estimator, advantage_stage};
use shareflow_operators::{Issue, Scored, TrainRow};
use shareflow_runtime::{ClusterConfig, Step};

use super::ToolError;
use super::jsonl::parse_lines;

/// One input response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Seed question id.
    pub seed: String,
    /// Variant index j.
    pub variant: u32,
    /// Sample index i.
    pub sample: u32,
    /// Overall reward.
    pub reward: f64,
}

/// One output training row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Seed question id.
    pub seed: String,
    /// The variant k whose prompt the row is scored under.
    pub context: u32,
    /// The variant j that generated the response.
    pub variant: u32,
    /// Sample index i.
    pub sample: u32,
    /// The row's advantage.
    pub advantage: f64,
}

/// Parses and checks the input lines.
pub fn parse_responses(text: &str, source: &str) -> Result<Vec<Response>, ToolError> {
    parse_lines(text, source, |l| {
        Ok(Response {
            seed: l.string("seed")?,
            variant: l.index("variant")?,
            sample: l.index("sample")?,
            reward: l.finite("reward")?,
        })
    })
}

/// Runs the advantage stage over `responses` on the cluster. On the leader process returns every
/// row in canonical order; other processes return no rows (their workers still compute).
pub fn run_advantages(
    responses: Vec<Response>,
    estimator: Estimator,
    cluster: &ClusterConfig,
) -> Result<Vec<Row>, ToolError> {
    let order: HashMap<String, usize> =
        responses
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut m, (i, r)| {
                m.entry(r.seed.clone()).or_insert(i);
                m
            });
    let responses = Arc::new(if cluster.is_leader() {
        responses
    } else {
        Vec::new()
    });
    let local_workers = cluster.workers;
    let per_worker = cluster.execute(move |worker| {
        let rows = Rc::new(RefCell::new(Vec::<TrainRow<()>>::new()));
        let issues = Rc::new(RefCell::new(Vec::<Issue>::new()));
        let (rows_sink, issues_sink) = (Rc::clone(&rows), Rc::clone(&issues));
        let mut input = InputHandle::<Step, _>::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<Step, _, _>(|scope| {
            let scored = input.to_stream(scope).container::<Vec<Scored<()>>>();
            let (out, problems) = advantage_stage(scored, estimator, None);
            out.exchange(|_| 0)
                .inspect(move |r| rows_sink.borrow_mut().push(r.clone()))
                .probe_with(&probe);
            problems
                .exchange(|_| 0)
                .inspect(move |i| issues_sink.borrow_mut().push(i.clone()))
                .probe_with(&probe);
        });
        let me = worker.index() % local_workers;
        for r in responses.iter().skip(me).step_by(local_workers) {
            input.send(Scored {
                seed: r.seed.clone(),
                variant: r.variant,
                sample: r.sample,
                reward: r.reward,
                payload: (),
            });
        }
        input.advance_to(1);
        worker.step_while(|| probe.less_than(&1));
        (rows.take(), issues.take())
    })?;
    let (mut rows, mut issues) = (Vec::new(), Vec::new());
    for (r, i) in per_worker {
        rows.extend(r);
        issues.extend(i);
    }
    let rank = |seed: &str| order.get(seed).copied().unwrap_or(usize::MAX);
    if !issues.is_empty() {
        // Per seed, upstream (local) problems first: they explain the downstream ones.
        let stage = |i: &Issue| i.stage.starts_with("global");
        issues.sort_by(|a, b| {
            (rank(&a.seed), stage(a), &a.message).cmp(&(rank(&b.seed), stage(b), &b.message))
        });
        return Err(ToolError::Issues(issues));
    }
    rows.sort_by(|a, b| {
        (rank(&a.seed), a.context, a.variant, a.sample).cmp(&(
            rank(&b.seed),
            b.context,
            b.variant,
            b.sample,
        ))
    });
    Ok(rows
        .into_iter()
        .map(|r| Row {
            seed: r.seed,
            context: r.context,
            variant: r.variant,
            sample: r.sample,
            advantage: r.advantage,
        })
        .collect())
}
