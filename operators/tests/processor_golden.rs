//! The Qwen2-VL input processor against Pillow 13 and transformers 5.23
//! (tests/golden/policy/make_image_golden.py): PIL resizes byte for byte, transformers'
//! `convert_to_rgb`, `Qwen2VLImageProcessorPil` pixel values (max abs difference <= 1e-6);
//! torchvision 0.29 / PyTorch 2.15 resizes byte for byte and the default (torchvision backend)
//! `Qwen2VLImageProcessor` pixel values (make_torchvision_golden.py); the
//! processor's prompt token ids, the tokenizer, and chat templates rendered by transformers' own
//! jinja2 environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use serde_json::{Map, Value};
use shareflow_operators::policy::resample::{
    convert_to_rgb, resize_rgb, resize_rgb_ordered, resize_rgb_torchvision,
};
use shareflow_operators::policy::{
    ChatTemplate, Filter, ImageBackend, ImageProcessor, ModelConfig, PassOrder, PixelValues,
    PolicyError, Processor, VisionAct, VisionConfig,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy")
}

fn read_json(path: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn open_rgb(path: &Path) -> Result<RgbImage, Box<dyn std::error::Error>> {
    match image::open(path)? {
        DynamicImage::ImageRgb8(img) => Ok(img),
        other => Err(format!("{}: expected RGB8, got {:?}", path.display(), other.color()).into()),
    }
}

/// Differences between two images: (differing samples, max abs difference).
fn compare(a: &RgbImage, b: &RgbImage) -> (usize, u8) {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0, 0), |(n, m), (x, y)| {
            (n + usize::from(x != y), m.max(x.abs_diff(*y)))
        })
}

