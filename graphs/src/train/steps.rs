//! The training step as plain functions over one seed question at a time, shared by the dataflow
//! graph and by [`run_sequential`], the sequential reference loop the dataflow must reproduce
//! exactly (staleness 0).

use std::path::Path;
use std::sync::Arc;

use image::DynamicImage;
use serde::{Deserialize, Serialize};
use shareflow_operators::advantage::{AdvantageError, global_advantages, share_grpo_advantages};
use shareflow_operators::policy::candle::{DType, Device};
use shareflow_operators::policy::{
    DeviceSpec, KlConfig, KlPenalty, LoadOptions, LrSchedule, OptimConfig, Optimizer, Policy,
    PolicyError, PolicyModel, PpoConfig, Processor, SamplingParams, compute_dtype,
};
use shareflow_operators::reward::{RewardRule, rules::score_response};
use shareflow_operators::rl::{
    LossAgg, PromptInput, Response, UpdateConfig, UpdateRow, UpdateStats,
};
use shareflow_operators::rl::{OldLogProbs, old_log_probs, ppo_update_prepared, rollout_seed};
use shareflow_operators::task::{Seed, Variant, VisualTransform, expand_variants, format_question};
use shareflow_operators::{GroupBaseline, StdConvention};
use shareflow_runtime::rng::DetRng;

use super::config::Config;
use super::data::SeedSource;
pub use super::data::TASK_SEED;

/// Which stock graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphKind {
    /// Variant expansion, hierarchical advantages, cross-variant sharing.
    ShareGrpo,
    /// One variant (the original question), n * m samples, GRPO advantages.
    Grpo,
    /// GRPO's rollout with Dr. GRPO's advantages (`r - mean`, no std division) and its
    /// length-free loss normalisation (`seq-mean-token-sum-norm`).
    DrGrpo,
    /// GRPO's rollout with RLOO's leave-one-out baseline.
    Rloo,
    /// DAPO's dynamic sampling: `data.gen_batch_size` questions are sampled, those whose rewards
    /// all tie are dropped, more rounds of questions are sampled while fewer than
    /// `data.rollout_batch_size` remain (`algorithm.filter_groups.max_num_gen_batches`), and the
    /// first `data.rollout_batch_size` are trained on (GRPO advantages, token-level loss,
    /// clip-higher via `worker.actor.clip_ratio_high`).
    Dapo,
    /// Compute-aware Share-GRPO: a seed's first variant is sampled n times, and the seed expands
    /// to its m variants only when those n rewards all tie (no learning signal).
    AdaptiveShare,
    /// Supervised fine-tuning on the task's reference responses.
    Sft,
}

impl GraphKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "share-grpo" | "share_grpo" => Ok(Self::ShareGrpo),
            "grpo" => Ok(Self::Grpo),
            "dr-grpo" | "dr_grpo" => Ok(Self::DrGrpo),
            "rloo" => Ok(Self::Rloo),
            "dapo" => Ok(Self::Dapo),
            "adaptive-share" | "adaptive_share" => Ok(Self::AdaptiveShare),
            "sft" => Ok(Self::Sft),
            other => Err(format!(
                "unknown graph `{other}`: expected share-grpo, grpo, dr-grpo, rloo, dapo, adaptive-share or sft"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ShareGrpo => "share-grpo",
            Self::Grpo => "grpo",
            Self::DrGrpo => "dr-grpo",
            Self::Rloo => "rloo",
            Self::Dapo => "dapo",
            Self::AdaptiveShare => "adaptive-share",
            Self::Sft => "sft",
        }
    }
}

