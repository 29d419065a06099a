//! Qwen2.5-VL's windowed vision attention on images whose merged grid does not divide into
//! whole windows (padded windows in rows, columns and both), several window sizes and
//! full-attention blocks at several depths, images resized down, up and to multiples of 28:
//! `Policy::log_probs` against transformers 5.23 (tests/golden/policy/make_window_golden.py),
//! 1e-4 absolute per token in f32, with both image backends.

mod common;

use std::path::PathBuf;

use common::{floats, ids};

use candle_core::Device;
use serde_json::Value;
use shareflow_operators::policy::{ImageBackend, LoadOptions, Policy, load_image};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOL: f32 = 1e-4;

fn windows_dir() -> PathBuf {
    common::golden_dir().join("windows")
}

/// The golden checkpoint with `vision_config` overridden, in a fresh directory.
fn variant_dir(name: &str, overrides: &Value) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let src = windows_dir().join("ckpt");
    let dir = std::env::temp_dir().join(format!("shareflow-windows-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json"))?)?;
    let vision = config["vision_config"]
        .as_object_mut()
        .ok_or("config.json: no vision_config")?;
    for (k, v) in overrides.as_object().ok_or("overrides")? {
        vision.insert(k.clone(), v.clone());
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(dir)
}

#[test]
fn windowed_vision_log_probs_match_transformers() -> TestResult {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(windows_dir().join("golden.json"))?)?;
    let question = golden["question"].as_str().ok_or("question")?;
    let variants = golden["variants"].as_object().ok_or("variants")?;
    assert!(variants.len() >= 5);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut backends_apart = 0usize;
    let mut cases_seen = 0usize;
    for (vname, v) in variants {
        let dir = variant_dir(vname, &v["vision_config"])?;
        let mut policy = Policy::load(
            &dir,
            &Device::Cpu,
            LoadOptions {
                trainable: false,
                freeze_vision: false,
                ..LoadOptions::default()
            },
        )?;
        let vc = policy.model.config().vision.clone().ok_or("no vision")?;
        assert_eq!(
            Value::from(vc.window_size),
            v["vision_config"]["window_size"],
            "{vname}"
        );
        for case in v["cases"].as_array().ok_or("cases")? {
            let cname = case["name"].as_str().unwrap_or("?");
            let images = case["images"]
                .as_array()
                .ok_or("images")?
                .iter()
                .map(|p| load_image(&windows_dir().join(p.as_str().unwrap_or_default())))
                .collect::<Result<Vec<_>, _>>()?;
            let response = case["response"].as_str().ok_or("response")?;
            let tv = floats(&case["logprobs_torchvision"]);
            let pil = floats(&case["logprobs_pil"]);
            let apart = tv
                .iter()
                .zip(&pil)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            backends_apart += usize::from(apart > 10.0 * TOL);
            for (backend, expected) in [(ImageBackend::Torchvision, &tv), (ImageBackend::Pil, &pil)]
            {
                policy.processor.set_image_backend(backend);
                let prompt = policy.prompt(question, &images)?;
                assert_eq!(prompt.ids, ids(&case["prompt_ids"]), "{vname} {cname}");
                let grids: Vec<Value> = prompt
                    .images
                    .iter()
                    .map(|p| Value::from(p.grid_thw.to_vec()))
                    .collect();
                assert_eq!(
                    Value::from(grids),
                    case["image_grid_thw"],
                    "{vname} {cname}"
                );
                let ours = policy.log_probs(question, &images, response)?;
                assert_eq!(
                    ours.token_ids,
                    ids(&case["response_ids"]),
                    "{vname} {cname}"
                );
                assert_eq!(ours.log_probs.len(), expected.len());
                let max = ours
                    .log_probs
                    .iter()
                    .zip(expected.iter())
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                report.push(format!("{vname} {cname} {backend}: {max:.1e}"));
                if max.is_nan() || max > TOL {
                    failures.push(format!("{vname} {cname} {backend}: max abs diff {max}"));
                }
            }
            cases_seen += 1;
        }
        std::fs::remove_dir_all(&dir)?;
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\nall cases:\n{}",
        report.join("\n")
    );
    assert!(cases_seen >= 25);
    // the choice of image processor is visible at this tolerance on every resized image
    assert_eq!(backends_apart, cases_seen);
    Ok(())
}
