//! `shareflow logprobs` and `shareflow generate` end to end on the tiny fixture checkpoints: from
//! PNG files and question text through the processor and the model, against the transformers
//! goldens; and clear errors for bad checkpoints and images.

mod common;

use std::path::PathBuf;

use common::{root, shareflow, temp_dir};
use serde_json::Value;

fn golden() -> PathBuf {
    root().join("tests/golden/policy")
}

fn read(name: &str) -> Value {
    let text = std::fs::read_to_string(golden().join(name)).expect("golden file");
    serde_json::from_str(&text).expect("golden JSON")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = shareflow(args, None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn logprobs_match_transformers_from_image_files() {
    let cases = read("cases.json");
    let mut checked = 0;
    for c in cases["cases"].as_array().expect("cases") {
        let model = path(golden().join(c["model"].as_str().expect("model")));
        let mut args = vec!["logprobs".to_string(), "--model".into(), model];
        for img in c["images"].as_array().expect("images") {
            args.push("--image".into());
            args.push(path(golden().join(img.as_str().expect("image path"))));
        }
        args.push("--question".into());
        args.push(c["question"].as_str().expect("question").into());
        args.push("--response".into());
        args.push(c["response"].as_str().expect("response").into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{}: {err}", c["name"]);
        let got: Value = serde_json::from_str(out.trim()).expect("JSON output");
        assert_eq!(got["token_ids"], c["response_ids"], "{}", c["name"]);
        let got_lp: Vec<f64> = got["logprobs"]
            .as_array()
            .expect("logprobs")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let want: Vec<f64> = c["logprobs"]
            .as_array()
            .expect("golden logprobs")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(got_lp.len(), want.len());
        let d = got_lp
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(d <= 1e-4, "{}: |diff| {d}", c["name"]);
        assert_eq!(
            got["tokens"].as_array().map(Vec::len),
            Some(want.len()),
            "one token string per log-prob"
        );
        checked += 1;
    }
    assert!(checked >= 10);
}

/// The reported windowed checkpoint (window 56, full attention in block 2) on a 120x90 PNG
/// (merged grid 3x4: padded windows), with both `--image-backend`s, against transformers'
/// default and `use_fast=False` processors.
#[test]
fn logprobs_image_backend_flag_matches_each_transformers_processor() {
    let g = read("windows/golden.json");
    let case = &g["variants"]["w56_full2"]["cases"][0];
    assert_eq!(case["name"], "one_wide");
    let model = path(golden().join("windows/ckpt"));
    let image = path(
        golden()
            .join("windows")
            .join(case["images"][0].as_str().expect("image")),
    );
    for (flag, key) in [
        (None, "logprobs_torchvision"),
        (Some("torchvision"), "logprobs_torchvision"),
        (Some("pil"), "logprobs_pil"),
    ] {
        let mut args = vec![
            "logprobs",
            "--model",
            &model,
            "--image",
            &image,
            "--question",
            g["question"].as_str().expect("question"),
            "--response",
            case["response"].as_str().expect("response"),
        ];
        if let Some(f) = flag {
            args.extend(["--image-backend", f]);
        }
        let (ok, out, err) = run(&args);
        assert!(ok, "{flag:?}: {err}");
        let got: Value = serde_json::from_str(out.trim()).expect("JSON output");
        let got = got["logprobs"].as_array().expect("logprobs");
        let want = case[key].as_array().expect("golden");
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            let (a, b) = (a.as_f64().expect("f64"), b.as_f64().expect("f64"));
            assert!((a - b).abs() <= 1e-4, "{flag:?}: {a} vs {b}");
        }
    }
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &model,
        "--question",
        "q",
        "--response",
        "r",
        "--image-backend",
        "opencv",
    ]);
    assert!(
        !ok && err.contains("torchvision") && err.contains("pil"),
        "{err}"
    );
}

