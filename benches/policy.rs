//! Policy throughput on the tiny Qwen2.5-VL fixture, the same workload as
//! `tests/golden/policy/bench_torch.py` (PyTorch eager, 2 threads) so the two can be set side by
//! side in BENCHMARKS.md. Prints figures; not a timed test.
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench policy [-- REPEATS] [rollout|train]
//!
//! The environment picks another checkpoint and placement (what `scripts/gpu_check.sh` runs on a
//! GPU against `bench_torch.py --device cuda` on the same directory):
//! `SHAREFLOW_BENCH_MODEL=DIR` (default the tiny fixture; DIR must hold the fixture's tokenizer,
//! whose prompt ids the bench feeds), `SHAREFLOW_BENCH_DEVICE=cpu|cuda|cuda:N` and
//! `SHAREFLOW_BENCH_DTYPE=f32|bf16|auto` (default cpu, f32). With `SHAREFLOW_BENCH_JSON=1` the
//! last line is one JSON object of the figures.
//!
//! (a) rollout: one left-padded batch of 24 prompts (16 text-only, 8 with one image), 64 sampled
//!     tokens each (temperature 1, top_p 0.99, no stop token) -> generated tokens/s;
//! (b) one training step on 48 right-padded rows of about 100 tokens (16 with an image):
//!     forward with the vision tower, `-(logp * adv * mask).sum() / mask.sum()`, backward, AdamW.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use shareflow::operators::policy::candle::Tensor;
use shareflow::operators::policy::{
    LoadOptions, OptimConfig, Optimizer, PixelValues, PolicyModel, SamplingParams, ScoreOptions,
    Sequence, compute_dtype, device_name, load_pixel_values, open_device,
};
use shareflow::runtime::DetRng;

/// The CLI's allocator (see `src/main.rs`): glibc malloc unmaps and re-faults large tensor
/// buffers, which costs more than the arithmetic on this model.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// Text-only prompts, and prompts with their one image.
type Prompts = (Vec<Vec<u32>>, Vec<(Vec<u32>, PixelValues)>);

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/policy")
}

