//! Real-size checkpoints (random weights under the exact Hub configs of Qwen2.5-VL-3B-Instruct,
//! Qwen3-VL-2B-Instruct and Qwen3-VL-4B-Instruct), made by `scripts/real_size_check.py` outside
//! the repository: shareflow loads each, scores one short multimodal sequence like transformers
//! (float32 on the same bf16 weights within 2e-3; transformers' own bfloat16 run within 0.5),
//! saves it back with the same tensor names, shapes and dtypes, and (where it fits in memory) runs
//! one training micro-batch, reporting its peak memory.
//!
//! `#[ignore]`d: the checkpoints are 4 to 9 GB and the 4B model needs about 18 GiB of memory.
//!     python3 scripts/real_size_check.py --out /tmp/shareflow-real
//!     SHAREFLOW_REAL_SIZE_DIR=/tmp/shareflow-real \
//!         cargo test --release -p shareflow-operators --test real_size -- --ignored --nocapture
//! Figures go to stderr and to `real_size_results.json` in that directory.

#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

use candle_core::Device;
use common::{floats, ids, max_abs_diff};
use serde_json::{Value, json};
use shareflow_operators::policy::{
    LoadOptions, PolicyModel, ScoreOptions, Sequence, load_pixel_values,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Tensor name -> (dtype, shape).
type Headers = BTreeMap<String, (String, Vec<u64>)>;

/// The tensor headers of a checkpoint's safetensors files (the data is not read).
fn headers(dir: &Path) -> Result<Headers, Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "safetensors")
            || path
                .file_name()
                .is_some_and(|n| n == "pixel_values.safetensors")
        {
            continue;
        }
        let mut f = std::fs::File::open(&path)?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len)?;
        let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
        f.read_exact(&mut header)?;
        let header: Value = serde_json::from_slice(&header)?;
        for (name, t) in header.as_object().ok_or("header")? {
            if name == "__metadata__" {
                continue;
            }
            let dtype = t["dtype"].as_str().unwrap_or_default().to_string();
            let shape = t["shape"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            out.insert(name.clone(), (dtype, shape));
        }
    }
    Ok(out)
}

/// Peak resident memory of this process so far, GiB (`VmHWM`).
fn peak_rss_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / (1024.0 * 1024.0))
}

/// Resets the peak-memory mark (`VmHWM`) of this process (Linux: `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn available_gib() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0))
}

#[test]
#[ignore = "needs the multi-GB checkpoints of scripts/real_size_check.py"]
fn real_size_checkpoints_load_score_export_and_train() -> TestResult {
    let root = PathBuf::from(
        std::env::var("SHAREFLOW_REAL_SIZE_DIR")
            .map_err(|_| "set SHAREFLOW_REAL_SIZE_DIR to the --out of real_size_check.py")?,
    );
    let mut results = serde_json::Map::new();
    let mut checked = 0;
    for name in ["qwen3_vl_2b", "qwen2_5_vl_3b", "qwen3_vl_4b"] {
        let dir = root.join(name);
        let Ok(text) = std::fs::read_to_string(dir.join("golden.json")) else {
            eprintln!("{name}: not made (no {}), skipped", dir.display());
            continue;
        };
        let g: Value = serde_json::from_str(&text)?;
        let prompt = ids(&g["prompt_ids"]);
        let mut seq = prompt.clone();
        seq.extend(ids(&g["response_ids"]));
        let images: Vec<_> = load_pixel_values(&dir.join("pixel_values.safetensors"))?
            .remove("image.png")
            .into_iter()
            .collect();
        let batch = [Sequence {
            ids: &seq,
            prompt_len: prompt.len(),
            images: &images,
        }];
        // One training micro-batch (this sequence): f32 weights and their gradients must fit.
        // First, while the most memory is free.
        let params: f64 = g["parameters"].as_f64().unwrap_or(0.0);
        let need = params * 8.0 / f64::from(1u32 << 30) * 1.15;
        let train = if need < available_gib() {
            reset_peak_rss();
            let model = PolicyModel::load(&dir, &Device::Cpu, LoadOptions::default())?;
            let t3 = Instant::now();
            let s = model.score(&batch, &ScoreOptions::default())?;
            let loss = (s.log_probs.sum_all()?.neg()? / s.lengths[0] as f64)?;
            let grads = loss.backward()?;
            let with_grad = model
                .trainable_vars()
                .iter()
                .filter(|(_, v)| grads.get(v.as_tensor()).is_some())
                .count();
            assert_eq!(with_grad, model.trainable_vars().len(), "{name}: gradients");
            json!({"seconds": t3.elapsed().as_secs_f64(), "peak_rss_gib": peak_rss_gib()})
        } else {
            json!(format!(
                "skipped: f32 weights + gradients need about {need:.1} GiB, {:.1} GiB available",
                available_gib()
            ))
        };
        reset_peak_rss();
        let t0 = Instant::now();
        let model = PolicyModel::load(
            &dir,
            &Device::Cpu,
            LoadOptions {
                trainable: false,
                freeze_vision: false,
                ..LoadOptions::default()
            },
        )?;
        let load_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let ours = model.score(&batch, &ScoreOptions::default())?.row(0)?;
        let score_s = t1.elapsed().as_secs_f64();
        // The float32 reference is absent where the script could not hold it (the 4B model).
        let d32 = g["logprobs_f32"]
            .is_array()
            .then(|| max_abs_diff(&ours, &floats(&g["logprobs_f32"])));
        let d16 = max_abs_diff(&ours, &floats(&g["logprobs_bf16"]));
        if let Some(d32) = d32 {
            assert!(d32 <= 2e-3, "{name}: float32 log-probs differ by {d32}");
        }
        assert!(d16 <= 0.5, "{name}: bf16 log-probs differ by {d16}");

        let out = root.join(format!("{name}-exported"));
        let _ = std::fs::remove_dir_all(&out);
        let t2 = Instant::now();
        model.save(&dir, &out)?;
        let save_s = t2.elapsed().as_secs_f64();
        let (src, dst) = (headers(&dir)?, headers(&out)?);
        assert_eq!(src.len(), dst.len(), "{name}: tensor count");
        assert_eq!(src, dst, "{name}: names, dtypes, shapes");
        std::fs::remove_dir_all(&out)?;
        let inference_peak = peak_rss_gib();
        drop(model);

        let r = json!({
            "parameters": params,
            "logprobs_max_abs_vs_transformers_f32": d32,
            "logprobs_max_abs_vs_transformers_bf16": d16,
            "transformers_bf16_vs_f32": g["bf16_vs_f32_max_abs"],
            "load_s": load_s,
            "score_s": score_s,
            "save_s": save_s,
            "inference_peak_rss_gib": inference_peak,
            "train_micro_batch": train,
            "tensors": src.len(),
        });
        eprintln!("{name}: {r}");
        results.insert(name.into(), r);
        checked += 1;
    }
    assert!(checked > 0, "no checkpoints under {}", root.display());
    std::fs::write(
        root.join("real_size_results.json"),
        serde_json::to_string_pretty(&Value::Object(results))?,
    )?;
    Ok(())
}
