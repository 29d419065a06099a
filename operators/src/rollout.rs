//! Batched rollout: each seed's responses, sampled with the policy version the staleness bound
//! allows.
//!
//! Input: [`PromptItem`] (a seed's m variants) and the policy-version stream of the graph's
//! feedback edge ([`shareflow_runtime::versions`]). The prompts of step `t` wait at a
//! [`VersionGate`] until the feedback frontier has passed `t`; then the seed is sampled with
//! version `max(0, t - max_staleness)` from the [`PolicyStore`] (a published, immutable
//! snapshot): `n` responses per variant, one batch per seed, each from its own random stream
//! (see [`rollout_seed`]), so a run is reproducible whatever the workers or the scheduling.
//! Output: [`Sampled`] responses, seed by seed as soon as each is done, and one
//! [`RolloutReport`] per step. The sampling runs on a thread of its own.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::vec::Map;

use shareflow_runtime::stage::{
    Failure, StageContext, StageHandler, StageOutput, StageThread, offload_groups, start_stage,
};
use shareflow_runtime::{PolicyVersion, Step, VersionGate};

use crate::encode::PromptItem;
use crate::policy::{PolicyModel, SamplingParams};
use crate::policy_store::PolicyStore;
use crate::rl::{PromptInput, rollout_seed};

/// One sampled response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampled {
    /// The seed's group key.
    pub key: String,
    /// The seed's position in the step.
    pub b: u32,
    /// The variant j that generated it.
    pub variant: u32,
    /// Its index i among the variant's n.
    pub sample: u32,
    /// Response tokens (with the stop token when one ended it).
    pub tokens: Vec<u32>,
    /// Sampler log-probs, one per token.
    pub log_probs: Vec<f32>,
    /// The decoded text.
    pub text: String,
    /// The seed's ground truth.
    pub answer: String,
    /// The policy version that generated it.
    pub version: u64,
}

/// What a step's rollout did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    pub step: Step,
    /// The policy version used.
    pub version: u64,
    /// Seconds the sampler was busy with the step.
    pub seconds: f64,
    pub responses: usize,
    pub generated_tokens: usize,
}

/// The function that decodes a response's tokens to text.
pub type DecodeFn = Box<dyn Fn(&[u32]) -> Result<String, String> + Send>;

/// The thread side of [`Rollout`].
pub struct Sampler {
    store: PolicyStore,
    failure: Failure,
    n: usize,
    params: SamplingParams,
    run_seed: u64,
    max_staleness: u64,
    decode: DecodeFn,
    report: Option<RolloutReport>,
    busy: f64,
    /// The policy the current step samples with.
    current: Option<PolicyModel>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("n", &self.n)
            .field("max_staleness", &self.max_staleness)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// `n` responses per variant with `params` (its `stop` ids set), random streams from
    /// `run_seed`, the version `max(0, t - max_staleness)` from `store` at step `t`.
    pub fn new(
        store: PolicyStore,
        failure: Failure,
        n: usize,
        params: SamplingParams,
        run_seed: u64,
        max_staleness: u64,
        decode: impl Fn(&[u32]) -> Result<String, String> + Send + 'static,
    ) -> Self {
        Self {
            store,
            failure,
            n,
            params,
            run_seed,
            max_staleness,
            decode: Box::new(decode),
            report: None,
            busy: 0.0,
            current: None,
        }
    }

    /// Seconds spent sampling so far.
    pub fn busy_seconds(&self) -> f64 {
        self.busy
    }
}

/// The rollout stage's output before it is split.
#[derive(Debug, Clone)]
pub enum RolloutOut {
    Response(Sampled),
    Report(RolloutReport),
}

impl StageHandler<u32, PromptItem, RolloutOut> for Sampler {
    fn prepare(&mut self, step: Step) -> Result<(), String> {
        let version = step.saturating_sub(self.max_staleness);
        if self.current.as_ref().map(PolicyModel::version) != Some(version) {
            self.current = Some(self.store.wait(version, &self.failure)?);
        }
        Ok(())
    }

