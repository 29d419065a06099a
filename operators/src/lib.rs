//! shareflow-operators: the reinforcement-learning operators of shareflow, as timely extension
//! traits over streams of records, each a thin shell over plain, unit-tested functions.
//!
//! The policy half of a training step: variant expansion ([`ExpandVariants`]), prompt encoding
//! ([`EncodePrompts`]), batched rollout ([`Rollout`]), old log-probs ([`ScoreOldLogProbs`]) and
//! the PPO loss with AdamW ([`PolicyUpdate`]), the heavy ones on threads of their own, reading
//! published policy versions from a [`PolicyStore`]; the candle policy model is in [`policy`].
//!
//! The model-free half: reward scoring with the reference's `math`
//! and `r1v` rules and a `mathruler`-compatible grader ([`reward`]), local normalisation
//! ([`NormalizeLocal`]), global normalisation ([`NormalizeGlobal`]), cross-variant sharing
//! ([`ShareAcrossVariants`]) and one-group-per-seed normalisation ([`NormalizeGrpo`]: GRPO, Dr. GRPO, RLOO); the maths lives in
//! [`advantage`]. The embedded "shapes" visual-reasoning task and Share-GRPO's variant expansion
//! (textual rewrites, visual transforms, compensatory and format prompts) are in [`task`].
//! Training datasets (parquet / JSON lines in the EasyR1 layout, validated at load time) are
//! read and written by [`data`].
//! Depends on shareflow-runtime and timely.

pub mod advantage;
pub mod allreduce;
pub mod data;
pub mod encode;
pub mod exchange_gradients;
pub mod expand;
pub mod normalize_global;
pub mod normalize_grpo;
pub mod normalize_local;
pub mod old_log_probs;
pub mod policy_store;
pub mod policy_update;
pub mod records;
pub mod reward;
pub mod rl;
pub mod rollout;
pub mod score;
pub mod share;
pub mod task;

pub use advantage::{GroupBaseline, StdConvention};
pub use encode::{EncodePrompts, PromptEncoder, PromptItem};
pub use expand::{ExpandVariants, SeedItem, VariantItem, seed_key};
pub use normalize_global::NormalizeGlobal;
pub use normalize_grpo::NormalizeGrpo;
pub use normalize_local::NormalizeLocal;
pub use old_log_probs::{OldLogProbScorer, ReadyRow, ResponseTokens, ScoreOldLogProbs};
pub use policy_store::PolicyStore;
pub use policy_update::{Objective, PolicyUpdate, PolicyUpdater, UpdateContext, UpdateSettings};
pub use records::{Advantaged, GroupShape, Issue, LocalAdvantaged, Scored, SeedGroup, TrainRow};
pub use reward::{RewardRule, RewardScore};
pub use rollout::{Rollout, RolloutReport, Sampled, Sampler};
pub use score::{ScoreResponses, ScoredText, ToScore};
pub use share::{ShareAcrossVariants, share_rows};
pub mod policy;
