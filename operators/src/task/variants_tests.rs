//! Unit tests of variant expansion (a child module of `variants`).

use std::collections::{BTreeMap, HashSet};

use super::*;

const ALL: [VisualTransform; 10] = [
    VisualTransform::None,
    VisualTransform::Rotate90Cw,
    VisualTransform::Rotate90Ccw,
    VisualTransform::Rotate180,
    VisualTransform::Noise { std: 10 },
    VisualTransform::Noise { std: 25 },
    VisualTransform::Noise { std: 50 },
    VisualTransform::FlipVertical,
    VisualTransform::FlipHorizontal,
    VisualTransform::FlipBoth,
];

/// A non-square image whose every pixel is distinct.
fn test_image() -> RgbImage {
    RgbImage::from_fn(7, 5, |x, y| {
        Rgb([x as u8 * 30, y as u8 * 50, (x * 5 + y) as u8])
    })
}

fn rng() -> DetRng {
    DetRng::from_seed(11)
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("question text {i}?")).collect()
}

#[test]
fn rotations_turn_the_right_way_and_invert() {
    let img = test_image();
    let (w, h) = img.dimensions();
    let cw = apply_transform(&img, VisualTransform::Rotate90Cw, &mut rng());
    let ccw = apply_transform(&img, VisualTransform::Rotate90Ccw, &mut rng());
    assert_eq!(cw.dimensions(), (h, w));
    // Clockwise: the top-left corner goes to the top-right; counter-clockwise: to bottom-left.
    assert_eq!(cw.get_pixel(h - 1, 0), img.get_pixel(0, 0));
    assert_eq!(ccw.get_pixel(0, w - 1), img.get_pixel(0, 0));
    let back = apply_transform(&cw, VisualTransform::Rotate90Ccw, &mut rng());
    assert_eq!(back, img);
    let back = apply_transform(&ccw, VisualTransform::Rotate90Cw, &mut rng());
    assert_eq!(back, img);
    let r180 = apply_transform(&img, VisualTransform::Rotate180, &mut rng());
    assert_eq!(
        apply_transform(&r180, VisualTransform::Rotate180, &mut rng()),
        img
    );
    let twice = apply_transform(&cw, VisualTransform::Rotate90Cw, &mut rng());
    assert_eq!(twice, r180);
}

#[test]
fn flips_are_involutions_and_both_is_rotate_180() {
    let img = test_image();
    let (w, h) = img.dimensions();
    for t in [
        VisualTransform::FlipVertical,
        VisualTransform::FlipHorizontal,
        VisualTransform::FlipBoth,
    ] {
        let once = apply_transform(&img, t, &mut rng());
        assert_ne!(once, img, "{t:?}");
        assert_eq!(apply_transform(&once, t, &mut rng()), img, "{t:?}");
    }
    let v = apply_transform(&img, VisualTransform::FlipVertical, &mut rng());
    let hf = apply_transform(&img, VisualTransform::FlipHorizontal, &mut rng());
    assert_eq!(v.get_pixel(0, h - 1), img.get_pixel(0, 0));
    assert_eq!(hf.get_pixel(w - 1, 0), img.get_pixel(0, 0));
    assert_eq!(
        apply_transform(&img, VisualTransform::FlipBoth, &mut rng()),
        apply_transform(&img, VisualTransform::Rotate180, &mut rng())
    );
}

#[test]
fn noise_changes_pixels_within_the_clamp_with_the_right_spread() {
    // Mid-grey, black and white thirds: the clamp is exercised at both ends.
    let img = RgbImage::from_fn(90, 60, |x, _| Rgb([[128, 0, 255][(x / 30) as usize]; 3]));
    for std in NOISE_STDS {
        let mut r = DetRng::from_seed(u64::from(std));
        let noisy = apply_transform(&img, VisualTransform::Noise { std }, &mut r);
        assert_eq!(noisy.dimensions(), img.dimensions());
        let mut changed = 0;
        let (mut sum, mut sum2, mut n) = (0.0, 0.0, 0.0);
        for (a, b) in img.pixels().zip(noisy.pixels()) {
            for (&x, &y) in a.0.iter().zip(&b.0) {
                changed += usize::from(x != y);
                if x == 128 {
                    let d = f64::from(y) - 128.0;
                    sum += d;
                    sum2 += d * d;
                    n += 1.0;
                }
            }
        }
        assert!(changed > img.as_raw().len() / 2, "std {std}: {changed}");
        let mean = sum / n;
        let sd = (sum2 / n - mean * mean).sqrt();
        // Truncation toward zero biases the mean by about -0.5; clamping at 0/255 shrinks std 50.
        assert!((mean + 0.5).abs() < 1.5, "std {std}: mean {mean}");
        assert!(
            (sd - f64::from(std)).abs() < 0.08 * f64::from(std),
            "std {std}: sd {sd}"
        );
        // Same rng, same noise.
        let mut r2 = DetRng::from_seed(u64::from(std));
        assert_eq!(
            apply_transform(&img, VisualTransform::Noise { std }, &mut r2),
            noisy
        );
    }
}