    fn group(
        &mut self,
        step: Step,
        _b: u32,
        mut prompts: Vec<PromptItem>,
        out: &StageOutput<RolloutOut>,
    ) -> Result<(), String> {
        prompts.sort_by_key(|p| p.k);
        let Some(first) = prompts.first() else {
            return Ok(());
        };
        let version = step.saturating_sub(self.max_staleness);
        let Some(model) = self.current.as_ref().filter(|m| m.version() == version) else {
            return Err(format!(
                "step {step}: policy version {version} not prepared"
            ));
        };
        let t0 = Instant::now();
        let seed = std::sync::Arc::clone(&first.seed);
        let (key, b) = (first.key.clone(), first.b);
        let inputs: Vec<PromptInput> = prompts.iter().map(|p| p.prompt.clone()).collect();
        let responses = rollout_seed(
            model,
            &seed.id,
            &inputs,
            self.n,
            &self.params,
            self.run_seed,
            step,
        )
        .map_err(|e| format!("step {step}: sampling seed {}: {e}", seed.id))?;
        let report = self.report.get_or_insert_with(|| RolloutReport {
            step,
            version,
            ..RolloutReport::default()
        });
        let mut items = Vec::new();
        for (j, rs) in responses.into_iter().enumerate() {
            for (i, r) in rs.into_iter().enumerate() {
                report.responses += 1;
                report.generated_tokens += r.tokens.len();
                let text = (self.decode)(&r.tokens)
                    .map_err(|e| format!("step {step}: decoding a response: {e}"))?;
                items.push(RolloutOut::Response(Sampled {
                    key: key.clone(),
                    b,
                    variant: prompts[j].k,
                    sample: i as u32,
                    tokens: r.tokens,
                    log_probs: r.log_probs,
                    text,
                    answer: seed.answer.clone(),
                    version,
                }));
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        report.seconds += dt;
        self.busy += dt;
        out.emit(step, items);
        Ok(())
    }

    fn end_of_step(&mut self, step: Step, out: &StageOutput<RolloutOut>) -> Result<(), String> {
        let report = self.report.take().unwrap_or_else(|| RolloutReport {
            step,
            version: step.saturating_sub(self.max_staleness),
            ..RolloutReport::default()
        });
        out.emit(step, vec![RolloutOut::Report(report)]);
        Ok(())
    }
}

/// The rollout stage's outputs.
pub type RolloutStreams<'scope> = (
    Stream<'scope, Step, Vec<Sampled>>,
    Stream<'scope, Step, Vec<RolloutReport>>,
    Option<StageThread<Sampler>>,
);

/// Extension trait: sample each seed's responses.
pub trait Rollout<'scope> {
    /// `sampler` on the worker that runs the stage (None elsewhere: such a worker must receive
    /// no prompts). `versions`: the feedback edge's stream. `variants_per_seed`, when known, lets
    /// a seed start as soon as its prompts are there. Returns the responses, the step reports
    /// and the stage's thread (to join after the run).
    fn rollout(
        self,
        versions: Stream<'scope, Step, Vec<PolicyVersion>>,
        sampler: Option<Sampler>,
        variants_per_seed: Option<usize>,
        ctx: &StageContext,
    ) -> Result<RolloutStreams<'scope>, String>;
}

impl<'scope> Rollout<'scope> for Stream<'scope, Step, Vec<PromptItem>> {
    fn rollout(
        self,
        versions: Stream<'scope, Step, Vec<PolicyVersion>>,
        sampler: Option<Sampler>,
        variants_per_seed: Option<usize>,
        ctx: &StageContext,
    ) -> Result<RolloutStreams<'scope>, String> {
        let (ends, thread) = start_stage("rollout", sampler, ctx)?;
        // The version the sampler uses follows from the step (the store holds it); the gate's
        // job is to hold the step until the feedback frontier says it may run.
        let gated = self
            .gate_on_versions(versions)
            .map(|(_, p): (PolicyVersion, PromptItem)| p);
        let ticks = gated.clone().map(|_| ());
        let out = offload_groups(
            gated,
            ticks,
            Pipeline,
            Pipeline,
            "Rollout",
            |p: &PromptItem| p.b,
            move |_, len| variants_per_seed == Some(len),
            ends,
        );
        let (responses, reports) = out.ok_err(|o| match o {
            RolloutOut::Response(s) => Ok(s),
            RolloutOut::Report(r) => Err(r),
        });
        Ok((responses, reports, thread))
    }
}
