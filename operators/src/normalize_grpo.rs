//! Plain GRPO normalisation: one group per seed, no variants shared, no local term.
//!
//! Input: [`Scored`]. Output: one [`TrainRow`] per response (context = its own variant) with
//! `(r - mean) / (std + eps)` over the seed's responses ([`NormalizeGrpo::normalize_grpo`]), or
//! under another [`GroupBaseline`] (Dr. GRPO's `r - mean`, RLOO's leave-one-out mean;
//! [`NormalizeGrpo::normalize_group`]), and an [`Issue`] stream. Exchange key:
//! seed. Emits a seed as soon as `size` responses arrived when known, else when the step's input
//! is finished. Groups of fewer than 2, duplicates, non-finite rewards and incomplete groups are
//! reported and dropped.

use timely::dataflow::Stream;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::vec::Map;

use shareflow_runtime::{GroupByKey, Grouped, MapWithStep, Step};

use crate::advantage::GroupBaseline;
use crate::normalize_local::sort_unique;
use crate::records::{Issue, Scored, TrainRow};

fn grpo_group<P>(
    baseline: GroupBaseline,
    group: Grouped<String, Scored<P>>,
    step: Step,
) -> Vec<Result<TrainRow<P>, Issue>> {
    let complete = group.is_complete();
    let seed = group.key;
    let status = group.status;
    let mut members = group.members;
    let result = if complete {
        sort_unique(&mut members, |s| (s.variant, s.sample)).and_then(|()| {
            let rewards: Vec<f64> = members.iter().map(|s| s.reward).collect();
            baseline.advantages(&rewards).map_err(|e| e.to_string())
        })
    } else {
        Err(format!(
            "{} response(s) arrived, status {status:?}",
            members.len()
        ))
    };
    match result {
        Ok(adv) => members
            .into_iter()
            .zip(adv)
            .map(|(s, advantage)| {
                Ok(TrainRow {
                    seed: s.seed,
                    context: s.variant,
                    variant: s.variant,
                    sample: s.sample,
                    advantage,
                    payload: s.payload,
                })
            })
            .collect(),
        Err(message) => vec![Err(Issue {
            step,
            stage: "grpo normalisation".into(),
            seed,
            message: format!("{message}; the seed is dropped"),
        })],
    }
}

/// Extension trait: GRPO normalisation.
pub trait NormalizeGrpo<'scope, P> {
    /// See the module documentation.
    #[allow(clippy::type_complexity)]
    fn normalize_grpo(
        self,
        size: Option<usize>,
    ) -> (
        Stream<'scope, Step, Vec<TrainRow<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    );

    /// One group per seed under `baseline` (see the module documentation).
    #[allow(clippy::type_complexity)]
    fn normalize_group(
        self,
        size: Option<usize>,
        baseline: GroupBaseline,
    ) -> (
        Stream<'scope, Step, Vec<TrainRow<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    );
}

impl<'scope, P: timely::ExchangeData + Clone> NormalizeGrpo<'scope, P>
    for Stream<'scope, Step, Vec<Scored<P>>>
{
    fn normalize_grpo(
        self,
        size: Option<usize>,
    ) -> (
        Stream<'scope, Step, Vec<TrainRow<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    ) {
        self.normalize_group(size, GroupBaseline::MeanStd)
    }

    fn normalize_group(
        self,
        size: Option<usize>,
        baseline: GroupBaseline,
    ) -> (
        Stream<'scope, Step, Vec<TrainRow<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    ) {
        self.group_by_key(
            "NormalizeGrpo",
            |s: &Scored<P>| s.seed.clone(),
            move |_| size,
        )
        .map_with_step("GroupAdvantages", move |g, t| grpo_group(baseline, g, t))
        .flat_map(|v| v)
        .ok_err(|r| r)
    }
}