#[test]
fn greedy_generate_matches_transformers() {
    let greedy = read("greedy.json");
    for p in greedy["prompts"].as_array().expect("prompts") {
        let model = path(golden().join(p["model"].as_str().expect("model")));
        let mut args = vec!["generate".to_string(), "--model".into(), model];
        for img in p["images"].as_array().expect("images") {
            args.push("--image".into());
            args.push(path(golden().join(img.as_str().expect("image"))));
        }
        for a in ["--question", p["question"].as_str().expect("question")] {
            args.push(a.into());
        }
        for a in ["--temperature", "0", "--max-new-tokens", "16", "--json"] {
            args.push(a.into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{}: {err}", p["name"]);
        let got: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(got["token_ids"], p["new_token_ids"], "{}", p["name"]);
    }
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let model = path(golden().join("tiny-qwen2_5_vl"));
    let image = path(golden().join("images/sq56.png"));
    let args = |seed: &'static str| {
        vec![
            "generate",
            "--model",
            &model,
            "--image",
            &image,
            "--question",
            "How many?",
            "--n",
            "3",
            "--max-new-tokens",
            "10",
            "--top-p",
            "0.99",
            "--seed",
            seed,
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let go = |a: Vec<String>| {
        let argv: Vec<&str> = a.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{err}");
        out
    };
    let a = go(args("5"));
    assert_eq!(a.lines().count(), 3);
    assert_eq!(a, go(args("5")));
    assert_ne!(a, go(args("6")));
}

#[test]
fn bad_checkpoints_and_images_get_clear_errors() {
    let dir = temp_dir("policy-errors");
    // Missing directory / config.
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &path(dir.join("nope")),
        "--question",
        "q",
        "--response",
        "r",
    ]);
    assert!(
        !ok && err.contains("config.json") && err.contains("missing"),
        "{err}"
    );

    // Unknown architecture.
    let bad = dir.join("llama");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(
        bad.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#,
    )
    .expect("write");
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &path(bad.clone()),
        "--question",
        "q",
        "--response",
        "r",
    ]);
    assert!(
        !ok && err.contains("unsupported model") && err.contains("LlamaForCausalLM"),
        "{err}"
    );

    // Weights missing, then truncated.
    let copy = dir.join("qwen2");
    std::fs::create_dir_all(&copy).expect("dir");
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(golden().join("tiny-qwen2").join(f), copy.join(f)).expect("copy");
    }
    let args = [
        "logprobs",
        "--model",
        &path(copy.clone()),
        "--question",
        "q",
        "--response",
        "r",
    ];
    let (ok, _, err) = run(&args);
    assert!(!ok && err.contains("model.safetensors"), "{err}");
    let weights = std::fs::read(golden().join("tiny-qwen2/model.safetensors")).expect("read");
    std::fs::write(
        copy.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .expect("write");
    let (ok, _, err) = run(&args);
    assert!(
        !ok && err.contains("model.safetensors") && err.contains("safetensors"),
        "{err}"
    );

    // A config whose sizes disagree with the weights names the tensor and both shapes.
    std::fs::write(copy.join("model.safetensors"), &weights).expect("write");
    let cfg = std::fs::read_to_string(copy.join("config.json")).expect("config");
    let mut cfg: Value = serde_json::from_str(&cfg).expect("json");
    cfg["intermediate_size"] = Value::from(96);
    std::fs::write(copy.join("config.json"), cfg.to_string()).expect("write");
    let (ok, _, err) = run(&args);
    assert!(!ok && err.contains("mlp") && err.contains("shape"), "{err}");

    // A corrupt image names the file; an image for a text-only model is refused.
    let img = dir.join("broken.png");
    std::fs::write(&img, b"\x89PNG\r\n\x1a\nnot really").expect("write");
    let vl = path(golden().join("tiny-qwen2_5_vl"));
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &vl,
        "--image",
        &path(img.clone()),
        "--question",
        "q",
        "--response",
        "r",
    ]);
    assert!(
        !ok && err.contains("broken.png") && err.contains("decode"),
        "{err}"
    );
    let good = path(golden().join("images/sq56.png"));
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &path(golden().join("tiny-qwen2")),
        "--image",
        &good,
        "--question",
        "q",
        "--response",
        "r",
    ]);
    assert!(!ok && err.contains("text-only"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `init-model --tokenizer` with the shipped tokenizer writes every non-weight file of the shipped
/// policy byte for byte (its weights come from the README's SFT on top); an unreadable tokenizer
/// is an error naming the file, and nothing is written.
#[test]
fn init_model_with_the_shipped_tokenizer_reproduces_the_shipped_files() {
    let dir = temp_dir("init-model");
    let asset = root().join("assets/shapes-vl-tiny");
    let out = dir.join("init");
    let (ok, _, err) = run(&[
        "init-model",
        "--out",
        &path(out.clone()),
        "--tokenizer",
        &path(asset.join("tokenizer.json")),
    ]);
    assert!(ok, "{err}");
    for file in [
        "tokenizer.json",
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "chat_template.json",
        "preprocessor_config.json",
    ] {
        let made = std::fs::read(out.join(file)).expect("written");
        let shipped = std::fs::read(asset.join(file)).expect("shipped");
        assert!(made == shipped, "{file} differs from the shipped one");
    }
    let bad = root().join("README.md");
    let (ok, _, err) = run(&[
        "init-model",
        "--out",
        &path(dir.join("bad")),
        "--tokenizer",
        &path(bad.clone()),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("tokenizer.json"),
        "{err}"
    );
    assert!(!dir.join("bad").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Qwen3 and Qwen3-VL (`tests/golden/policy/qwen3/`, made by `make_qwen3_golden.py`): every
/// golden case scored from its PNG files and text, and the greedy continuations, through the CLI.
#[test]
fn qwen3_logprobs_and_generate_match_transformers() {
    let g = read("qwen3/golden.json");
    let dir = golden().join("qwen3");
    let cases = g["cases"].as_array().expect("cases");
    for c in cases {
        let mut args = vec![
            "logprobs".to_string(),
            "--model".into(),
            path(dir.join(c["model"].as_str().expect("model"))),
        ];
        for img in c["images"].as_array().expect("images") {
            args.push("--image".into());
            args.push(path(dir.join(img.as_str().expect("image path"))));
        }
        for (flag, key) in [("--question", "question"), ("--response", "response")] {
            args.push(flag.into());
            args.push(c[key].as_str().expect("text").into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{}: {err}", c["name"]);
        let got: Value = serde_json::from_str(out.trim()).expect("JSON output");
        assert_eq!(got["token_ids"], c["response_ids"], "{}", c["name"]);
        let got = got["logprobs"].as_array().expect("logprobs");
        let want = c["logprobs"].as_array().expect("golden logprobs");
        assert_eq!(got.len(), want.len(), "{}", c["name"]);
        for (a, b) in got.iter().zip(want) {
            let (a, b) = (a.as_f64().expect("f64"), b.as_f64().expect("f64"));
            assert!((a - b).abs() <= 1e-4, "{}: {a} vs {b}", c["name"]);
        }
    }
    for want in g["greedy"].as_array().expect("greedy") {
        let c = cases
            .iter()
            .find(|c| c["name"] == want["case"])
            .expect("greedy case");
        let n = want["max_new_tokens"].as_u64().expect("n").to_string();
        let mut args = vec![
            "generate".to_string(),
            "--model".into(),
            path(dir.join(c["model"].as_str().expect("model"))),
        ];
        for img in c["images"].as_array().expect("images") {
            args.push("--image".into());
            args.push(path(dir.join(img.as_str().expect("image path"))));
        }
        for a in [
            "--question",
            c["question"].as_str().expect("question"),
            "--temperature",
            "0",
            "--max-new-tokens",
            &n,
            "--json",
        ] {
            args.push(a.into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{}: {err}", want["case"]);
        let got: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(got["token_ids"], want["tokens"], "{}", want["case"]);
    }
}

/// Video input (`tests/golden/policy/video/`, made by `make_video_golden.py`): each case's frame
/// directory through `--video` / `--video-fps`, scored and greedily continued like transformers.
#[test]
fn video_logprobs_and_generate_match_transformers() {
    let g = read("video/golden.json");
    let model = path(golden().join("tiny-qwen2_5_vl"));
    let cases = g["cases"].as_array().expect("cases");
    let args_of = |c: &Value, cmd: &str| {
        let mut args = vec![cmd.to_string(), "--model".into(), model.clone()];
        for img in c["images"].as_array().expect("images") {
            args.push("--image".into());
            args.push(path(golden().join(img.as_str().expect("image"))));
        }
        for v in c["videos"].as_array().expect("videos") {
            args.push("--video".into());
            let name = v["name"].as_str().expect("video name");
            args.push(path(golden().join("video/frames").join(name)));
            if let Some(fps) = v["fps"].as_f64() {
                args.push("--video-fps".into());
                args.push(fps.to_string());
            }
        }
        args.push("--question".into());
        args.push(c["question"].as_str().expect("question").into());
        args
    };
    for c in cases {
        let mut args = args_of(c, "logprobs");
        args.push("--response".into());
        args.push(c["response"].as_str().expect("response").into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{}: {err}", c["name"]);
        let got: Value = serde_json::from_str(out.trim()).expect("JSON output");
        assert_eq!(got["token_ids"], c["response_ids"], "{}", c["name"]);
        let got = got["logprobs"].as_array().expect("logprobs");
        let want = c["logprobs"].as_array().expect("golden");
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            let (a, b) = (a.as_f64().expect("f64"), b.as_f64().expect("f64"));
            assert!((a - b).abs() <= 1e-4, "{}: {a} vs {b}", c["name"]);
        }
    }
    for want in g["greedy"].as_array().expect("greedy") {
        let c = cases
            .iter()
            .find(|c| c["name"] == want["case"])
            .expect("case");
        let mut args = args_of(c, "generate");
        let n = want["max_new_tokens"].as_u64().expect("n").to_string();
        for a in ["--temperature", "0", "--max-new-tokens", &n, "--json"] {
            args.push(a.into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&argv);
        assert!(ok, "{err}");
        let got: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(got["token_ids"], want["tokens"], "{}", want["case"]);
    }
    // Not a video: a clear error naming the flag.
    let empty = temp_dir("video-empty");
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &model,
        "--video",
        &path(empty.clone()),
        "--question",
        "q",
        "--response",
        "r",
    ]);
    assert!(
        !ok && err.contains("--video") && err.contains("no frames"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "logprobs",
        "--model",
        &path(golden().join("qwen3/tiny-qwen3_vl")),
        "--video",
        &path(golden().join("video/frames/v4_tall")),
        "--question",
        "q",
        "--response",
        "r",
    ]);
    assert!(!ok && err.contains("Qwen2.5-VL only"), "{err}");
    let _ = std::fs::remove_dir_all(&empty);
}
