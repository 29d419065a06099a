//! The training graph against the sequential reference loop over the same functions: with
//! staleness 0 the dataflow (1 and 2 workers, each of the 2 sampling and scoring its own seeds
//! and holding a policy replica that computes half of each mini-batch) ends with exactly the
//! same parameters; staleness 1 is deterministic and equal on 1 and 2 workers; records carry
//! finite losses and the expected metrics.

use shareflow_graphs::train::{
    Config, GraphKind, Settings, Start, StepRecord, run_dataflow, run_sequential,
};
use shareflow_operators::policy::candle::{Device, Tensor};
use shareflow_operators::policy::{LoadOptions, LrDecay, Optimizer, Policy, PolicyModel};
use shareflow_operators::seed_key;
use shareflow_runtime::seed_owner;

mod common;

use common::{TestResult, fixture};
type Params = Vec<(String, Tensor)>;

fn settings(graph: GraphKind, extra: &[&str]) -> Result<Settings, String> {
    let mut sets: Vec<String> = [
        "trainer.total_steps=2",
        "data.rollout_batch_size=2",
        "worker.rollout.n=2",
        "worker.rollout.question_num=2",
        "data.max_response_length=6",
        "data.val_size=0",
        "trainer.val_before_train=false",
        "trainer.val_freq=0",
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
    sets.extend(extra.iter().map(|s| s.to_string()));
    Settings::from_config(&Config::resolve(None, &sets)?, graph)
}

fn load() -> Result<(Policy, (), ()), Box<dyn std::error::Error>> {
    Ok((
        Policy::load(&fixture(), &Device::Cpu, LoadOptions::default())?,
        (),
        (),
    ))
}

fn params(m: &PolicyModel) -> Vec<(String, Tensor)> {
    m.params()
        .tensors()
        .filter_map(|(n, t)| Some((n.to_string(), t.copy().ok()?)))
        .collect()
}

fn max_diff(
    a: &[(String, Tensor)],
    b: &[(String, Tensor)],
) -> Result<f32, Box<dyn std::error::Error>> {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let d = (ta - tb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        worst = worst.max(d);
    }
    Ok(worst)
}

fn dataflow(s: &Settings) -> Result<(Params, Vec<StepRecord>), Box<dyn std::error::Error>> {
    let (policy, _, _) = load()?;
    let opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    let out = run_dataflow(s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))?;
    Ok((params(&out.model), out.records))
}

#[test]
fn staleness_zero_dataflow_equals_the_sequential_loop_on_1_and_2_workers() -> TestResult {
    for graph in [GraphKind::ShareGrpo, GraphKind::Grpo] {
        let s = settings(graph, &[])?;
        let (policy, _, _) = load()?;
        let initial = params(&policy.model);
        let mut opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
        let mut seq_records = Vec::new();
        run_sequential(&s, &policy, &mut opt, |r| seq_records.push(r.clone()))?;
        let seq = params(&policy.model);
        assert!(max_diff(&seq, &initial)? > 0.0, "training changed nothing");

        let (one, records) = dataflow(&s)?;
        assert_eq!(
            max_diff(&one, &seq)?,
            0.0,
            "{graph:?}: 1 worker differs from the sequential loop"
        );
        let s2 = settings(graph, &["trainer.workers=2"])?;
        // Each worker owns one of the step's two seeds: both sample, both score old log-probs.
        let owners: Vec<usize> = (0..s2.batch as u32)
            .map(|b| seed_owner(&seed_key(b), 2))
            .collect();
        assert!(
            owners.contains(&0) && owners.contains(&1),
            "the seeds' owners {owners:?}"
        );
        let (two, _) = dataflow(&s2)?;
        assert_eq!(max_diff(&two, &seq)?, 0.0, "{graph:?}: 2 workers differ");
        // Split placement: worker 1 samples and scores every seed, worker 0 only updates.
        let split = settings(graph, &["trainer.workers=2", "trainer.placement=split"])?;
        let (three, _) = dataflow(&split)?;
        assert_eq!(
            max_diff(&three, &seq)?,
            0.0,
            "{graph:?}: split placement differs"
        );

        assert_eq!(records.len(), 2);
        for (r, q) in records.iter().zip(&seq_records) {
            assert!(r.update.pg_loss.is_finite() && r.update.grad_norm.is_finite());
            assert!(r.update.optimizer_steps >= 1);
            let want = match graph {
                GraphKind::ShareGrpo => 2 * 2 * 2,
                _ => 2 * 4,
            };
            assert_eq!(r.rollout.responses, want, "responses per step");
            assert_eq!(r.rollout.reward_overall, q.rollout.reward_overall);
            assert!((0.0..=1.0).contains(&r.rollout.tied_fraction));
        }
    }
    Ok(())
}

