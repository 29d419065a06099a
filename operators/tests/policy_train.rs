//! Training the policy: a few PPO + AdamW steps on a fixed batch lower the objective and change
//! the parameters; the trained weights saved as a Hugging Face checkpoint load back (in shareflow
//! here, and in transformers via `tests/golden/policy/roundtrip.py`, whose output for the weights
//! of one CPU-independent AdamW step is committed as `roundtrip_after_step.json`) with the same
//! log-probs.
//!
//! To regenerate that golden after changing the step below:
//!     SHAREFLOW_ROUNDTRIP_OUT=/tmp/rt cargo test -p shareflow-operators --test policy_train  # (fails until the golden is rewritten)
//!     python3 tests/golden/policy/roundtrip.py /tmp/rt > tests/golden/policy/roundtrip_after_step.json

use std::collections::HashMap;
use std::path::Path;

mod common;

use candle_core::{Device, Tensor};
use common::{golden_dir, ids, pixel_values};
use serde_json::Value;
use shareflow_operators::policy::{
    LoadOptions, OptimConfig, Optimizer, PixelValues, PolicyModel, PpoConfig, ScoreOptions,
    Sequence, ppo_loss,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Case {
    name: String,
    seq: Vec<u32>,
    prompt_len: usize,
    images: Vec<PixelValues>,
}

fn vl_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(golden_dir().join("cases.json"))?;
    let golden: Value = serde_json::from_str(&text)?;
    let pv = pixel_values()?;
    let mut out = Vec::new();
    for c in golden["cases"].as_array().into_iter().flatten() {
        if c["model"] != "tiny-qwen2_5_vl" {
            continue;
        }
        let prompt = ids(&c["prompt_ids"]);
        let mut seq = prompt.clone();
        seq.extend(ids(&c["response_ids"]));
        let images = c["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|n| pv.get(n).cloned())
            .collect();
        out.push(Case {
            name: c["name"].as_str().unwrap_or("?").to_string(),
            seq,
            prompt_len: prompt.len(),
            images,
        });
    }
    Ok(out)
}

fn batch(cases: &[Case]) -> Vec<Sequence<'_>> {
    cases
        .iter()
        .map(|c| Sequence {
            ids: &c.seq,
            prompt_len: c.prompt_len,
            images: &c.images,
        })
        .collect()
}

/// Alternating-sign advantages, one per sequence.
fn advantages(n: usize) -> Result<Tensor, candle_core::Error> {
    let v: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { 1.0 } else { -0.7 })
        .collect();
    Tensor::from_vec(v, n, &Device::Cpu)
}

/// The fixed training run: `steps` PPO steps (old log-probs from the start) with AdamW.
/// Returns the model and the surrogate `-mean(adv * logp)` before and after.
type Trained = (PolicyModel, f32, f32, Vec<f32>);

fn train(steps: usize, cfg: OptimConfig) -> Result<Trained, Box<dyn std::error::Error>> {
    let model = PolicyModel::load(
        &golden_dir().join("tiny-qwen2_5_vl"),
        &Device::Cpu,
        LoadOptions::default(),
    )?;
    let cases = vl_cases()?;
    let seqs = batch(&cases);
    let adv = advantages(seqs.len())?;
    let opts = ScoreOptions::default();
    let first = model.score(&seqs, &opts)?;
    let old = first.log_probs.detach();
    let surrogate = |lp: &Tensor, mask: &Tensor| -> Result<f32, candle_core::Error> {
        let w = lp.broadcast_mul(&adv.unsqueeze(1)?)?.mul(mask)?;
        (w.sum_all()?.neg()? / mask.sum_all()?.to_scalar::<f32>()? as f64)?.to_scalar::<f32>()
    };
    let before = surrogate(&old, &first.mask)?;
    let mut opt = Optimizer::new(model.trainable_vars(), cfg)?;
    let ppo = PpoConfig::default();
    let mut norms = Vec::new();
    for _ in 0..steps {
        let s = model.score(&seqs, &opts)?;
        let terms = ppo_loss(&s.log_probs, &old, &adv, &s.mask, None, &ppo)?;
        let grads = terms.loss.backward()?;
        norms.push(opt.step(&grads)?.grad_norm as f32);
    }
    let last = model.score(&seqs, &opts)?;
    let after = surrogate(&last.log_probs, &last.mask)?;
    Ok((model, before, after, norms))
}

