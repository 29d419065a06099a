//! Unit tests of the "shapes" task generator (a child module of `shapes`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::*;
use crate::reward::{RewardRule, score_response};
use crate::task::draw::{WHITE, count_components};

const SEED: u64 = 20250522;

fn samples(split: Split, n: u64) -> Vec<TaskSample> {
    (0..n).map(|i| shapes_sample(SEED, split, i)).collect()
}

#[test]
fn same_arguments_same_sample() {
    for split in [Split::Train, Split::Eval] {
        for i in [0, 1, 17, 999] {
            let a = shapes_sample(SEED, split, i);
            let b = shapes_sample(SEED, split, i);
            assert_eq!(a.image.as_raw(), b.image.as_raw());
            assert_eq!(a, b);
        }
    }
    // Other seeds and indices give other samples.
    let a = shapes_sample(SEED, Split::Train, 3);
    assert_ne!(a.image, shapes_sample(SEED + 1, Split::Train, 3).image);
    assert_ne!(a.image, shapes_sample(SEED, Split::Train, 4).image);
    assert_eq!(a.id, "shapes-train-3");
}

#[test]
fn splits_share_no_image_and_question() {
    let train = samples(Split::Train, 2000);
    let eval = samples(Split::Eval, 500);
    let train_pairs: HashSet<(Vec<u8>, String)> = train
        .iter()
        .map(|s| (s.image.as_raw().clone(), s.question.clone()))
        .collect();
    let train_images: HashSet<&[u8]> = train.iter().map(|s| s.image.as_raw().as_slice()).collect();
    for s in &eval {
        assert!(!train_pairs.contains(&(s.image.as_raw().clone(), s.question.clone())));
        assert!(
            !train_images.contains(s.image.as_raw().as_slice()),
            "{}",
            s.id
        );
        assert_eq!(split_of(&s.image), Split::Eval);
    }
    assert!(train.iter().all(|s| split_of(&s.image) == Split::Train));
}

#[test]
fn every_kind_appears_within_200_samples() {
    for split in [Split::Train, Split::Eval] {
        let kinds: BTreeSet<&str> = samples(split, 200).iter().map(|s| s.kind.name()).collect();
        let want = [
            "count_all",
            "count_colour",
            "count_shape",
            "digit_sum",
            "most_frequent_colour",
        ];
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), want, "{split:?}");
    }
}

/// The answer recomputed from the generator's metadata, independently of `answer`.
fn recount(kind: QuestionKind, scene: &Scene) -> String {
    match (kind, scene) {
        (QuestionKind::DigitSum, Scene::Digits(d)) => {
            (u32::from(d.digits[0]) + u32::from(d.digits[1])).to_string()
        }
        (QuestionKind::CountColour(c), Scene::Shapes(s)) => {
            let mut n = 0;
            for shape in s {
                n += usize::from(shape.colour == c);
            }
            n.to_string()
        }
        (QuestionKind::CountShape(k), Scene::Shapes(s)) => {
            s.iter().filter(|x| x.kind == k).count().to_string()
        }
        (QuestionKind::CountAll, Scene::Shapes(s)) => s.len().to_string(),
        (QuestionKind::MostFrequentColour, Scene::Shapes(s)) => {
            let mut by: BTreeMap<Colour, usize> = BTreeMap::new();
            for shape in s {
                *by.entry(shape.colour).or_default() += 1;
            }
            let max = by.values().copied().max().unwrap_or(0);
            let top: Vec<Colour> = by.iter().filter(|e| *e.1 == max).map(|e| *e.0).collect();
            assert_eq!(top.len(), 1, "most frequent colour must be unique: {s:?}");
            top[0].letter().to_string()
        }
        other => panic!("question does not fit its scene: {other:?}"),
    }
}

fn boxes_disjoint(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> bool {
    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1
}

#[test]
fn answers_match_the_drawn_scene() {
    for s in samples(Split::Train, 300)
        .into_iter()
        .chain(samples(Split::Eval, 100))
    {
        assert_eq!(s.answer, recount(s.kind, &s.scene), "{}", s.id);
        assert_eq!(s.image.dimensions(), (IMAGE_SIDE, IMAGE_SIDE));
        assert_eq!(s.image, render(&s.scene));
        let boxes: Vec<(u32, u32, u32, u32)> = match &s.scene {
            Scene::Shapes(shapes) => {
                assert!((1..=5).contains(&shapes.len()));
                // Drawn shapes never touch: one connected blob per shape.
                assert_eq!(count_components(&s.image), shapes.len(), "{}", s.id);
                for sh in shapes {
                    assert!((MIN_SIDE..=MAX_SIDE).contains(&sh.size));
                    let centre = s.image.get_pixel(sh.x + sh.size / 2, sh.y + sh.size / 2);
                    assert_eq!(centre.0, sh.colour.rgb(), "{}", s.id);
                }
                shapes.iter().map(|h| (h.x, h.y, h.size, h.size)).collect()
            }
            Scene::Digits(d) => {
                assert!(d.digits.iter().all(|&x| x <= 9));
                let (w, h) = (GLYPH_W * d.scale, GLYPH_H * d.scale);
                d.origins.iter().map(|&(x, y)| (x, y, w, h)).collect()
            }
        };
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.0 + a.2 <= IMAGE_SIDE && a.1 + a.3 <= IMAGE_SIDE);
            for b in &boxes[i + 1..] {
                assert!(boxes_disjoint(*a, *b), "{}: {a:?} {b:?}", s.id);
            }
        }
        // Nothing is drawn outside the boxes.
        for (x, y, p) in s.image.enumerate_pixels() {
            let inside = boxes
                .iter()
                .any(|b| (b.0..b.0 + b.2).contains(&x) && (b.1..b.1 + b.3).contains(&y));
            assert!(inside || p.0 == WHITE, "{}: stray pixel at {x},{y}", s.id);
        }
    }
}