#[test]
fn staleness_one_and_two_sample_versions_behind_and_are_deterministic() -> TestResult {
    let s0 = settings(GraphKind::ShareGrpo, &["trainer.total_steps=3"])?;
    let s1 = settings(
        GraphKind::ShareGrpo,
        &["trainer.total_steps=3", "trainer.max_staleness=1"],
    )?;
    let (a, ra) = dataflow(&s1)?;
    let (b, _) = dataflow(&s1)?;
    assert_eq!(max_diff(&a, &b)?, 0.0, "staleness 1 must be reproducible");
    // Two workers, each holding a policy replica that computes half of every mini-batch's
    // micro-batches, apply the one worker's steps off-policy too (issue 19).
    let s1w2 = settings(
        GraphKind::ShareGrpo,
        &[
            "trainer.total_steps=3",
            "trainer.max_staleness=1",
            "trainer.workers=2",
        ],
    )?;
    let (e, re) = dataflow(&s1w2)?;
    assert_eq!(
        max_diff(&e, &a)?,
        0.0,
        "staleness 1: 2 workers differ from 1"
    );
    for (x, y) in re.iter().zip(&ra) {
        assert_eq!(x.update, y.update, "step {}: update statistics", x.step);
        assert_eq!(x.rollout_version, y.rollout_version);
    }
    let versions: Vec<u64> = ra.iter().map(|r| r.rollout_version).collect();
    assert_eq!(
        versions,
        vec![0, 0, 1],
        "rollout of step t uses version t - 1"
    );
    let s2 = settings(
        GraphKind::ShareGrpo,
        &["trainer.total_steps=4", "trainer.max_staleness=2"],
    )?;
    let (c, rc) = dataflow(&s2)?;
    let (d, _) = dataflow(&s2)?;
    assert_eq!(max_diff(&c, &d)?, 0.0, "staleness 2 must be reproducible");
    let versions: Vec<u64> = rc.iter().map(|r| r.rollout_version).collect();
    assert_eq!(
        versions,
        vec![0, 0, 0, 1],
        "rollout of step t uses version t - 2"
    );
    let (_, r0) = dataflow(&s0)?;
    let versions: Vec<u64> = r0.iter().map(|r| r.rollout_version).collect();
    assert_eq!(
        versions,
        vec![0, 1, 2],
        "on-policy: rollout of step t uses version t"
    );
    Ok(())
}

#[test]
fn kl_loss_to_the_initial_policy_is_zero_at_first_then_changes_training() -> TestResult {
    let kl = [
        "trainer.total_steps=3",
        "algorithm.use_kl_loss=true",
        "algorithm.kl_coef=0.5",
        // One optimizer step per training step (2 seeds x m*m*n = 16 rows).
        "worker.actor.global_batch_size=16",
    ];
    let s = settings(GraphKind::ShareGrpo, &kl)?;
    assert!(s.update.ppo.kl.is_some());
    let (policy, _, _) = load()?;
    let mut opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    let mut seq_records = Vec::new();
    run_sequential(&s, &policy, &mut opt, |r| seq_records.push(r.clone()))?;
    let seq = params(&policy.model);
    let (flow, records) = dataflow(&s)?;
    assert_eq!(
        max_diff(&flow, &seq)?,
        0.0,
        "with a KL loss the dataflow still equals the sequential loop"
    );
    // Step 1's only optimizer step starts from the reference itself: the k3 estimator is 0.
    assert_eq!(records[0].update.kl_loss, 0.0);
    assert!(
        records[2].update.kl_loss > 0.0 && records[2].update.kl_loss.is_finite(),
        "kl_loss at step 3: {}",
        records[2].update.kl_loss
    );
    let plain = settings(GraphKind::ShareGrpo, &kl[..1])?;
    let plain = Settings {
        update: shareflow_operators::rl::UpdateConfig {
            ppo: shareflow_operators::policy::PpoConfig {
                kl: None,
                ..s.update.ppo
            },
            ..s.update.clone()
        },
        ..plain
    };
    let (without, plain_records) = dataflow(&plain)?;
    assert!(plain_records.iter().all(|r| r.update.kl_loss == 0.0));
    assert!(
        max_diff(&flow, &without)? > 0.0,
        "the KL loss must change the update"
    );
    Ok(())
}