/// Typed settings of a run, from a [`Config`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub graph: GraphKind,
    /// `trainer.device`.
    pub device: DeviceSpec,
    /// `trainer.dtype` (f32, bf16 or auto; resolved against the opened device).
    pub dtype: String,
    pub run_seed: u64,
    pub steps: usize,
    /// Seed questions a step feeds in (for dapo, `data.gen_batch_size` per round times its
    /// rounds).
    pub batch: usize,
    /// dapo: the rounds of sampling a step has at most
    /// (`algorithm.filter_groups.max_num_gen_batches`); 1 for the other graphs.
    pub gen_rounds: usize,
    /// Seed questions trained on per step at most (`data.rollout_batch_size`; below `batch` only
    /// for dapo, which keeps the first of those whose rewards do not all tie).
    pub keep: usize,
    /// Variants per seed (1 for grpo).
    pub m: usize,
    /// Responses per variant (n * question_num for grpo).
    pub n: usize,
    pub convention: StdConvention,
    pub local_advantage: bool,
    pub sampling: SamplingParams,
    pub transform_prob: f64,
    pub val_size: usize,
    pub val_sampling: SamplingParams,
    pub val_n: usize,
    pub val_freq: usize,
    pub val_before_train: bool,
    pub save_freq: usize,
    pub max_staleness: usize,
    pub update: UpdateConfig,
    pub optim: OptimConfig,
    /// Learning rate per step as a factor of `optim.lr` (`worker.actor.optim.lr_*`; for SFT
    /// `sft.lr_*`).
    pub lr_schedule: LrSchedule,
    pub model_path: String,
    pub freeze_vision: bool,
    pub workers: usize,
    /// Processes of a multi-process run (`shareflow train --processes`; 1 otherwise), this
    /// process's index and the hostfile (one `host:port` per process). Not config keys: each
    /// process of a run gets its own on the command line.
    /// `trainer.placement=split`: the update on worker 0 alone, the seeds on workers 1...
    pub split: bool,
    pub processes: usize,
    pub process: usize,
    pub hostfile: Option<std::path::PathBuf>,
    pub sft_lr: f64,
    /// `sft.augment`: SFT asks a random variant of each question (see [`sft_variant`]).
    pub sft_augment: bool,
    pub output_dir: String,
    pub experiment_name: String,
    /// Training seeds (`data.train_files`).
    pub train_data: Arc<SeedSource>,
    /// Validation seeds (`data.val_files`).
    pub val_data: Arc<SeedSource>,
    pub max_prompt_length: usize,
    pub truncation: Truncation,
    /// `data.image_backend`: which transformers image processor the prompts reproduce.
    pub image_backend: shareflow_operators::policy::ImageBackend,
}

/// What to do with a prompt longer than `data.max_prompt_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Truncation {
    /// Refuse it, naming the seed.
    Error,
    /// Keep its last tokens.
    Left,
    /// Keep its first tokens.
    Right,
}

