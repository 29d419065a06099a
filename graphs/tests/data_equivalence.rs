//! Training through the dataset loader on the embedded task exported as parquet (the
//! R1-ShareVL-52K layout `shareflow data shapes` writes) equals training on the in-memory source
//! with the same seed: same prompts, images, rewrites, answers and random streams.

use std::path::{Path, PathBuf};

use shareflow_graphs::train::data::shapes_rows;
use shareflow_graphs::train::{Config, GraphKind, Settings, Start, StepRecord, run_dataflow};
use shareflow_operators::data::write_parquet;
use shareflow_operators::policy::candle::Device;
use shareflow_operators::policy::{LoadOptions, Optimizer, Policy};
use shareflow_operators::task::Split;

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// Parameters as (name, f32 bits).
type Bits = Vec<(String, Vec<u32>)>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy/tiny-qwen2_5_vl")
}

fn settings(graph: GraphKind, extra: &[String]) -> Result<Settings, String> {
    let mut sets: Vec<String> = [
        "trainer.total_steps=2",
        "data.rollout_batch_size=2",
        "worker.rollout.n=2",
        "worker.rollout.question_num=2",
        "data.max_response_length=6",
        "data.val_size=3",
        "trainer.val_before_train=true",
        "trainer.val_freq=1",
        "worker.actor.global_batch_size=8",
        "worker.actor.micro_batch_size_per_device_for_update=4",
        "worker.actor.optim.lr=0.01",
        "worker.rollout.transform_prob=0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.push(format!(
        "worker.actor.model.model_path={}",
        fixture().display()
    ));
    sets.extend(extra.iter().cloned());
    Settings::from_config(&Config::resolve(None, &sets)?, graph)
}

fn run(s: &Settings) -> Result<(Bits, Vec<StepRecord>), Box<dyn std::error::Error>> {
    let policy = Policy::load(&fixture(), &Device::Cpu, LoadOptions::default())?;
    let opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    let out = run_dataflow(s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))?;
    let mut params = Vec::new();
    for (name, t) in out.model.params().tensors() {
        let bits = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|x| x.to_bits())
            .collect();
        params.push((name.to_string(), bits));
    }
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
