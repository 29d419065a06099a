//! Variant expansion: each seed question of a step becomes its variants (Share-GRPO: m texts
//! among the question and its rewrites, each possibly under a visual transform with its
//! compensatory sentence; GRPO: the original question alone).
//!
//! Input: [`SeedItem`]. Output: [`VariantItem`], one per variant, in variant order. Pipeline: the
//! variants stay on the worker that holds the seed (its rollout runs there). Pure and cheap: runs
//! on the worker.

use std::sync::Arc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use shareflow_runtime::Step;

use crate::task::{Seed, Variant};

/// A seed question of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedItem {
    /// Its position in the step's batch.
    pub b: u32,
    /// Its position in the training source.
    pub index: u64,
    pub seed: Arc<Seed>,
}

impl SeedItem {
    /// The group key of the seed's records downstream (its position in the step, zero-padded so
    /// that keys sort as positions do).
    pub fn key(&self) -> String {
        seed_key(self.b)
    }
}

/// The group key of the seed at position `b` of its step (see [`SeedItem::key`]).
pub fn seed_key(b: u32) -> String {
    format!("{b:06}")
}

/// One variant of a seed question.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantItem {
    /// The seed's position in the step.
    pub b: u32,
    pub seed: Arc<Seed>,
    /// The variant (its index `k` is `variant.k`).
    pub variant: Variant,
}

/// Extension trait: expand each seed into its variants.
pub trait ExpandVariants<'scope> {
    /// `expand(step, seed)` returns the seed's variants (see the module documentation).
    fn expand_variants(
        self,
        expand: impl Fn(Step, &Seed) -> Vec<Variant> + 'static,
    ) -> Stream<'scope, Step, Vec<VariantItem>>;
}

impl<'scope> ExpandVariants<'scope> for Stream<'scope, Step, Vec<SeedItem>> {
    fn expand_variants(
        self,
        expand: impl Fn(Step, &Seed) -> Vec<Variant> + 'static,
    ) -> Stream<'scope, Step, Vec<VariantItem>> {
        self.unary(Pipeline, "ExpandVariants", move |_cap, _info| {
            move |input, output| {
                input.for_each_stamp(|cap, batches| {
                    let step = cap.least().copied().unwrap_or_default();
                    let mut session = output.session(&cap);
                    for b in batches {
                        for s in b.drain(..) {
                            for variant in expand(step, &s.seed) {
                                session.give(VariantItem {
                                    b: s.b,
                                    seed: Arc::clone(&s.seed),
                                    variant,
                                });
                            }
                        }
                    }
                });
            }
        })
    }
}