impl Settings {
    pub fn from_config(c: &Config, graph: GraphKind) -> Result<Self, String> {
        let m_cfg = c.positive("worker.rollout.question_num")?;
        let n_cfg = c.positive("worker.rollout.n")?;
        let (m, n) = match graph {
            GraphKind::ShareGrpo | GraphKind::AdaptiveShare => (m_cfg, n_cfg),
            GraphKind::Grpo
            | GraphKind::DrGrpo
            | GraphKind::Rloo
            | GraphKind::Dapo
            | GraphKind::Sft => (1, n_cfg * m_cfg),
        };
        if matches!(graph, GraphKind::ShareGrpo | GraphKind::AdaptiveShare) && n < 2 {
            return Err(
                "`worker.rollout.n` must be at least 2 (a variant's std needs two responses)"
                    .into(),
            );
        }
        let estimator = c.str("algorithm.adv_estimator")?;
        match (graph, estimator.as_str()) {
            (_, "auto")
            | (GraphKind::ShareGrpo | GraphKind::AdaptiveShare, "share_grpo")
            | (GraphKind::Grpo | GraphKind::Dapo, "grpo")
            | (GraphKind::DrGrpo, "dr_grpo")
            | (GraphKind::Rloo, "rloo")
            | (GraphKind::Sft, _) => {}
            (_, known @ ("share_grpo" | "grpo" | "dr_grpo" | "rloo")) => {
                return Err(format!(
                    "`algorithm.adv_estimator` = {estimator} contradicts --graph {}; use --graph {}",
                    graph.name(),
                    known.replace('_', "-")
                ));
            }
            (_, other) => {
                return Err(format!(
                    "`algorithm.adv_estimator` = {other:?}: expected share_grpo, grpo, dr_grpo \
                     or rloo"
                ));
            }
        }
        let split = match c.str("trainer.placement")?.as_str() {
            "colocated" => false,
            "split" => true,
            other => {
                return Err(format!(
                    "`trainer.placement` = {other:?}: expected colocated or split"
                ));
            }
        };
        let convention = match c.str("algorithm.std")?.as_str() {
            "reference" => StdConvention::Reference,
            "paper" => StdConvention::Paper,
            other => {
                return Err(format!(
                    "`algorithm.std` = {other:?}: expected reference or paper"
                ));
            }
        };
        let top_k = c.int("worker.rollout.top_k")?;
        let max_new = c.positive("data.max_response_length")?;
        let temperature = c.float("worker.rollout.temperature")?;
        if temperature <= 0.0 {
            return Err("`worker.rollout.temperature` must be positive".into());
        }
        let top_p = c.float("worker.rollout.top_p")?;
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err("`worker.rollout.top_p` must be in (0, 1]".into());
        }
        let sampling = SamplingParams {
            temperature,
            top_p,
            top_k: usize::try_from(top_k).unwrap_or(0),
            max_new_tokens: max_new,
            stop: Vec::new(),
        };
        let val_sampling = SamplingParams {
            temperature: c.float("worker.rollout.val_temperature")?,
            ..sampling.clone()
        };
        let betas = c.floats("worker.actor.optim.betas")?;
        let [b1, b2] = betas.as_slice() else {
            return Err("`worker.actor.optim.betas` must hold two numbers".into());
        };
        let mgn = c.float("worker.actor.optim.max_grad_norm")?;
        let optim = OptimConfig {
            lr: c.float("worker.actor.optim.lr")?,
            betas: (*b1, *b2),
            eps: 1e-8,
            weight_decay: c.float("worker.actor.optim.weight_decay")?,
            max_grad_norm: (mgn > 0.0).then_some(mgn),
        };
        let ppo = PpoConfig {
            clip_ratio_low: c.float("worker.actor.clip_ratio_low")?,
            clip_ratio_high: c.float("worker.actor.clip_ratio_high")?,
            clip_ratio_dual: c.float("worker.actor.clip_ratio_dual")?,
            kl: if c.bool("algorithm.use_kl_loss")? {
                let penalty = match c.str("algorithm.kl_penalty")?.as_str() {
                    "full" => {
                        return Err("`algorithm.kl_penalty` = \"full\" needs the reference's \
                                    logits, which the training graph does not keep; use \
                                    low_var_kl, kl, abs or mse"
                            .into());
                    }
                    other => other
                        .parse::<KlPenalty>()
                        .map_err(|e| format!("`algorithm.kl_penalty`: {e}"))?,
                };
                Some(KlConfig {
                    penalty,
                    coef: c.float("algorithm.kl_coef")?,
                })
            } else {
                None
            },
        };
        ppo.validate().map_err(|e| e.to_string())?;
        let update = UpdateConfig {
            ppo,
            mini_batch_rows: c.positive("worker.actor.global_batch_size")?,
            micro_batch_rows: c.positive("worker.actor.micro_batch_size_per_device_for_update")?,
            ppo_epochs: c.positive("worker.actor.ppo_epochs")?,
            temperature,
            shuffle: c.bool("worker.actor.shuffle")?,
            loss_agg: match (c.str("worker.actor.loss_agg_mode")?.as_str(), graph) {
                ("auto", GraphKind::DrGrpo) | ("seq-mean-token-sum-norm", _) => {
                    LossAgg::SeqMeanTokenSumNorm {
                        max_tokens: max_new,
                    }
                }
                ("auto" | "token-mean", _) => LossAgg::TokenMean,
                (other, _) => {
                    return Err(format!(
                        "`worker.actor.loss_agg_mode` = {other:?}: expected auto, token-mean or \
                         seq-mean-token-sum-norm"
                    ));
                }
            },
        };
        let truncation = match c.str("data.truncation")?.as_str() {
            "error" => Truncation::Error,
            "left" => Truncation::Left,
            "right" => Truncation::Right,
            other => {
                return Err(format!(
                    "`data.truncation` = {other:?}: expected error, left or right"
                ));
            }
        };
        let (train_data, val_data) = super::data::sources(c)?;
        if graph == GraphKind::Sft && train_data.len().is_some() {
            return Err(
                "--graph sft trains on the embedded task's reference responses; set \
                 data.train_files=shapes"
                    .into(),
            );
        }
        let steps = match graph {
            GraphKind::Sft => c.positive("sft.steps")?,
            _ => c.positive("trainer.total_steps")?,
        };
        let lr_schedule = lr_schedule(c, graph, steps)?;
        let run_seed = u64::try_from(c.int("trainer.seed")?)
            .map_err(|_| "`trainer.seed` must not be negative".to_string())?;
        let device = c
            .str("trainer.device")?
            .parse::<DeviceSpec>()
            .map_err(|e| format!("`trainer.device`: {e}"))?;
        let dtype = c.str("trainer.dtype")?;
        compute_dtype(&dtype, &Device::Cpu).map_err(|e| format!("`trainer.dtype`: {e}"))?;
        Ok(Self {
            graph,
            device,
            dtype,
            run_seed,
            steps,
            batch: match graph {
                GraphKind::Sft => c.positive("sft.batch_size")?,
                GraphKind::Dapo => match c.usize("data.gen_batch_size")? {
                    0 => 2 * c.positive("data.rollout_batch_size")?,
                    g if g < c.positive("data.rollout_batch_size")? => {
                        return Err(format!(
                            "`data.gen_batch_size` = {g} is below `data.rollout_batch_size`: dapo \
                             samples at least as many questions as it trains on"
                        ));
                    }
                    g => g,
                }
                .checked_mul(c.positive("algorithm.filter_groups.max_num_gen_batches")?)
                .ok_or("`algorithm.filter_groups.max_num_gen_batches` is too large")?,
                _ => c.positive("data.rollout_batch_size")?,
            },
            gen_rounds: match graph {
                GraphKind::Dapo => c.positive("algorithm.filter_groups.max_num_gen_batches")?,
                _ => 1,
            },
            keep: match graph {
                GraphKind::Sft => c.positive("sft.batch_size")?,
                _ => c.positive("data.rollout_batch_size")?,
            },
            m,
            n,
            convention,
            local_advantage: c.bool("algorithm.local_advantage")?,
            sampling,
            transform_prob: c.float("worker.rollout.transform_prob")?,
            val_size: c.usize("data.val_size")?,
            val_sampling,
            val_n: c.positive("worker.rollout.val_n")?,
            val_freq: c.usize("trainer.val_freq")?,
            val_before_train: c.bool("trainer.val_before_train")?,
            save_freq: c.usize("trainer.save_freq")?,
            max_staleness: c.usize("trainer.max_staleness")?,
            update,
            optim: OptimConfig {
                lr: match graph {
                    GraphKind::Sft => c.float("sft.lr")?,
                    _ => optim.lr,
                },
                ..optim
            },
            lr_schedule,
            model_path: c.str("worker.actor.model.model_path")?,
            freeze_vision: c.bool("worker.actor.freeze_vision_tower")?,
            workers: c.positive("trainer.workers")?,
            split,
            processes: 1,
            process: 0,
            hostfile: None,
            sft_lr: c.float("sft.lr")?,
            sft_augment: c.bool("sft.augment")?,
            output_dir: c.str("trainer.output_dir")?,
            experiment_name: c.str("trainer.experiment_name")?,
            train_data: Arc::new(train_data),
            val_data: Arc::new(val_data),
            max_prompt_length: c.positive("data.max_prompt_length")?,
            truncation,
            image_backend: c
                .str("data.image_backend")?
                .parse()
                .map_err(|e| format!("`data.image_backend`: {e}"))?,
        })
    }

    /// The number of validation questions: the first `data.val_size` of `data.val_files`.
    pub fn val_questions(&self) -> u64 {
        let size = self.val_size as u64;
        self.val_data.len().map_or(size, |l| l.min(size))
    }
}

