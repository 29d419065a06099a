//! Exact checkpoint and resume: a run stopped after 3 steps (`trainer.stop_at_step`) and resumed
//! from its checkpoint ends bitwise where the straight 6-step run ends (weights and records,
//! timings aside), with staleness 0 and 1; `trainer.save_limit` keeps the newest checkpoints; a
//! temporary directory left by a crash is ignored and then removed.

use std::path::{Path, PathBuf};

use shareflow_graphs::train::checkpoint::{self, Checkpointer, Start};
use shareflow_graphs::train::{Config, GraphKind, Outcome, Settings, StepRecord, run_dataflow};
use shareflow_operators::policy::candle::Device;
use shareflow_operators::policy::{LoadOptions, Optimizer, Policy};

mod common;

use common::{TestResult, bits, fixture, load};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sf-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const BASE: &[&str] = &[
    "trainer.total_steps=6",
    "data.rollout_batch_size=1",
    "worker.rollout.n=2",
    "worker.rollout.question_num=2",
    "data.max_response_length=6",
    "data.val_size=2",
    "trainer.val_before_train=true",
    "trainer.val_freq=2",
    "worker.actor.global_batch_size=4",
    "worker.actor.micro_batch_size_per_device_for_update=4",
    "worker.actor.optim.lr=0.01",
    "worker.rollout.transform_prob=0.5",
];

fn config(extra: &[&str]) -> Result<(Config, Settings), String> {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    common::config(GraphKind::ShareGrpo, BASE, &extra)
}

