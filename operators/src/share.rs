//! Cross-variant sharing: every response paired with every variant context.
//!
//! Input: [`SeedGroup`] (global normalisation's output). Output: m*m*n [`TrainRow`]s per seed in
//! (context k, variant j, sample i) order — the release's layout — with advantage global + local
//! when k == j and global otherwise. Pipeline (the seed is already on one worker); emits at once.

use timely::dataflow::Stream;
use timely::dataflow::operators::vec::Map;

use shareflow_runtime::Step;

use crate::records::{SeedGroup, TrainRow};

/// The m*m*n training rows of one seed.
pub fn share_rows<P: Clone>(group: &SeedGroup<P>) -> Vec<TrainRow<P>> {
    let m = group.m;
    let mut rows = Vec::with_capacity(group.responses.len() * m as usize);
    for k in 0..m {
        for a in &group.responses {
            let s = &a.scored;
            let advantage = if s.variant == k {
                a.global + a.local
            } else {
                a.global
            };
            rows.push(TrainRow {
                seed: group.seed.clone(),
                context: k,
                variant: s.variant,
                sample: s.sample,
                advantage,
                payload: s.payload.clone(),
            });
        }
    }
    rows
}

/// Extension trait: expand seed groups into shared training rows.
pub trait ShareAcrossVariants<'scope, P> {
    /// See the module documentation.
    fn share_across_variants(self) -> Stream<'scope, Step, Vec<TrainRow<P>>>;
}

impl<'scope, P: Clone + 'static> ShareAcrossVariants<'scope, P>
    for Stream<'scope, Step, Vec<SeedGroup<P>>>
{
    fn share_across_variants(self) -> Stream<'scope, Step, Vec<TrainRow<P>>> {
        self.flat_map(|g| share_rows(&g))
    }
}