/// The config prefix of a graph's learning-rate schedule keys (`lr_scheduler_type`,
/// `lr_warmup_ratio`, `min_lr_ratio`): SFT has its own, beside `sft.lr`.
fn lr_schedule_prefix(graph: GraphKind) -> &'static str {
    match graph {
        GraphKind::Sft => "sft.",
        _ => "worker.actor.optim.",
    }
}

/// The per-step learning-rate schedule of `graph` over `steps` steps, from its config keys.
fn lr_schedule(c: &Config, graph: GraphKind, steps: usize) -> Result<LrSchedule, String> {
    let p = lr_schedule_prefix(graph);
    let warmup_ratio = c.float(&format!("{p}lr_warmup_ratio"))?;
    if !(0.0..=1.0).contains(&warmup_ratio) {
        return Err(format!(
            "`{p}lr_warmup_ratio` = {warmup_ratio}: expected a fraction in [0, 1]"
        ));
    }
    let schedule = LrSchedule {
        decay: c
            .str(&format!("{p}lr_scheduler_type"))?
            .parse()
            .map_err(|e| format!("`{p}lr_scheduler_type` = {e}"))?,
        // verl's int(ratio * total) steps.
        warmup_steps: (warmup_ratio * steps as f64) as u64,
        total_steps: steps as u64,
        min_lr_ratio: c.float(&format!("{p}min_lr_ratio"))?,
    };
    schedule
        .validate()
        .map_err(|e| format!("`{p}min_lr_ratio`: {e}"))?;
    Ok(schedule)
}

