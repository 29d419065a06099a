//! `shareflow train`: resolve the configuration, load (or unpack the embedded) policy, run the
//! chosen graph with a progress bar, and write the run directory: `config.toml`, `metrics.jsonl`
//! (one line per step), checkpoints in HF layout under `checkpoints/step_N`, `plot.png` (reward
//! and eval accuracy per step) and `summary.json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use shareflow_graphs::train::{
    Config, GraphKind, Outcome, Settings, StepRecord, run_dataflow, run_sft,
};
use shareflow_operators::policy::candle::Device;
use shareflow_operators::policy::{LoadOptions, Optimizer, Policy, PolicyModel};

use super::plot::{Plot, Series, save_png};

/// The result of a run, for the final summary.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub summary: Value,
}

/// One metrics line, with the reference's metric names.
pub fn metrics_line(r: &StepRecord) -> Value {
    let mut m = json!({
        "step": r.step + 1,
        "policy_version": r.policy_version,
        "reward/overall": r.rollout.reward_overall,
        "reward/format": r.rollout.reward_format,
        "reward/accuracy": r.rollout.reward_accuracy,
        "response_length/mean": r.rollout.response_length,
        "advantage/tied_fraction": r.rollout.tied_fraction,
        "actor/pg_loss": r.update.pg_loss,
        "actor/pg_clipfrac_higher": r.update.pg_clipfrac_higher,
        "actor/pg_clipfrac_lower": r.update.pg_clipfrac_lower,
        "actor/ppo_kl": r.update.ppo_kl,
        "actor/entropy_loss": r.update.entropy_loss,
        "actor/grad_norm": r.update.grad_norm,
        "actor/lr": r.update.lr,
        "actor/optimizer_steps": r.update.optimizer_steps,
        "actor/skipped_steps": r.update.skipped_steps,
        "timing/rollout_s": r.rollout_seconds,
        "timing/update_s": r.update_seconds,
        "timing/step_s": r.step_seconds,
        "throughput/generated_tokens": r.generated_tokens,
        "throughput/tokens_per_s": if r.rollout_seconds > 0.0 { r.generated_tokens as f64 / r.rollout_seconds } else { 0.0 },
    });
    if let (Some(a), Some(rw), Some(obj)) = (r.val_accuracy, r.val_reward, m.as_object_mut()) {
        obj.insert("val/accuracy".into(), json!(a));
        obj.insert("val/reward".into(), json!(rw));
    }
    m
}

/// Resolves `worker.actor.model.model_path` (`embedded` unpacks the shipped checkpoint into the
/// run directory).
fn model_dir(path: &str, run_dir: &Path) -> anyhow::Result<PathBuf> {
    if path == "embedded" {
        let dir = run_dir.join("embedded-model");
        crate::embedded::unpack(&dir)?;
        return Ok(dir);
    }
    Ok(PathBuf::from(path))
}

