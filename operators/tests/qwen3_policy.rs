//! Qwen3 and Qwen3-VL against transformers 5.23 on the tiny random checkpoints of
//! `tests/golden/policy/qwen3/` (made by `make_qwen3_golden.py`): the processor's prompt ids and
//! pixel values, per-token log-probs within 1e-4 absolute (f32) alone and in one padded batch,
//! greedy generation, the gradient of every parameter, one AdamW step, and the save / reload
//! round trip under transformers' tensor names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod common;

use candle_core::{Device, Tensor};
use common::{floats, ids, max_abs_diff};
use serde_json::Value;
use shareflow_operators::policy::{
    Architecture, LoadOptions, OptimConfig, Optimizer, PixelValues, PolicyModel, Processor,
    SamplingParams, ScoreOptions, Sequence, load_image, load_pixel_values,
};
use shareflow_runtime::rng::DetRng;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    common::golden_dir().join("qwen3")
}

fn golden() -> AnyResult<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir().join("golden.json"),
    )?)?)
}

fn load(model: &str, trainable: bool) -> AnyResult<PolicyModel> {
    let opts = LoadOptions {
        trainable,
        freeze_vision: false,
        ..LoadOptions::default()
    };
    Ok(PolicyModel::load(
        &dir().join(model),
        &common::test_device(),
        opts,
    )?)
}

struct Case {
    name: String,
    model: String,
    seq: Vec<u32>,
    prompt_len: usize,
    images: Vec<PixelValues>,
    want: Vec<f32>,
    raw: Value,
}

