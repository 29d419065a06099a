//! Prompt encoding: each variant becomes the model's input (chat template, image placeholders
//! expanded, pixel values), by a function the graph gives (the stock one applies
//! `data.max_prompt_length` and `data.truncation`).
//!
//! Input: [`VariantItem`]. Output: [`PromptItem`]. Pipeline. Image processing is heavy enough to
//! stall a worker, so the work runs on a thread of its own (see [`shareflow_runtime::stage`]),
//! seed by seed as each seed's variants are complete; an error (a prompt too long, an image the
//! processor refuses) stops the run with the seed named.

use std::sync::Arc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;

use shareflow_runtime::Step;
use shareflow_runtime::stage::{
    StageContext, StageHandler, StageOutput, StageThread, offload_groups, start_stage,
};

use crate::expand::{VariantItem, seed_key};
use crate::rl::PromptInput;
use crate::task::{Seed, Variant};

/// A variant's model input.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    /// The seed's group key ([`crate::expand::SeedItem::key`]).
    pub key: String,
    /// The seed's position in the step.
    pub b: u32,
    /// The variant's index.
    pub k: u32,
    pub seed: Arc<Seed>,
    pub prompt: PromptInput,
}

/// The function that encodes a variant's prompt.
pub type EncodeFn = Box<dyn FnMut(&Variant) -> Result<PromptInput, String> + Send>;

/// The thread side of [`EncodePrompts`].
pub struct PromptEncoder {
    encode: EncodeFn,
}

impl std::fmt::Debug for PromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptEncoder")
    }
}

impl PromptEncoder {
    pub fn new(
        encode: impl FnMut(&Variant) -> Result<PromptInput, String> + Send + 'static,
    ) -> Self {
        Self {
            encode: Box::new(encode),
        }
    }
}

impl StageHandler<u32, VariantItem, PromptItem> for PromptEncoder {
    fn group(
        &mut self,
        step: Step,
        _b: u32,
        mut records: Vec<VariantItem>,
        out: &StageOutput<PromptItem>,
    ) -> Result<(), String> {
        records.sort_by_key(|v| v.variant.k);
        let mut items = Vec::with_capacity(records.len());
        for v in records {
            let prompt = (self.encode)(&v.variant).map_err(|e| format!("step {step}: {e}"))?;
            items.push(PromptItem {
                key: seed_key(v.b),
                b: v.b,
                k: v.variant.k as u32,
                seed: v.seed,
                prompt,
            });
        }
        out.emit(step, items);
        Ok(())
    }

    fn end_of_step(&mut self, _step: Step, _out: &StageOutput<PromptItem>) -> Result<(), String> {
        Ok(())
    }
}

/// The prompt stage's outputs: the prompts and the stage's thread.
pub type EncodeStreams<'scope> = (
    Stream<'scope, Step, Vec<PromptItem>>,
    Option<StageThread<PromptEncoder>>,
);

/// Extension trait: encode each variant's prompt.
pub trait EncodePrompts<'scope> {
    /// `encoder` on the worker that runs the stage (None elsewhere: such a worker must receive no
    /// variants). `variants_per_seed`, when known, lets a seed go as soon as its variants are
    /// there. Returns the prompts and the stage's thread (to join after the run).
    fn encode_prompts(
        self,
        encoder: Option<PromptEncoder>,
        variants_per_seed: Option<usize>,
        ctx: &StageContext,
    ) -> Result<EncodeStreams<'scope>, String>;
}

impl<'scope> EncodePrompts<'scope> for Stream<'scope, Step, Vec<VariantItem>> {
    fn encode_prompts(
        self,
        encoder: Option<PromptEncoder>,
        variants_per_seed: Option<usize>,
        ctx: &StageContext,
    ) -> Result<EncodeStreams<'scope>, String> {
        let (ends, thread) = start_stage("encode", encoder, ctx)?;
        let ticks = self.clone().map(|_| ());
        let prompts = offload_groups(
            self,
            ticks,
            Pipeline,
            Pipeline,
            "EncodePrompts",
            |v: &VariantItem| v.b,
            move |_, len| variants_per_seed == Some(len),
            ends,
        );
        Ok((prompts, thread))
    }
}
