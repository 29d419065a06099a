//! `shareflow score`: rewards of responses under the reference's `math` or `r1v` rule, through
//! the dataflow.
//!
//! Input: JSON lines `{"response": string, "ground_truth": string}`. Output, in input order:
//! `{"overall", "format", "accuracy", "extracted"}` per line.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use shareflow_operators::{RewardRule, ScoreResponses, ScoredText, ToScore};
use shareflow_runtime::{ClusterConfig, Step};

use super::ToolError;
use super::jsonl::parse_lines;

/// One input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreInput {
    /// The response text.
    pub response: String,
    /// The ground truth.
    pub ground_truth: String,
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreOutput {
    /// Weighted total.
    pub overall: f64,
    /// Format reward (0 or 1).
    pub format: f64,
    /// Accuracy reward (0 or 1).
    pub accuracy: f64,
    /// The answer text that was graded.
    pub extracted: String,
}

/// Parses and checks the input lines.
pub fn parse_score_inputs(text: &str, source: &str) -> Result<Vec<ScoreInput>, ToolError> {
    parse_lines(text, source, |l| {
        Ok(ScoreInput {
            response: l.string("response")?,
            ground_truth: l.string_or_number("ground_truth")?,
        })
    })
}

/// Scores `inputs` on the cluster; the leader returns outputs in input order.
pub fn run_score(
    inputs: Vec<ScoreInput>,
    rule: RewardRule,
    cluster: &ClusterConfig,
) -> Result<Vec<ScoreOutput>, ToolError> {
    let inputs = Arc::new(if cluster.is_leader() {
        inputs
    } else {
        Vec::new()
    });
    let local_workers = cluster.workers;
    let per_worker = cluster.execute(move |worker| {
        let out = Rc::new(RefCell::new(Vec::<ScoredText<u64>>::new()));
        let sink = Rc::clone(&out);
        let mut input = InputHandle::<Step, _>::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<Step, _, _>(|scope| {
            input
                .to_stream(scope)
                .container::<Vec<ToScore<u64>>>()
                .score_responses(rule)
                .exchange(|_| 0)
                .inspect(move |s| sink.borrow_mut().push(s.clone()))
                .probe_with(&probe);
        });
        let me = worker.index() % local_workers;
        for (i, x) in inputs.iter().enumerate().skip(me).step_by(local_workers) {
            input.send(ToScore {
                response: x.response.clone(),
                ground_truth: x.ground_truth.clone(),
                payload: i as u64,
            });
        }
        input.advance_to(1);
        worker.step_while(|| probe.less_than(&1));
        out.take()
    })?;
    let mut all: Vec<ScoredText<u64>> = per_worker.into_iter().flatten().collect();
    all.sort_by_key(|s| s.payload);
    Ok(all
        .into_iter()
        .map(|s| ScoreOutput {
            overall: s.score.overall,
            format: s.score.format,
            accuracy: s.score.accuracy,
            extracted: s.extracted,
        })
        .collect())
}