#[test]
fn compensatory_prompt_present_iff_transformed_and_names_it() {
    let names: [(VisualTransform, &[&str]); 10] = [
        (VisualTransform::None, &[]),
        (
            VisualTransform::Rotate90Cw,
            &["rotated 90 degrees clockwise"],
        ),
        (
            VisualTransform::Rotate90Ccw,
            &["rotated 90 degrees counterclockwise"],
        ),
        (VisualTransform::Rotate180, &["rotated 180 degrees"]),
        (VisualTransform::Noise { std: 10 }, &["noise"]),
        (VisualTransform::Noise { std: 25 }, &["noise"]),
        (VisualTransform::Noise { std: 50 }, &["noise"]),
        (VisualTransform::FlipVertical, &["vertically flipped"]),
        (VisualTransform::FlipHorizontal, &["horizontally flipped"]),
        (VisualTransform::FlipBoth, &["horizontally and vertically"]),
    ];
    let mut sentences = HashSet::new();
    for (t, words) in names {
        let sentence = compensatory_prompt(t);
        assert_eq!(sentence.is_some(), t != VisualTransform::None, "{t:?}");
        let q = format_question("How many circles are in the image?", t);
        assert!(q.ends_with(&format!(
            "How many circles are in the image? {FORMAT_PROMPT}"
        )));
        if let Some(s) = sentence {
            for w in words {
                assert!(s.contains(w), "{t:?}: {s}");
            }
            assert!(q.starts_with(&format!("{s}\n")));
            sentences.insert(s);
        } else {
            assert_eq!(
                q,
                format!("How many circles are in the image? {FORMAT_PROMPT}")
            );
        }
    }
    // Noise levels share a sentence; the six other transforms each have their own.
    assert_eq!(sentences.len(), 7);
    // The two 90-degree sentences are not swapped (the release's slip).
    let cw = compensatory_prompt(VisualTransform::Rotate90Cw).unwrap_or_default();
    assert!(!cw.contains("counterclockwise"));
    assert_eq!(
        ALL.iter()
            .filter(|t| compensatory_prompt(**t).is_none())
            .count(),
        1
    );
}

#[test]
fn compensatory_sentence_follows_leading_image_placeholders() {
    let flip = VisualTransform::FlipVertical;
    let s = compensatory_prompt(flip).unwrap_or_default();
    assert_eq!(
        format_question("<image><image>Which is larger?", flip),
        format!("<image><image>{s}\nWhich is larger? {FORMAT_PROMPT}")
    );
    // Inner placeholders stay where they are; the sentence opens the question once.
    assert_eq!(
        format_question("Compare <image> and <image>.", flip),
        format!("{s}\nCompare <image> and <image>. {FORMAT_PROMPT}")
    );
    assert_eq!(
        format_question("<image>Q", VisualTransform::None),
        format!("<image>Q {FORMAT_PROMPT}")
    );
}

#[test]
fn every_image_of_a_seed_gets_the_variant_transform() {
    let a = test_image();
    let b = image::imageops::rotate90(&a);
    let pool: Vec<String> = (0..3).map(|i| format!("q{i}")).collect();
    for seed in 0..40 {
        let vs = expand_variants(
            &pool,
            &[a.clone(), b.clone()],
            "s",
            3,
            0.5,
            &mut DetRng::from_seed(seed),
        );
        // The same draws as a single-image expansion up to the noise of the second image.
        let single = expand_variants(
            &pool,
            std::slice::from_ref(&a),
            "s",
            3,
            0.5,
            &mut DetRng::from_seed(seed),
        );
        assert_eq!(vs[0].transform, single[0].transform);
        assert_eq!(vs[0].images[0], single[0].images[0]);
        for v in &vs {
            assert_eq!(v.images.len(), 2);
            if !matches!(v.transform, VisualTransform::Noise { .. }) {
                assert_eq!(v.images[0], apply_transform(&a, v.transform, &mut rng()));
                assert_eq!(v.images[1], apply_transform(&b, v.transform, &mut rng()));
            }
        }
    }
}