/// The seed questions of a training step: positions `step * batch ..` of the training source.
pub fn step_questions(s: &Settings, step: u64) -> Result<Vec<Seed>, PolicyError> {
    let start = step * s.batch as u64;
    (start..start + s.batch as u64)
        .map(|p| s.train_data.train_seed(p).map_err(PolicyError::Input))
        .collect()
}

/// A seed's variants: Share-GRPO expands to m variants (rewrites + visual transforms); GRPO keeps
/// the original question and images; SFT trains on one [`sft_variant`].
pub fn variants_of(s: &Settings, seed: &Seed, step: u64) -> Vec<Variant> {
    match s.graph {
        GraphKind::ShareGrpo | GraphKind::AdaptiveShare => drawn_variants(s, seed, step, s.m, 0),
        GraphKind::Grpo | GraphKind::DrGrpo | GraphKind::Rloo | GraphKind::Dapo => {
            vec![original_variant(seed)]
        }
        GraphKind::Sft => vec![sft_variant(s, seed, step)],
    }
}

/// `m` variants of a seed drawn from its random stream `stream` of the step (rewrites and
/// compensated visual transforms at `worker.rollout.transform_prob`).
fn drawn_variants(s: &Settings, seed: &Seed, step: u64, m: usize, stream: u64) -> Vec<Variant> {
    let mut rng = DetRng::derive(s.run_seed, step, &seed.id, stream);
    expand_variants(
        &seed.texts(),
        &seed.images,
        &seed.id,
        m,
        s.transform_prob,
        &mut rng,
    )
}

/// The prompt variant the SFT graph trains a seed on. With `sft.augment`: one variant drawn as
/// Share-GRPO draws its m (a random text among the original and its rewrites; a visual transform
/// with its compensatory prompt at `worker.rollout.transform_prob`), from the seed's own random
/// stream of the step, so the policy learns to answer every phrasing the RL rollouts will ask.
/// Without it: the original question.
pub fn sft_variant(s: &Settings, seed: &Seed, step: u64) -> Variant {
    if !s.sft_augment {
        return original_variant(seed);
    }
    drawn_variants(s, seed, step, 1, 1)
        .pop()
        .unwrap_or_else(|| original_variant(seed))
}

/// The seed's original question and images, untransformed: GRPO's only variant and the
/// evaluation prompt.
pub fn original_variant(seed: &Seed) -> Variant {
    Variant {
        seed_id: seed.id.clone(),
        k: 0,
        question: format_question(&seed.question, VisualTransform::None),
        text: seed.question.clone(),
        images: seed.images.clone(),
        transform: VisualTransform::None,
    }
}