fn cases() -> AnyResult<Vec<Case>> {
    let g = golden()?;
    let pv: HashMap<String, PixelValues> =
        load_pixel_values(&dir().join("pixel_values.safetensors"))?
            .into_iter()
            .map(|(k, v)| (format!("images/{k}"), v))
            .collect();
    let mut out = Vec::new();
    for c in g["cases"].as_array().into_iter().flatten() {
        let prompt = ids(&c["prompt_ids"]);
        let mut seq = prompt.clone();
        seq.extend(ids(&c["response_ids"]));
        let images = c["images"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                let n = n.as_str().unwrap_or_default();
                pv.get(n)
                    .cloned()
                    .ok_or_else(|| format!("pixel values of {n} missing"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Case {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            model: c["model"].as_str().unwrap_or_default().to_string(),
            prompt_len: prompt.len(),
            seq,
            images,
            want: floats(&c["logprobs"]),
            raw: c.clone(),
        });
    }
    assert_eq!(out.len(), 7, "golden.json has the seven cases");
    Ok(out)
}

fn seq(c: &Case) -> Sequence<'_> {
    Sequence {
        ids: &c.seq,
        prompt_len: c.prompt_len,
        images: &c.images,
    }
}

#[test]
fn configs_load_as_qwen3_families() -> TestResult {
    let text = load("tiny-qwen3", false)?;
    assert_eq!(text.config().architecture, Architecture::Qwen3);
    let t = &text.config().text;
    assert!(t.qk_norm && !t.qkv_bias && !t.o_bias && t.tie_word_embeddings);
    assert_eq!(t.head_dim, 32, "head_dim is read, not hidden / heads");
    let vl = load("tiny-qwen3_vl", false)?;
    assert_eq!(vl.config().architecture, Architecture::Qwen3Vl);
    assert!(vl.config().text.mrope_interleaved);
    let v = vl.config().vision.as_ref().ok_or("vision config")?;
    assert_eq!(v.num_position_embeddings, Some(16));
    assert_eq!(v.deepstack_visual_indexes, vec![0, 1]);
    Ok(())
}

#[test]
fn processor_matches_transformers() -> TestResult {
    let pv = load_pixel_values(&dir().join("pixel_values.safetensors"))?;
    let vl = load("tiny-qwen3_vl", false)?;
    let procs = [
        (
            "tiny-qwen3",
            Processor::load(&dir().join("tiny-qwen3"), None)?,
        ),
        (
            "tiny-qwen3_vl",
            Processor::load(&dir().join("tiny-qwen3_vl"), vl.config().vision.as_ref())?,
        ),
    ];
    let mut worst = 0f32;
    for c in cases()? {
        let proc = &procs.iter().find(|(m, _)| *m == c.model).ok_or("model")?.1;
        let names: Vec<&str> = c.raw["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let images = names
            .iter()
            .map(|n| load_image(&dir().join(n)))
            .collect::<Result<Vec<_>, _>>()?;
        let question = c.raw["question"].as_str().unwrap_or_default();
        let prompt = proc.prompt(question, &images)?;
        assert_eq!(prompt.ids, &c.seq[..c.prompt_len], "{}: prompt ids", c.name);
        let response = c.raw["response"].as_str().unwrap_or_default();
        assert_eq!(
            proc.encode(response)?,
            &c.seq[c.prompt_len..],
            "{}: response ids",
            c.name
        );
        for (got, name) in prompt.images.iter().zip(&names) {
            let key = name.trim_start_matches("images/");
            let want = pv.get(key).ok_or("pixel values")?;
            assert_eq!(got.grid_thw, want.grid_thw, "{}: {key} grid", c.name);
            worst = worst.max(max_abs_diff(&got.data, &want.data));
        }
    }
    // The torchvision backend reproduces transformers' resize exactly on these images; the
    // normalisation differs only by float rounding.
    assert!(worst <= 1e-6, "pixel values differ by up to {worst}");
    Ok(())
}

#[test]
fn log_probs_match_transformers() -> TestResult {
    let models = [
        ("tiny-qwen3", load("tiny-qwen3", false)?),
        ("tiny-qwen3_vl", load("tiny-qwen3_vl", false)?),
    ];
    let cases = cases()?;
    for c in &cases {
        let m = &models.iter().find(|(n, _)| *n == c.model).ok_or("model")?.1;
        let s = m.score(&[seq(c)], &ScoreOptions::default())?;
        let d = max_abs_diff(&s.row(0)?, &c.want);
        assert!(d <= TOL, "{}: log-probs differ by {d}", c.name);
    }
    // All the VL cases as one right-padded batch (text-only rows beside rows with images).
    let vl: Vec<&Case> = cases
        .iter()
        .filter(|c| c.model == "tiny-qwen3_vl")
        .collect();
    let batch: Vec<Sequence<'_>> = vl.iter().map(|c| seq(c)).collect();
    let s = models[1].1.score(&batch, &ScoreOptions::default())?;
    for (i, c) in vl.iter().enumerate() {
        let d = max_abs_diff(&s.row(i)?, &c.want);
        assert!(d <= TOL, "{} in a batch: log-probs differ by {d}", c.name);
    }
    Ok(())
}

/// bf16 compute on Qwen3 / Qwen3-VL (q/k norms, interleaved M-RoPE, LayerNorm + GELU vision
/// tower, deepstack): log-probs within 0.3 nats of transformers' f32 ones (measured: 0.16; the size of
/// transformers' own bf16 differences on the Qwen2.5 fixtures, `bf16_logprobs.json`), and
/// sampling through the bf16 KV cache runs.
#[test]
#[allow(clippy::print_stderr)]
fn bf16_compute_stays_within_bf16_rounding() -> TestResult {
    let mut worst = 0f32;
    for c in &cases()? {
        let opts = LoadOptions {
            trainable: false,
            freeze_vision: false,
            compute_dtype: candle_core::DType::BF16,
        };
        let m = PolicyModel::load(&dir().join(&c.model), &common::test_device(), opts)?;
        let d = max_abs_diff(
            &m.score(&[seq(c)], &ScoreOptions::default())?.row(0)?,
            &c.want,
        );
        assert!(d <= 0.3, "{} in bf16: log-probs differ by {d}", c.name);
        worst = worst.max(d);
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 4,
            ..SamplingParams::default()
        };
        let g = m.generate(
            &[(&c.seq[..c.prompt_len], c.images.as_slice())],
            &params,
            &mut [DetRng::from_seed(0)],
        )?;
        assert!(g[0].log_probs.iter().all(|x| x.is_finite()), "{}", c.name);
    }
    eprintln!("qwen3 bf16: worst |log-prob diff| vs transformers f32 {worst:.3}");
    Ok(())
}

#[test]
fn greedy_generation_matches_transformers() -> TestResult {
    let models = [
        ("tiny-qwen3", load("tiny-qwen3", false)?),
        ("tiny-qwen3_vl", load("tiny-qwen3_vl", false)?),
    ];
    let cases = cases()?;
    let g = golden()?;
    let greedy = g["greedy"].as_array().ok_or("greedy")?;
    assert_eq!(greedy.len(), 4);
    for want in greedy {
        let name = want["case"].as_str().unwrap_or_default();
        let c = cases.iter().find(|c| c.name == name).ok_or("case")?;
        let m = &models.iter().find(|(n, _)| *n == c.model).ok_or("model")?.1;
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: want["max_new_tokens"].as_u64().unwrap_or(0) as usize,
            ..SamplingParams::default()
        };
        let prompt = &c.seq[..c.prompt_len];
        let out = m.generate(
            &[(prompt, c.images.as_slice())],
            &params,
            &mut [DetRng::from_seed(0)],
        )?;
        assert_eq!(out[0].tokens, ids(&want["tokens"]), "{name}: greedy tokens");
    }
    Ok(())
}

