//! `shareflow score` against the R1-ShareVL release's own reward functions
//! (`examples/score_function/{math,r1v}.py`, tests/golden/reward/make_golden.py) on the grader
//! cases plus format edge cases: format must agree on every case, accuracy on at least 99%
//! (accepted grader disagreements are listed in tests/golden/grader/README.md).

mod common;

use common::{json_lines, read_json_lines, root, shareflow};

fn check(rule: &str, workers: &str) {
    let dir = root().join("tests/golden/reward");
    let input = dir.join("input.jsonl");
    let expected = read_json_lines(&dir.join(format!("expected_{rule}.jsonl")));
    let inputs = read_json_lines(&input);
    let out = shareflow(
        &[
            "score",
            "--input",
            input.to_str().unwrap_or_default(),
            "--rule",
            rule,
            "--workers",
            workers,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(ours.len(), expected.len());
    let mut acc_disagree = Vec::new();
    for (idx, (a, b)) in ours.iter().zip(&expected).enumerate() {
        assert_eq!(
            a["format"], b["format"],
            "{rule} case {idx} format: {}",
            inputs[idx]
        );
        if a["accuracy"] != b["accuracy"] {
            acc_disagree.push(format!(
                "case {idx}: {} ours {} reference {}",
                inputs[idx], a["accuracy"], b["accuracy"]
            ));
            continue;
        }
        let overall = a["overall"].as_f64().unwrap_or(f64::NAN);
        assert!((overall - b["overall"].as_f64().unwrap_or(f64::NAN)).abs() < 1e-12);
    }
    let agreement = 1.0 - acc_disagree.len() as f64 / ours.len() as f64;
    assert!(
        agreement >= 0.99,
        "{rule}: accuracy agreement {agreement}:\n{}",
        acc_disagree.join("\n")
    );
}

#[test]
fn math_rule_matches_the_release() {
    check("math", "1");
}

#[test]
fn r1v_rule_matches_the_release() {
    check("r1v", "2");
}
