//! Records that flow between the model-free Share-GRPO operators.
//!
//! `P` is the payload a response carries through normalisation and sharing untouched (a line
//! number for the CLI tools, the response tokens and log-probs in a training graph).

use serde::{Deserialize, Serialize};

use shareflow_runtime::Step;

/// A scored response: response `sample` of variant `variant` of seed question `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored<P> {
    /// The seed question's id.
    pub seed: String,
    /// The variant (question rewrite / visual transform) index j.
    pub variant: u32,
    /// The response index i within the variant.
    pub sample: u32,
    /// The overall reward the advantages are computed from.
    pub reward: f64,
    /// Carried along untouched.
    pub payload: P,
}

/// A scored response with its local (within-variant) advantage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalAdvantaged<P> {
    /// The response.
    pub scored: Scored<P>,
    /// `(r - mean_j) / (std_j + eps)` over the variant's responses; `None` if the variant could
    /// not be normalised (an [`Issue`] was reported).
    pub local: Option<f64>,
}

/// A response with both advantages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advantaged<P> {
    /// The response.
    pub scored: Scored<P>,
    /// The global (whole seed) advantage.
    pub global: f64,
    /// The local (within-variant) advantage.
    pub local: f64,
}

/// All responses of one seed, in (variant, sample) order, with their advantages: the unit that
/// cross-variant sharing expands into training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedGroup<P> {
    /// The seed question's id.
    pub seed: String,
    /// Number of variants m.
    pub m: u32,
    /// Responses per variant n.
    pub n: u32,
    /// The m*n responses, `responses[j * n + i]`.
    pub responses: Vec<Advantaged<P>>,
}

/// One training row: response `sample` of variant `variant`, placed under variant `context`'s
/// prompt, with the advantage the loss uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRow<P> {
    /// The seed question's id.
    pub seed: String,
    /// The variant k whose prompt (and image) the row is scored under.
    pub context: u32,
    /// The variant j that generated the response.
    pub variant: u32,
    /// The response index i.
    pub sample: u32,
    /// The row's advantage.
    pub advantage: f64,
    /// The response's payload.
    pub payload: P,
}

/// Something an operator could not process, reported instead of silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// The step it happened in.
    pub step: Step,
    /// The operator that reported it.
    pub stage: String,
    /// The seed question concerned.
    pub seed: String,
    /// What happened and what to do.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {} {}: seed `{}`: {}",
            self.step, self.stage, self.seed, self.message
        )
    }
}

/// The shape of a seed's group when it is known in advance (from the rollout configuration):
/// lets group operators emit a group as soon as it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupShape {
    /// Variants per seed.
    pub m: u32,
    /// Responses per variant.
    pub n: u32,
}
