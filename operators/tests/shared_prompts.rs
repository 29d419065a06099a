//! Rows that share a prompt run it once (`ScoreOptions::share_prompts`, and the prompt pass of
//! `generate`): the prompt's keys and values are computed for one copy and selected for each of
//! its rows. That must be the same function as running every row whole, which the goldens check
//! against transformers: per-token log-probs and entropies within 2e-5, and every parameter's
//! gradient within 1e-4 of its tensor's largest gradient, on Qwen2.5-VL (windowed vision
//! attention) and Qwen3-VL (deepstack features added inside the shared prompt); sampling n
//! responses of one prompt in one batch gives each the tokens it gets alone.

mod common;

use std::path::Path;

use candle_core::Tensor;
use common::{golden_dir, max_abs_diff};
use shareflow_operators::policy::{
    LoadOptions, PixelValues, PolicyModel, SamplingParams, ScoreOptions, Sequence,
    load_pixel_values,
};
use shareflow_runtime::rng::DetRng;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;
/// Per-row log-probs, per-row entropies and per-parameter gradients.
type Scored = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

fn load(dir: &Path) -> AnyResult<PolicyModel> {
    let opts = LoadOptions {
        trainable: true,
        freeze_vision: false,
        ..LoadOptions::default()
    };
    Ok(PolicyModel::load(dir, &common::test_device(), opts)?)
}

/// The first image of a golden pixel-values file.
fn first_image(file: &Path) -> AnyResult<PixelValues> {
    let mut all: Vec<(String, PixelValues)> = load_pixel_values(file)?.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all
        .into_iter()
        .next()
        .ok_or("no image in the golden file")?
        .1)
}

/// `[10, 5, 6, 43, image tokens..., 44, 7, 8]`.
fn image_prompt(model: &PolicyModel, img: &PixelValues) -> AnyResult<Vec<u32>> {
    let cfg = model.config();
    let image_tok = cfg.image_token_id.ok_or("no image token")?;
    let merge = cfg.vision.as_ref().ok_or("no vision")?.spatial_merge_size;
    let mut p = vec![10, 5, 6, 43];
    p.extend(std::iter::repeat_n(image_tok, img.llm_tokens(merge)));
    p.extend([44, 7, 8]);
    Ok(p)
}

/// Rows: three responses of the image prompt, two of a text prompt, one of the image prompt
/// with a copied image (equal by value, not by address), and one prompt of its own.
fn rows(model: &PolicyModel, img: &PixelValues) -> AnyResult<Vec<(Vec<u32>, usize, bool)>> {
    let a = image_prompt(model, img)?;
    let b = vec![10u32, 11, 12, 13];
    let c = vec![10u32, 14, 15];
    let mut out = Vec::new();
    for (p, resp, image) in [
        (&a, &[20u32, 21, 22, 23, 24][..], true),
        (&b, &[30, 31, 32], false),
        (&a, &[30, 31], true),
        (&a, &[40, 41, 42], true),
        (&b, &[50], false),
        (&c, &[60, 61, 62, 63], false),
        (&a, &[60, 61, 62, 63, 64, 65], true),
    ] {
        let mut ids = p.clone();
        ids.extend_from_slice(resp);
        out.push((ids, p.len(), image));
    }
    Ok(out)
}