/// The model inputs of a variant, truncated to `data.max_prompt_length` by `data.truncation`
/// (truncation never cuts an image: such a prompt is an error).
pub fn prompt_of(
    s: &Settings,
    processor: &Processor,
    v: &Variant,
) -> Result<PromptInput, PolicyError> {
    let images: Vec<DynamicImage> = v
        .images
        .iter()
        .map(|img| DynamicImage::ImageRgb8(img.clone()))
        .collect();
    let mut p = processor.prompt(&v.question, &images)?;
    let max = s.max_prompt_length;
    if p.ids.len() > max {
        let over = p.ids.len() - max;
        let cut = match s.truncation {
            Truncation::Error => {
                return Err(PolicyError::Input(format!(
                    "seed {}: the prompt has {} tokens, more than data.max_prompt_length = {max}; \
                     raise it, or set data.truncation=left|right",
                    v.seed_id,
                    p.ids.len()
                )));
            }
            Truncation::Left => 0..over,
            Truncation::Right => max..p.ids.len(),
        };
        let image_id = processor.image_token_id();
        if image_id.is_some_and(|id| p.ids[cut.clone()].contains(&id)) {
            return Err(PolicyError::Input(format!(
                "seed {}: truncating the {}-token prompt to data.max_prompt_length = {max} would \
                 cut image tokens; raise data.max_prompt_length or lower data.max_pixels",
                v.seed_id,
                p.ids.len()
            )));
        }
        p.ids.drain(cut);
    }
    Ok(PromptInput {
        ids: Arc::new(p.ids),
        images: Arc::new(p.images),
    })
}

/// A response's reward under the `math` rule, with its decoded text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graded {
    pub text: String,
    /// Response length in tokens.
    pub length: usize,
    pub overall: f64,
    pub format: f64,
    pub accuracy: f64,
}

pub fn grade(processor: &Processor, r: &Response, answer: &str) -> Result<Graded, PolicyError> {
    let text = processor.decode(&r.tokens, true)?;
    let (score, _) = score_response(RewardRule::Math, &text, answer);
    Ok(Graded {
        text,
        length: r.tokens.len(),
        overall: score.overall,
        format: score.format,
        accuracy: score.accuracy,
    })
}

/// Advantages of training rows `(context k, variant j, sample i, advantage)` of one seed, from
/// its rewards `rewards[j * n + i]`, in (k, j, i) order.
pub fn seed_rows(
    s: &Settings,
    rewards: &[f64],
) -> Result<Vec<(usize, usize, usize, f64)>, AdvantageError> {
    match s.graph {
        GraphKind::ShareGrpo | GraphKind::AdaptiveShare if s.local_advantage => {
            Ok(share_grpo_advantages(rewards, s.m, s.n, s.convention)?
                .rows()
                .collect())
        }
        GraphKind::ShareGrpo | GraphKind::AdaptiveShare => {
            let g = global_advantages(rewards, s.m, s.convention)?;
            Ok((0..s.m)
                .flat_map(|k| (0..s.m).flat_map(move |j| (0..s.n).map(move |i| (k, j, i))))
                .map(|(k, j, i)| (k, j, i, g[j * s.n + i]))
                .collect())
        }
        GraphKind::Grpo
        | GraphKind::DrGrpo
        | GraphKind::Rloo
        | GraphKind::Dapo
        | GraphKind::Sft => {
            let baseline = match s.graph {
                GraphKind::DrGrpo => GroupBaseline::Mean,
                GraphKind::Rloo => GroupBaseline::LeaveOneOut,
                _ => GroupBaseline::MeanStd,
            };
            Ok(baseline
                .advantages(rewards)?
                .into_iter()
                .enumerate()
                .map(|(i, a)| (0, 0, i, a))
                .collect())
        }
    }
}

/// What one step produced, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutStats {
    pub responses: usize,
    pub reward_overall: f64,
    pub reward_format: f64,
    pub reward_accuracy: f64,
    pub response_length: f64,
    /// Seeds whose rewards all tie (advantage vanishing) over seeds.
    pub tied_fraction: f64,
    pub seeds: usize,
}

