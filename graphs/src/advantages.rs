//! The advantage stage: scored responses in, training rows out.
//!
//! Share-GRPO: local normalisation (seed, variant) -> global normalisation (seed) -> cross-variant
//! sharing, m*m*n rows per seed. GRPO: one normalisation per seed, one row per response.

use timely::dataflow::Stream;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Map;

use shareflow_operators::{
    GroupBaseline, GroupShape, Issue, LocalAdvantaged, NormalizeGlobal, NormalizeGrpo,
    NormalizeLocal, Scored, ShareAcrossVariants, StdConvention, TrainRow,
};
use shareflow_runtime::Step;

/// How advantages are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// Hierarchical (global + local) advantages with cross-variant sharing.
    ShareGrpo(StdConvention),
    /// Global advantages only (no local term), shared across variants: the ablation of the
    /// hierarchical estimator.
    ShareGrpoGlobalOnly(StdConvention),
    /// Plain GRPO over each seed's responses (variants, if any, are not shared).
    Grpo,
    /// Dr. GRPO: `r - mean` over each seed's responses, no std division.
    DrGrpo,
    /// RLOO: each response against the mean of the seed's other responses.
    Rloo,
}

fn size(shape: Option<GroupShape>) -> Option<usize> {
    shape.map(|s| (s.m * s.n) as usize)
}

/// Builds the advantage stage. `shape`, when known, lets groups leave as soon as they are
/// complete; without it they leave at the end of their step. Returns the training rows and the
/// issues (dropped groups with the reason).
#[allow(clippy::type_complexity)]
pub fn advantage_stage<'scope, P: timely::ExchangeData + Clone>(
    scored: Stream<'scope, Step, Vec<Scored<P>>>,
    estimator: Estimator,
    shape: Option<GroupShape>,
) -> (
    Stream<'scope, Step, Vec<TrainRow<P>>>,
    Stream<'scope, Step, Vec<Issue>>,
) {
    match estimator {
        Estimator::ShareGrpo(convention) => {
            let (local, local_issues) = scored.normalize_local(shape);
            let (groups, global_issues) = local.normalize_global(convention, shape);
            (
                groups.share_across_variants(),
                local_issues.concat(global_issues),
            )
        }
        Estimator::ShareGrpoGlobalOnly(convention) => {
            let local = scored.map(|scored| LocalAdvantaged {
                scored,
                local: Some(0.0),
            });
            let (groups, issues) = local.normalize_global(convention, shape);
            (groups.share_across_variants(), issues)
        }
        Estimator::Grpo => scored.normalize_grpo(size(shape)),
        Estimator::DrGrpo => scored.normalize_group(size(shape), GroupBaseline::Mean),
        Estimator::Rloo => scored.normalize_group(size(shape), GroupBaseline::LeaveOneOut),
    }
}