#[test]
fn resize_matches_pillow_byte_for_byte() -> TestResult {
    let dir = golden().join("resize");
    let index = read_json(&dir.join("index.json"))?;
    let cases = index["resize"]
        .as_array()
        .ok_or("index.json: no resize cases")?;
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for c in cases {
        let input = open_rgb(&dir.join(s(&c["input"])))?;
        let expected = open_rgb(&dir.join(s(&c["output"])))?;
        let filter = filter_named(s(&c["filter"]))?;
        let (w, h) = (expected.width(), expected.height());
        let ours = resize_rgb(&input, w, h, filter);
        assert_eq!(ours.dimensions(), (w, h));
        let (n, max) = compare(&ours, &expected);
        if n > 0 {
            failures.push(format!(
                "{} -> {w}x{h} {}: {n} samples differ, max abs diff {max}",
                s(&c["input"]),
                s(&c["filter"])
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

/// `PassOrder::HorizontalFirst` reproduces Pillow 12 (tests/golden/policy/make_pillow12_golden.py),
/// including on the cases where Pillow 13 differs.
#[test]
fn horizontal_first_matches_pillow12() -> TestResult {
    let dir = golden().join("resize");
    let index = read_json(&dir.join("index.json"))?;
    let p12 = read_json(&dir.join("pillow12.json"))?;
    let cases = index["resize"].as_array().ok_or("no resize cases")?;
    let other = p12["resize"].as_array().ok_or("no pillow12 cases")?;
    assert_eq!(cases.len(), other.len());
    let mut differing = 0;
    for (c, o) in cases.iter().zip(other) {
        assert_eq!(c["output"], o["output13"]);
        let same = o["same"].as_bool().ok_or("same")?;
        let expected = open_rgb(&dir.join(s(if same { &o["output13"] } else { &o["output12"] })))?;
        let input = open_rgb(&dir.join(s(&c["input"])))?;
        let filter = filter_named(s(&c["filter"]))?;
        let ours = resize_rgb_ordered(
            &input,
            expected.width(),
            expected.height(),
            filter,
            PassOrder::HorizontalFirst,
        );
        assert_eq!(compare(&ours, &expected), (0, 0), "{}", s(&c["output"]));
        differing += usize::from(!same);
    }
    assert_eq!(differing, 4);
    Ok(())
}

fn filter_named(name: &str) -> Result<Filter, Box<dyn std::error::Error>> {
    Ok(match name {
        "bicubic" => Filter::Bicubic,
        "bilinear" => Filter::Bilinear,
        "lanczos" => Filter::Lanczos,
        "box" => Filter::Box,
        "hamming" => Filter::Hamming,
        other => return Err(format!("unknown filter {other}").into()),
    })
}

/// Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width; the two orders round differently. 300 random sizes where only one
/// order reproduces Pillow.
#[test]
fn pass_order_matches_pillow13() -> TestResult {
    let index = read_json(&golden().join("resize/index.json"))?;
    let cases = index["pass_order"]
        .as_array()
        .ok_or("no pass_order cases")?;
    assert_eq!(cases.len(), 300);
    let mut vertical = 0;
    for c in cases {
        let text = s(c);
        let nums: Vec<usize> = text
            .split(|ch: char| !ch.is_ascii_digit())
            .filter(|t| !t.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let [w, h, out_w, out_h] = nums[..] else {
            return Err(format!("bad case {text}").into());
        };
        let v = PassOrder::Pillow13.vertical_first(w, h, out_w, out_h);
        assert_eq!(v, text.ends_with(":V"), "{text}");
        assert!(!PassOrder::HorizontalFirst.vertical_first(w, h, out_w, out_h));
        vertical += usize::from(v);
    }
    assert!(vertical > 50, "{vertical}");
    Ok(())
}

#[test]
fn convert_to_rgb_matches_transformers() -> TestResult {
    let dir = golden().join("resize");
    let index = read_json(&dir.join("index.json"))?;
    let cases = index["convert_to_rgb"]
        .as_array()
        .ok_or("no convert cases")?;
    assert_eq!(cases.len(), 4);
    for c in cases {
        let input = image::open(dir.join(s(&c["input"])))?;
        let expected = open_rgb(&dir.join(s(&c["output"])))?;
        let (n, max) = compare(&convert_to_rgb(&input), &expected);
        assert_eq!(
            (n, max),
            (0, 0),
            "{} (PIL mode {}, decoded as {:?})",
            s(&c["input"]),
            s(&c["pil_mode"]),
            input.color()
        );
    }
    Ok(())
}

/// HF's rows hold the frame `temporal_patch_size` times; the golden file holds it once.
fn max_diff_to_golden(pv: &PixelValues, golden: &[f32], temporal: usize) -> f32 {
    let per_t = pv.patch_dim() / temporal / 3;
    let mut max = 0f32;
    for (r, row) in pv.data.chunks(pv.patch_dim()).enumerate() {
        for c in 0..3 {
            for t in 0..temporal {
                let ours = &row[(c * temporal + t) * per_t..][..per_t];
                let theirs = &golden[(r * 3 + c) * per_t..][..per_t];
                for (a, b) in ours.iter().zip(theirs) {
                    max = max.max((a - b).abs());
                }
            }
        }
    }
    max
}

fn tensors(path: &Path) -> Result<HashMap<String, Tensor>, Box<dyn std::error::Error>> {
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

#[test]
fn image_processor_matches_transformers() -> TestResult {
    let dir = golden().join("processor");
    let expected = read_json(&dir.join("expected.json"))?;
    let store = tensors(&dir.join("image_processor.safetensors"))?;
    let base = ImageProcessor::from_file(&dir.join("preprocessor_config.json"))?;
    assert_eq!(
        base.backend,
        ImageBackend::Torchvision,
        "transformers 5's default"
    );
    let cases = expected["image_processor"].as_array().ok_or("no cases")?;
    for c in cases {
        let ip = ImageProcessor {
            max_pixels: c["max_pixels"].as_u64().ok_or("max_pixels")? as usize,
            backend: ImageBackend::Pil,
            ..base.clone()
        };
        let img = image::open(dir.join(s(&c["image"])))?;
        let pv = ip.preprocess(&img)?;
        let grid: Vec<usize> = pv.grid_thw.to_vec();
        assert_eq!(Value::from(grid), c["image_grid_thw"], "{}", s(&c["image"]));
        let rh = c["resized_hw"][0].as_u64().ok_or("resized_hw")? as usize;
        let rw = c["resized_hw"][1].as_u64().ok_or("resized_hw")? as usize;
        assert_eq!(
            ip.smart_resize(img.height() as usize, img.width() as usize)?,
            (rh, rw)
        );
        let name = Path::new(s(&c["image"]))
            .file_stem()
            .and_then(|n| n.to_str())
            .ok_or("image name")?;
        let theirs = store.get(name).ok_or("missing tensor")?;
        assert_eq!(theirs.dims()[0], pv.num_patches());
        assert_eq!(pv.data.len(), pv.num_patches() * 1176);
        let theirs = theirs.flatten_all()?.to_vec1::<f32>()?;
        let max = max_diff_to_golden(&pv, &theirs, ip.temporal_patch_size);
        assert!(max <= 1e-6, "{name}: max abs diff {max}");
        // the tensor view has HF's shape
        assert_eq!(
            pv.to_tensor(&Device::Cpu)?.dims(),
            &[pv.num_patches(), 1176]
        );
    }
    Ok(())
}

/// torchvision's `uint8` resize, byte for byte: the listed cases as PNGs, and 800 random sizes
/// (bicubic and bilinear) as hashes of the output bytes.
#[test]
fn resize_matches_torchvision_byte_for_byte() -> TestResult {
    let dir = golden().join("resize");
    let index = read_json(&dir.join("torchvision.json"))?;
    let cases = index["resize"].as_array().ok_or("no resize cases")?;
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    let mut pillow_differs = 0;
    for c in cases {
        let input = open_rgb(&dir.join(s(&c["input"])))?;
        let expected = open_rgb(&dir.join(s(&c["output"])))?;
        let (w, h) = (expected.width(), expected.height());
        let ours = resize_rgb_torchvision(&input, w, h, filter_named(s(&c["filter"]))?)
            .ok_or("filter not supported")?;
        let (n, max) = compare(&ours, &expected);
        if n > 0 {
            failures.push(format!(
                "{}: {n} samples differ, max {max}",
                s(&c["output"])
            ));
        }
        let pillow = resize_rgb(&input, w, h, filter_named(s(&c["filter"]))?);
        pillow_differs += usize::from(compare(&pillow, &expected).0 > 0);
    }
    // Pillow rounds every one of these cases differently: they tell the two resizes apart
    assert_eq!(pillow_differs, cases.len(), "cases where Pillow differs");
    let sweep = index["sweep"].as_array().ok_or("no sweep")?;
    assert_eq!(sweep.len(), 800);
    let mut inputs = HashMap::new();
    for c in sweep {
        let name = s(&c["input"]);
        if !inputs.contains_key(name) {
            inputs.insert(name, open_rgb(&dir.join(name))?);
        }
        let (w, h) = (
            c["width"].as_u64().ok_or("width")?,
            c["height"].as_u64().ok_or("height")?,
        );
        let ours = resize_rgb_torchvision(
            &inputs[name],
            w as u32,
            h as u32,
            filter_named(s(&c["filter"]))?,
        )
        .ok_or("filter not supported")?;
        let hash = format!("{:016x}", fnv1a64(ours.as_raw()));
        if hash != s(&c["fnv1a64"]) {
            failures.push(format!("sweep {name} -> {w}x{h} {}", s(&c["filter"])));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    // the filters torchvision lacks are refused, not approximated
    let img = RgbImage::new(4, 4);
    assert!(resize_rgb_torchvision(&img, 2, 2, Filter::Lanczos).is_none());
    assert!(resize_rgb_torchvision(&img, 2, 2, Filter::Box).is_none());
    Ok(())
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The default image processor of transformers 5 (`AutoImageProcessor.from_pretrained`, the
/// torchvision backend) against `ImageProcessor::from_file`'s default backend.
#[test]
fn default_image_processor_matches_transformers_torchvision_backend() -> TestResult {
    let dir = golden().join("processor");
    let expected = read_json(&dir.join("expected.json"))?;
    let store = tensors(&dir.join("image_processor_torchvision.safetensors"))?;
    let pil = tensors(&dir.join("image_processor.safetensors"))?;
    let base = ImageProcessor::from_file(&dir.join("preprocessor_config.json"))?;
    let cases = expected["image_processor"].as_array().ok_or("no cases")?;
    let mut resized_differs = 0;
    for c in cases {
        let ip = ImageProcessor {
            max_pixels: c["max_pixels"].as_u64().ok_or("max_pixels")? as usize,
            ..base.clone()
        };
        let img = image::open(dir.join(s(&c["image"])))?;
        let pv = ip.preprocess(&img)?;
        let name = Path::new(s(&c["image"]))
            .file_stem()
            .and_then(|n| n.to_str())
            .ok_or("image name")?;
        let theirs = store.get(name).ok_or("missing tensor")?;
        assert_eq!(theirs.dims(), &[pv.num_patches(), pv.patch_dim()], "{name}");
        let theirs = theirs.flatten_all()?.to_vec1::<f32>()?;
        let max = pv
            .data
            .iter()
            .zip(&theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max <= 1e-6, "{name}: max abs diff {max}");
        // the PIL backend's values are not these: the case is discriminating
        let pil = pil
            .get(name)
            .ok_or("missing PIL tensor")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if max_diff_to_golden(&pv, &pil, ip.temporal_patch_size) > 1e-3 {
            resized_differs += 1;
        }
    }
    assert_eq!(resized_differs, cases.len(), "every case needs a resize");
    Ok(())
}

fn vision_config() -> VisionConfig {
    VisionConfig {
        depth: 1,
        hidden_size: 16,
        intermediate_size: 32,
        num_heads: 2,
        out_hidden_size: 16,
        patch_size: 14,
        temporal_patch_size: 2,
        spatial_merge_size: 2,
        window_size: 112,
        fullatt_block_indexes: vec![0],
        in_channels: 3,
        tokens_per_second: 2.0,
        hidden_act: VisionAct::Silu,
        num_position_embeddings: None,
        deepstack_visual_indexes: vec![],
        rope_theta: 10_000.0,
    }
}

#[test]
fn prompts_match_transformers_processor() -> TestResult {
    let dir = golden().join("processor");
    let expected = read_json(&dir.join("expected.json"))?;
    let proc = Processor::load(&dir, Some(&vision_config()))?;
    let special = &expected["special_token_ids"];
    assert_eq!(proc.eos_ids(), ids(&expected["eos_ids"]));
    assert_eq!(
        proc.pad_id(),
        Some(expected["pad_id"].as_u64().ok_or("pad")? as u32)
    );
    assert_eq!(
        proc.image_token_id(),
        special["<|image_pad|>"].as_u64().map(|v| v as u32)
    );
    assert_eq!(
        proc.token_id("<|im_start|>"),
        special["<|im_start|>"].as_u64().map(|v| v as u32)
    );
    assert!(
        proc.chat_template()
            .origin()
            .ends_with("chat_template.json")
    );
    let cases = expected["prompts"].as_array().ok_or("no prompts")?;
    for c in cases {
        let name = s(&c["name"]);
        let images = c["images"]
            .as_array()
            .ok_or("images")?
            .iter()
            .map(|p| image::open(dir.join(s(p))))
            .collect::<Result<Vec<_>, _>>()?;
        let question = s(&c["question"]);
        let prompt = proc.prompt(question, &images)?;
        assert_eq!(prompt.ids, ids(&c["input_ids"]), "{name}: input_ids");
        let grids: Vec<Value> = prompt
            .images
            .iter()
            .map(|p| p.grid_thw.to_vec().into())
            .collect();
        assert_eq!(Value::from(grids), c["image_grid_thw"], "{name}: grid");
        // the rendered text (before expansion) is transformers'
        let content: Value = if images.is_empty() {
            question.into()
        } else {
            let mut parts: Vec<Value> = images
                .iter()
                .map(|_| serde_json::json!({"type": "image"}))
                .collect();
            parts.push(serde_json::json!({"type": "text", "text": question}));
            parts.into()
        };
        let msgs = serde_json::json!([{"role": "user", "content": content}]);
        assert_eq!(proc.render_chat(&msgs, true)?, s(&c["rendered"]), "{name}");
    }

    // a text-only load takes tokenizer_config.json's template (chat_template.json is the
    // processor's), as transformers' tokenizer does
    let text = Processor::load(&dir, None)?;
    assert!(
        text.chat_template()
            .origin()
            .ends_with("tokenizer_config.json")
    );
    assert!(text.image_processor().is_none());
    let t = &expected["text_only_prompt"];
    let prompt = text.prompt(s(&t["question"]), &[])?;
    assert_eq!(prompt.ids, ids(&t["input_ids"]));
    assert!(prompt.images.is_empty());
    let err = text
        .prompt("x", &[DynamicImage::new_rgb8(56, 56)])
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("text-only (no vision_config)")));
    Ok(())
}

/// `<image>` placeholders (the EasyR1 / R1-ShareVL dataset convention): the question is split at
/// them and each image takes its placeholder's place, as the reference's dataset code builds the
/// message; without placeholders the images come first.
#[test]
fn image_placeholders_place_the_images() -> TestResult {
    let dir = golden().join("processor");
    let proc = Processor::load(&dir, Some(&vision_config()))?;
    let a = DynamicImage::new_rgb8(56, 84);
    let b = DynamicImage::new_rgb8(84, 56);
    // A leading placeholder is the same prompt as no placeholder.
    let leading = proc.prompt("<image>How many?", std::slice::from_ref(&a))?;
    let plain = proc.prompt("How many?", std::slice::from_ref(&a))?;
    assert_eq!(leading.ids, plain.ids);
    // Inner placeholders: text, image, text, image, in that order.
    let two = [a.clone(), b.clone()];
    let inner = proc.prompt("Left <image> right <image>.", &two)?;
    let msgs = serde_json::json!([{"role": "user", "content": [
        {"type": "text", "text": "Left "},
        {"type": "image"},
        {"type": "text", "text": " right "},
        {"type": "image"},
        {"type": "text", "text": "."},
    ]}]);
    let rendered = proc.render_chat(&msgs, true)?;
    let image_id = proc.image_token_id().ok_or("no image token")?;
    let mut expected = Vec::new();
    let mut grids = inner.images.iter();
    for id in proc.encode(&rendered)? {
        if id == image_id {
            let n = grids.next().ok_or("grid")?.num_tokens(2);
            expected.extend(std::iter::repeat_n(image_id, n));
        } else {
            expected.push(id);
        }
    }
    assert_eq!(inner.ids, expected);
    assert_eq!(
        inner.images[0].grid_thw,
        proc.prompt("x", &[a])?.images[0].grid_thw
    );
    assert_eq!(
        inner.images[1].grid_thw,
        proc.prompt("x", &[b])?.images[0].grid_thw
    );
    // A count that does not match is an error that says what to do.
    let err = proc
        .prompt("<image><image>two?", &two[..1])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("2 <image> placeholders for 1 images"), "{err}");
    Ok(())
}

#[test]
fn tokenizer_matches_transformers() -> TestResult {
    let dir = golden().join("processor");
    let expected = read_json(&dir.join("expected.json"))?;
    let proc = Processor::load(&dir, None)?;
    for c in expected["encode"].as_array().ok_or("no encode cases")? {
        let text = s(&c["text"]);
        let got = proc.encode(text)?;
        assert_eq!(got, ids(&c["ids"]), "encode {text:?}");
        assert_eq!(
            proc.decode(&got, false)?,
            s(&c["decoded"]),
            "decode {text:?}"
        );
        assert_eq!(
            proc.decode(&got, true)?,
            s(&c["decoded_skip_special"]),
            "decode(skip_special) {text:?}"
        );
    }
    Ok(())
}

#[test]
fn chat_templates_render_like_transformers() -> TestResult {
    let dir = golden().join("processor");
    let expected = read_json(&dir.join("expected.json"))?;
    let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?;
    let vl_cfg = read_json(&dir.join("chat_template.json"))?;
    let feature = ChatTemplate::new(s(&tok_cfg["chat_template"]), "feature")?;
    let qwen2_vl = ChatTemplate::new(s(&vl_cfg["chat_template"]), "qwen2_vl")?;
    let special = expected["special_tokens_map"]
        .as_object()
        .ok_or("special_tokens_map")?;
    let cases = expected["render"].as_array().ok_or("no render cases")?;
    assert!(cases.len() >= 9);
    for c in cases {
        let template = if s(&c["template"]) == "qwen2_vl" {
            &qwen2_vl
        } else {
            &feature
        };
        let mut vars: Map<String, Value> = special.clone();
        vars.extend(c["kwargs"].as_object().cloned().unwrap_or_default());
        let add_gen = c["add_generation_prompt"].as_bool().unwrap_or(false);
        let got = template.render(&c["messages"], add_gen, &vars)?;
        assert_eq!(got, s(&c["expected"]), "{}", s(&c["name"]));
    }
    let r = &expected["raise_exception"];
    let err = feature
        .render(&r["messages"], false, special)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(s(&r["message"])), "{err}");
    Ok(())
}

/// A scratch copy of the processor fixture, to break.
fn scratch(name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("shareflow-proc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(golden().join("processor").join(f), dir.join(f))?;
    }
    Ok(dir)
}

fn load_err(dir: &Path, vision: bool) -> String {
    let vc = vision_config();
    match Processor::load(dir, vision.then_some(&vc)) {
        Ok(_) => String::from("loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_file_or_image() -> TestResult {
    let dir = scratch("errors")?;
    std::fs::remove_file(dir.join("preprocessor_config.json"))?;
    let e = load_err(&dir, true);
    assert!(e.contains("preprocessor_config.json: missing"), "{e}");
    assert_eq!(load_err(&dir, false), "loaded");

    std::fs::write(dir.join("preprocessor_config.json"), "{\"patch_size\": 16,")?;
    let e = load_err(&dir, true);
    assert!(
        e.contains("preprocessor_config.json") && e.contains("not valid JSON"),
        "{e}"
    );
    std::fs::write(dir.join("preprocessor_config.json"), "{\"patch_size\": 16}")?;
    let e = load_err(&dir, true);
    assert!(
        e.contains("`patch_size` is 16") && e.contains("vision_config"),
        "{e}"
    );
    std::fs::write(dir.join("preprocessor_config.json"), "{}")?;
    let proc = Processor::load(&dir, Some(&vision_config()))?;
    let e = proc
        .prompt("q", &[DynamicImage::new_rgb8(2010, 10)])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("2010x10") && e.contains("aspect ratio"), "{e}");

    std::fs::write(
        dir.join("generation_config.json"),
        "{\"eos_token_id\": \"x\"}",
    )?;
    let e = load_err(&dir, false);
    assert!(
        e.contains("generation_config.json") && e.contains("eos_token_id"),
        "{e}"
    );
    std::fs::remove_file(dir.join("generation_config.json"))?;
    let proc = Processor::load(&dir, None)?;
    assert_eq!(
        proc.eos_ids(),
        vec![proc.token_id("<|im_end|>").ok_or("im_end")?]
    );

    std::fs::remove_file(dir.join("chat_template.json"))?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"eos_token\": \"<|im_end|>\"}",
    )?;
    let e = load_err(&dir, true);
    assert!(e.contains("no chat template"), "{e}");
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% for m in messages %}{{ m.content",
    )?;
    let e = load_err(&dir, false);
    assert!(e.contains("chat_template.jinja"), "{e}");

    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 1}")?;
    let e = load_err(&dir, false);
    assert!(
        e.contains("tokenizer.json") && e.contains("cannot load tokenizer"),
        "{e}"
    );
    std::fs::remove_file(dir.join("tokenizer.json"))?;
    match Processor::load(&dir, None) {
        Err(PolicyError::MissingFile { path, .. }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected a missing tokenizer.json, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// tests/golden/policy/make_fixtures.py's tiny checkpoints, when present: the processor gives
/// its cases' prompt ids and its image processor's pixel values.
#[test]
fn shared_policy_fixtures_agree() -> TestResult {
    let root = golden();
    let cases_path = root.join("cases.json");
    let pixels_path = root.join("pixel_values.safetensors");
    if !cases_path.is_file() || !pixels_path.is_file() {
        return Ok(()); // produced by make_fixtures.py; not in every checkout
    }
    let cases = read_json(&cases_path)?;
    let store = tensors(&pixels_path)?;
    let vl_dir = root.join("tiny-qwen2_5_vl");
    let vl_cfg = ModelConfig::load(&vl_dir)?;
    let vl = Processor::load(&vl_dir, vl_cfg.vision.as_ref())?;
    let text = Processor::load(&root.join("tiny-qwen2"), None)?;
    let ip = vl.image_processor().ok_or("no image processor")?;
    let mut checked = 0;
    for c in cases["cases"].as_array().ok_or("no cases")? {
        let proc = if s(&c["model"]) == "tiny-qwen2_5_vl" {
            &vl
        } else {
            &text
        };
        let paths = c["images"].as_array().cloned().unwrap_or_default();
        let images = paths
            .iter()
            .map(|p| image::open(root.join(s(p))))
            .collect::<Result<Vec<_>, _>>()?;
        let prompt = proc.prompt(s(&c["question"]), &images)?;
        assert_eq!(prompt.ids, ids(&c["prompt_ids"]), "{}", s(&c["name"]));
        assert_eq!(proc.encode(s(&c["response"]))?, ids(&c["response_ids"]));
        for (p, path) in prompt.images.iter().zip(&paths) {
            let name = Path::new(s(path))
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            let theirs = store.get(name).ok_or("missing pixel values")?;
            let theirs = theirs.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(theirs.len(), p.data.len(), "{name}");
            let max = p
                .data
                .iter()
                .zip(&theirs)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(max <= 1e-6, "{name}: max abs diff {max}");
        }
        checked += 1;
    }
    assert!(checked > 0 && ip.patch_size == 14);
    Ok(())
}

/// The dataset-side resize bounds: sizes as the reference's `process_image` computes them
/// (`int(side * sqrt(bound / area))`, values from Python), pixels as Pillow's bicubic resize.
#[test]
fn fit_pixels_follows_the_reference_sizes() {
    use shareflow_operators::policy::fit_pixels;
    for (w, h, min, max, ew, eh) in [
        (3000, 2000, 262_144, 4_194_304, 2508, 1672),
        (84, 84, 262_144, 4_194_304, 512, 512),
        (100, 37, 3136, 4_194_304, 100, 37),
        (5000, 10, 0, 40_000, 4472, 8),
        (84, 84, 0, 0, 84, 84),
    ] {
        let out = fit_pixels(RgbImage::new(w, h), min, max);
        assert_eq!(out.dimensions(), (ew, eh), "{w}x{h} in [{min}, {max}]");
    }
    let img = RgbImage::from_fn(30, 20, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 12) as u8, 7])
    });
    let out = fit_pixels(img.clone(), 0, 150);
    let expected = shareflow_operators::policy::resample::resize_rgb(
        &img,
        out.width(),
        out.height(),
        Filter::Bicubic,
    );
    assert_eq!(out, expected);
}
