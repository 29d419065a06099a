//! `shareflow train` configuration: EasyR1-style dotted keys (`data.*`, `algorithm.*`,
//! `worker.rollout.*`, `worker.actor.*`, `trainer.*`), every key declared here with its default
//! and meaning. A TOML file (`--config`) and `--set key=value` override defaults; an unknown key
//! is an error naming the key and the closest known one.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Value;

/// One declared key.
#[derive(Debug, Clone)]
pub struct KeyDef {
    pub key: &'static str,
    pub default: Value,
    pub doc: &'static str,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Every configuration key, its default and its meaning.
pub fn keys() -> Vec<KeyDef> {
    let k = |key: &'static str, default: Value, doc: &'static str| KeyDef { key, default, doc };
    vec![
        k(
            "data.train_files",
            s("shapes"),
            "training data: `shapes` (the embedded task), or a parquet / JSON lines file or \
             directory of shards, optionally `PATH@split`",
        ),
        k(
            "data.val_files",
            s("auto"),
            "validation data, as data.train_files; `auto`: the embedded task's eval split when \
             training on `shapes`, else none; `none`: no validation",
        ),
        k(
            "data.prompt_key",
            s("problem"),
            "dataset column of the question (may hold <image> placeholders)",
        ),
        k(
            "data.answer_key",
            s("answer"),
            "dataset column of the ground truth",
        ),
        k(
            "data.image_key",
            s("images"),
            "dataset column of the images ({bytes, path} structs, bytes or file paths)",
        ),
        k(
            "data.rewrites_key",
            s("new_questions"),
            "dataset column of the textual rewrites (a list, or a string holding a Python list); \
             optional",
        ),
        k(
            "data.id_key",
            s("id"),
            "dataset column of row ids; optional (default id: FILE_STEM:ROW)",
        ),
        k(
            "data.on_bad_row",
            s("error"),
            "a malformed dataset row: `error` stops with its file, row and column; `skip` drops \
             it and reports it",
        ),
        k(
            "data.min_pixels",
            Value::Integer(3136),
            "images with fewer pixels are scaled up (aspect kept; 0: no bound; EasyR1 uses 262144)",
        ),
        k(
            "data.max_pixels",
            Value::Integer(4_194_304),
            "images with more pixels are scaled down (aspect kept; 0: no bound)",
        ),
        k(
            "data.max_prompt_length",
            Value::Integer(2048),
            "maximum prompt tokens (image tokens included)",
        ),
        k(
            "data.image_backend",
            s("torchvision"),
            "image processor to reproduce: torchvision (transformers 5's AutoProcessor default) \
             or pil (its backend=\"pil\" / use_fast=False one, transformers 4's default)",
        ),
        k(
            "data.truncation",
            s("error"),
            "a longer prompt: `error`, `left` (keep the end) or `right` (keep the start); never \
             cuts image tokens",
        ),
        k(
            "data.shuffle",
            Value::Boolean(true),
            "read a dataset in a new random order every epoch (the embedded task is unbounded)",
        ),
        k(
            "data.seed",
            Value::Integer(1),
            "seed of the dataset order; on the embedded task, which training questions are asked \
             and in what order (the eval split does not change)",
        ),
        k(
            "data.rollout_batch_size",
            Value::Integer(4),
            "seed questions per training step",
        ),
        k(
            "data.gen_batch_size",
            Value::Integer(0),
            "dapo only: questions sampled per round, of which the first rollout_batch_size whose \
             rewards do not all tie are trained on (0: twice rollout_batch_size)",
        ),
        k(
            "algorithm.filter_groups.max_num_gen_batches",
            Value::Integer(2),
            "dapo only: rounds of data.gen_batch_size questions a step samples at most; a round \
             runs only while fewer than rollout_batch_size questions with differing rewards are \
             in hand. A step reserves the training positions of all its rounds (those of rounds \
             that do not run are skipped), so the questions of a step do not depend on others",
        ),
        k(
            "data.val_size",
            Value::Integer(512),
            "validation questions: the first N of data.val_files (0: no validation); with \
             512 and val_n 4 the embedded policy scores 0.258-0.269 under six sampling seeds \
             (RESULTS.md, session 11)",
        ),
        k(
            "data.max_response_length",
            Value::Integer(40),
            "maximum new tokens per response",
        ),
        k(
            "algorithm.adv_estimator",
            s("auto"),
            "`auto` (follows --graph), `share_grpo` or `grpo`; must agree with --graph",
        ),
        k(
            "algorithm.std",
            s("reference"),
            "global std over the m*m*n rows (`reference`, as the release) or the m*n responses (`paper`)",
        ),
        k(
            "algorithm.local_advantage",
            Value::Boolean(true),
            "add the local (per-variant) advantage on k == j rows; false = global only",
        ),
        k(
            "algorithm.use_kl_loss",
            Value::Boolean(false),
            "add a KL loss to the initial policy (worker.actor.model.model_path, kept frozen) \
             to the PPO loss; the R1-ShareVL release runs without it",
        ),
        k(
            "algorithm.kl_penalty",
            s("low_var_kl"),
            "the KL loss's per-token estimator: `low_var_kl` (k3, clamped to [-10, 10]), `kl`, \
             `abs` or `mse`",
        ),
        k(
            "algorithm.kl_coef",
            Value::Float(1e-2),
            "weight of the KL loss (EasyR1's default)",
        ),
        k(
            "worker.rollout.n",
            Value::Integer(6),
            "responses per variant (per question for grpo: n * question_num)",
        ),
        k(
            "worker.rollout.question_num",
            Value::Integer(2),
            "variants per seed question, m (share_grpo)",
        ),
        k(
            "worker.rollout.temperature",
            Value::Float(1.0),
            "sampling temperature (also used to score log-probs)",
        ),
        k(
            "worker.rollout.top_p",
            Value::Float(0.99),
            "nucleus sampling mass",
        ),
        k(
            "worker.rollout.top_k",
            Value::Integer(-1),
            "top-k sampling (-1: off)",
        ),
        k(
            "worker.rollout.transform_prob",
            Value::Float(0.3),
            "probability of a visual transform per variant",
        ),
        k(
            "worker.rollout.val_temperature",
            Value::Float(0.5),
            "evaluation sampling temperature (the reference's override)",
        ),
        k(
            "worker.rollout.val_n",
            Value::Integer(4),
            "responses per evaluation question (the reference uses 1 on thousands of questions; \
             4 halve the sampling noise of val/accuracy on the embedded eval)",
        ),
        k(
            "worker.actor.model.model_path",
            s("embedded"),
            "checkpoint directory, or `embedded` for the shipped tiny Qwen2.5-VL",
        ),
        k(
            "worker.actor.freeze_vision_tower",
            Value::Boolean(false),
            "keep the vision tower fixed",
        ),
        k(
            "worker.actor.global_batch_size",
            Value::Integer(48),
            "training rows per optimizer step",
        ),
        k(
            "worker.actor.micro_batch_size_per_device_for_update",
            Value::Integer(24),
            "rows per forward/backward pass",
        ),
        k(
            "worker.actor.loss_agg_mode",
            Value::String("auto".into()),
            "token-mean, or seq-mean-token-sum-norm (each response's token sum over \
             data.max_response_length; Dr. GRPO); auto: the graph's own (seq-mean-token-sum-norm \
             for dr-grpo, token-mean otherwise)",
        ),
        k(
            "worker.actor.ppo_epochs",
            Value::Integer(1),
            "passes over a step's rows",
        ),
        k(
            "worker.actor.shuffle",
            Value::Boolean(true),
            "shuffle rows before splitting into mini-batches",
        ),
        k(
            "worker.actor.clip_ratio_low",
            Value::Float(0.2),
            "PPO clip below 1",
        ),
        k(
            "worker.actor.clip_ratio_high",
            Value::Float(0.3),
            "PPO clip above 1",
        ),
        k(
            "worker.actor.clip_ratio_dual",
            Value::Float(3.0),
            "dual clip for negative advantages",
        ),
        k(
            "worker.actor.optim.lr",
            Value::Float(7e-5),
            "AdamW peak learning rate (the reference uses 1e-6 for 7B models; 7e-5 under the \
             default cosine schedule suits the embedded tiny policy, which 2e-4 destabilises: \
             RESULTS.md, sessions 10-12)",
        ),
        k(
            "worker.actor.optim.lr_scheduler_type",
            s("cosine"),
            "learning rate after the warm-up: constant, linear or cosine (decaying towards \
             min_lr_ratio * lr at the end of training); one value per training step",
        ),
        k(
            "worker.actor.optim.lr_warmup_ratio",
            Value::Float(0.05),
            "fraction of the training steps whose learning rate rises linearly to lr",
        ),
        k(
            "worker.actor.optim.min_lr_ratio",
            Value::Float(0.0),
            "linear or cosine schedule: the final learning rate as a fraction of lr",
        ),
        k(
            "worker.actor.optim.weight_decay",
            Value::Float(1e-2),
            "AdamW decoupled weight decay",
        ),
        k(
            "worker.actor.optim.betas",
            Value::Array(vec![Value::Float(0.9), Value::Float(0.999)]),
            "AdamW betas",
        ),
        k(
            "worker.actor.optim.max_grad_norm",
            Value::Float(1.0),
            "global gradient-norm clip",
        ),
        k("trainer.total_steps", Value::Integer(100), "training steps"),
        k(
            "trainer.max_staleness",
            Value::Integer(0),
            "0: synchronous on-policy; 1: rollout of step t+1 overlaps the update of step t",
        ),
        k(
            "trainer.val_freq",
            Value::Integer(50),
            "evaluate every this many steps (0: only before/after)",
        ),
        k(
            "trainer.val_only",
            Value::Boolean(false),
            "evaluate the policy (worker.actor.model.model_path, e.g. a run's \
             checkpoints/step_N) on the validation questions and stop, without training",
        ),
        k(
            "trainer.val_before_train",
            Value::Boolean(true),
            "evaluate before the first step",
        ),
        k(
            "trainer.save_freq",
            Value::Integer(0),
            "save a checkpoint (checkpoints/step_N: HF policy + optimizer + trainer state, \
             exact resume with --resume) every this many steps (0: only at the end)",
        ),
        k(
            "trainer.save_limit",
            Value::Integer(0),
            "keep only the newest this many checkpoints (0: keep all)",
        ),
        k(
            "trainer.stop_at_step",
            Value::Integer(0),
            "stop after this step, saving a checkpoint (0: run to total_steps); continue with \
             --resume auto",
        ),
        k(
            "trainer.output_dir",
            s("runs"),
            "runs are written to OUTPUT_DIR/EXPERIMENT_NAME",
        ),
        k(
            "trainer.experiment_name",
            s("share-grpo"),
            "run directory name",
        ),
        k(
            "trainer.seed",
            Value::Integer(1),
            "run seed: every random choice derives from it",
        ),
        k(
            "trainer.tensorboard",
            Value::Boolean(true),
            "also write the metrics as a TensorBoard event file in the run directory \
             (`tensorboard --logdir OUTPUT_DIR`); metrics.jsonl is written either way",
        ),
        k(
            "trainer.device",
            s("auto"),
            "where the policy runs: cpu, cuda (GPU 0), cuda:N, or auto (GPU 0 when the binary \
             was built with --features cuda and a GPU answers, else the CPU)",
        ),
        k(
            "trainer.dtype",
            s("auto"),
            "the policy's compute dtype: f32, bf16 (bf16 forward and backward over f32 master \
             weights and f32 AdamW state), or auto (bf16 on a GPU, f32 on the CPU)",
        ),
        k(
            "trainer.workers",
            Value::Integer(1),
            "timely worker threads (data parallel): each feeds, samples and scores the old \
             log-probs of its own seeds and holds a policy replica that computes its share of \
             every mini-batch; gradients are summed in a fixed order, so the results equal one \
             worker's bit for bit (on 2 cores, run with RAYON_NUM_THREADS=1 and 2 workers)",
        ),
        k(
            "trainer.placement",
            s("colocated"),
            "colocated: every worker samples its seeds and updates a replica; split: worker 0 \
             only updates (no replicas) and workers 1.. sample and score the old log-probs (the \
             disaggregated layout of AReaL / PipelineRL; needs 2 workers or more). The results \
             are the same bit for bit",
        ),
        k(
            "sft.steps",
            Value::Integer(300),
            "SFT graph: optimizer steps",
        ),
        k(
            "sft.batch_size",
            Value::Integer(32),
            "SFT graph: questions per step",
        ),
        k(
            "sft.lr",
            Value::Float(5e-4),
            "SFT graph: AdamW learning rate",
        ),
        k(
            "sft.lr_scheduler_type",
            s("constant"),
            "SFT graph: learning rate after the warm-up, as worker.actor.optim.lr_scheduler_type",
        ),
        k(
            "sft.lr_warmup_ratio",
            Value::Float(0.0),
            "SFT graph: fraction of sft.steps whose learning rate rises linearly to sft.lr",
        ),
        k(
            "sft.min_lr_ratio",
            Value::Float(0.0),
            "SFT graph: linear or cosine schedule: the final learning rate as a fraction of sft.lr",
        ),
        k(
            "sft.augment",
            Value::Boolean(false),
            "SFT graph: ask each question as one variant drawn as share-grpo draws them (the \
             original or a rewrite, a visual transform with its compensatory prompt at \
             worker.rollout.transform_prob) instead of the original question only",
        ),
    ]
}

/// A resolved configuration: every key has a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    values: BTreeMap<String, Value>,
}