/// transformers' name of an internal parameter name.
fn hf_name(internal: &str) -> String {
    if let Some(rest) = internal.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else if let Some(rest) = internal.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else {
        internal.to_string()
    }
}

/// The surrogate loss of `grad.safetensors`: `-(sum_i adv_i * sum logp_i) / tokens`.
fn surrogate(model: &PolicyModel, cases: &[Case], train: &Value) -> AnyResult<Tensor> {
    let mut rows = Vec::new();
    let mut adv = Vec::new();
    for t in train["cases"].as_array().ok_or("train.cases")? {
        let name = t["case"].as_str().unwrap_or_default();
        rows.push(cases.iter().find(|c| c.name == name).ok_or("case")?);
        adv.push(t["advantage"].as_f64().ok_or("advantage")? as f32);
    }
    let batch: Vec<Sequence<'_>> = rows.iter().map(|c| seq(c)).collect();
    let s = model.score(&batch, &ScoreOptions::default())?;
    let adv = Tensor::from_vec(adv, (rows.len(), 1), model.device())?;
    let total = s.log_probs.mul(&s.mask)?.broadcast_mul(&adv)?.sum_all()?;
    let n: usize = s.lengths.iter().sum();
    Ok((total.neg()? / n as f64)?)
}

#[test]
fn gradients_and_one_adamw_step_match_transformers() -> TestResult {
    let g = golden()?;
    let train = &g["train"];
    let cases = cases()?;
    let model = load("tiny-qwen3_vl", true)?;
    let loss = surrogate(&model, &cases, train)?;
    let before = loss.to_scalar::<f32>()?;
    let want_before = train["loss_before"].as_f64().ok_or("loss_before")? as f32;
    assert!(
        (before - want_before).abs() <= 1e-4,
        "loss {before} vs {want_before}"
    );
    let grads = loss.backward()?;
    let reference = candle_core::safetensors::load(dir().join("grad.safetensors"), &Device::Cpu)?;
    let vars = model.trainable_vars();
    assert_eq!(
        vars.len(),
        reference.len(),
        "every transformers parameter is a trainable parameter here"
    );
    for (name, var) in &vars {
        let key = hf_name(name);
        let want = reference
            .get(&key)
            .ok_or_else(|| format!("{key} not in grad.safetensors"))?;
        let got = grads
            .get(var.as_tensor())
            .ok_or_else(|| format!("{name} got no gradient"))?;
        assert_eq!(got.dims(), want.dims(), "{name}: gradient shape");
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
        let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            d <= 1e-3 * scale,
            "{name}: gradient differs by {d} (largest reference entry {scale})"
        );
    }
    let adamw = &train["adamw"];
    let cfg = OptimConfig {
        lr: adamw["lr"].as_f64().ok_or("lr")?,
        betas: (0.9, 0.999),
        eps: adamw["eps"].as_f64().ok_or("eps")?,
        weight_decay: adamw["weight_decay"].as_f64().ok_or("weight_decay")?,
        max_grad_norm: None,
    };
    let mut opt = Optimizer::new(vars, cfg)?;
    opt.step(&grads)?;
    let after = surrogate(&model, &cases, train)?.to_scalar::<f32>()?;
    let want_after = train["loss_after_one_step"].as_f64().ok_or("after")? as f32;
    assert!(
        (after - want_after).abs() <= 2e-3,
        "loss after one AdamW step {after}, transformers {want_after}"
    );
    Ok(())
}

