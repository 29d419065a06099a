//! `shareflow train`: resolve the configuration, load (or unpack the embedded) policy, run the
//! chosen graph with a progress bar, and write the run directory: `config.toml`, `metrics.jsonl`
//! (one line per step), checkpoints under `checkpoints/step_N` (the policy in HF layout plus the
//! optimizer and trainer state for an exact `--resume`), `plot.png` (reward and eval accuracy per
//! step) and `summary.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use shareflow_graphs::train::checkpoint;
use shareflow_graphs::train::steps::evaluate;
use shareflow_graphs::train::{
    Checkpointer, Config, GraphKind, Outcome, Settings, Start, StepRecord, TrainState, run_dataflow,
};
use shareflow_operators::policy::{LoadOptions, Optimizer, Policy, compute_dtype, device_name};

use super::plot::{Plot, Series, save_png};
use shareflow_runtime::ClusterConfig;
use shareflow_runtime::stage::Span;

/// The result of a run, for the final summary.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub summary: Value,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The stages of a timeline in order of first appearance, each with its busy seconds.
fn stage_totals(spans: &[Span]) -> Vec<(String, f64)> {
    let mut totals: Vec<(String, f64)> = Vec::new();
    for s in spans {
        match totals.iter_mut().find(|(n, _)| *n == s.stage) {
            Some((_, t)) => *t += s.end - s.start,
            None => totals.push((s.stage.clone(), s.end - s.start)),
        }
    }
    totals
}