/// (prompt ids, images) of the fixture's Qwen2.5-VL cases with at most one image.
fn prompts() -> Res<Prompts> {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("cases.json"))?)?;
    let pv: HashMap<String, PixelValues> =
        load_pixel_values(&golden().join("pixel_values.safetensors"))?
            .into_iter()
            .map(|(k, v)| (format!("images/{k}"), v))
            .collect();
    let mut text = Vec::new();
    let mut with_image = Vec::new();
    for c in cases["cases"].as_array().into_iter().flatten() {
        if c["model"] != "tiny-qwen2_5_vl" {
            continue;
        }
        let ids: Vec<u32> = c["prompt_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect();
        let imgs: Vec<&str> = c["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match imgs.as_slice() {
            [] => text.push(ids),
            [one] => {
                if let Some(p) = pv.get(*one) {
                    with_image.push((ids, p.clone()));
                }
            }
            _ => {}
        }
    }
    Ok((text, with_image))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[allow(clippy::print_stdout)]
fn main() -> Res<()> {
    let repeats: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a == "rollout" || a == "train");
    let run = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let dir = std::env::var_os("SHAREFLOW_BENCH_MODEL")
        .map_or_else(|| golden().join("tiny-qwen2_5_vl"), PathBuf::from);
    let device = open_device(&std::env::var("SHAREFLOW_BENCH_DEVICE").unwrap_or("cpu".into()))?;
    let dtype = compute_dtype(
        &std::env::var("SHAREFLOW_BENCH_DTYPE").unwrap_or("f32".into()),
        &device,
    )?;
    let json = std::env::var("SHAREFLOW_BENCH_JSON").is_ok_and(|v| v == "1");
    let mut figures = serde_json::json!({
        "model": dir.display().to_string(),
        "device": device_name(&device),
        "dtype": format!("{dtype:?}").to_lowercase(),
    });
    let (text, with_image) = prompts()?;
    let no_images: Vec<PixelValues> = Vec::new();

    // (a) rollout.
    if run("rollout") {
        let model = PolicyModel::load(
            &dir,
            &device,
            LoadOptions {
                trainable: false,
                freeze_vision: false,
                compute_dtype: dtype,
            },
        )?;
        let mut batch: Vec<(Vec<u32>, Vec<PixelValues>)> = Vec::new();
        let (mut ti, mut ii) = (0, 0);
        for i in 0..24 {
            if i % 3 == 2 {
                let (ids, p) = &with_image[ii % with_image.len()];
                batch.push((ids.clone(), vec![p.clone()]));
                ii += 1;
            } else {
                batch.push((text[ti % text.len()].clone(), no_images.clone()));
                ti += 1;
            }
        }
        let refs: Vec<(&[u32], &[PixelValues])> = batch
            .iter()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
            .collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.99,
            top_k: 0,
            max_new_tokens: 64,
            stop: Vec::new(),
        };
        let mut times = Vec::new();
        for r in 0..=repeats {
            let mut rngs: Vec<DetRng> = (0..refs.len())
                .map(|i| DetRng::derive(1, r as u64, "bench", i as u64))
                .collect();
            let t0 = Instant::now();
            let out = model.generate(&refs, &params, &mut rngs)?;
            device.synchronize()?;
            let dt = t0.elapsed().as_secs_f64();
            assert!(out.iter().all(|g| g.tokens.len() == 64));
            if r > 0 {
                times.push(dt);
            }
        }
        let med = median(times);
        println!(
            "rollout: batch 24 (8 with an image), 64 new tokens: {:.4} s median, {:.0} generated tokens/s",
            med,
            24.0 * 64.0 / med
        );
        figures["rollout_median_s"] = med.into();
        figures["rollout_tokens_per_s"] = (24.0 * 64.0 / med).into();
    }

    // (b) training step.
    if !run("train") {
        if json {
            println!("{figures}");
        }
        return Ok(());
    }
    let opts = LoadOptions {
        compute_dtype: dtype,
        ..LoadOptions::default()
    };
    let model = PolicyModel::load(&dir, &device, opts)?;
    let mut rng = DetRng::from_seed(7);
    let mut rows: Vec<(Vec<u32>, usize, Vec<PixelValues>)> = Vec::new();
    let (mut ti, mut ii) = (0, 0);
    for i in 0..48 {
        let (mut ids, imgs) = if i % 3 == 2 {
            let (ids, p) = &with_image[ii % with_image.len()];
            ii += 1;
            (ids.clone(), vec![p.clone()])
        } else {
            ti += 1;
            (text[(ti - 1) % text.len()].clone(), Vec::new())
        };
        let p = ids.len();
        let n = (100 + rng.below(9) as usize).saturating_sub(4 + p).max(16);
        ids.extend((0..n).map(|_| rng.below(440) as u32));
        rows.push((ids, p, imgs));
    }
    let seqs: Vec<Sequence<'_>> = rows
        .iter()
        .map(|(ids, p, imgs)| Sequence {
            ids,
            prompt_len: *p,
            images: imgs,
        })
        .collect();
    let adv: Vec<f32> = (0..48).map(|_| rng.normal() as f32).collect();
    let adv = Tensor::from_vec(adv, (48, 1), &device)?;
    let mut opt = Optimizer::new(model.trainable_vars(), OptimConfig::default())?;
    let total_tokens = seqs
        .iter()
        .map(|s| s.ids.len() - s.prompt_len)
        .sum::<usize>() as f64;
    for micro in [48usize, 12] {
        let mut times = Vec::new();
        let mut fwd = Vec::new();
        for r in 0..=repeats {
            let t0 = Instant::now();
            let mut acc = opt.accumulator();
            for (c, chunk) in seqs.chunks(micro).enumerate() {
                let tf = Instant::now();
                let s = model.score(chunk, &ScoreOptions::default())?;
                device.synchronize()?;
                fwd.push(tf.elapsed().as_secs_f64());
                let a = adv.narrow(0, c * micro, chunk.len())?;
                // Token-level mean over the whole mini-batch, accumulated over micro-batches.
                let loss = (s
                    .log_probs
                    .broadcast_mul(&a)?
                    .mul(&s.mask)?
                    .sum_all()?
                    .neg()?
                    / total_tokens)?;
                acc.backward(&loss, 1.0)?;
            }
            opt.step(&acc.take())?;
            device.synchronize()?;
            if r > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        let tokens: usize = rows.iter().map(|(ids, _, _)| ids.len()).sum();
        println!(
            "train step: 48 rows (16 with an image), {:.1} tokens/row, micro-batches of {micro}: \
             {:.4} s median per step",
            tokens as f64 / 48.0,
            median(times.clone())
        );
        figures[format!("train_step_s_micro{micro}")] = median(times).into();
        if micro == 48 {
            println!("  forward alone: {:.4} s median", median(fwd));
        }
    }
    if json {
        println!("{figures}");
    }
    Ok(())
}
