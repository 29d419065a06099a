//! Exact checkpoints of a training run and resuming from them.
//!
//! A checkpoint of step N (N steps done) is a directory `<run_dir>/checkpoints/step_N/`:
//!
//! ```text
//! config.json, tokenizer.json, ...   the policy in Hugging Face layout (the source's dtype)
//! model.safetensors                  (or shards + index), loadable by `shareflow generate`
//! master.safetensors                 f32 trainable weights, only when the HF dtype is lossy
//! optimizer.safetensors              `<param>.exp_avg`, `<param>.exp_avg_sq` (f32); per-parameter
//!                                    steps, lr and the step count in the metadata
//! rollout_version_V.safetensors      f32 trainable weights of the older policy versions the
//!                                    rollout still needs (max_staleness > 0)
//! records.jsonl                      the step records up to N (exact, for `Outcome::records`)
//! metrics.jsonl                      the run's metrics lines up to N
//! trainer_state.json                 step, graph, seed, data cursor, val_before, config fingerprint
//! ```
//!
//! Every random stream derives from `(trainer.seed, step, ...)` and the questions of step t are a
//! function of t, so these files are the whole training state: a resumed run continues
//! bit-identically (weights, optimizer, records except timings).
//!
//! Writing is atomic: files go to `checkpoints/.tmp-step_N` (fsynced), which is renamed to
//! `step_N`; then `checkpoints/latest` (a text file holding `step_N`) is replaced through a
//! temporary file. A crash leaves at worst a `.tmp-*` directory, which is ignored and removed by
//! the next save.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shareflow_operators::policy::candle::{DType, Tensor};
use shareflow_operators::policy::{
    OptimState, Optimizer, ParamStore, Policy, PolicyModel, VarState,
};

use super::config::Config;
use super::steps::{GraphKind, Settings, StepRecord};

/// The file in the checkpoints directory naming the newest complete checkpoint.
pub const LATEST: &str = "latest";
/// The trainer state file of a checkpoint.
pub const TRAINER_STATE: &str = "trainer_state.json";
/// Test hook: when this environment variable holds a number of milliseconds, the checkpoint
/// writer sleeps that long after writing a checkpoint's files and before renaming its temporary
/// directory into place (so a test can kill the process mid-save).
pub const FAULT_PAUSE_ENV: &str = "SHAREFLOW_FAULT_CHECKPOINT_PAUSE_MS";

/// Keys that may differ between a checkpoint's run and the run resuming from it; every other
/// key is part of the config fingerprint and must match.
pub const RESUMABLE_KEYS: &[&str] = &[
    "trainer.total_steps",
    "sft.steps",
    "trainer.val_before_train",
    "trainer.save_freq",
    "trainer.save_limit",
    "trainer.experiment_name",
    "trainer.output_dir",
    "trainer.stop_at_step",
    "trainer.val_freq",
    // A run may move between machines (the weights are the same numbers; a resumed run then
    // matches a straight one to the devices' rounding, bitwise only on the same device).
    "trainer.device",
    "trainer.tensorboard",
    // Data parallelism and placement do not change a single bit of the results.
    "trainer.workers",
    "trainer.placement",
];

const OPTIM_META: &str = "shareflow.optimizer";

/// The training state at a save point, as the update loop hands it to `on_save`.
#[derive(Debug)]
pub struct TrainState<'a> {
    /// Steps done (the checkpoint is `step_{step}`); also the policy version of `model`.
    pub step: u64,
    /// The live policy after `step` updates.
    pub model: &'a PolicyModel,
    pub optimizer: &'a Optimizer,
    /// Older policy versions the rollout of the next steps still needs (staleness > 0), oldest
    /// first; each has its version set.
    pub rollout_versions: Vec<&'a PolicyModel>,
    /// The records of steps `0..step`.
    pub records: &'a [StepRecord],
    pub val_before: Option<(f64, f64)>,
}

