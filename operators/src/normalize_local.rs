//! Local normalisation: advantages within each variant.
//!
//! Input: [`Scored`]. Output: [`LocalAdvantaged`] and an [`Issue`] stream. Exchange key:
//! (seed, variant). Emits a variant's n responses as soon as all n have arrived when the shape is
//! known, else when the step's input is finished. A variant with fewer than 2 responses, a
//! duplicate sample index, a non-finite reward or a missing response (incomplete group) is
//! reported as an issue, and its responses are passed on with no local advantage so that global
//! normalisation drops the whole seed instead of normalising over the variants that are left.

use timely::dataflow::Stream;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::vec::Map;

use shareflow_runtime::{GroupByKey, Grouped, MapWithStep, Step};

use crate::advantage::local_advantages;
use crate::records::{GroupShape, Issue, LocalAdvantaged, Scored};

/// Sorts members by their (variant, sample) key and reports a duplicate key.
pub(crate) fn sort_unique<T>(
    members: &mut [T],
    key: impl Fn(&T) -> (u32, u32),
) -> Result<(), String> {
    members.sort_by_key(&key);
    match members
        .windows(2)
        .map(|w| (key(&w[0]), key(&w[1])))
        .find(|(a, b)| a == b)
    {
        Some(((variant, sample), _)) => Err(format!(
            "variant {variant} sample {sample} appears more than once"
        )),
        None => Ok(()),
    }
}

fn local_group<P>(
    group: Grouped<(String, u32), Scored<P>>,
    step: Step,
) -> Vec<Result<LocalAdvantaged<P>, Issue>> {
    let complete = group.is_complete();
    let (seed, variant) = group.key;
    let status = group.status;
    let mut members = group.members;
    let sorted = sort_unique(&mut members, |s| (s.variant, s.sample));
    let rewards: Vec<f64> = members.iter().map(|s| s.reward).collect();
    let local = match (complete, sorted) {
        (false, _) => Err(format!(
            "variant {variant}: {} response(s) arrived, status {status:?}",
            members.len()
        )),
        (true, Err(e)) => Err(e),
        (true, Ok(())) => local_advantages(&rewards, variant).map_err(|e| e.to_string()),
    };
    match local {
        Ok(local) => members
            .into_iter()
            .zip(local)
            .map(|(scored, local)| {
                Ok(LocalAdvantaged {
                    scored,
                    local: Some(local),
                })
            })
            .collect(),
        // Pass the members on without a local advantage, so the seed's global group knows a
        // variant failed rather than normalising over the variants that are left.
        Err(message) => {
            let issue = Issue {
                step,
                stage: "local normalisation".into(),
                seed,
                message,
            };
            members
                .into_iter()
                .map(|scored| {
                    Ok(LocalAdvantaged {
                        scored,
                        local: None,
                    })
                })
                .chain(std::iter::once(Err(issue)))
                .collect()
        }
    }
}

/// Extension trait: local (per-variant) normalisation.
pub trait NormalizeLocal<'scope, P> {
    /// See the module documentation.
    #[allow(clippy::type_complexity)]
    fn normalize_local(
        self,
        shape: Option<GroupShape>,
    ) -> (
        Stream<'scope, Step, Vec<LocalAdvantaged<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    );
}

impl<'scope, P: timely::ExchangeData + Clone> NormalizeLocal<'scope, P>
    for Stream<'scope, Step, Vec<Scored<P>>>
{
    fn normalize_local(
        self,
        shape: Option<GroupShape>,
    ) -> (
        Stream<'scope, Step, Vec<LocalAdvantaged<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    ) {
        let n = shape.map(|s| s.n as usize);
        let results = self
            .group_by_key(
                "NormalizeLocal",
                |s: &Scored<P>| (s.seed.clone(), s.variant),
                move |_| n,
            )
            .map_with_step("LocalAdvantages", local_group)
            .flat_map(|v| v);
        results.ok_err(|r| r)
    }
}