/// Rollout, grading and rows of one seed (the sequential path; the dataflow splits this across
/// operators). Returns the rows and the graded responses `[j][i]`.
pub fn seed_step(
    s: &Settings,
    model: &PolicyModel,
    processor: &Processor,
    sample: &Seed,
    step: u64,
) -> Result<(Vec<UpdateRow>, Vec<Vec<Graded>>), PolicyError> {
    let variants = variants_of(s, sample, step);
    let prompts: Vec<PromptInput> = variants
        .iter()
        .map(|v| prompt_of(s, processor, v))
        .collect::<Result<_, _>>()?;
    let mut params = s.sampling.clone();
    params.stop = processor.eos_ids();
    let responses = rollout_seed(model, &sample.id, &prompts, s.n, &params, s.run_seed, step)?;
    let graded: Vec<Vec<Graded>> = responses
        .iter()
        .map(|rs| {
            rs.iter()
                .map(|r| grade(processor, r, &sample.answer))
                .collect()
        })
        .collect::<Result<_, _>>()?;
    let rewards: Vec<f64> = graded.iter().flatten().map(|g| g.overall).collect();
    let rows = seed_rows(s, &rewards).map_err(|e| PolicyError::Input(e.to_string()))?;
    Ok((
        rows.into_iter()
            .map(|(k, j, i, a)| UpdateRow {
                prompt: prompts[k].clone(),
                response: Arc::new(responses[j][i].tokens.clone()),
                advantage: a,
            })
            .collect(),
        graded,
    ))
}

/// Summary of a step's graded responses.
pub fn rollout_stats(groups: &[Vec<Vec<Graded>>], lengths: &[usize]) -> RolloutStats {
    let all: Vec<&Graded> = groups.iter().flatten().flatten().collect();
    let n = all.len().max(1) as f64;
    let tied = groups
        .iter()
        .filter(|g| {
            let r: Vec<f64> = g.iter().flatten().map(|x| x.overall).collect();
            r.windows(2).all(|w| w[0] == w[1])
        })
        .count();
    RolloutStats {
        responses: all.len(),
        reward_overall: all.iter().map(|g| g.overall).sum::<f64>() / n,
        reward_format: all.iter().map(|g| g.format).sum::<f64>() / n,
        reward_accuracy: all.iter().map(|g| g.accuracy).sum::<f64>() / n,
        response_length: lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64,
        tied_fraction: tied as f64 / groups.len().max(1) as f64,
        seeds: groups.len(),
    }
}

/// Validation on the first `data.val_size` seeds of `data.val_files`: the original questions,
/// `val_n` samples each at the evaluation temperature (the reference's override: temperature 0.5,
/// n 1; our default n is 4, for a small eval set). Returns (mean accuracy, mean overall reward), or
/// `None` without validation questions.
pub fn evaluate(
    s: &Settings,
    model: &PolicyModel,
    processor: &Processor,
) -> Result<Option<(f64, f64)>, PolicyError> {
    let mut params = s.val_sampling.clone();
    params.stop = processor.eos_ids();
    let mut acc = 0.0;
    let mut reward = 0.0;
    let mut count = 0usize;
    let count_val = s.val_questions();
    if count_val == 0 {
        return Ok(None);
    }
    let samples: Vec<Seed> = (0..count_val)
        .map(|i| s.val_data.seed(i).map_err(PolicyError::Input))
        .collect::<Result<_, _>>()?;
    for chunk in samples.chunks(16) {
        let prompts: Vec<PromptInput> = chunk
            .iter()
            .map(|smp| prompt_of(s, processor, &original_variant(smp)))
            .collect::<Result<_, _>>()?;
        let mut inputs = Vec::new();
        let mut rngs = Vec::new();
        for (p, smp) in prompts.iter().zip(chunk) {
            for i in 0..s.val_n {
                inputs.push((p.ids.as_slice(), p.images.as_slice()));
                rngs.push(DetRng::derive(s.run_seed, u64::MAX, &smp.id, i as u64));
            }
        }
        let gens = model.generate(&inputs, &params, &mut rngs)?;
        for (idx, g) in gens.iter().enumerate() {
            let smp = &chunk[idx / s.val_n];
            let text = processor.decode(&g.tokens, true)?;
            let (score, _) = score_response(RewardRule::Math, &text, &smp.answer);
            acc += score.accuracy;
            reward += score.overall;
            count += 1;
        }
    }
    Ok(Some((
        acc / count.max(1) as f64,
        reward / count.max(1) as f64,
    )))
}