/// State restored from a checkpoint (see [`restore`]): the run continues at step `step`.
#[derive(Debug, Clone)]
pub struct Resume {
    /// Steps already done.
    pub step: u64,
    /// Older policy versions the rollout still needs, oldest first (versions set).
    pub rollout_versions: Vec<PolicyModel>,
    /// The records of steps `0..step`.
    pub records: Vec<StepRecord>,
    pub val_before: Option<(f64, f64)>,
}

/// Where a run starts and where it stops.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Continue from a restored state (`None`: a fresh run from step 0).
    pub resume: Option<Resume>,
    /// Stop (saving a checkpoint) once this many steps are done; 0 runs to `Settings::steps`.
    pub stop_at_step: u64,
}

impl Start {
    /// A fresh run to the end.
    pub fn fresh() -> Self {
        Self::default()
    }

    /// The first step to run.
    pub fn first_step(&self) -> u64 {
        self.resume.as_ref().map_or(0, |r| r.step)
    }

    /// One past the last step to run, for a run of `steps` steps (at least the first step).
    pub fn end(&self, steps: u64) -> u64 {
        let end = match self.stop_at_step {
            0 => steps,
            s => s.min(steps),
        };
        end.max(self.first_step())
    }

    /// What a graph needs to run `steps` steps from here: the first step, one past the last,
    /// the records restored (empty for a fresh run) and the restored state.
    pub fn plan(self, steps: u64) -> (u64, u64, Vec<StepRecord>, Option<Resume>) {
        let first = self.first_step();
        let end = self.end(steps);
        let restored = self
            .resume
            .as_ref()
            .map(|r| r.records.clone())
            .unwrap_or_default();
        (first, end, restored, self.resume)
    }
}

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Layout version of the checkpoint (1).
    pub format: u32,
    /// Steps done.
    pub step: u64,
    pub policy_version: u64,
    pub graph: String,
    pub seed: u64,
    pub data_cursor: DataCursor,
    /// How the random streams are restored (they are not stored: they derive from seed and step).
    pub rng: String,
    pub val_before: Option<(f64, f64)>,
    /// Whether `master.safetensors` holds the f32 trainable weights (HF dtype lossy).
    pub master_weights: bool,
    /// The policy versions with a `rollout_version_V.safetensors`.
    pub rollout_versions: Vec<u64>,
    pub max_staleness: usize,
    /// The config fingerprint: the resolved configuration, one `key = value` per line, without
    /// [`RESUMABLE_KEYS`].
    pub config: String,
}

/// Position in the (deterministic) stream of training questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataCursor {
    pub samples_consumed: u64,
    pub step: u64,
    /// The training source (`shapes@train` or the dataset spec).
    #[serde(default)]
    pub source: String,
    /// For a dataset: completed passes and the position in the current one (the next seed is
    /// row `order(epoch)[offset]`); `None` for the unbounded embedded task.
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
    /// Rows in the dataset when the checkpoint was written (`None`: the embedded task).
    #[serde(default)]
    pub rows: Option<u64>,
}

impl DataCursor {
    /// Refuses to resume on a dataset that is not the one the checkpoint read (another source
    /// or another number of rows would change the order of the remaining seeds).
    pub fn check(&self, now: &super::data::SeedSource) -> Result<(), String> {
        if self.source.is_empty() {
            return Ok(());
        }
        if self.source != now.spec() || self.rows != now.len() {
            return Err(format!(
                "the checkpoint read {} ({} rows), this run reads {} ({} rows): resuming would \
                 not continue the same sequence of questions; restore the dataset or start a \
                 new run",
                self.source,
                self.rows.map_or("unbounded".into(), |r| r.to_string()),
                now.spec(),
                now.len().map_or("unbounded".into(), |r| r.to_string()),
            ));
        }
        Ok(())
    }
}

