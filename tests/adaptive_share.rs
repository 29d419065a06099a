//! The adaptive-share graph on the embedded policy: a seed expands to its m variants only when
//! its first variant's n rewards tie, so every step samples between b*n and b*m*n responses in
//! whole seeds' worth, every seed whose rewards all tie was expanded, and the run is reproducible.

use shareflow::graphs::train::{Config, GraphKind, Settings, Start, StepRecord, run_dataflow};
use shareflow::operators::policy::candle::Device;
use shareflow::operators::policy::{LoadOptions, Optimizer, Policy};

const STEPS: usize = 3;
const BATCH: usize = 4;
const M: usize = 2;
const N: usize = 4;

fn run(dir: &std::path::Path) -> anyhow::Result<(Vec<StepRecord>, Vec<u32>)> {
    let config = Config::resolve(
        None,
        &[
            format!("trainer.total_steps={STEPS}"),
            format!("data.rollout_batch_size={BATCH}"),
            format!("worker.rollout.question_num={M}"),
            format!("worker.rollout.n={N}"),
            "data.val_size=0".into(),
            "trainer.val_before_train=false".into(),
            "trainer.val_freq=0".into(),
            format!("worker.actor.model.model_path={}", dir.display()),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let s = Settings::from_config(&config, GraphKind::AdaptiveShare).map_err(anyhow::Error::msg)?;
    let policy = Policy::load(dir, &Device::Cpu, LoadOptions::default())?;
    let opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    let out = run_dataflow(&s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))
        .map_err(anyhow::Error::msg)?;
    let mut bits = Vec::new();
    for (_, t) in out.model.params().tensors() {
        bits.extend(
            t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|x| x.to_bits()),
        );
    }
    Ok((out.records, bits))
}

#[test]
fn seeds_expand_only_when_their_first_rewards_tie() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("shareflow-adaptive-{}", std::process::id()));
    shareflow::embedded::unpack(&dir)?;
    let (records, weights) = run(&dir)?;
    assert_eq!(records.len(), STEPS);
    let mut expanded = 0;
    for r in &records {
        let responses = r.rollout.responses;
        assert!(
            (BATCH * N..=BATCH * M * N).contains(&responses),
            "step {}: {responses} responses",
            r.step
        );
        let extra = responses - BATCH * N;
        assert_eq!(extra % ((M - 1) * N), 0, "step {}: partial seeds", r.step);
        let e = extra / ((M - 1) * N);
        expanded += e;
        // A seed whose rewards all tie had a tied first variant: it was expanded.
        let tied = (r.rollout.tied_fraction * r.rollout.seeds as f64).round() as usize;
        assert_eq!(r.rollout.seeds, BATCH);
        assert!(
            tied <= e,
            "step {}: {tied} tied seeds, {e} expanded",
            r.step
        );
    }
    // Both paths were taken on these seeds: some seeds expanded, some saved their rollouts.
    assert!(
        expanded > 0 && expanded < STEPS * BATCH,
        "{expanded} expanded"
    );
    let (again, weights_again) = run(&dir)?;
    let untimed = |v: &[StepRecord]| -> Vec<StepRecord> {
        v.iter()
            .map(|r| StepRecord {
                rollout_seconds: 0.0,
                update_seconds: 0.0,
                step_seconds: 0.0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(untimed(&records), untimed(&again));
    assert!(
        weights == weights_again,
        "adaptive-share must be reproducible"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
