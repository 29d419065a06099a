//! Golden test for the Rust port of `mathruler.grader`
//! (<https://pypi.org/project/mathruler/>): compares `extract_boxed_content` and
//! `grade_answer` against outputs recorded from mathruler 0.1.0 by
//! `tests/golden/grader/make_golden.py`.
#![allow(clippy::print_stderr)]

use shareflow_operators::reward::grader::{extract_boxed_content, grade_answer};

const GOLDEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/golden/grader/golden.jsonl"
));

/// Cases where the port knowingly differs from mathruler (see the README there).
const ACCEPTED_ACCURACY_DISAGREEMENTS: usize = 1;

#[test]
fn grader_matches_mathruler_golden() {
    let mut total = 0usize;
    let mut extract_mismatch = 0usize;
    let mut accuracy_mismatch = 0usize;
    for (line_no, line) in GOLDEN.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: serde_json::Value = serde_json::from_str(line).expect("valid golden json line");
        let field = |k: &str| case[k].as_str().expect("string field").to_string();
        let (response, truth, extracted) =
            (field("response"), field("ground_truth"), field("extracted"));
        let expected = case["accuracy"].as_i64().expect("accuracy field") == 1;
        total += 1;
        let ours = extract_boxed_content(&response);
        if ours != extracted {
            extract_mismatch += 1;
            eprintln!(
                "line {}: extracted {ours:?}, mathruler {extracted:?}",
                line_no + 1
            );
        }
        let got = grade_answer(&extracted, &truth);
        if got != expected {
            accuracy_mismatch += 1;
            eprintln!(
                "line {}: grade_answer({extracted:?}, {truth:?}) = {got}, mathruler {expected}",
                line_no + 1
            );
        }
    }
    eprintln!(
        "extracted agreement {}/{total}, accuracy agreement {}/{total}",
        total - extract_mismatch,
        total - accuracy_mismatch
    );
    assert!(total >= 300, "golden file too small: {total}");
    assert_eq!(
        extract_mismatch, 0,
        "extract_boxed_content must match exactly"
    );
    assert!(
        (total - accuracy_mismatch) as f64 >= 0.99 * total as f64,
        "accuracy agreement below 99%"
    );
    assert!(
        accuracy_mismatch <= ACCEPTED_ACCURACY_DISAGREEMENTS,
        "new accuracy disagreements: {accuracy_mismatch}"
    );
}