fn untimed(records: &[StepRecord]) -> Vec<StepRecord> {
    records
        .iter()
        .map(|r| StepRecord {
            rollout_seconds: 0.0,
            update_seconds: 0.0,
            step_seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

/// Runs from `start`, checkpointing into `root` when given.
fn run(
    c: &Config,
    s: &Settings,
    start: Start,
    root: Option<&Path>,
    policy: Policy,
    opt: Optimizer,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let out = match root {
        Some(root) => {
            let cp = Checkpointer::new(root, &fixture(), c, s)?;
            run_dataflow(
                s,
                policy,
                opt,
                start,
                |_| {},
                move |st| cp.save(st).map(|_| ()),
            )?
        }
        None => run_dataflow(s, policy, opt, start, |_| {}, |_| Ok(()))?,
    };
    Ok(out)
}

/// Resumes from `checkpoints/latest` under `root`.
fn resume(
    c: &Config,
    s: &Settings,
    root: &Path,
    stop_at_step: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let dir = checkpoint::latest(root).ok_or("no complete checkpoint")?;
    let (mut policy, mut opt) = load(s)?;
    let r = checkpoint::restore(&dir, c, GraphKind::ShareGrpo, &mut policy, &mut opt)?;
    let start = Start {
        resume: Some(r),
        stop_at_step,
    };
    run(c, s, start, Some(root), policy, opt)
}

#[test]
fn stop_and_resume_equals_the_straight_run_with_staleness_0_1_and_2() -> TestResult {
    for staleness in ["0", "1", "2"] {
        let st = format!("trainer.max_staleness={staleness}");
        // Staleness 1 also runs under a warm-up and cosine decay: the rate is a function of the
        // step, so the resumed half continues the schedule.
        let sched = match staleness {
            "1" => "worker.actor.optim.lr_scheduler_type=cosine",
            _ => "worker.actor.optim.lr_scheduler_type=constant",
        };
        let (c, s) = config(&[&st, sched, "worker.actor.optim.lr_warmup_ratio=0.34"])?;
        let (policy, opt) = load(&s)?;
        let straight = run(&c, &s, Start::fresh(), None, policy, opt)?;
        assert_eq!(straight.records.len(), 6);
        let lrs: Vec<f64> = straight.records.iter().map(|r| r.update.lr).collect();
        assert!(
            lrs[0] < lrs[2] && lrs[2] > 0.0,
            "two warm-up steps: {lrs:?}"
        );
        if staleness == "1" {
            assert!(lrs[5] < lrs[3], "cosine decay: {lrs:?}");
        }

        let root = temp(&format!("split-{staleness}"));
        let (c3, s3) = config(&[
            &st,
            sched,
            "worker.actor.optim.lr_warmup_ratio=0.34",
            "trainer.stop_at_step=3",
        ])?;
        let (policy, opt) = load(&s3)?;
        let first = run(
            &c3,
            &s3,
            Start {
                resume: None,
                stop_at_step: 3,
            },
            Some(&root),
            policy,
            opt,
        )?;
        assert_eq!(first.records.len(), 3);
        let latest = std::fs::read_to_string(root.join("latest"))?;
        assert_eq!(latest.trim(), "step_3");
        let state = checkpoint::read_state(&root.join("step_3"))?;
        assert_eq!(state.step, 3);
        assert_eq!(state.data_cursor.samples_consumed, 3);
        // The versions the next steps' rollouts still need: 3 - k .. 3.
        let want_versions: Vec<u64> = match staleness {
            "1" => vec![2],
            "2" => vec![1, 2],
            _ => vec![],
        };
        assert_eq!(state.rollout_versions, want_versions);
        assert!(!state.master_weights, "the fixture is f32: no master copy");

        // The resumed run changes only resumable keys (stop_at_step back to 0).
        let resumed = resume(&c, &s, &root, 0)?;
        assert_eq!(
            bits(&resumed.model)?,
            bits(&straight.model)?,
            "staleness {staleness}: resumed weights differ from the straight run's"
        );
        assert_eq!(
            untimed(&resumed.records),
            untimed(&straight.records),
            "staleness {staleness}: records differ"
        );
        assert_eq!(resumed.val_before, straight.val_before);
        assert!(straight.val_before.is_some());
        assert_eq!(
            resumed.optimizer.state()?,
            straight.optimizer.state()?,
            "optimizer state"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

#[test]
fn changed_config_is_refused_naming_the_keys() -> TestResult {
    let root = temp("fingerprint");
    let (c, s) = config(&["trainer.total_steps=1", "data.val_size=0"])?;
    let (policy, opt) = load(&s)?;
    run(&c, &s, Start::fresh(), Some(&root), policy, opt)?;
    let (c2, s2) = config(&[
        "trainer.total_steps=2",
        "data.val_size=0",
        "worker.actor.optim.lr=0.02",
    ])?;
    let dir = root.join("step_1");
    let (mut policy, mut opt) = load(&s2)?;
    let e = checkpoint::restore(&dir, &c2, GraphKind::ShareGrpo, &mut policy, &mut opt)
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("worker.actor.optim.lr: 0.01 -> 0.02") && e.contains("trainer.total_steps"),
        "{e}"
    );
    let e = checkpoint::restore(&dir, &c, GraphKind::Grpo, &mut policy, &mut opt)
        .err()
        .unwrap_or_default();
    assert!(e.contains("--graph share-grpo"), "{e}");
    std::fs::remove_file(dir.join("optimizer.safetensors"))?;
    assert_eq!(checkpoint::missing(&dir), vec!["optimizer.safetensors"]);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

#[test]
fn save_limit_keeps_the_newest_and_stale_temporaries_are_ignored_then_removed() -> TestResult {
    let root = temp("limit");
    let extra = [
        "trainer.total_steps=4",
        "trainer.save_freq=1",
        "trainer.save_limit=2",
        "data.val_size=0",
    ];
    let (c, s) = config(&extra)?;
    let (policy, opt) = load(&s)?;
    run(
        &c,
        &s,
        Start {
            resume: None,
            stop_at_step: 2,
        },
        Some(&root),
        policy,
        opt,
    )?;
    // A crash while writing step 3: its temporary directory holds a full-looking checkpoint.
    let tmp = root.join(".tmp-step_3");
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(root.join("step_2"))? {
        let p = entry?.path();
        if let Some(name) = p.file_name() {
            std::fs::copy(&p, tmp.join(name))?;
        }
    }
    assert_eq!(checkpoint::latest(&root), Some(root.join("step_2")));
    let out = resume(&c, &s, &root, 0)?;
    assert_eq!(out.records.len(), 4);
    let mut names: Vec<String> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["latest", "step_3", "step_4"]);
    assert_eq!(checkpoint::latest(&root), Some(root.join("step_4")));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

#[test]
fn sft_stop_and_resume_equals_the_straight_run() -> TestResult {
    let sets = |extra: &[&str]| -> Result<(Config, Settings), String> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        common::config(
            GraphKind::Sft,
            &[
                "sft.steps=4",
                "sft.batch_size=2",
                "data.val_size=0",
                "trainer.val_before_train=false",
            ],
            &extra,
        )
    };
    let (c, s) = sets(&[])?;
    let (policy, opt) = load(&s)?;
    let straight = run_dataflow(&s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))?;
    let root = temp("sft");
    let (policy, opt) = load(&s)?;
    let cp = Checkpointer::new(&root, &fixture(), &c, &s)?;
    let start = Start {
        resume: None,
        stop_at_step: 2,
    };
    let first = run_dataflow(
        &s,
        policy,
        opt,
        start,
        |_| {},
        move |st| cp.save(st).map(|_| ()),
    )?;
    assert_eq!(first.records.len(), 2);
    let dir = checkpoint::latest(&root).ok_or("no checkpoint")?;
    let (mut policy, mut opt) = load(&s)?;
    let r = checkpoint::restore(&dir, &c, GraphKind::Sft, &mut policy, &mut opt)?;
    let start = Start {
        resume: Some(r),
        stop_at_step: 0,
    };
    let resumed = run_dataflow(&s, policy, opt, start, |_| {}, |_| Ok(()))?;
    assert_eq!(bits(&resumed.model)?, bits(&straight.model)?);
    assert_eq!(untimed(&resumed.records), untimed(&straight.records));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// The fixture with its weights stored as bf16 (a lossy HF dtype: checkpoints need a master copy).
fn bf16_fixture(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use shareflow_operators::policy::candle::{DType, safetensors};
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(fixture())? {
        let p = entry?.path();
        let Some(name) = p.file_name() else { continue };
        if p.extension().is_some_and(|e| e == "safetensors") {
            let mut ts = safetensors::load(&p, &Device::Cpu)?;
            for t in ts.values_mut() {
                *t = t.to_dtype(DType::BF16)?;
            }
            safetensors::save(&ts, dir.join(name))?;
        } else {
            std::fs::copy(&p, dir.join(name))?;
        }
    }
    Ok(())
}

#[test]
fn lossy_hf_dtype_resumes_exactly_from_the_master_copy() -> TestResult {
    let root = temp("bf16");
    let model = root.join("model");
    bf16_fixture(&model)?;
    let path = format!("worker.actor.model.model_path={}", model.display());
    let (c, s) = config(&["trainer.total_steps=2", "data.val_size=0", &path])?;
    let load_bf16 = || -> Result<(Policy, Optimizer), Box<dyn std::error::Error>> {
        let policy = Policy::load(&model, &Device::Cpu, LoadOptions::default())?;
        let opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
        Ok((policy, opt))
    };
    let (policy, opt) = load_bf16()?;
    let straight = run_dataflow(&s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))?;
    let ckpts = root.join("checkpoints");
    let (policy, opt) = load_bf16()?;
    let cp = Checkpointer::new(&ckpts, &model, &c, &s)?;
    let start = Start {
        resume: None,
        stop_at_step: 1,
    };
    run_dataflow(
        &s,
        policy,
        opt,
        start,
        |_| {},
        move |st| cp.save(st).map(|_| ()),
    )?;
    let dir = checkpoint::latest(&ckpts).ok_or("no checkpoint")?;
    assert!(checkpoint::read_state(&dir)?.master_weights);
    assert!(dir.join("master.safetensors").is_file());
    let (mut policy, mut opt) = load_bf16()?;
    let r = checkpoint::restore(&dir, &c, GraphKind::ShareGrpo, &mut policy, &mut opt)?;
    let start = Start {
        resume: Some(r),
        stop_at_step: 0,
    };
    let resumed = run_dataflow(&s, policy, opt, start, |_| {}, |_| Ok(()))?;
    assert_eq!(bits(&resumed.model)?, bits(&straight.model)?);
    assert_eq!(untimed(&resumed.records), untimed(&straight.records));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