/// The step-count keys, each with the prefix of the learning-rate schedule keys that depend on
/// it: under a schedule other than constant without warm-up the count stays in the fingerprint,
/// so a run cannot be extended (its remaining learning rates would change).
const STEP_COUNT_KEYS: &[(&str, &str)] = &[
    ("trainer.total_steps", "worker.actor.optim."),
    ("sft.steps", "sft."),
];

/// Whether the learning-rate schedule under `prefix` depends on the step count.
fn scheduled(config: &Config, prefix: &str) -> bool {
    config
        .str(&format!("{prefix}lr_scheduler_type"))
        .is_ok_and(|v| v != "constant")
        || config
            .float(&format!("{prefix}lr_warmup_ratio"))
            .is_ok_and(|r| r != 0.0)
}

/// The config fingerprint: every resolved key but [`RESUMABLE_KEYS`] (keeping a step count when
/// its learning-rate schedule depends on it), `key = value` per line, sorted (valid TOML with
/// dotted keys).
pub fn fingerprint(config: &Config) -> String {
    let table: toml::Table = toml::from_str(&config.to_toml()).unwrap_or_default();
    let mut flat = BTreeMap::new();
    flatten("", &table, &mut flat);
    let kept: Vec<&str> = STEP_COUNT_KEYS
        .iter()
        .filter(|(_, prefix)| scheduled(config, prefix))
        .map(|(key, _)| *key)
        .collect();
    flat.into_iter()
        .filter(|(k, _)| !RESUMABLE_KEYS.contains(&k.as_str()) || kept.contains(&k.as_str()))
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
}