/// Runs `shareflow train`.
pub fn train(
    config_file: Option<&Path>,
    sets: &[String],
    graph: GraphKind,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    let config = Config::resolve(config_file, sets).map_err(anyhow::Error::msg)?;
    let settings = Settings::from_config(&config, graph).map_err(anyhow::Error::msg)?;
    let run_dir = Path::new(&settings.output_dir).join(&settings.experiment_name);
    if run_dir.join("metrics.jsonl").exists() {
        anyhow::bail!(
            "{}: a run is already there; set trainer.experiment_name=NEW or remove the directory",
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", run_dir.display()))?;
    std::fs::write(run_dir.join("config.toml"), config.to_toml())?;
    let mdir = model_dir(&settings.model_path, &run_dir)?;
    let opts = LoadOptions {
        trainable: true,
        freeze_vision: settings.freeze_vision,
    };
    let policy = Policy::load(&mdir, &Device::Cpu, opts)
        .map_err(|e| anyhow::anyhow!("loading the policy from {}: {e}", mdir.display()))?;
    let optimizer = Optimizer::new(policy.model.trainable_vars(), settings.optim)?;

    let metrics_path = run_dir.join("metrics.jsonl");
    let metrics = Arc::new(Mutex::new(std::fs::File::create(&metrics_path)?));
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(settings.steps as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps  {msg}  ({elapsed} elapsed, ~{eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(graph.name());
    let bar2 = bar.clone();
    let sink = Arc::clone(&metrics);
    let on_record = move |r: &StepRecord| {
        let line = metrics_line(r);
        if let Ok(mut f) = sink.lock() {
            let _ = writeln!(f, "{line}");
        }
        let val = r
            .val_accuracy
            .map(|a| format!("  eval acc {a:.3}"))
            .unwrap_or_default();
        if graph == GraphKind::Sft {
            bar2.set_message(format!(
                "nll {:.3}  {:.2}s/step{val}",
                r.update.pg_loss, r.step_seconds
            ));
        } else {
            bar2.set_message(format!(
                "reward {:.3}  acc {:.3}  {:.2}s/step{val}",
                r.rollout.reward_overall, r.rollout.reward_accuracy, r.step_seconds
            ));
        }
        bar2.inc(1);
    };
    let ckpt_root = run_dir.join("checkpoints");
    let src = mdir.clone();
    let on_save = move |step: u64, model: &PolicyModel| -> Result<(), String> {
        std::fs::create_dir_all(&ckpt_root).map_err(|e| e.to_string())?;
        let out = ckpt_root.join(format!("step_{step}"));
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(|e| e.to_string())?;
        }
        model.save(&src, &out).map_err(|e| e.to_string())
    };
    let outcome: Outcome = match graph {
        GraphKind::Sft => run_sft(&settings, policy, optimizer, on_record, on_save),
        _ => run_dataflow(&settings, policy, optimizer, on_record, on_save),
    }
    .map_err(anyhow::Error::msg)?;
    bar.finish();

    // Plot.
    let reward: Vec<(f64, f64)> = outcome
        .records
        .iter()
        .map(|r| ((r.step + 1) as f64, r.rollout.reward_overall))
        .collect();
    let accuracy: Vec<(f64, f64)> = outcome
        .records
        .iter()
        .map(|r| ((r.step + 1) as f64, r.rollout.reward_accuracy))
        .collect();
    let mut val: Vec<(f64, f64)> = outcome
        .val_before
        .map(|(a, _)| (0.0, a))
        .into_iter()
        .collect();
    val.extend(
        outcome
            .records
            .iter()
            .filter_map(|r| r.val_accuracy.map(|a| ((r.step + 1) as f64, a))),
    );
    let mut series = vec![Series {
        name: "eval accuracy".into(),
        color: [220, 50, 47],
        points: val.clone(),
        markers: true,
    }];
    if graph != GraphKind::Sft {
        series.insert(
            0,
            Series {
                name: "train accuracy".into(),
                color: [38, 139, 210],
                points: accuracy,
                markers: false,
            },
        );
        series.insert(
            0,
            Series {
                name: "train reward".into(),
                color: [133, 153, 0],
                points: reward,
                markers: false,
            },
        );
    }
    let plot = Plot {
        title: format!("{} ({})", settings.experiment_name, graph.name()),
        x_label: "step".into(),
        y_label: "reward / accuracy".into(),
        y_range: Some((0.0, 1.0)),
        series,
    };
    save_png(&plot, &run_dir.join("plot.png"))?;

    let val_after = outcome.records.last().and_then(|r| r.val_accuracy);
    let busy_rollout = outcome.rollout_busy;
    let busy_update = outcome.update_busy;
    let sum_busy = busy_rollout + busy_update;
    let summary = json!({
        "graph": graph.name(),
        "steps": outcome.records.len(),
        "max_staleness": settings.max_staleness,
        "eval_accuracy_before": outcome.val_before.map(|v| v.0),
        "eval_accuracy_after": val_after,
        "final_train_reward": outcome.records.last().map(|r| r.rollout.reward_overall),
        "wall_seconds": outcome.wall,
        "rollout_busy_seconds": busy_rollout,
        "update_busy_seconds": busy_update,
        // 1.0: stages fully serial (wall = sum of busy times); closer to the slowest stage's
        // share means they overlapped.
        "wall_over_busy_sum": if sum_busy > 0.0 { outcome.wall / sum_busy } else { 0.0 },
        "slowest_stage_over_wall": if outcome.wall > 0.0 { busy_rollout.max(busy_update) / outcome.wall } else { 0.0 },
        "checkpoint": run_dir.join("checkpoints").join(format!("step_{}", outcome.records.len())),
        "metrics": metrics_path,
        "plot": run_dir.join("plot.png"),
    });
    std::fs::write(
        run_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(RunSummary { run_dir, summary })
}