fn check_model(dir: &Path, pixel_values: &Path) -> AnyResult<()> {
    let model = load(dir)?;
    let img = first_image(pixel_values)?;
    let shared = [img.clone()];
    let copied = [img];
    let rows = rows(&model, &shared[0])?;
    let batch: Vec<Sequence<'_>> = rows
        .iter()
        .enumerate()
        .map(|(r, (ids, plen, image))| Sequence {
            ids,
            prompt_len: *plen,
            images: match (image, r) {
                (false, _) => &[],
                (true, 6) => &copied,
                (true, _) => &shared,
            },
        })
        .collect();
    // Advantages of both signs, so that every row's gradient counts.
    let weights: Vec<f32> = (0..batch.len())
        .map(|r| if r % 2 == 0 { 1.0 } else { -0.7 })
        .collect();
    let run = |share: bool| -> AnyResult<Scored> {
        let opts = ScoreOptions {
            temperature: 0.8,
            entropy: true,
            share_prompts: share,
        };
        let s = model.score(&batch, &opts)?;
        let w = Tensor::from_vec(weights.clone(), (batch.len(), 1), model.device())?;
        let loss = s.log_probs.broadcast_mul(&w)?.mul(&s.mask)?.sum_all()?;
        let grads = loss.backward()?;
        let mut g = Vec::new();
        for (name, var) in model.trainable_vars() {
            let t = grads
                .get(var.as_tensor())
                .ok_or(format!("{name}: no gradient (share_prompts {share})"))?;
            g.push(t.flatten_all()?.to_vec1::<f32>()?);
        }
        let entropy = s.entropy.as_ref().ok_or("no entropy")?;
        let mut lp = Vec::new();
        let mut ent = Vec::new();
        for r in 0..batch.len() {
            lp.push(s.row(r)?);
            let n = s.lengths[r];
            ent.push(entropy.get(r)?.narrow(0, 0, n)?.to_vec1::<f32>()?);
        }
        Ok((lp, ent, g))
    };
    let (lp_whole, ent_whole, g_whole) = run(false)?;
    let (lp_shared, ent_shared, g_shared) = run(true)?;
    for r in 0..batch.len() {
        let d = max_abs_diff(&lp_shared[r], &lp_whole[r]);
        assert!(
            d <= 2e-5,
            "{}: row {r} log-probs differ by {d}",
            dir.display()
        );
        let d = max_abs_diff(&ent_shared[r], &ent_whole[r]);
        assert!(
            d <= 2e-5,
            "{}: row {r} entropies differ by {d}",
            dir.display()
        );
    }
    let names: Vec<String> = model.trainable_vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.starts_with("visual.")));
    for ((name, got), want) in names.iter().zip(&g_shared).zip(&g_whole) {
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_abs_diff(got, want);
        assert!(
            d <= 1e-4 * scale + 1e-7,
            "{}: {name}: gradients differ by {d:.3e}, largest {scale:.3e}",
            dir.display()
        );
    }
    Ok(())
}

#[test]
fn qwen2_5_vl_rows_sharing_a_prompt_score_as_whole_rows() -> AnyResult<()> {
    check_model(
        &golden_dir().join("tiny-qwen2_5_vl"),
        &golden_dir().join("pixel_values.safetensors"),
    )
}

#[test]
fn qwen3_vl_rows_sharing_a_prompt_score_as_whole_rows() -> AnyResult<()> {
    let dir = golden_dir().join("qwen3");
    check_model(
        &dir.join("tiny-qwen3_vl"),
        &dir.join("pixel_values.safetensors"),
    )
}

#[test]
fn n_samples_of_one_prompt_are_those_sampled_alone() -> AnyResult<()> {
    let model = load(&golden_dir().join("tiny-qwen2_5_vl"))?;
    let img = [first_image(&golden_dir().join("pixel_values.safetensors"))?];
    let a = image_prompt(&model, &img[0])?;
    let b = vec![10u32, 11, 12, 13];
    let prompts: Vec<(&[u32], &[PixelValues])> =
        vec![(&a, &img), (&b, &[]), (&a, &img), (&a, &img), (&b, &[])];
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        top_k: 0,
        max_new_tokens: 12,
        stop: vec![2],
    };
    let rng = |i: u64| DetRng::derive(7, 0, &"shared", i);
    let mut rngs: Vec<DetRng> = (0..prompts.len() as u64).map(rng).collect();
    let together = model.generate(&prompts, &params, &mut rngs)?;
    for (i, p) in prompts.iter().enumerate() {
        let alone = model.generate(&[*p], &params, &mut [rng(i as u64)])?;
        assert_eq!(together[i].tokens, alone[0].tokens, "sample {i}");
        let d = max_abs_diff(&together[i].log_probs, &alone[0].log_probs);
        assert!(d <= 1e-4, "sample {i}: log-probs differ by {d}");
    }
    // Same-prompt samples drew different responses (the shared prompt did not share the
    // random streams).
    assert!(
        together[0].tokens != together[2].tokens || together[2].tokens != together[3].tokens,
        "three samples of one prompt came out identical"
    );
    Ok(())
}
