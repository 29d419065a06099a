//! Prompt length policy (`data.max_prompt_length`, `data.truncation`): an over-long prompt is an
//! error naming the seed, or loses its first (`left`) or last (`right`) tokens; a cut through
//! image tokens is always an error.

use shareflow_graphs::train::steps::{original_variant, prompt_of};
use shareflow_graphs::train::{GraphKind, Settings};

mod common;

use common::{TestResult, load};

fn settings(extra: &[String]) -> Result<Settings, String> {
    Ok(common::config(GraphKind::Grpo, &[], extra)?.1)
}

#[test]
fn long_prompts_are_refused_or_truncated_but_never_through_images() -> TestResult {
    let base = settings(&[])?;
    let (policy, _) = load(&base)?;
    let proc = &policy.processor;
    let image_id = proc.image_token_id().ok_or("no image token")?;
    let seed = base.train_data.seed(3)?;
    let v = original_variant(&seed);
    let full = prompt_of(&base, proc, &v)?;
    let len = full.ids.len();
    let first_image = full
        .ids
        .iter()
        .position(|&t| t == image_id)
        .ok_or("no image")?;
    let last_image = full
        .ids
        .iter()
        .rposition(|&t| t == image_id)
        .ok_or("no image")?;
    assert!(first_image > 2 && last_image + 3 < len);

    let with = |max: usize, how: &str| {
        settings(&[
            format!("data.max_prompt_length={max}"),
            format!("data.truncation={how}"),
        ])
    };
    // Fits: unchanged.
    let same = prompt_of(&with(len, "error")?, proc, &v)?;
    assert_eq!(same.ids, full.ids);
    // error: names the seed and the key.
    let err = prompt_of(&with(len - 1, "error")?, proc, &v)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(&seed.id) && err.contains("data.max_prompt_length"),
        "{err}"
    );
    // right keeps the start, left keeps the end.
    let right = prompt_of(&with(len - 2, "right")?, proc, &v)?;
    assert_eq!(right.ids.as_slice(), &full.ids[..len - 2]);
    let left = prompt_of(&with(len - 2, "left")?, proc, &v)?;
    assert_eq!(left.ids.as_slice(), &full.ids[2..]);
    assert_eq!(left.images.len(), 1);
    // Through the image tokens: refused either way.
    for (max, how) in [(len - first_image - 1, "left"), (last_image, "right")] {
        let err = prompt_of(&with(max, how)?, proc, &v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("image tokens"), "{how}: {err}");
    }
    assert!(settings(&["data.truncation=middle".into()]).is_err());
    Ok(())
}

#[test]
fn sft_augment_asks_rewrites_and_transformed_images() -> TestResult {
    use shareflow_graphs::train::steps::sft_variant;
    use shareflow_operators::task::VisualTransform;

    let sft = |extra: &[String]| -> Result<Settings, String> {
        Ok(common::config(GraphKind::Sft, &[], extra)?.1)
    };
    let augmented = sft(&[
        "sft.augment=true".into(),
        "worker.rollout.transform_prob=0.5".into(),
    ])?;
    let plain = sft(&[])?;
    let (mut rewritten, mut original, mut transformed) = (0, 0, 0);
    for index in 0..40 {
        let seed = augmented.train_data.seed(index)?;
        let v = sft_variant(&augmented, &seed, 7);
        assert!(
            seed.texts().contains(&v.text),
            "{}: not one of its texts",
            seed.id
        );
        assert_eq!(v, sft_variant(&augmented, &seed, 7), "not deterministic");
        if v.text == seed.question {
            original += 1;
        } else {
            rewritten += 1;
        }
        if v.transform != VisualTransform::None {
            transformed += 1;
            assert_ne!(
                v.images, seed.images,
                "{}: transform left the image",
                seed.id
            );
        }
        assert_eq!(sft_variant(&plain, &seed, 7), original_variant(&seed));
    }
    assert!(
        rewritten > 10 && original > 3,
        "{rewritten} rewrites, {original} originals"
    );
    assert!(transformed > 5, "{transformed} transformed of 40");
    Ok(())
}