fn flatten(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

fn fingerprint_map(text: &str) -> BTreeMap<&str, &str> {
    text.lines().filter_map(|l| l.split_once(" = ")).collect()
}

/// The keys whose values differ between two fingerprints, as `key: a -> b` (`(unset)` where a
/// side lacks the key). A key the checkpoint lacks (it was saved by a release before the key
/// existed) whose value now is its default is not a difference: a key is only ever added with a
/// default that keeps the earlier behaviour.
pub fn fingerprint_diff(checkpoint: &str, now: &str) -> Vec<String> {
    let a = fingerprint_map(checkpoint);
    let b = fingerprint_map(now);
    let default_text = Config::resolve(None, &[])
        .map(|c| fingerprint(&c))
        .unwrap_or_default();
    let defaults = fingerprint_map(&default_text);
    let mut keys: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(k) != b.get(k))
        // A checkpoint written before a key became resumable still carries it; both sides
        // carry a step count only under a learning-rate schedule that depends on it.
        .filter(|k| !RESUMABLE_KEYS.contains(k) || (a.contains_key(k) && b.contains_key(k)))
        .filter(|k| a.contains_key(k) || !b.contains_key(k) || b.get(k) != defaults.get(k))
        .map(|k| {
            format!(
                "{k}: {} -> {}",
                a.get(k).unwrap_or(&"(unset)"),
                b.get(k).unwrap_or(&"(unset)")
            )
        })
        .collect()
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// fsyncs every file of `dir` (not recursive) and the directory itself.
fn sync_tree(dir: &Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&path, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// fsyncs a directory's entries (best effort: not every platform can open a directory).
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn step_name(step: u64) -> String {
    format!("step_{step}")
}

fn parse_step_name(name: &str) -> Option<u64> {
    name.strip_prefix("step_")?.parse().ok()
}

fn write_tensors(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    meta: HashMap<String, String>,
) -> Result<(), String> {
    safetensors::serialize_to_file(tensors, Some(meta), path).map_err(|e| io(path, e))
}

/// The trainable weights of `model` as f32 tensors under their internal names. `names` picks
/// them (a snapshot has no trainable parameters of its own).
fn trainable_f32(model: &PolicyModel, names: &[String]) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = Vec::with_capacity(names.len());
    let tensors: HashMap<&str, &Tensor> = model.params().tensors().collect();
    for name in names {
        let t = tensors
            .get(name.as_str())
            .ok_or_else(|| format!("parameter `{name}` missing from the policy"))?;
        let t = t
            .to_dtype(DType::F32)
            .and_then(|t| t.contiguous())
            .map_err(|e| e.to_string())?;
        out.push((name.clone(), t));
    }
    Ok(out)
}

/// Writes the checkpoints of a run.
pub struct Checkpointer {
    root: PathBuf,
    source_dir: PathBuf,
    graph: GraphKind,
    seed: u64,
    batch: u64,
    train_data: std::sync::Arc<super::data::SeedSource>,
    max_staleness: usize,
    fingerprint: String,
    save_limit: usize,
    metrics_line: Box<dyn Fn(&StepRecord) -> String + Send + Sync>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("root", &self.root)
            .field("source_dir", &self.source_dir)
            .field("graph", &self.graph)
            .field("save_limit", &self.save_limit)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Checkpoints of the run of `settings` / `config` under `root` (`<run_dir>/checkpoints`);
    /// `source_dir` is the HF directory the policy was loaded from (its config, tokenizer, ...
    /// are copied into every checkpoint). `trainer.save_limit` is read from `config`.
    /// Metrics lines are the records as JSON until [`Checkpointer::with_metrics_line`].
    pub fn new(
        root: &Path,
        source_dir: &Path,
        config: &Config,
        settings: &Settings,
    ) -> Result<Self, String> {
        Ok(Self {
            root: root.to_path_buf(),
            source_dir: source_dir.to_path_buf(),
            graph: settings.graph,
            seed: settings.run_seed,
            batch: settings.batch as u64,
            train_data: std::sync::Arc::clone(&settings.train_data),
            max_staleness: settings.max_staleness,
            fingerprint: fingerprint(config),
            save_limit: config.usize("trainer.save_limit")?,
            metrics_line: Box::new(|r| serde_json::to_string(r).unwrap_or_default()),
        })
    }

    /// Renders each record's line of `metrics.jsonl` with `f` (the run directory's format).
    pub fn with_metrics_line(
        mut self,
        f: impl Fn(&StepRecord) -> String + Send + Sync + 'static,
    ) -> Self {
        self.metrics_line = Box::new(f);
        self
    }

    /// The checkpoints directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `step_N` for `state` atomically, points `latest` at it, then removes checkpoints
    /// beyond `trainer.save_limit` and stale temporary directories. Returns the directory.
    pub fn save(&self, state: &TrainState<'_>) -> Result<PathBuf, String> {
        let name = step_name(state.step);
        std::fs::create_dir_all(&self.root).map_err(|e| io(&self.root, e))?;
        let tmp = self.root.join(format!(".tmp-{name}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        // The HF checkpoint (creates `tmp`).
        state
            .model
            .save(&self.source_dir, &tmp)
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = state
            .model
            .trainable_vars()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let params = state.model.params();
        let master = names.iter().any(|n| params.saved_dtype(n) != DType::F32);
        if master {
            write_tensors(
                &tmp.join("master.safetensors"),
                trainable_f32(state.model, &names)?,
                HashMap::new(),
            )?;
        }
        write_optimizer(&tmp.join("optimizer.safetensors"), state.optimizer)?;
        let mut versions = Vec::new();
        for v in &state.rollout_versions {
            write_tensors(
                &tmp.join(format!("rollout_version_{}.safetensors", v.version())),
                trainable_f32(v, &names)?,
                HashMap::new(),
            )?;
            versions.push(v.version());
        }
        let mut records = String::new();
        let mut metrics = String::new();
        for r in state.records {
            records.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
            records.push('\n');
            metrics.push_str(&(self.metrics_line)(r));
            metrics.push('\n');
        }
        write_synced(&tmp.join("records.jsonl"), records.as_bytes())?;
        write_synced(&tmp.join("metrics.jsonl"), metrics.as_bytes())?;
        let ts = TrainerState {
            format: 1,
            step: state.step,
            policy_version: state.model.version(),
            graph: self.graph.name().to_string(),
            seed: self.seed,
            data_cursor: {
                let consumed = state.step * self.batch;
                let at = self.train_data.cursor(consumed);
                DataCursor {
                    samples_consumed: consumed,
                    step: state.step,
                    source: self.train_data.spec().to_string(),
                    epoch: at.map(|c| c.epoch),
                    offset: at.map(|c| c.offset),
                    rows: self.train_data.len(),
                }
            },
            rng: "not stored: every random stream derives from (trainer.seed, step, ...)".into(),
            val_before: state.val_before,
            master_weights: master,
            rollout_versions: versions,
            max_staleness: self.max_staleness,
            config: self.fingerprint.clone(),
        };
        let text = serde_json::to_string_pretty(&ts).map_err(|e| e.to_string())?;
        write_synced(&tmp.join(TRAINER_STATE), text.as_bytes())?;
        sync_tree(&tmp)?;
        // Test hook (see FAULT_PAUSE_ENV): a window in which the checkpoint is written but not
        // yet in place.
        if let Some(ms) = std::env::var(FAULT_PAUSE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let dir = self.root.join(&name);
        let old = self.root.join(format!(".tmp-old-{name}"));
        if dir.exists() {
            // A checkpoint of a discarded future (resumed from an older one): replace it.
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
            }
            std::fs::rename(&dir, &old).map_err(|e| io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
        sync_dir(&self.root);
        let latest_tmp = self.root.join(".tmp-latest");
        write_synced(&latest_tmp, name.as_bytes())?;
        let latest = self.root.join(LATEST);
        std::fs::rename(&latest_tmp, &latest).map_err(|e| io(&latest, e))?;
        sync_dir(&self.root);
        prune(&self.root, self.save_limit)?;
        Ok(dir)
    }
}

fn write_optimizer(path: &Path, opt: &Optimizer) -> Result<(), String> {
    let state = opt.state().map_err(|e| e.to_string())?;
    let mut tensors = Vec::with_capacity(2 * state.vars.len());
    let mut steps = BTreeMap::new();
    for (name, v) in state.vars {
        let m = Tensor::from_vec(v.exp_avg, v.shape.as_slice(), &candle_cpu())
            .map_err(|e| e.to_string())?;
        let s = Tensor::from_vec(v.exp_avg_sq, v.shape.as_slice(), &candle_cpu())
            .map_err(|e| e.to_string())?;
        tensors.push((format!("{name}.exp_avg"), m));
        tensors.push((format!("{name}.exp_avg_sq"), s));
        steps.insert(name, v.step);
    }
    let meta = serde_json::json!({
        "lr": state.lr,
        "steps": state.steps,
        "param_steps": steps,
    });
    write_tensors(
        path,
        tensors,
        [(OPTIM_META.to_string(), meta.to_string())].into(),
    )
}

fn candle_cpu() -> shareflow_operators::policy::candle::Device {
    shareflow_operators::policy::candle::Device::Cpu
}

fn read_optimizer(path: &Path) -> Result<OptimState, String> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| io(path, e.to_string()))?;
    let meta: serde_json::Value = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(OPTIM_META))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| io(path, format!("metadata `{OPTIM_META}` missing or not JSON")))?;
    let lr = meta["lr"]
        .as_f64()
        .ok_or_else(|| io(path, "optimizer metadata: `lr` missing"))?;
    let steps = meta["steps"]
        .as_u64()
        .ok_or_else(|| io(path, "optimizer metadata: `steps` missing"))?;
    let param_steps = meta["param_steps"]
        .as_object()
        .ok_or_else(|| io(path, "optimizer metadata: `param_steps` missing"))?;
    let tensors =
        shareflow_operators::policy::candle::safetensors::load_buffer(&bytes, &candle_cpu())
            .map_err(|e| io(path, e))?;
    let moment = |name: &str, which: &str| -> Result<(Vec<usize>, Vec<f32>), String> {
        let t = tensors
            .get(&format!("{name}.{which}"))
            .ok_or_else(|| io(path, format!("tensor `{name}.{which}` missing")))?;
        let v = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| io(path, e))?;
        Ok((t.dims().to_vec(), v))
    };
    let mut vars = BTreeMap::new();
    for (name, step) in param_steps {
        let step = step
            .as_u64()
            .ok_or_else(|| io(path, format!("optimizer metadata: step of `{name}`")))?;
        let (shape, exp_avg) = moment(name, "exp_avg")?;
        let (_, exp_avg_sq) = moment(name, "exp_avg_sq")?;
        vars.insert(
            name.clone(),
            VarState {
                step,
                shape,
                exp_avg,
                exp_avg_sq,
            },
        );
    }
    Ok(OptimState { lr, steps, vars })
}

