//! Global normalisation: advantages over all responses of a seed question.
//!
//! Input: [`LocalAdvantaged`] (the output of local normalisation). Output: one [`SeedGroup`] per
//! seed, in (variant, sample) order, and an [`Issue`] stream. Exchange key: seed. Emits a seed as
//! soon as its m*n responses have arrived when the shape is known, else when the step's input is
//! finished (m and n are then inferred: m distinct variants, n responses each). Variants with
//! different sample counts, a missing or duplicate response, or an incomplete group are reported
//! and the seed is dropped — never normalised over a partial group.

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::operators::core::OkErr;

use shareflow_runtime::{GroupByKey, Grouped, MapWithStep, Step};

use crate::advantage::{StdConvention, global_advantages};
use crate::normalize_local::sort_unique;
use crate::records::{Advantaged, GroupShape, Issue, LocalAdvantaged, SeedGroup};

/// Infers (m, n) from responses sorted by (variant, sample) and checks they form a full grid.
pub(crate) fn infer_shape(variants: impl Iterator<Item = u32>) -> Result<(u32, u32), String> {
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for v in variants {
        *counts.entry(v).or_default() += 1;
    }
    let mut it = counts.iter();
    let Some((_, &n)) = it.next() else {
        return Err("no responses".into());
    };
    if counts.values().any(|&c| c != n) {
        let list: Vec<String> = counts
            .iter()
            .map(|(v, c)| format!("variant {v}: {c}"))
            .collect();
        return Err(format!(
            "variants have different sample counts ({}); every variant needs the same n",
            list.join(", ")
        ));
    }
    Ok((counts.len() as u32, n))
}

fn global_group<P>(
    group: Grouped<String, LocalAdvantaged<P>>,
    step: Step,
    convention: StdConvention,
    shape: Option<GroupShape>,
) -> Result<SeedGroup<P>, Issue> {
    let complete = group.is_complete();
    let seed = group.key;
    let issue = |message: String| Issue {
        step,
        stage: "global normalisation".into(),
        seed: seed.clone(),
        message,
    };
    if !complete {
        return Err(issue(format!(
            "{} response(s) arrived, status {:?}; the seed is dropped",
            group.members.len(),
            group.status
        )));
    }
    let mut members = group.members;
    sort_unique(&mut members, |l| (l.scored.variant, l.scored.sample)).map_err(&issue)?;
    if let Some(bad) = members.iter().find(|l| l.local.is_none()) {
        return Err(issue(format!(
            "variant {} failed local normalisation (reported above); the seed is dropped",
            bad.scored.variant
        )));
    }
    let (m, n) = infer_shape(members.iter().map(|l| l.scored.variant)).map_err(&issue)?;
    if let Some(s) = shape
        && (s.m, s.n) != (m, n)
    {
        return Err(issue(format!(
            "expected m = {}, n = {}, got m = {m}, n = {n}",
            s.m, s.n
        )));
    }
    // Sorted, unique and equally sized: the grid must also be numbered 0..m-1 x 0..n-1.
    if let Some((idx, l)) = members.iter().enumerate().find(|(idx, l)| {
        (l.scored.variant, l.scored.sample) != ((*idx as u32) / n, (*idx as u32) % n)
    }) {
        return Err(issue(format!(
            "variant {} sample {} is out of the grid: variants must be numbered 0..{} and samples 0..{} (expected variant {} sample {} here)",
            l.scored.variant,
            l.scored.sample,
            m - 1,
            n - 1,
            idx as u32 / n,
            idx as u32 % n
        )));
    }
    let rewards: Vec<f64> = members.iter().map(|l| l.scored.reward).collect();
    let global =
        global_advantages(&rewards, m as usize, convention).map_err(|e| issue(e.to_string()))?;
    let responses = members
        .into_iter()
        .zip(global)
        .map(|(l, global)| Advantaged {
            scored: l.scored,
            global,
            local: l.local.unwrap_or_default(),
        })
        .collect();
    Ok(SeedGroup {
        seed: seed.clone(),
        m,
        n,
        responses,
    })
}

/// Extension trait: global (per-seed) normalisation.
pub trait NormalizeGlobal<'scope, P> {
    /// See the module documentation.
    #[allow(clippy::type_complexity)]
    fn normalize_global(
        self,
        convention: StdConvention,
        shape: Option<GroupShape>,
    ) -> (
        Stream<'scope, Step, Vec<SeedGroup<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    );
}

impl<'scope, P: timely::ExchangeData + Clone> NormalizeGlobal<'scope, P>
    for Stream<'scope, Step, Vec<LocalAdvantaged<P>>>
{
    fn normalize_global(
        self,
        convention: StdConvention,
        shape: Option<GroupShape>,
    ) -> (
        Stream<'scope, Step, Vec<SeedGroup<P>>>,
        Stream<'scope, Step, Vec<Issue>>,
    ) {
        let size = shape.map(|s| (s.m * s.n) as usize);
        self.group_by_key(
            "NormalizeGlobal",
            |l: &LocalAdvantaged<P>| l.scored.seed.clone(),
            move |_| size,
        )
        .map_with_step("GlobalAdvantages", move |g, t| {
            global_group(g, t, convention, shape)
        })
        .ok_err(|r| r)
    }
}
