//! `shareflow data` and `shareflow train` on dataset files: the embedded task exported as
//! parquet loads back and trains; bad rows and missing columns are errors naming the file, row
//! and column (or skipped and reported with `data.on_bad_row=skip`).

mod common;

use common::{root, shareflow, temp_dir};
use serde_json::Value;

fn run(args: &[&str]) -> (bool, String, String) {
    let o = shareflow(args, None);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/golden/data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn exported_shapes_load_back_and_train() {
    let dir = temp_dir("data-shapes");
    let data = dir.join("shapes").to_string_lossy().into_owned();
    // `shareflow data shapes` with `rows` train rows and 3 test rows.
    let export = |rows: &str| {
        run(&[
            "data",
            "shapes",
            "--out",
            &data,
            "--rows",
            rows,
            "--val-rows",
            "3",
        ])
    };
    let (ok, out, err) = export("8");
    assert!(ok, "{err}");
    assert!(
        out.contains("8 rows") && out.contains("data.train_files="),
        "{out}"
    );
    let (ok, out, err) = run(&["data", "check", &format!("{data}@train")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("8 rows from 1 files, 8 images, 8 rows with rewrites, 0 skipped"),
        "{out}"
    );
    let (ok, out, err) = run(&["data", "check", &format!("{data}@test")]);
    assert!(ok && out.contains("3 rows"), "{out}{err}");

    let runs = dir.to_string_lossy().into_owned();
    let sets = [
        format!("data.train_files={data}@train"),
        format!("data.val_files={data}@test"),
        "trainer.total_steps=1".into(),
        "data.rollout_batch_size=1".into(),
        "worker.rollout.n=2".into(),
        "data.max_response_length=6".into(),
        "worker.actor.global_batch_size=8".into(),
        "worker.actor.micro_batch_size_per_device_for_update=8".into(),
        format!("trainer.output_dir={runs}"),
        "trainer.experiment_name=files".into(),
    ];
    let mut args = vec!["train", "--quiet"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let (ok, _, err) = run(&args);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("files/summary.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(summary["data"]["train_rows"], 8, "{summary}");
    assert_eq!(summary["data"]["val_rows"], 3, "{summary}");
    assert!(summary["eval_accuracy_after"].is_number(), "{summary}");

    // Resume on files: the checkpoint records the cursor; a changed dataset is refused.
    let mut args2 = args.clone();
    let stop = "trainer.stop_at_step=1".to_string();
    let two = "trainer.total_steps=2".to_string();
    let name = "trainer.experiment_name=resumed".to_string();
    args2.extend(["--set", &stop, "--set", &two, "--set", &name]);
    let (ok, _, err) = run(&args2);
    assert!(ok, "{err}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("resumed/checkpoints/step_1/trainer_state.json"))
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(state["data_cursor"]["rows"], 8, "{state}");
    assert_eq!(state["data_cursor"]["offset"], 1, "{state}");
    let (ok, _, err) = export("9");
    assert!(ok, "{err}");
    let mut args3 = args2.clone();
    args3.extend(["--resume", "auto"]);
    let (ok, _, err) = run(&args3);
    assert!(!ok && err.contains("would not continue"), "{err}");
    let (ok, _, err) = export("8");
    assert!(ok, "{err}");
    args3.extend(["--set", "trainer.stop_at_step=0"]);
    let (ok, _, err) = run(&args3);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("resumed/summary.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(summary["steps"], 2, "{summary}");
    assert_eq!(summary["resumed_from_step"], 1, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_rows_are_named_or_skipped_and_reported() {
    let bad = fixture("bad_rows.parquet");
    let (ok, _, err) = run(&["data", "check", &bad]);
    assert!(!ok);
    assert!(
        err.contains("bad_rows.parquet") && err.contains("row 1") && err.contains("`answer`"),
        "{err}"
    );
    let (ok, out, err) = run(&["data", "check", &bad, "--set", "data.on_bad_row=skip"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 rows") && out.contains("5 skipped"), "{out}");
    assert_eq!(out.matches("skipped: ").count(), 5, "{out}");

    // The trainer refuses the file before any step, with the same message.
    let dir = temp_dir("data-bad");
    let runs = dir.to_string_lossy().into_owned();
    let train_files = format!("data.train_files={bad}");
    let output_dir = format!("trainer.output_dir={runs}");
    let (ok, _, err) = run(&[
        "train",
        "--quiet",
        "--set",
        &train_files,
        "--set",
        &output_dir,
    ]);
    assert!(!ok);
    assert!(
        err.contains("data.train_files") && err.contains("row 1"),
        "{err}"
    );

    // A missing column lists what is there and the key to set.
    let missing = format!("data.train_files={}", fixture("missing_column.parquet"));
    let (ok, _, err) = run(&["train", "--quiet", "--set", &missing, "--set", &output_dir]);
    assert!(!ok);
    assert!(
        err.contains("data.prompt_key") || err.contains("data.answer_key"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
