//! Training through the dataset loader on the embedded task exported as parquet (the
//! R1-ShareVL-52K layout `shareflow data shapes` writes) equals training on the in-memory source
//! with the same seed: same prompts, images, rewrites, answers and random streams.

use shareflow_graphs::train::data::shapes_rows;
use shareflow_graphs::train::{GraphKind, Settings, Start, StepRecord, run_dataflow};
use shareflow_operators::data::write_parquet;
use shareflow_operators::task::Split;

mod common;

use common::{Bits, TINY, TestResult, bits, load};

fn settings(graph: GraphKind, extra: &[String]) -> Result<Settings, String> {
    let mut sets = TINY.to_vec();
    sets.extend([
        "trainer.total_steps=2",
        "data.val_size=3",
        "trainer.val_before_train=true",
        "trainer.val_freq=1",
    ]);
    Ok(common::config(graph, &sets, extra)?.1)
}

fn run(s: &Settings) -> Result<(Bits, Vec<StepRecord>), Box<dyn std::error::Error>> {
    let (policy, opt) = load(s)?;
    let out = run_dataflow(s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))?;
    let params = bits(&out.model)?;
    let records = out
        .records
        .into_iter()
        .map(|r| StepRecord {
            rollout_seconds: 0.0,
            update_seconds: 0.0,
            step_seconds: 0.0,
            ..r
        })
        .collect();
    Ok((params, records))
}

#[test]
fn training_on_the_exported_parquet_equals_training_on_the_embedded_task() -> TestResult {
    let dir = std::env::temp_dir().join(format!("shareflow-data-eq-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_parquet(
        &dir.join("train-00000-of-00001.parquet"),
        &shapes_rows(Split::Train, 6)?,
    )?;
    write_parquet(
        &dir.join("test-00000-of-00001.parquet"),
        &shapes_rows(Split::Eval, 3)?,
    )?;
    for graph in [GraphKind::ShareGrpo, GraphKind::Grpo] {
        let embedded = settings(graph, &[])?;
        let files = settings(
            graph,
            &[
                format!("data.train_files={}@train", dir.display()),
                format!("data.val_files={}@test", dir.display()),
                "data.shuffle=false".into(),
            ],
        )?;
        assert_eq!(files.train_data.len(), Some(6));
        assert_eq!(files.val_data.len(), Some(3));
        let (pa, ra) = run(&embedded)?;
        let (pb, rb) = run(&files)?;
        assert!(ra.iter().all(|r| r.val_accuracy.is_some()));
        assert_eq!(ra, rb, "{graph:?}: records differ");
        assert!(pa == pb, "{graph:?}: parameters differ");
    }
    // Shuffled epochs read the same rows in another order: a different run.
    let shuffled = settings(
        GraphKind::Grpo,
        &[format!("data.train_files={}@train", dir.display())],
    )?;
    let first: Vec<String> = (0..6)
        .map(|p| shuffled.train_data.train_seed(p).map(|s| s.id))
        .collect::<Result<_, _>>()?;
    let mut sorted = first.clone();
    sorted.sort();
    let in_order: Vec<String> = (0..6).map(|i| format!("shapes-train-{i}")).collect();
    assert_ne!(first, in_order, "data.shuffle=true keeps file order");
    let second: Vec<String> = (6..12)
        .map(|p| shuffled.train_data.train_seed(p).map(|s| s.id))
        .collect::<Result<_, _>>()?;
    let mut sorted2 = second.clone();
    sorted2.sort();
    assert_eq!(sorted, sorted2, "every epoch reads every row once");
    assert_ne!(first, second, "each epoch has its own order");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