#[test]
fn optimizer_steps_lower_the_objective_and_change_parameters() -> TestResult {
    let initial = PolicyModel::load(
        &golden_dir().join("tiny-qwen2_5_vl"),
        &Device::Cpu,
        LoadOptions::default(),
    )?;
    let cfg = OptimConfig {
        lr: 1e-3,
        ..OptimConfig::default()
    };
    let (model, before, after, norms) = train(4, cfg)?;
    assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0), "{norms:?}");
    assert!(after < before - 1e-3, "surrogate {before} -> {after}");
    let init: HashMap<&str, &Tensor> = initial.params().tensors().collect();
    let mut changed = 0;
    let mut total = 0;
    for (name, t) in model.params().tensors() {
        total += 1;
        let d = (t - init[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
        if d > 0.0 {
            changed += 1;
        }
    }
    assert_eq!(
        changed, total,
        "every parameter moves under AdamW with weight decay"
    );
    Ok(())
}

/// One AdamW step whose result does not depend on the CPU: the gradient of `sum(w^2) / 2` is `w`
/// exactly (no matrix products), and AdamW is element-wise. A step on a real loss moves the
/// weights by float rounding that differs between CPUs (AVX2 and AVX-512 matrix kernels sum in
/// different orders), and the scaled-up fixture weights turn that into 2e-4 of log-prob on
/// transformers' side: more than the tolerance this golden is checked at.
fn machine_independent_step() -> Result<PolicyModel, Box<dyn std::error::Error>> {
    let model = PolicyModel::load(
        &golden_dir().join("tiny-qwen2_5_vl"),
        &Device::Cpu,
        LoadOptions::default(),
    )?;
    let vars = model.trainable_vars();
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
    for (_, v) in &vars {
        loss = (loss + (v.as_tensor().sqr()?.sum_all()? * 0.5)?)?;
    }
    let grads = loss.backward()?;
    let cfg = OptimConfig {
        lr: 0.05,
        eps: 1.0,
        weight_decay: 0.0,
        max_grad_norm: None,
        ..OptimConfig::default()
    };
    Optimizer::new(vars, cfg)?.step(&grads)?;
    Ok(model)
}

#[test]
fn saved_checkpoint_reloads_with_the_same_log_probs() -> TestResult {
    let model = machine_independent_step()?;
    let tmp = std::env::temp_dir().join(format!("shareflow-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let out = tmp.join("step1");
    let src = golden_dir().join("tiny-qwen2_5_vl");
    model.save(&src, &out)?;
    if let Ok(dir) = std::env::var("SHAREFLOW_ROUNDTRIP_OUT") {
        let _ = std::fs::remove_dir_all(&dir);
        model.save(&src, Path::new(&dir))?;
    }
    // Same files as the source (weights rewritten, everything else copied).
    for f in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "chat_template.json",
    ] {
        assert!(out.join(f).exists(), "{f} not written");
    }
    assert!(
        model.save(&src, &out).is_err(),
        "saving over an existing directory must fail"
    );
    let reloaded = PolicyModel::load(&out, &Device::Cpu, LoadOptions::default())?;
    let cases = vl_cases()?;
    let seqs = batch(&cases);
    let a = model.score(&seqs, &ScoreOptions::default())?;
    let b = reloaded.score(&seqs, &ScoreOptions::default())?;
    let diff = (a.log_probs - &b.log_probs)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0, "reloaded weights differ");
    // Log-probs transformers computed on the checkpoint this exact step wrote.
    let text = std::fs::read_to_string(golden_dir().join("roundtrip_after_step.json"))?;
    let hf: Value = serde_json::from_str(&text)?;
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let want: Vec<f32> = hf[&c.name]
            .as_array()
            .ok_or(format!("{} missing in roundtrip_after_step.json", c.name))?
            .iter()
            .filter_map(Value::as_f64)
            .map(|x| x as f32)
            .collect();
        let got = b.row(i)?;
        assert_eq!(got.len(), want.len());
        let d = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            d <= 1e-4,
            "{}: transformers on the saved checkpoint differs by {d}",
            c.name
        );
        checked += 1;
    }
    assert!(checked >= 6);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