/// Reads a checkpoint's trainer state.
pub fn read_state(dir: &Path) -> Result<TrainerState, String> {
    let path = dir.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io(&path, format!("not a trainer state: {e}")))
}

/// What a checkpoint directory lacks to be complete (empty: complete).
pub fn missing(dir: &Path) -> Vec<String> {
    let state = match read_state(dir) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut files = vec![
        "config.json".to_string(),
        "optimizer.safetensors".into(),
        "records.jsonl".into(),
        "metrics.jsonl".into(),
    ];
    if state.master_weights {
        files.push("master.safetensors".into());
    }
    files.extend(
        state
            .rollout_versions
            .iter()
            .map(|v| format!("rollout_version_{v}.safetensors")),
    );
    let mut out: Vec<String> = files
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !dir.join("model.safetensors").is_file()
        && !dir.join("model.safetensors.index.json").is_file()
    {
        out.push("model.safetensors".into());
    }
    out
}

/// The complete checkpoint `checkpoints/latest` names, if any.
pub fn latest(root: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(root.join(LATEST)).ok()?;
    let name = name.trim();
    parse_step_name(name)?;
    let dir = root.join(name);
    (dir.is_dir() && missing(&dir).is_empty()).then_some(dir)
}

/// Removes stale temporary directories (`.tmp-*`, and the policy writer's `..tmp-*`) and the
/// oldest complete checkpoints beyond `limit` (0 keeps all); never the one `latest` names.
pub fn prune(root: &Path, limit: usize) -> Result<(), String> {
    let keep = std::fs::read_to_string(root.join(LATEST))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut complete = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let entry = entry.map_err(|e| io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if name.starts_with(".tmp-") || name.starts_with("..tmp-") {
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
        } else if let Some(step) = parse_step_name(&name)
            && name != keep
            && missing(&path).is_empty()
        {
            complete.push((step, path));
        }
    }
    if limit > 0 {
        complete.sort_by_key(|c| std::cmp::Reverse(c.0));
        // `latest` counts against the limit.
        let others = limit.saturating_sub(usize::from(!keep.is_empty()));
        for (_, path) in complete.into_iter().skip(others) {
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// Loads `f32` tensors by internal name: `master.safetensors`, a rollout version file, or (no
/// master) the HF weights of the checkpoint.
fn load_weights(dir: &Path, file: Option<&str>) -> Result<HashMap<String, Tensor>, String> {
    let dev = candle_cpu();
    match file {
        Some(f) => {
            let path = dir.join(f);
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            shareflow_operators::policy::candle::safetensors::load_buffer(&bytes, &dev)
                .map_err(|e| io(&path, e))
        }
        None => {
            let store = ParamStore::load(dir, &dev, |_| false).map_err(|e| e.to_string())?;
            Ok(store
                .tensors()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect())
        }
    }
}

/// Sets the policy's trainable variables to `weights` (by internal name, every one required).
fn set_trainable(
    model: &PolicyModel,
    weights: &HashMap<String, Tensor>,
    what: &str,
) -> Result<(), String> {
    for (name, var) in model.trainable_vars() {
        let t = weights
            .get(&name)
            .ok_or_else(|| format!("{what}: parameter `{name}` missing"))?;
        if t.dims() != var.dims() {
            return Err(format!(
                "{what}: parameter `{name}` has shape {:?}, the policy {:?}",
                t.dims(),
                var.dims()
            ));
        }
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| e.to_string())?;
        var.set(&t).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Restores the checkpoint `dir` into a freshly loaded `policy` (trainable weights) and
/// `optimizer` (moments, steps, lr), after checking that it is complete, of the same graph, and
/// that the config fingerprint matches `config` (an error lists the differing keys). Returns
/// what the run needs to continue: pass it as [`Start::resume`].
pub fn restore(
    dir: &Path,
    config: &Config,
    graph: GraphKind,
    policy: &mut Policy,
    optimizer: &mut Optimizer,
) -> Result<Resume, String> {
    let lacks = missing(dir);
    if !lacks.is_empty() {
        return Err(format!(
            "{}: not a complete checkpoint; missing: {}",
            dir.display(),
            lacks.join(", ")
        ));
    }
    let state = read_state(dir)?;
    if state.graph != graph.name() {
        return Err(format!(
            "{}: the checkpoint is of --graph {}, this run of --graph {}",
            dir.display(),
            state.graph,
            graph.name()
        ));
    }
    let diff = fingerprint_diff(&state.config, &fingerprint(config));
    if !diff.is_empty() {
        let steps = if diff.iter().any(|d| {
            STEP_COUNT_KEYS
                .iter()
                .any(|(k, _)| d.starts_with(&format!("{k}:")))
        }) {
            "; the step count is fixed under a learning-rate warm-up or decay"
        } else {
            ""
        };
        return Err(format!(
            "{}: the configuration differs from the checkpoint's in:\n  {}\n(only {} may change \
             on resume{steps})",
            dir.display(),
            diff.join("\n  "),
            RESUMABLE_KEYS.join(", ")
        ));
    }
    // Older rollout versions: set the weights, snapshot, and finally the current weights.
    let mut rollout_versions = Vec::new();
    for v in &state.rollout_versions {
        let file = format!("rollout_version_{v}.safetensors");
        let w = load_weights(dir, Some(&file))?;
        set_trainable(&policy.model, &w, &format!("{}/{file}", dir.display()))?;
        let mut snap = policy.model.snapshot().map_err(|e| e.to_string())?;
        snap.set_version(*v);
        rollout_versions.push(snap);
    }
    let current = load_weights(dir, state.master_weights.then_some("master.safetensors"))?;
    set_trainable(&policy.model, &current, &dir.display().to_string())?;
    policy.model.set_version(state.step);
    let opt_state = read_optimizer(&dir.join("optimizer.safetensors"))?;
    optimizer
        .load_state(&opt_state)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("records.jsonl");
    let records: Vec<StepRecord> = std::fs::read_to_string(&path)
        .map_err(|e| io(&path, e))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| io(&path, e)))
        .collect::<Result<_, _>>()?;
    if records.len() as u64 != state.step {
        return Err(io(
            &path,
            format!("{} records for {} steps", records.len(), state.step),
        ));
    }
    Ok(Resume {
        step: state.step,
        rollout_versions,
        records,
        val_before: state.val_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_resumable_keys_and_diff_names_keys() -> Result<(), String> {
        let constant = [
            "worker.actor.optim.lr_scheduler_type=constant".to_string(),
            "worker.actor.optim.lr_warmup_ratio=0".to_string(),
        ];
        let with = |extra: &[&str]| {
            let mut sets = constant.to_vec();
            sets.extend(extra.iter().map(|s| s.to_string()));
            Config::resolve(None, &sets)
        };
        let a = with(&["trainer.total_steps=5"])?;
        let b = with(&["trainer.total_steps=9", "trainer.stop_at_step=2"])?;
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert!(!fingerprint(&a).contains("trainer.total_steps"));
        let c = with(&["worker.rollout.n=3"])?;
        let d = fingerprint_diff(&fingerprint(&a), &fingerprint(&c));
        assert_eq!(d, vec!["worker.rollout.n: 6 -> 3".to_string()]);
        // A decaying schedule or a warm-up (the default: cosine with 5% warm-up) depends on the
        // step count: it may not change. SFT's schedule has its own keys and step count.
        for (sched, steps) in [
            ("trainer.seed=1", "trainer.total_steps"),
            (
                "worker.actor.optim.lr_scheduler_type=linear",
                "trainer.total_steps",
            ),
            ("sft.lr_scheduler_type=cosine", "sft.steps"),
            ("sft.lr_warmup_ratio=0.1", "sft.steps"),
        ] {
            let sets = |n: u32| -> Vec<String> { vec![format!("{steps}={n}"), sched.to_string()] };
            let a = Config::resolve(None, &sets(5))?;
            let b = Config::resolve(None, &sets(9))?;
            let d = fingerprint_diff(&fingerprint(&a), &fingerprint(&b));
            assert_eq!(d, vec![format!("{steps}: 5 -> 9")], "{sched}");
        }
        // The RL schedule leaves the SFT step count resumable, and the other way round.
        let a = Config::resolve(None, &["sft.steps=5".into()])?;
        assert!(!fingerprint(&a).contains("sft.steps"));
        assert!(
            fingerprint(&with(&[])?)
                .lines()
                .all(|l| !l.starts_with("trainer.total_steps"))
        );
        Ok(())
    }

    #[test]
    fn an_sft_run_extends_and_an_older_checkpoint_still_naming_the_key_resumes()
    -> Result<(), String> {
        let a = Config::resolve(None, &["sft.steps=1500".into()])?;
        let b = Config::resolve(None, &["sft.steps=3000".into()])?;
        assert_eq!(fingerprint(&a), fingerprint(&b));
        // Checkpoints written when `sft.steps` was still fingerprinted carry the key.
        let old = format!(
            "{}sft.steps = 1500\ntrainer.val_before_train = false\n",
            fingerprint(&a)
        );
        assert!(fingerprint_diff(&old, &fingerprint(&b)).is_empty());
        let c = Config::resolve(None, &["sft.steps=3000".into(), "sft.lr=0.1".into()])?;
        assert_eq!(
            fingerprint_diff(&old, &fingerprint(&c)),
            vec!["sft.lr: 0.0005 -> 0.1".to_string()]
        );
        Ok(())
    }

    #[test]
    fn a_key_added_since_the_checkpoint_is_unchanged_only_at_its_default() -> Result<(), String> {
        let old: String = fingerprint(&Config::resolve(None, &[])?)
            .lines()
            .filter(|l| !l.starts_with("sft.augment = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let now = Config::resolve(None, &[])?;
        assert!(fingerprint_diff(&old, &fingerprint(&now)).is_empty());
        let changed = Config::resolve(None, &["sft.augment=true".into()])?;
        assert_eq!(
            fingerprint_diff(&old, &fingerprint(&changed)),
            vec!["sft.augment: (unset) -> true".to_string()]
        );
        // A key the current release no longer has is still a difference.
        let extra = format!("{old}removed.key = 1\n");
        assert_eq!(
            fingerprint_diff(&extra, &fingerprint(&now)),
            vec!["removed.key: 1 -> (unset)".to_string()]
        );
        Ok(())
    }

    #[test]
    fn start_end_respects_stop_and_resume() {
        let mut s = Start::fresh();
        assert_eq!(s.end(6), 6);
        s.stop_at_step = 3;
        assert_eq!(s.end(6), 3);
        s.stop_at_step = 9;
        assert_eq!(s.end(6), 6);
    }
}
