//! Video input for Qwen2.5-VL against transformers 5.23 on `tiny-qwen2_5_vl/`
//! (`tests/golden/policy/video/`, made by `make_video_golden.py`): the processor's prompt ids,
//! the video processor's pixel values and `second_per_grid_ts` from the frame files, the 3-D
//! rotary positions of `get_rope_index` (temporal positions spaced by `tokens_per_second *
//! second_per_grid_t`), per-token log-probs within 1e-4 alone and in one padded batch, and
//! greedy generation.

use std::collections::HashMap;
use std::path::PathBuf;

mod common;

use common::{floats, ids, max_abs_diff};
use serde_json::Value;
use shareflow_operators::policy::{
    LoadOptions, PixelValues, PolicyModel, Processor, SamplingParams, ScoreOptions, Sequence,
    Video, load_image, load_pixel_values,
};
use shareflow_runtime::rng::DetRng;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn dir() -> PathBuf {
    common::golden_dir().join("video")
}

fn golden() -> AnyResult<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir().join("golden.json"),
    )?)?)
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

struct Case {
    name: String,
    seq: Vec<u32>,
    prompt_len: usize,
    /// Images then videos, in prompt order, from the processor.
    items: Vec<PixelValues>,
    want: Vec<f32>,
    raw: Value,
}