/// Writes the stage threads' busy spans as `timeline.png` (one row per stage, a bar per span)
/// and `trace.json` (Chrome's trace-event format: chrome://tracing or ui.perfetto.dev open it;
/// one track per stage, one slice per span named by its step). Returns each stage's busy seconds.
fn write_timeline(
    spans: &[Span],
    settings: &Settings,
    run_dir: &Path,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let totals = stage_totals(spans);
    if spans.is_empty() {
        return Ok(BTreeMap::new());
    }
    const COLORS: [[u8; 3]; 6] = [
        [38, 139, 210],
        [133, 153, 0],
        [220, 50, 47],
        [181, 137, 0],
        [108, 113, 196],
        [42, 161, 152],
    ];
    let rows = totals.len();
    let series = totals
        .iter()
        .enumerate()
        .map(|(i, (stage, busy))| {
            let y = (rows - i) as f64;
            Series {
                name: format!("{stage} ({busy:.0} s busy)"),
                color: COLORS[i % COLORS.len()],
                points: spans
                    .iter()
                    .filter(|s| s.stage == *stage)
                    .flat_map(|s| [(s.start, y), (s.end.max(s.start + 1e-3), y)])
                    .collect(),
                markers: false,
                segments: true,
            }
        })
        .collect();
    let plot = Plot {
        title: format!(
            "stage busy spans, staleness {} ({})",
            settings.max_staleness, settings.experiment_name
        ),
        x_label: "seconds since the run started".into(),
        y_label: "stage (see legend)".into(),
        y_range: Some((0.0, rows as f64 + 1.5)),
        series,
    };
    save_png(&plot, &run_dir.join("timeline.png"))?;
    let events: Vec<Value> = spans
        .iter()
        .map(|s| {
            let tid = totals.iter().position(|(n, _)| *n == s.stage).unwrap_or(0);
            json!({
                "name": format!("step {}", s.step + 1),
                "cat": s.stage,
                "ph": "X",
                "ts": s.start * 1e6,
                "dur": (s.end - s.start) * 1e6,
                "pid": 0,
                "tid": tid,
                "args": {"step": s.step + 1},
            })
        })
        .chain(totals.iter().enumerate().map(|(tid, (stage, _))| {
            json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": stage}})
        }))
        .collect();
    std::fs::write(
        run_dir.join("trace.json"),
        serde_json::to_string(&json!({ "traceEvents": events }))?,
    )?;
    Ok(totals.into_iter().collect())
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
        "rollout/responses": r.rollout.responses,
        "actor/pg_loss": r.update.pg_loss,
        "actor/pg_clipfrac_higher": r.update.pg_clipfrac_higher,
        "actor/pg_clipfrac_lower": r.update.pg_clipfrac_lower,
        "actor/ppo_kl": r.update.ppo_kl,
        "actor/entropy_loss": r.update.entropy_loss,
        "actor/kl_loss": r.update.kl_loss,
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

/// A note on stderr (which checkpoint a resumed run starts from).
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Which checkpoint to resume from: `--resume auto` takes the one `checkpoints/latest` names
/// (none: a fresh run), `--resume PATH` a `step_N` directory (as given, else relative to the run
/// directory), which must be complete.
fn resume_dir(resume: Option<&str>, run_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let root = run_dir.join("checkpoints");
    match resume {
        None => {
            if run_dir.join("metrics.jsonl").exists() {
                anyhow::bail!(
                    "{}: a run is already there; pass --resume auto to continue it from its \
                     latest checkpoint, set trainer.experiment_name=NEW, or remove the directory",
                    run_dir.display()
                );
            }
            Ok(None)
        }
        Some("auto") => match checkpoint::latest(&root) {
            Some(dir) => {
                note(&format!("resuming from {}", dir.display()));
                Ok(Some(dir))
            }
            None => {
                note(&format!(
                    "--resume auto: no complete checkpoint in {}; starting fresh",
                    root.display()
                ));
                Ok(None)
            }
        },
        Some(path) => {
            // As given, else relative to the run directory (`--resume checkpoints/step_N`).
            let Some(dir) = [PathBuf::from(path), run_dir.join(path)]
                .into_iter()
                .find(|d| d.is_dir())
            else {
                anyhow::bail!(
                    "--resume {path}: not a directory (neither as given nor under {})",
                    run_dir.display()
                );
            };
            let lacks = checkpoint::missing(&dir);
            if !lacks.is_empty() {
                anyhow::bail!(
                    "--resume {path}: not a complete checkpoint; missing: {}",
                    lacks.join(", ")
                );
            }
            note(&format!("resuming from {}", dir.display()));
            Ok(Some(dir))
        }
    }
}

/// The processes of a run (`--processes`, `--process`, `--hostfile`).
#[derive(Debug, Clone)]
pub struct Processes {
    pub count: usize,
    pub index: usize,
    pub hostfile: Option<PathBuf>,
}

impl Default for Processes {
    fn default() -> Self {
        Self {
            count: 1,
            index: 0,
            hostfile: None,
        }
    }
}

/// Loads the policy on `trainer.device` in `trainer.dtype` (trainable or not), with the run's
/// image backend; and where it went, for the summary.
fn open_policy(
    settings: &Settings,
    mdir: &Path,
    trainable: bool,
) -> anyhow::Result<(Policy, Value)> {
    let device = settings
        .device
        .open()
        .map_err(|e| anyhow::anyhow!("`trainer.device`: {e}"))?;
    let dtype = compute_dtype(&settings.dtype, &device)
        .map_err(|e| anyhow::anyhow!("`trainer.dtype`: {e}"))?;
    let placement =
        json!({"device": device_name(&device), "dtype": format!("{dtype:?}").to_lowercase()});
    tracing::info!("policy on {placement}");
    let opts = LoadOptions {
        trainable,
        freeze_vision: settings.freeze_vision,
        compute_dtype: dtype,
    };
    let mut policy = Policy::load(mdir, &device, opts)
        .map_err(|e| anyhow::anyhow!("loading the policy from {}: {e}", mdir.display()))?;
    policy.processor.set_image_backend(settings.image_backend);
    Ok((policy, placement))
}

/// A process other than 0 of a multi-process run: loads the policy (the embedded one into a
/// directory of its own, not the run directory) and, with `--resume`, the checkpoint process 0
/// resumes from (read only: on another machine the run directory must be copied there first),
/// then trains its replicas in step with process 0's. It writes nothing to the run directory:
/// process 0 owns checkpoints, metrics and progress.
fn follow(
    config: &Config,
    settings: &Settings,
    graph: GraphKind,
    resume: Option<&str>,
) -> anyhow::Result<RunSummary> {
    let run_dir = Path::new(&settings.output_dir).join(&settings.experiment_name);
    let from = match resume {
        None => None,
        Some(_) => resume_dir(resume, &run_dir)?,
    };
    let mdir = if settings.model_path == "embedded" {
        let dir = std::env::temp_dir().join(format!(
            "shareflow-embedded-process-{}-{}",
            settings.process,
            std::process::id()
        ));
        crate::embedded::unpack(&dir)?;
        dir
    } else {
        PathBuf::from(&settings.model_path)
    };
    let (mut policy, placement) = open_policy(settings, &mdir, true)?;
    let mut optimizer = Optimizer::new(policy.model.trainable_vars(), settings.optim)?;
    let stop_at_step = config
        .usize("trainer.stop_at_step")
        .map_err(anyhow::Error::msg)? as u64;
    let resume = match &from {
        Some(dir) => Some(
            checkpoint::restore(dir, config, graph, &mut policy, &mut optimizer)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let start = Start {
        resume,
        stop_at_step,
    };
    let outcome = run_dataflow(settings, policy, optimizer, start, |_| {}, |_| Ok(()));
    if settings.model_path == "embedded" {
        let _ = std::fs::remove_dir_all(&mdir);
    }
    let outcome = outcome.map_err(anyhow::Error::msg)?;
    Ok(RunSummary {
        run_dir,
        summary: json!({
            "process": settings.process,
            "processes": settings.processes,
            "policy": placement,
            "update_busy_seconds": outcome.update_busy,
            "wall_seconds": outcome.wall,
        }),
    })
}

/// Runs `shareflow train`. `resume`: `auto` or a checkpoint directory (see `resume_dir`).
/// With several processes, process 0 does everything a single process does; the others
/// ([`follow`]) train their replicas and write nothing.
pub fn train(
    config_file: Option<&Path>,
    sets: &[String],
    graph: GraphKind,
    quiet: bool,
    resume: Option<&str>,
    processes: &Processes,
) -> anyhow::Result<RunSummary> {
    let config = Config::resolve(config_file, sets).map_err(anyhow::Error::msg)?;
    let mut settings = Settings::from_config(&config, graph).map_err(anyhow::Error::msg)?;
    settings.processes = processes.count;
    settings.process = processes.index;
    settings.hostfile = processes.hostfile.clone();
    // Checks the process flags and reads the hostfile before anything is written.
    ClusterConfig {
        workers: settings.workers,
        processes: settings.processes,
        process: settings.process,
        hostfile: settings.hostfile.clone(),
    }
    .timely_config()
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if settings.processes > 1
        && config
            .bool("trainer.val_only")
            .map_err(anyhow::Error::msg)?
    {
        anyhow::bail!("trainer.val_only runs in one process: drop --processes");
    }
    if settings.process > 0 {
        return follow(&config, &settings, graph, resume);
    }
    for (name, src) in [("train", &settings.train_data), ("val", &settings.val_data)] {
        if !src.skipped().is_empty() {
            tracing::warn!(
                "{name} data {}: skipped {} bad rows (data.on_bad_row = skip); see summary.json",
                src.spec(),
                src.skipped().len()
            );
        }
    }
    let run_dir = Path::new(&settings.output_dir).join(&settings.experiment_name);
    let from = resume_dir(resume, &run_dir)?;
    let stop_at_step = config
        .usize("trainer.stop_at_step")
        .map_err(anyhow::Error::msg)? as u64;
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", run_dir.display()))?;
    std::fs::write(run_dir.join("config.toml"), config.to_toml())?;
    let mdir = model_dir(&settings.model_path, &run_dir)?;
    let val_only = config
        .bool("trainer.val_only")
        .map_err(anyhow::Error::msg)?;
    let (mut policy, placement) = open_policy(&settings, &mdir, !val_only)?;
    if val_only {
        return validate_only(&settings, graph, &policy, &mdir, run_dir, resume.is_some());
    }
    let mut optimizer = Optimizer::new(policy.model.trainable_vars(), settings.optim)?;
    let ckpt_root = run_dir.join("checkpoints");
    let metrics_path = run_dir.join("metrics.jsonl");
    let start = match &from {
        Some(dir) => {
            checkpoint::read_state(dir)
                .and_then(|st| st.data_cursor.check(&settings.train_data))
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            let r = checkpoint::restore(dir, &config, graph, &mut policy, &mut optimizer)
                .map_err(anyhow::Error::msg)?;
            // The run's metrics are the checkpoint's: lines written after it are dropped.
            std::fs::copy(dir.join("metrics.jsonl"), &metrics_path)?;
            if ckpt_root.is_dir() {
                checkpoint::prune(&ckpt_root, 0).map_err(anyhow::Error::msg)?;
            }
            Start {
                resume: Some(r),
                stop_at_step,
            }
        }
        None => {
            std::fs::File::create(&metrics_path)?;
            Start {
                resume: None,
                stop_at_step,
            }
        }
    };
    let first_step = start.first_step();
    let end_step = start.end(settings.steps as u64);
    if first_step >= end_step {
        note(&format!(
            "{} steps done already (trainer.total_steps = {}, trainer.stop_at_step = \
             {stop_at_step}): no step to run",
            first_step, settings.steps
        ));
    }
    let metrics = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)?,
    ));
    let events = if config
        .bool("trainer.tensorboard")
        .map_err(anyhow::Error::msg)?
    {
        let mut w = super::tensorboard::EventWriter::create(&run_dir, super::tensorboard::now())
            .map_err(|e| {
                anyhow::anyhow!("{}: cannot write an event file: {e}", run_dir.display())
            })?;
        // Every attempt starts a session: TensorBoard ignores the first START of a run
        // directory and, on a later one (a resume), drops the earlier attempts' steps from it on.
        w.session_start(first_step + 1, super::tensorboard::now())?;
        Some(Arc::new(Mutex::new(w)))
    } else {
        None
    };
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(settings.steps as u64)
    };
    bar.set_position(first_step);
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
        if let Some(w) = &events
            && let Ok(mut w) = w.lock()
        {
            let scalars = super::tensorboard::scalars_of(&line);
            if let Err(e) = w.scalars(r.step + 1, super::tensorboard::now(), &scalars) {
                tracing::warn!("{}: {e}", w.path().display());
            }
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
    let writer = Checkpointer::new(&ckpt_root, &mdir, &config, &settings)
        .map_err(anyhow::Error::msg)?
        .with_metrics_line(|r| metrics_line(r).to_string());
    let on_save = move |st: &TrainState<'_>| -> Result<(), String> { writer.save(st).map(|_| ()) };
    let outcome: Outcome = run_dataflow(&settings, policy, optimizer, start, on_record, on_save)
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
        segments: false,
    }];
    if graph != GraphKind::Sft {
        series.insert(
            0,
            Series {
                name: "train accuracy".into(),
                color: [38, 139, 210],
                points: accuracy,
                markers: false,
                segments: false,
            },
        );
        series.insert(
            0,
            Series {
                name: "train reward".into(),
                color: [133, 153, 0],
                points: reward,
                markers: false,
                segments: false,
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
    let stage_busy = write_timeline(&outcome.timeline, &settings, &run_dir)?;

    let val_after = outcome.records.last().and_then(|r| r.val_accuracy);
    let busy_rollout = outcome.rollout_busy;
    let busy_update = outcome.update_busy;
    let busy_old = outcome.old_log_prob_busy;
    let sum_busy = busy_rollout + busy_update + busy_old;
    let summary = json!({
        "graph": graph.name(),
        "data": {
            "train": settings.train_data.spec(),
            "train_rows": settings.train_data.len(),
            "train_skipped_rows": settings.train_data.skipped(),
            "val": settings.val_data.spec(),
            "val_rows": settings.val_data.len(),
            "val_skipped_rows": settings.val_data.skipped(),
        },
        "steps": outcome.records.len(),
        "resumed_from_step": from.as_ref().map(|_| first_step),
        "max_staleness": settings.max_staleness,
        "policy_placement": placement,
        "eval_accuracy_before": outcome.val_before.map(|v| v.0),
        "eval_accuracy_after": val_after,
        "final_train_reward": outcome.records.last().map(|r| r.rollout.reward_overall),
        "wall_seconds": outcome.wall,
        "rollout_busy_seconds": busy_rollout,
        "update_busy_seconds": busy_update,
        "old_log_prob_busy_seconds": busy_old,
        // Busy seconds of every stage thread (update includes eval and checkpoints), from the
        // timeline; and the wall time over the slowest stage's (1.0: the slowest stage never
        // waited) and over their sum (1.0: fully serial; lower: the stages overlapped).
        "stage_busy_seconds": stage_busy,
        "wall_over_slowest_stage": ratio(outcome.wall, stage_busy.values().copied().fold(0.0, f64::max)),
        "wall_over_stage_busy_sum": ratio(outcome.wall, stage_busy.values().sum::<f64>()),
        "timeline": (!outcome.timeline.is_empty()).then(|| run_dir.join("timeline.png")),
        "trace": (!outcome.timeline.is_empty()).then(|| run_dir.join("trace.json")),
        // 1.0: stages fully serial (wall = sum of busy times); closer to the slowest stage's
        // share means they overlapped.
        "wall_over_busy_sum": if sum_busy > 0.0 { outcome.wall / sum_busy } else { 0.0 },
        "slowest_stage_over_wall": if outcome.wall > 0.0 { busy_rollout.max(busy_update).max(busy_old) / outcome.wall } else { 0.0 },
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

/// `trainer.val_only`: evaluates the loaded policy on the validation questions (the same
/// evaluation as before and after training) and writes `summary.json`.
fn validate_only(
    settings: &Settings,
    graph: GraphKind,
    policy: &Policy,
    model_dir: &Path,
    run_dir: PathBuf,
    resuming: bool,
) -> anyhow::Result<RunSummary> {
    if resuming {
        anyhow::bail!("trainer.val_only evaluates worker.actor.model.model_path; drop --resume");
    }
    let t0 = std::time::Instant::now();
    let Some((accuracy, reward)) = evaluate(settings, &policy.model, &policy.processor)? else {
        anyhow::bail!(
            "trainer.val_only: no validation questions (data.val_size = {}, data.val_files = \
             {})",
            settings.val_size,
            settings.val_data.spec()
        );
    };
    let summary = json!({
        "graph": graph.name(),
        "val_only": true,
        "model": model_dir,
        "data": {
            "val": settings.val_data.spec(),
            "val_rows": settings.val_data.len(),
            "val_skipped_rows": settings.val_data.skipped(),
        },
        "val_questions": settings.val_questions(),
        "val_n": settings.val_n,
        "eval_accuracy": accuracy,
        "eval_reward": reward,
        "wall_seconds": t0.elapsed().as_secs_f64(),
    });
    std::fs::write(
        run_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(RunSummary { run_dir, summary })
}