/// Sorts a step's rows into the canonical order the update consumes (seed order of the step,
/// then context, variant, sample), so any arrival order gives the same update.
pub fn canonical_order<T>(rows: &mut [(usize, usize, usize, usize, T)]) {
    rows.sort_by_key(|r| (r.0, r.1, r.2, r.3));
}

/// The update of one step (rows already in canonical order, with their old log-probs).
pub fn update_step(
    s: &Settings,
    model: &PolicyModel,
    opt: &mut Optimizer,
    rows: &[UpdateRow],
    lp: &OldLogProbs,
    step: u64,
) -> Result<UpdateStats, PolicyError> {
    let mut rng = DetRng::derive(s.run_seed, step, "update", 0);
    opt.set_lr(s.optim.lr * s.lr_schedule.factor(step));
    ppo_update_prepared(model, opt, rows, lp, &s.update, &mut rng)
}

/// The reference policy of the KL loss: the checkpoint in `dir` (the run's initial policy, also
/// when resuming), loaded without gradients; `None` when no KL loss is configured.
/// It lives on the policy's `device` and computes in `dtype`, like the policy.
pub fn load_reference(
    s: &Settings,
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> Result<Option<PolicyModel>, PolicyError> {
    if s.update.ppo.kl.is_none() {
        return Ok(None);
    }
    let opts = LoadOptions {
        trainable: false,
        freeze_vision: true,
        compute_dtype: dtype,
    };
    PolicyModel::load(dir, device, opts).map(Some)
}

/// One row of the metrics log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    /// The version after this step's update.
    pub policy_version: u64,
    /// The version that generated this step's responses (step - max_staleness, or 0).
    pub rollout_version: u64,
    pub rollout: RolloutStats,
    pub update: UpdateStats,
    pub val_accuracy: Option<f64>,
    pub val_reward: Option<f64>,
    pub rollout_seconds: f64,
    pub update_seconds: f64,
    pub step_seconds: f64,
    pub generated_tokens: usize,
}

/// The sequential reference loop over the same functions as the dataflow (staleness 0): for each
/// step, roll out every seed with the current weights, grade, compute advantages, update. Calls
/// `on_step` after each step.
pub fn run_sequential(
    s: &Settings,
    policy: &Policy,
    opt: &mut Optimizer,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<(), PolicyError> {
    let reference = load_reference(
        s,
        &policy.dir,
        policy.model.device(),
        policy.model.compute_dtype(),
    )?;
    if matches!(s.graph, GraphKind::AdaptiveShare | GraphKind::Dapo) {
        return Err(PolicyError::Input(format!(
            "the sequential reference loop has no {} graph",
            s.graph.name()
        )));
    }
    for step in 0..s.steps as u64 {
        // The graph scores old log-probs on the published snapshot of the step's version, seed
        // by seed; so does this loop.
        let snapshot = policy.model.snapshot()?;
        let mut rows = Vec::new();
        let mut lp = OldLogProbs::default();
        let mut groups = Vec::new();
        let mut lengths = Vec::new();
        for sample in step_questions(s, step)? {
            let (r, g) = seed_step(s, &policy.model, &policy.processor, &sample, step)?;
            let refs: Vec<&UpdateRow> = r.iter().collect();
            lp.extend(old_log_probs(
                &snapshot,
                reference.as_ref(),
                &refs,
                &s.update,
            )?);
            lengths.extend(g.iter().flatten().map(|x| x.length));
            rows.extend(r);
            groups.push(g);
        }
        let stats = update_step(s, &policy.model, opt, &rows, &lp, step)?;
        on_step(&StepRecord {
            step,
            policy_version: step + 1,
            rollout_version: step,
            rollout: rollout_stats(&groups, &lengths),
            update: stats,
            ..StepRecord::default()
        });
    }
    Ok(())
}