/// Every case through shareflow's processor, checked against transformers' ids, pixel values and
/// `second_per_grid_ts` on the way.
fn cases() -> AnyResult<Vec<Case>> {
    let g = golden()?;
    let model = load()?;
    let ckpt = common::golden_dir().join("tiny-qwen2_5_vl");
    let proc = Processor::load(&ckpt, model.config().vision.as_ref())?;
    let pv = load_pixel_values(&dir().join("pixel_values.safetensors"))?;
    let mut out = Vec::new();
    for c in g["cases"].as_array().ok_or("cases")? {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let images = strs(&c["images"])
            .iter()
            .map(|p| load_image(&common::golden_dir().join(p)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut videos = Vec::new();
        for v in c["videos"].as_array().ok_or("videos")? {
            let frames = strs(&v["frames"])
                .iter()
                .map(|p| load_image(&dir().join(p)))
                .collect::<Result<Vec<_>, _>>()?;
            videos.push(Video {
                frames,
                fps: v["fps"].as_f64(),
            });
        }
        let question = c["question"].as_str().unwrap_or_default();
        let prompt = proc.prompt_with_videos(question, &images, &videos)?;
        let prompt_ids = ids(&c["prompt_ids"]);
        assert_eq!(prompt.ids, prompt_ids, "{name}: prompt ids");
        let spg = floats(&c["second_per_grid_ts"]);
        let grids = c["video_grid_thw"].as_array().ok_or("grids")?;
        for (k, v) in c["videos"].as_array().ok_or("videos")?.iter().enumerate() {
            let got = &prompt.images[images.len() + k];
            let want = &pv[v["name"].as_str().unwrap_or_default()];
            let grid: Vec<usize> = grids[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .map(|x| x as usize)
                .collect();
            assert_eq!(got.grid_thw.to_vec(), grid, "{name}: video grid");
            assert_eq!(got.grid_thw, want.grid_thw, "{name}: video grid");
            let d = max_abs_diff(&got.data, &want.data);
            assert!(d <= 1e-6, "{name}: video pixel values differ by {d}");
            assert_eq!(got.second_per_grid_t, Some(spg[k]), "{name}");
        }
        let mut seq = prompt_ids.clone();
        seq.extend(ids(&c["response_ids"]));
        out.push(Case {
            name,
            prompt_len: prompt_ids.len(),
            seq,
            items: prompt.images,
            want: floats(&c["logprobs"]),
            raw: c.clone(),
        });
    }
    assert_eq!(out.len(), 4);
    Ok(out)
}

fn load() -> AnyResult<PolicyModel> {
    let opts = LoadOptions {
        trainable: false,
        freeze_vision: false,
        ..LoadOptions::default()
    };
    Ok(PolicyModel::load(
        &common::golden_dir().join("tiny-qwen2_5_vl"),
        &common::test_device(),
        opts,
    )?)
}

fn seq(c: &Case) -> Sequence<'_> {
    Sequence {
        ids: &c.seq,
        prompt_len: c.prompt_len,
        images: &c.items,
    }
}

#[test]
fn rope_positions_match_get_rope_index() -> TestResult {
    let model = load()?;
    for c in cases()? {
        let (pos, _) = model.rope_index(&c.seq, &c.items)?;
        let want = c.raw["rope_positions"].as_array().ok_or("rope_positions")?;
        for (axis, row) in want.iter().enumerate() {
            let row: Vec<i64> = row
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            let got: Vec<i64> = pos.iter().map(|p| p[axis]).collect();
            assert_eq!(got, row, "{}: axis {axis}", c.name);
        }
    }
    Ok(())
}

#[test]
fn log_probs_match_transformers() -> TestResult {
    let model = load()?;
    let cases = cases()?;
    for c in &cases {
        let s = model.score(&[seq(c)], &ScoreOptions::default())?;
        let d = max_abs_diff(&s.row(0)?, &c.want);
        assert!(d <= 1e-4, "{}: log-probs differ by {d}", c.name);
    }
    let batch: Vec<Sequence<'_>> = cases.iter().map(seq).collect();
    let s = model.score(&batch, &ScoreOptions::default())?;
    for (i, c) in cases.iter().enumerate() {
        let d = max_abs_diff(&s.row(i)?, &c.want);
        assert!(d <= 1e-4, "{} in a batch: log-probs differ by {d}", c.name);
    }
    Ok(())
}

#[test]
fn greedy_generation_matches_transformers() -> TestResult {
    let model = load()?;
    let cases = cases()?;
    let by_name: HashMap<&str, &Case> = cases.iter().map(|c| (c.name.as_str(), c)).collect();
    let g = golden()?;
    for want in g["greedy"].as_array().ok_or("greedy")? {
        let c = by_name[want["case"].as_str().unwrap_or_default()];
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: want["max_new_tokens"].as_u64().unwrap_or(0) as usize,
            ..SamplingParams::default()
        };
        let out = model.generate(
            &[(&c.seq[..c.prompt_len], c.items.as_slice())],
            &params,
            &mut [DetRng::from_seed(0)],
        )?;
        assert_eq!(out[0].tokens, ids(&want["tokens"]), "{}", c.name);
    }
    Ok(())
}

#[test]
fn video_errors_are_clear() -> TestResult {
    let ckpt = common::golden_dir().join("tiny-qwen2_5_vl");
    let model = load()?;
    let proc = Processor::load(&ckpt, model.config().vision.as_ref())?;
    let a = load_image(&dir().join("frames/v5_wide/000.png"))?;
    let b = load_image(&dir().join("frames/v4_tall/000.png"))?;
    let mixed = Video {
        frames: vec![a.clone(), b],
        fps: Some(2.0),
    };
    let err = proc
        .prompt_with_videos("q", &[], &[mixed])
        .err()
        .ok_or("frames of two sizes accepted")?
        .to_string();
    assert!(err.contains("video 0") && err.contains("frame 1"), "{err}");
    let bad_fps = Video {
        frames: vec![a],
        fps: Some(0.0),
    };
    let err = proc
        .prompt_with_videos("q", &[], &[bad_fps])
        .err()
        .ok_or("fps 0 accepted")?
        .to_string();
    assert!(err.contains("fps"), "{err}");
    // A video's placeholders are video tokens: scoring it at image tokens is refused.
    let cases = cases()?;
    let c = &cases[0];
    let image_tok = model.config().image_token_id.ok_or("image token")?;
    let video_tok = model.config().video_token_id.ok_or("video token")?;
    let swapped: Vec<u32> = c
        .seq
        .iter()
        .map(|&t| if t == video_tok { image_tok } else { t })
        .collect();
    let s = Sequence {
        ids: &swapped,
        prompt_len: c.prompt_len,
        images: &c.items,
    };
    let err = model
        .score(&[s], &ScoreOptions::default())
        .err()
        .ok_or("video at image tokens accepted")?
        .to_string();
    assert!(err.contains("video 0"), "{err}");
    Ok(())
}