fn tensor_names(path: &Path) -> AnyResult<Vec<(String, Vec<usize>)>> {
    let mut out: Vec<(String, Vec<usize>)> = candle_core::safetensors::load(path, &Device::Cpu)?
        .into_iter()
        .map(|(k, v)| (k, v.dims().to_vec()))
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn saved_checkpoints_keep_transformers_names_and_reload() -> TestResult {
    let cases = cases()?;
    for model_name in ["tiny-qwen3", "tiny-qwen3_vl"] {
        let model = load(model_name, true)?;
        let src = dir().join(model_name);
        let tmp = std::env::temp_dir().join(format!(
            "shareflow-qwen3-{model_name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        model.save(&src, &tmp)?;
        assert_eq!(
            tensor_names(&tmp.join("model.safetensors"))?,
            tensor_names(&src.join("model.safetensors"))?,
            "{model_name}: tensor names and shapes"
        );
        for f in ["config.json", "tokenizer.json", "generation_config.json"] {
            assert!(tmp.join(f).is_file(), "{model_name}: {f} not copied");
        }
        let reloaded = PolicyModel::load(&tmp, &Device::Cpu, LoadOptions::default())?;
        for c in cases.iter().filter(|c| c.model == model_name) {
            let a = model.score(&[seq(c)], &ScoreOptions::default())?.row(0)?;
            let b = reloaded
                .score(&[seq(c)], &ScoreOptions::default())?
                .row(0)?;
            assert_eq!(a, b, "{}: reloaded log-probs", c.name);
        }
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}

#[test]
fn bad_qwen3_vl_configs_name_the_field() -> TestResult {
    use shareflow_operators::policy::ModelConfig;
    let path = dir().join("tiny-qwen3_vl/config.json");
    let base: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let edits: [(&str, Value, &str); 4] = [
        ("num_position_embeddings", Value::from(15), "square"),
        (
            "deepstack_visual_indexes",
            serde_json::json!([0, 3]),
            "depth is 3",
        ),
        ("hidden_act", Value::from("relu"), "gelu_pytorch_tanh"),
        (
            "num_position_embeddings",
            Value::Null,
            "num_position_embeddings",
        ),
    ];
    for (key, value, says) in edits {
        let mut cfg = base.clone();
        cfg["vision_config"][key] = value;
        let err = ModelConfig::from_json(cfg, &path)
            .err()
            .ok_or(format!("{key}: accepted"))?
            .to_string();
        assert!(
            err.contains(key) && err.contains(says) && err.contains("config.json"),
            "{key}: {err}"
        );
    }
    Ok(())
}
