//! Helpers shared by the training-graph tests: the tiny Qwen2.5-VL fixture, configurations over
//! it, and parameters as exact bits.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use shareflow_graphs::train::{Config, GraphKind, Settings};
use shareflow_operators::policy::candle::Device;
use shareflow_operators::policy::{LoadOptions, Optimizer, Policy, PolicyModel};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
/// Parameters as (name, f32 bits).
pub type Bits = Vec<(String, Vec<u32>)>;

/// The tiny random Qwen2.5-VL checkpoint of the policy tests.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy/tiny-qwen2_5_vl")
}

/// Sizes small enough for a debug-mode run of a few steps in seconds.
pub const TINY: &[&str] = &[
    "data.rollout_batch_size=2",
    "worker.rollout.n=2",
    "worker.rollout.question_num=2",
    "data.max_response_length=6",
    "worker.actor.global_batch_size=8",
    "worker.actor.micro_batch_size_per_device_for_update=4",
    "worker.actor.optim.lr=0.01",
    "worker.rollout.transform_prob=0.5",
];

/// The configuration of `sets` (then the fixture as the policy, then `extra`) and its settings.
pub fn config(
    graph: GraphKind,
    sets: &[&str],
    extra: &[String],
) -> Result<(Config, Settings), String> {
    let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    all.push(format!(
        "worker.actor.model.model_path={}",
        fixture().display()
    ));
    all.extend(extra.iter().cloned());
    let c = Config::resolve(None, &all)?;
    let s = Settings::from_config(&c, graph)?;
    Ok((c, s))
}

/// The fixture policy and a fresh optimizer for `s`.
pub fn load(s: &Settings) -> Result<(Policy, Optimizer), Box<dyn std::error::Error>> {
    let policy = Policy::load(&fixture(), &Device::Cpu, LoadOptions::default())?;
    let opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    Ok((policy, opt))
}

/// Every parameter's f32 bits, by name.
pub fn bits(m: &PolicyModel) -> Result<Bits, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for (n, t) in m.params().tensors() {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        out.push((n.to_string(), v.into_iter().map(f32::to_bits).collect()));
    }
    Ok(out)
}