fn flatten(prefix: &str, v: &toml::Table, out: &mut Vec<(String, Value)>) {
    for (k, v) in v {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let dist = |a: &str, b: &str| -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let c = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + c);
            }
            prev = cur;
        }
        prev[b.len()]
    };
    known
        .map(|k| (dist(key, k), k))
        .filter(|(d, _)| *d <= 6)
        .min()
        .map(|(_, k)| k)
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::String(_), Value::String(_))
            | (Value::Integer(_), Value::Integer(_))
            | (Value::Float(_), Value::Float(_) | Value::Integer(_))
            | (Value::Boolean(_), Value::Boolean(_))
            | (Value::Array(_), Value::Array(_))
    )
}

impl Config {
    /// Defaults, then the TOML file, then `key=value` overrides (values parsed as TOML, bare
    /// words as strings). `origin` names where each override came from in errors.
    pub fn resolve(file: Option<&Path>, sets: &[String]) -> Result<Self, String> {
        let defs = keys();
        let mut values: BTreeMap<String, Value> = defs
            .iter()
            .map(|d| (d.key.to_string(), d.default.clone()))
            .collect();
        let mut overrides: Vec<(String, Value, String)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| format!("{}: not valid TOML: {e}", path.display()))?;
            let mut flat = Vec::new();
            flatten("", &table, &mut flat);
            for (k, v) in flat {
                overrides.push((k, v, path.display().to_string()));
            }
        }
        for set in sets {
            let (k, raw) = set
                .split_once('=')
                .ok_or_else(|| format!("--set {set}: expected key=value"))?;
            let k = k.trim();
            let raw = raw.trim();
            let v = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|t| t.get("v").cloned())
                .unwrap_or_else(|| Value::String(raw.to_string()));
            overrides.push((k.to_string(), v, format!("--set {set}")));
        }
        for (k, v, origin) in overrides {
            let Some(def) = defs.iter().find(|d| d.key == k) else {
                let hint = closest(&k, defs.iter().map(|d| d.key))
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                return Err(format!(
                    "{origin}: unknown configuration key `{k}`{hint} (`shareflow train --list-config` lists them all)"
                ));
            };
            if !same_kind(&def.default, &v) {
                return Err(format!(
                    "{origin}: `{k}` = {v} has the wrong type; expected a value like {}",
                    def.default
                ));
            }
            let v = match (&def.default, v) {
                (Value::Float(_), Value::Integer(i)) => Value::Float(i as f64),
                (_, v) => v,
            };
            values.insert(k, v);
        }
        Ok(Self { values })
    }

    fn get(&self, key: &str) -> Result<&Value, String> {
        self.values
            .get(key)
            .ok_or_else(|| format!("configuration key `{key}` is not declared"))
    }

    pub fn str(&self, key: &str) -> Result<String, String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(format!("`{key}` = {v}: expected a string")),
        }
    }

    pub fn int(&self, key: &str) -> Result<i64, String> {
        match self.get(key)? {
            Value::Integer(i) => Ok(*i),
            v => Err(format!("`{key}` = {v}: expected an integer")),
        }
    }

    /// A non-negative integer as usize.
    pub fn usize(&self, key: &str) -> Result<usize, String> {
        let i = self.int(key)?;
        usize::try_from(i).map_err(|_| format!("`{key}` = {i}: must not be negative"))
    }

    /// A positive integer.
    pub fn positive(&self, key: &str) -> Result<usize, String> {
        match self.usize(key)? {
            0 => Err(format!("`{key}` must be at least 1")),
            n => Ok(n),
        }
    }

    pub fn float(&self, key: &str) -> Result<f64, String> {
        match self.get(key)? {
            Value::Float(f) if f.is_finite() => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            v => Err(format!("`{key}` = {v}: expected a finite number")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, String> {
        match self.get(key)? {
            Value::Boolean(b) => Ok(*b),
            v => Err(format!("`{key}` = {v}: expected true or false")),
        }
    }

    pub fn floats(&self, key: &str) -> Result<Vec<f64>, String> {
        match self.get(key)? {
            Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    Value::Float(f) => Ok(*f),
                    Value::Integer(i) => Ok(*i as f64),
                    v => Err(format!("`{key}`: {v} is not a number")),
                })
                .collect(),
            v => Err(format!("`{key}` = {v}: expected a list of numbers")),
        }
    }

    /// Every key and its resolved value, as TOML (written to the run directory).
    pub fn to_toml(&self) -> String {
        fn insert(t: &mut toml::Table, parts: &[&str], v: Value) {
            match parts {
                [] => {}
                [last] => {
                    t.insert((*last).to_string(), v);
                }
                [first, rest @ ..] => {
                    let entry = t
                        .entry((*first).to_string())
                        .or_insert_with(|| Value::Table(toml::Table::new()));
                    if let Value::Table(inner) = entry {
                        insert(inner, rest, v);
                    }
                }
            }
        }
        let mut root = toml::Table::new();
        for (k, v) in &self.values {
            let parts: Vec<&str> = k.split('.').collect();
            insert(&mut root, &parts, v.clone());
        }
        toml::to_string(&root).unwrap_or_default()
    }
}

