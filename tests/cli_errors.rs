//! Bad input to the CLI tools: a clear error naming the line and field, a non-zero exit, and
//! nothing written.

mod common;

use common::{shareflow, temp_dir};

/// Runs `advantages` on `input` via stdin; returns (success, stdout, stderr).
fn advantages(input: &str) -> (bool, String, String) {
    let out = shareflow(&["advantages", "--input", "-"], Some(input));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn grid(seed: &str, m: u32, n: u32) -> String {
    let mut s = String::new();
    for j in 0..m {
        for i in 0..n {
            let r = f64::from((i + j) % 2);
            s.push_str(&format!(
                "{{\"seed\": \"{seed}\", \"variant\": {j}, \"sample\": {i}, \"reward\": {r}}}\n"
            ));
        }
    }
    s
}

#[test]
fn a_good_input_works_from_stdin() {
    let (ok, out, err) = advantages(&grid("q1", 2, 3));
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 12);
}

#[test]
fn malformed_lines_name_line_and_field() {
    let good = grid("q1", 2, 2);
    let cases = [
        (
            "{\"seed\": \"q2\", \"variant\": 0, \"sample\": 0, \"reward\": NaN}",
            "line 5: malformed JSON",
        ),
        (
            "{\"seed\": \"q2\", \"variant\": 0, \"sample\": 0}",
            "line 5: field `reward` is missing",
        ),
        (
            "{\"seed\": \"q2\", \"variant\": 0, \"sample\": 0, \"reward\": \"1\"}",
            "line 5: field `reward` must be a finite number",
        ),
        (
            "{\"seed\": 7, \"variant\": 0, \"sample\": 0, \"reward\": 1}",
            "line 5: field `seed` must be a string",
        ),
        (
            "{\"seed\": \"q2\", \"variant\": -1, \"sample\": 0, \"reward\": 1}",
            "line 5: field `variant` must be a non-negative integer",
        ),
        (
            "{\"seed\": \"q2\", \"variant\": 0, \"sample\": 0, \"reward\": 1e999}",
            "line 5: malformed JSON",
        ),
        ("[1, 2]", "line 5: expected a JSON object"),
        (
            "{\"seed\": \"q2\", \"variant\": 0, \"sample\": 0, \"reward\": 1",
            "line 5: malformed JSON",
        ),
    ];
    for (bad, expected) in cases {
        let (ok, out, err) = advantages(&format!("{good}{bad}\n"));
        assert!(!ok, "accepted: {bad}");
        assert!(out.is_empty(), "wrote output for: {bad}");
        assert!(
            err.contains(expected),
            "for {bad}: expected `{expected}` in: {err}"
        );
        assert!(err.contains("<stdin>") || err.contains('-'), "{err}");
    }
}

#[test]
fn inconsistent_groups_name_the_seed() {
    let mut uneven = grid("q1", 2, 3);
    uneven.push_str(
        &grid("q2", 2, 3)
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    uneven.push('\n');
    let (ok, out, err) = advantages(&uneven);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("seed `q2`") && err.contains("different sample counts"),
        "{err}"
    );

    let mut dup = grid("q1", 2, 3);
    dup.push_str(&grid("q1", 1, 1));
    let (ok, out, err) = advantages(&dup);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("seed `q1`") && err.contains("more than once"),
        "{err}"
    );

    let gap = grid("q3", 2, 2).replace("\"variant\": 1", "\"variant\": 2");
    let (ok, _, err) = advantages(&gap);
    assert!(!ok);
    assert!(
        err.contains("seed `q3`") && err.contains("numbered 0..1"),
        "{err}"
    );
}

#[test]
fn a_failed_run_leaves_no_output_file() {
    let dir = temp_dir("nooutput");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    std::fs::write(&input, format!("{}{{\"seed\": \"x\"}}\n", grid("q1", 2, 2))).expect("write");
    let out = shareflow(
        &[
            "advantages",
            "--input",
            input.to_str().unwrap_or_default(),
            "--output",
            output.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(!output.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in.jsonl line 5"));
    let missing = shareflow(&["advantages", "--input", "/nonexistent/file.jsonl"], None);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/file.jsonl")
    );
}

#[test]
fn score_errors_name_line_and_field() {
    let out = shareflow(
        &["score", "--input", "-"],
        Some(
            "{\"response\": \"\\\\boxed{1}\", \"ground_truth\": \"1\"}\n{\"response\": 3, \"ground_truth\": \"1\"}\n",
        ),
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: field `response` must be a string"),
        "{err}"
    );
}