#[test]
fn expand_variants_is_deterministic_and_takes_distinct_texts() {
    let img = test_image();
    let pool = texts(4);
    for m in 1..=4 {
        for seed in 0..50 {
            let a = expand_variants(
                &pool,
                std::slice::from_ref(&img),
                "seed-7",
                m,
                0.3,
                &mut DetRng::from_seed(seed),
            );
            let b = expand_variants(
                &pool,
                std::slice::from_ref(&img),
                "seed-7",
                m,
                0.3,
                &mut DetRng::from_seed(seed),
            );
            assert_eq!(a, b);
            assert_eq!(a.len(), m);
            let distinct: HashSet<&str> = a.iter().map(|v| v.text.as_str()).collect();
            assert_eq!(distinct.len(), m, "m {m} seed {seed}");
            for (k, v) in a.iter().enumerate() {
                assert_eq!((v.k, v.seed_id.as_str()), (k, "seed-7"));
                assert!(pool.contains(&v.text));
                assert_eq!(v.question, format_question(&v.text, v.transform));
                // Deterministic transforms are recomputable; noise depends on the stream.
                if !matches!(v.transform, VisualTransform::Noise { .. }) {
                    assert_eq!(
                        v.images,
                        vec![apply_transform(&img, v.transform, &mut rng())]
                    );
                }
            }
        }
    }
}

#[test]
fn every_text_is_chosen_uniformly() {
    let img = test_image();
    let pool = texts(4);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..2000 {
        for v in expand_variants(
            &pool,
            std::slice::from_ref(&img),
            "s",
            2,
            0.0,
            &mut DetRng::from_seed(seed),
        ) {
            *counts.entry(v.text).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 4);
    for (t, c) in counts {
        assert!((900..1100).contains(&c), "{t}: {c}");
    }
}

#[test]
fn fewer_texts_than_m_cycle_through_a_permutation() {
    let img = test_image();
    let pool = texts(2);
    for seed in 0..20 {
        let v = expand_variants(
            &pool,
            std::slice::from_ref(&img),
            "s",
            5,
            0.3,
            &mut DetRng::from_seed(seed),
        );
        assert_eq!(v.len(), 5);
        let t: Vec<&str> = v.iter().map(|x| x.text.as_str()).collect();
        assert_ne!(t[0], t[1], "each text once before any repeats");
        for k in 2..5 {
            assert_eq!(t[k], t[k % 2], "cycle: {t:?}");
        }
    }
    let one = expand_variants(
        &texts(1),
        std::slice::from_ref(&img),
        "s",
        3,
        0.3,
        &mut rng(),
    );
    assert!(one.iter().all(|v| v.text == "question text 0?"));
    assert!(expand_variants(&[], std::slice::from_ref(&img), "s", 3, 0.3, &mut rng()).is_empty());
    assert!(expand_variants(&pool, std::slice::from_ref(&img), "s", 0, 0.3, &mut rng()).is_empty());
}

#[test]
fn transform_probability_zero_never_one_always_and_all_seven_are_drawn() {
    let img = test_image();
    let pool = texts(3);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut transformed = 0;
    for seed in 0..700 {
        let never = expand_variants(
            &pool,
            std::slice::from_ref(&img),
            "s",
            3,
            0.0,
            &mut DetRng::from_seed(seed),
        );
        assert!(
            never
                .iter()
                .all(|v| v.transform == VisualTransform::None && v.images == vec![img.clone()])
        );
        let always = expand_variants(
            &pool,
            std::slice::from_ref(&img),
            "s",
            3,
            1.0,
            &mut DetRng::from_seed(seed),
        );
        for v in always {
            assert_ne!(v.transform, VisualTransform::None);
            assert!(compensatory_prompt(v.transform).is_some_and(|s| v.question.starts_with(s)));
            *kinds.entry(v.transform.name()).or_default() += 1;
        }
        let some = expand_variants(
            &pool,
            std::slice::from_ref(&img),
            "s",
            3,
            0.3,
            &mut DetRng::from_seed(seed),
        );
        transformed += some
            .iter()
            .filter(|v| v.transform != VisualTransform::None)
            .count();
    }
    // 2100 draws: each of the 7 choices ~300 times, each noise level ~100.
    assert_eq!(kinds.len(), 9, "{kinds:?}");
    for (name, c) in &kinds {
        let want = if name.starts_with("gaussian") {
            100
        } else {
            300
        };
        assert!(c.abs_diff(want) < want / 4, "{name}: {c}");
    }
    let rate = transformed as f64 / 2100.0;
    assert!((rate - 0.3).abs() < 0.04, "rate {rate}");
}