/// The key reference: `key = default  # meaning`, one per line.
pub fn describe() -> String {
    keys()
        .iter()
        .map(|d| format!("{} = {}\n    {}\n", d.key, d.default, d.doc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_and_sets_override() -> Result<(), String> {
        let c = Config::resolve(
            None,
            &[
                "worker.rollout.n=3".into(),
                "trainer.experiment_name=x".into(),
            ],
        )?;
        assert_eq!(c.usize("worker.rollout.n")?, 3);
        assert_eq!(c.str("trainer.experiment_name")?, "x");
        assert_eq!(c.float("worker.actor.clip_ratio_high")?, 0.3);
        // An integer where a float is expected is accepted.
        let c = Config::resolve(None, &["worker.rollout.temperature=1".into()])?;
        assert_eq!(c.float("worker.rollout.temperature")?, 1.0);
        Ok(())
    }

    #[test]
    fn unknown_and_mistyped_keys_are_errors() {
        let e = Config::resolve(None, &["worker.rollout.nn=3".into()])
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("unknown configuration key `worker.rollout.nn`")
                && e.contains("worker.rollout.n"),
            "{e}"
        );
        let e = Config::resolve(None, &["worker.rollout.n=abc".into()])
            .err()
            .unwrap_or_default();
        assert!(e.contains("wrong type"), "{e}");
        let e = Config::resolve(None, &["novalue".into()])
            .err()
            .unwrap_or_default();
        assert!(e.contains("key=value"), "{e}");
    }

    #[test]
    fn toml_file_round_trips() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("sf-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let f = dir.join("c.toml");
        std::fs::write(&f, "[worker.rollout]\nn = 4\n[trainer]\ntotal_steps = 7\n")
            .map_err(|e| e.to_string())?;
        let c = Config::resolve(Some(&f), &[])?;
        assert_eq!(c.usize("worker.rollout.n")?, 4);
        assert_eq!(c.usize("trainer.total_steps")?, 7);
        std::fs::write(&f, c.to_toml()).map_err(|e| e.to_string())?;
        assert_eq!(Config::resolve(Some(&f), &[])?, c);
        std::fs::write(&f, "[worker]\nrolout = 1\n").map_err(|e| e.to_string())?;
        assert!(Config::resolve(Some(&f), &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
