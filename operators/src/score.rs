//! Reward scoring.
//!
//! Input: [`ToScore`] (response text, ground truth, payload). Output: [`ScoredText`] with the
//! rule's [`RewardScore`] and the graded answer. Exchange: by the stable hash of the response, to
//! spread grading over workers. Emits each record at once.

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;

use shareflow_runtime::{Step, stable_hash};

use crate::reward::{RewardRule, RewardScore, score_response};

/// A response to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToScore<P> {
    /// The model's response text.
    pub response: String,
    /// The dataset's ground-truth answer.
    pub ground_truth: String,
    /// Carried along untouched.
    pub payload: P,
}

/// A scored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredText<P> {
    /// The reward.
    pub score: RewardScore,
    /// The answer text that was graded.
    pub extracted: String,
    /// The input's payload.
    pub payload: P,
}

/// Extension trait: score responses with a reference reward rule.
pub trait ScoreResponses<'scope, P> {
    /// See the module documentation.
    fn score_responses(self, rule: RewardRule) -> Stream<'scope, Step, Vec<ScoredText<P>>>;
}

impl<'scope, P: timely::ExchangeData> ScoreResponses<'scope, P>
    for Stream<'scope, Step, Vec<ToScore<P>>>
{
    fn score_responses(self, rule: RewardRule) -> Stream<'scope, Step, Vec<ScoredText<P>>> {
        let pact = Exchange::new(|x: &ToScore<P>| stable_hash(x.response.as_str()));
        self.unary(pact, "ScoreResponses", move |_cap, _info| {
            move |input, output| {
                input.for_each_stamp(|cap, batches| {
                    let mut session = output.session(&cap);
                    for b in batches {
                        for x in b.drain(..) {
                            let (score, extracted) =
                                score_response(rule, &x.response, &x.ground_truth);
                            session.give(ScoredText {
                                score,
                                extracted,
                                payload: x.payload,
                            });
                        }
                    }
                });
            }
        })
    }
}