/// `trainer.placement=split` needs a worker for the update and one for the seeds.
#[test]
fn split_placement_needs_two_workers() -> TestResult {
    let s = settings(GraphKind::ShareGrpo, &["trainer.placement=split"])?;
    let err = dataflow(&s)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("needs 2 workers"), "{err}");
    assert!(settings(GraphKind::ShareGrpo, &["trainer.placement=apart"]).is_err());
    Ok(())
}

#[test]
fn kl_settings_are_checked() {
    let full = settings(
        GraphKind::ShareGrpo,
        &["algorithm.use_kl_loss=true", "algorithm.kl_penalty=full"],
    );
    assert!(matches!(full, Err(e) if e.contains("logits")));
    let bad = settings(
        GraphKind::ShareGrpo,
        &["algorithm.use_kl_loss=true", "algorithm.kl_penalty=k9"],
    );
    assert!(matches!(bad, Err(e) if e.contains("kl_penalty") && e.contains("low_var_kl")));
}

#[test]
fn the_lr_schedule_warms_up_and_decays_per_step_in_both_loops() -> TestResult {
    let sched = [
        "trainer.total_steps=4",
        "worker.actor.optim.lr_scheduler_type=linear",
        "worker.actor.optim.lr_warmup_ratio=0.5",
        "worker.actor.optim.min_lr_ratio=0.5",
    ];
    let s = settings(GraphKind::Grpo, &sched)?;
    let (_, records) = dataflow(&s)?;
    let lrs: Vec<f64> = records.iter().map(|r| r.update.lr).collect();
    // Two warm-up steps (0.5, 1), then linear from 1 towards 0.5 over the last two.
    let want = [0.005, 0.01, 0.01, 0.0075];
    assert_eq!(lrs.len(), 4);
    for (got, want) in lrs.iter().zip(want) {
        assert!(
            (got - want).abs() < 1e-12,
            "lr per step {lrs:?}, want {want:?}"
        );
    }
    let (policy, _, _) = load()?;
    let mut opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    let mut seq = Vec::new();
    run_sequential(&s, &policy, &mut opt, |r| seq.push(r.update.lr))?;
    assert_eq!(seq, lrs, "the sequential loop follows the same schedule");

    for (bad, needle) in [
        (
            "worker.actor.optim.lr_scheduler_type=step",
            "constant, linear or cosine",
        ),
        ("worker.actor.optim.lr_warmup_ratio=2", "lr_warmup_ratio"),
        ("worker.actor.optim.min_lr_ratio=-1", "min_lr_ratio"),
    ] {
        let e = settings(GraphKind::Grpo, &[bad]).err().unwrap_or_default();
        assert!(e.contains(needle), "{bad}: {e}");
    }

    // The defaults: RL warms up for 5 of 100 steps, then cosine; the SFT graph reads its own
    // keys (constant by default), so the RL schedule never reaches it.
    let schedule = |graph, sets: &[&str]| -> Result<_, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let l = Settings::from_config(&Config::resolve(None, &sets)?, graph)?.lr_schedule;
        Ok((l.decay, l.warmup_steps, l.total_steps))
    };
    assert_eq!(
        schedule(GraphKind::ShareGrpo, &[])?,
        (LrDecay::Cosine, 5, 100)
    );
    assert_eq!(
        schedule(GraphKind::Sft, &["sft.steps=40"])?,
        (LrDecay::Constant, 0, 40)
    );
    assert_eq!(
        schedule(
            GraphKind::Sft,
            &[
                "sft.steps=40",
                "sft.lr_scheduler_type=linear",
                "sft.lr_warmup_ratio=0.1",
                "worker.actor.optim.lr_scheduler_type=constant",
            ]
        )?,
        (LrDecay::Linear, 4, 40)
    );
    let e = schedule(GraphKind::Sft, &["sft.lr_scheduler_type=step"])
        .err()
        .unwrap_or_default();
    assert!(e.contains("`sft.lr_scheduler_type`"), "{e}");
    Ok(())
}