#[test]
fn answer_spaces_are_small() {
    let mut by_kind: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for s in samples(Split::Train, 1500) {
        by_kind
            .entry(s.kind.name())
            .or_default()
            .insert(s.answer.clone());
    }
    let ints =
        |lo: u32, hi: u32| -> BTreeSet<String> { (lo..=hi).map(|i| i.to_string()).collect() };
    let letters: BTreeSet<String> = ["A", "B", "C", "D"].map(String::from).into();
    for (kind, answers) in &by_kind {
        let allowed = match *kind {
            "count_colour" | "count_shape" => ints(0, 5),
            "count_all" => ints(1, 5),
            "most_frequent_colour" => letters.clone(),
            _ => ints(0, 18),
        };
        assert!(answers.is_subset(&allowed), "{kind}: {answers:?}");
    }
    // The bounded spaces are covered in 1500 samples.
    assert_eq!(by_kind["count_all"], ints(1, 5));
    assert_eq!(by_kind["most_frequent_colour"], letters);
    assert!(by_kind["count_colour"].contains("0"));
}

#[test]
fn counting_answers_are_near_uniform_so_guessing_does_not_pay() {
    let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for s in samples(Split::Train, 3000) {
        *counts
            .entry(s.kind.name())
            .or_default()
            .entry(s.answer.clone())
            .or_default() += 1;
    }
    for kind in ["count_colour", "count_shape", "count_all"] {
        let by = &counts[kind];
        let total: usize = by.values().sum();
        let values = if kind == "count_all" { 5 } else { 6 };
        assert_eq!(by.len(), values, "{kind}: {by:?}");
        // Uniform is 1/6 (1/5); a prior-guessing policy must not get far above it.
        let top = by.values().copied().max().unwrap_or(0) as f64 / total as f64;
        assert!(top < 1.5 / values as f64, "{kind}: {by:?}");
    }
}

#[test]
fn rewrites_are_at_least_three_distinct_and_keep_the_parameter() {
    for s in samples(Split::Train, 200) {
        assert!(s.rewrites.len() >= 3);
        let all = s.texts();
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        for t in &all {
            assert!(!t.trim().is_empty());
            match s.kind {
                QuestionKind::CountColour(c) => assert!(t.contains(c.name()), "{t}"),
                QuestionKind::CountShape(k) => assert!(t.contains(k.plural()), "{t}"),
                QuestionKind::MostFrequentColour => assert!(t.contains(&colour_options())),
                _ => {}
            }
            // The image follows the question (one placeholder, at the end).
            assert!(t.ends_with(IMAGE_PLACEHOLDER), "{t}");
            assert_eq!(t.matches(IMAGE_PLACEHOLDER).count(), 1, "{t}");
        }
    }
}

#[test]
fn reference_response_scores_full_marks_and_a_wrong_answer_scores_zero() {
    for s in samples(Split::Train, 200) {
        let good = reference_response(&s);
        assert!(good.split_whitespace().count() <= 10, "too long: {good}");
        let (score, extracted) = score_response(RewardRule::Math, &good, &s.answer);
        assert_eq!(extracted, s.answer);
        assert_eq!((score.accuracy, score.format), (1.0, 1.0), "{good}");

        let wrong = match s.answer.parse::<u32>() {
            Ok(n) => (n + 1).to_string(),
            Err(_) if s.answer == "A" => "B".to_string(),
            Err(_) => "A".to_string(),
        };
        let bad = format!("<think>I am guessing.</think> \\boxed{{{wrong}}}");
        let (score, _) = score_response(RewardRule::Math, &bad, &s.answer);
        assert_eq!((score.accuracy, score.format), (0.0, 1.0), "{bad}");
    }
    // The example of the brief, verbatim.
    let (score, _) = score_response(
        RewardRule::Math,
        "<think>I see 2 red shapes.</think> \\boxed{2}",
        "2",
    );
    assert_eq!(score.overall, 1.0);
}

#[test]
fn reference_response_examples() {
    let digits = Scene::Digits(DrawnDigits {
        digits: [3, 9],
        origins: [(2, 2), (44, 2)],
        scale: DIGIT_SCALE,
    });
    let sample = |kind: QuestionKind, answer: &str, scene: Scene| TaskSample {
        id: "x".into(),
        image: render(&scene),
        question: texts(kind).0,
        rewrites: texts(kind).1,
        answer: answer.into(),
        kind,
        scene,
    };
    let none = || Scene::Shapes(vec![]);
    let cases = [
        (
            sample(QuestionKind::CountColour(Colour::Red), "2", none()),
            "<think>I see 2 red shapes.</think> \\boxed{2}",
        ),
        (
            sample(QuestionKind::CountShape(ShapeKind::Circle), "1", none()),
            "<think>I see 1 circle.</think> \\boxed{1}",
        ),
        (
            sample(QuestionKind::CountAll, "4", none()),
            "<think>I see 4 shapes in total.</think> \\boxed{4}",
        ),
        (
            sample(QuestionKind::MostFrequentColour, "C", none()),
            "<think>Most shapes are blue.</think> \\boxed{C}",
        ),
        (
            sample(QuestionKind::DigitSum, "12", digits),
            "<think>3 + 9 = 12.</think> \\boxed{12}",
        ),
    ];
    for (s, want) in cases {
        assert_eq!(reference_response(&s), want);
    }
}
