//! The dapo graph on the embedded policy against GRPO's own rollouts: at step 0 both sample the
//! same questions with the same policy and random streams (one question's responses per batch in
//! both), so dapo must train on exactly min(keep, the questions GRPO saw not all tied), none of
//! them tied, n responses each; and with two rounds, it samples the second round's questions
//! exactly when the first left fewer than keep informative ones.

use shareflow::graphs::train::{Config, GraphKind, Settings, Start, StepRecord, run_dataflow};
use shareflow::operators::policy::candle::Device;
use shareflow::operators::policy::{LoadOptions, Optimizer, Policy};

const GEN: usize = 8;

fn settings(dir: &std::path::Path, graph: GraphKind, extra: &[String]) -> anyhow::Result<Settings> {
    let mut sets = vec![
        "trainer.total_steps=1".to_string(),
        "worker.rollout.question_num=1".into(),
        "worker.rollout.n=4".into(),
        "data.val_size=0".into(),
        "trainer.val_before_train=false".into(),
        "trainer.val_freq=0".into(),
        format!("worker.actor.model.model_path={}", dir.display()),
    ];
    sets.extend(extra.iter().cloned());
    let config = Config::resolve(None, &sets).map_err(anyhow::Error::msg)?;
    Settings::from_config(&config, graph).map_err(anyhow::Error::msg)
}

fn run(dir: &std::path::Path, s: &Settings) -> anyhow::Result<Vec<StepRecord>> {
    let policy = Policy::load(dir, &Device::Cpu, LoadOptions::default())?;
    let opt = Optimizer::new(policy.model.trainable_vars(), s.optim)?;
    Ok(
        run_dataflow(s, policy, opt, Start::fresh(), |_| {}, |_| Ok(()))
            .map_err(anyhow::Error::msg)?
            .records,
    )
}

#[test]
fn dapo_trains_the_first_questions_whose_rewards_differ() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("shareflow-dapo-{}", std::process::id()));
    shareflow::embedded::unpack(&dir)?;
    let grpo = run(
        &dir,
        &settings(
            &dir,
            GraphKind::Grpo,
            &[format!("data.rollout_batch_size={GEN}")],
        )?,
    )?;
    let tied = (grpo[0].rollout.tied_fraction * GEN as f64).round() as usize;
    // These questions exercise both the filter and the trim.
    assert!(tied > 0 && GEN - tied > 1, "{tied} of {GEN} tied");
    // keep = 1 trims the informative questions; keep = GEN keeps them all.
    for keep in [1, GEN] {
        let dapo_settings = settings(
            &dir,
            GraphKind::Dapo,
            &[
                format!("data.rollout_batch_size={keep}"),
                format!("data.gen_batch_size={GEN}"),
                "algorithm.filter_groups.max_num_gen_batches=1".into(),
            ],
        )?;
        assert_eq!((dapo_settings.batch, dapo_settings.keep), (GEN, keep));
        let dapo = run(&dir, &dapo_settings)?;
        let r = &dapo[0].rollout;
        assert_eq!(
            r.seeds,
            keep.min(GEN - tied),
            "keep {keep}: GRPO saw {tied} of {GEN} tied"
        );
        assert_eq!(r.tied_fraction, 0.0, "keep {keep}");
        assert_eq!(r.responses, r.seeds * 4);
        // Every sampled response was generated, trained on or not.
        assert_eq!(dapo[0].generated_tokens, grpo[0].generated_tokens);
    }

    // Two rounds: GRPO on the step's 2 * GEN positions samples what both rounds would.
    let grpo2 = run(
        &dir,
        &settings(
            &dir,
            GraphKind::Grpo,
            &[format!("data.rollout_batch_size={}", 2 * GEN)],
        )?,
    )?;
    let tied2 = (grpo2[0].rollout.tied_fraction * (2 * GEN) as f64).round() as usize;
    // The second round adds informative questions.
    assert!(2 * GEN - tied2 > GEN - tied, "{tied2} of {} tied", 2 * GEN);
    for (keep, refills) in [(1, false), (GEN, true)] {
        let dapo_settings = settings(
            &dir,
            GraphKind::Dapo,
            &[
                format!("data.rollout_batch_size={keep}"),
                format!("data.gen_batch_size={GEN}"),
                "algorithm.filter_groups.max_num_gen_batches=2".into(),
            ],
        )?;
        assert_eq!(
            (dapo_settings.batch, dapo_settings.gen_rounds),
            (2 * GEN, 2)
        );
        let dapo = run(&dir, &dapo_settings)?;
        let r = &dapo[0].rollout;
        // keep = 1: the first round has informative questions; no second round is sampled.
        // keep = GEN: the first round has too few; the second is sampled, and the first GEN
        // informative questions of both are trained on.
        let (seeds, tokens) = if refills {
            (keep.min(2 * GEN - tied2), grpo2[0].generated_tokens)
        } else {
            (keep.min(GEN - tied), grpo[0].generated_tokens)
        };
        assert_eq!(r.seeds, seeds, "keep {keep}");
        assert_eq!(r.tied_fraction, 0.0, "keep {keep}");
        assert_eq!(dapo[0].generated_tokens, tokens, "keep {keep}");
    }

    let e = settings(
        &dir,
        GraphKind::Dapo,
        &[
            "data.rollout_batch_size=4".into(),
            "data.gen_batch_size=2".into(),
        ],
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("data.gen_batch_size"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
