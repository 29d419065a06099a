//! The `shareflow` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use shareflow::graphs::Estimator;
use shareflow::operators::policy::{LoadOptions, Policy, SamplingParams, load_image};
use shareflow::operators::{RewardRule, StdConvention};
use shareflow::runtime::ClusterConfig;
use shareflow::tools::{ToolError, advantages, jsonl, score};

/// glibc malloc returns large tensor buffers to the OS and page-faults them back on the next
/// step, which costs more than the arithmetic on small models (BENCHMARKS.md); mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`; the binding names no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for 10 s before mimalloc returns it to the OS (its default is 1 s).
/// A training step frees and reallocates the same large buffers every few hundred milliseconds
/// to seconds; returned pages come back zero-filled by the kernel, which took 8% of the default
/// run's update (`clear_page_erms` in `perf`): BENCHMARKS.md. The peak memory is the same, since
/// the buffers are reused. `MIMALLOC_PURGE_DELAY` in the environment still wins. (One
/// of the workspace's two `unsafe` blocks: an FFI call; mimalloc reads its environment before
/// `main`.)
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator, which mimalloc allows at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "shareflow",
    version,
    about = "Share-GRPO and RL training of multimodal LMs as a timely dataflow"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `shareflow_runtime=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Share-GRPO advantages of a rollout dump: JSON lines {seed, variant, sample, reward} in,
    /// one JSON line per training row {seed, context, variant, sample, advantage} out.
    Advantages(AdvantagesCmd),
    /// Rewards of responses: JSON lines {response, ground_truth} in, {overall, format, accuracy,
    /// extracted} out, in input order.
    Score(ScoreCmd),
    /// Per-token log-probs of a response under a Hugging Face checkpoint: prints JSON
    /// {"tokens", "token_ids", "logprobs"} for the response tokens.
    Logprobs(LogprobsCmd),
    /// Sample responses to a question (with images) from a Hugging Face checkpoint.
    Generate(GenerateCmd),
    /// Train a policy with a stock graph (Share-GRPO by default) on the embedded task.
    Train(TrainCmd),
    /// Create a new tiny Qwen2.5-VL checkpoint: a BPE tokenizer trained on the embedded task's
    /// text and random weights (the starting point of the embedded policy's SFT warm start).
    InitModel(InitModelCmd),
    /// Datasets: `shareflow data shapes --out DIR` writes the embedded task as parquet in the
    /// R1-ShareVL-52K layout; `shareflow data check SPEC` loads a dataset and reports its rows.
    #[command(subcommand)]
    Data(DataCmd),
}

#[derive(Debug, Subcommand)]
enum DataCmd {
    /// Write the embedded task as parquet: DIR/train-00000-of-00001.parquet and
    /// DIR/test-00000-of-00001.parquet, columns problem, answer, images, new_questions (+ id).
    /// Train on it with --set data.train_files=DIR@train --set data.val_files=DIR@test.
    Shapes {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Training rows.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Test (validation) rows, from the eval split.
        #[arg(long, default_value_t = 128)]
        val_rows: u64,
    },
    /// Load a dataset as `shareflow train` would (same data.* keys) and report its rows and any
    /// bad ones; exits non-zero on an error.
    Check {
        /// A parquet / JSON lines file or directory, optionally PATH@split.
        spec: String,
        /// Override a data.* key, e.g. --set data.prompt_key=question; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct InitModelCmd {
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reuse this tokenizer.json instead of training one on the task text, e.g.
    /// assets/shapes-vl-tiny/tokenizer.json to regenerate the shipped policy (today's task text
    /// trains a slightly different one).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TrainCmd {
    /// TOML file of configuration keys (`shareflow train --list-config` lists them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one key, e.g. `--set worker.rollout.n=4`; repeatable, applied after --config.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The graph: share-grpo, grpo, dr-grpo, rloo, dapo, adaptive-share or sft.
    #[arg(long, default_value = "share-grpo")]
    graph: String,
    /// Print every configuration key with its default and meaning, then exit.
    #[arg(long)]
    list_config: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Continue a run from a checkpoint: `auto` (the one `checkpoints/latest` in the run
    /// directory names, else start fresh) or a `checkpoints/step_N` directory.
    #[arg(long, value_name = "auto|PATH")]
    resume: Option<String>,
    /// Timely worker threads (`trainer.workers`; wins over --set), data parallel: each samples
    /// and scores its own seeds and updates a policy replica on its share of every mini-batch;
    /// the results are those of one worker, bit for bit.
    #[arg(long, short = 'w', value_name = "N")]
    workers: Option<usize>,
    #[command(flatten)]
    cluster: ProcessArgs,
}

#[derive(Debug, Args)]
struct LogprobsCmd {
    /// Checkpoint directory (config.json, *.safetensors, tokenizer.json, chat template, ...).
    #[arg(long)]
    model: PathBuf,
    /// Image file for the question; repeat for several (they precede the question).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A video for the question (Qwen2.5-VL): a directory of frame images, taken in file-name
    /// order, or a comma-separated list of frame files; repeat for several (after the images).
    #[arg(long = "video", value_name = "DIR|FRAME,FRAME,...")]
    videos: Vec<String>,
    /// Frames per second the video frames were sampled at, for the temporal positions
    /// (transformers assumes 24 for frames given without it).
    #[arg(long)]
    video_fps: Option<f64>,
    /// The user's question; the chat template with the generation prompt wraps it.
    #[arg(long)]
    question: String,
    /// The response, tokenized without special tokens.
    #[arg(long)]
    response: String,
    /// Which transformers image processor to reproduce: `torchvision` (transformers 5's
    /// `AutoProcessor` default) or `pil` (`backend="pil"` / `use_fast=False`).
    #[arg(long, default_value = "torchvision", value_name = "torchvision|pil")]
    image_backend: shareflow::operators::policy::ImageBackend,
    #[command(flatten)]
    placement: PlacementArgs,
}

#[derive(Debug, Args)]
struct GenerateCmd {
    /// Checkpoint directory (config.json, *.safetensors, tokenizer.json, chat template, ...).
    #[arg(long)]
    model: PathBuf,
    /// Image file for the question; repeat for several (they precede the question).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A video for the question (Qwen2.5-VL): a directory of frame images, taken in file-name
    /// order, or a comma-separated list of frame files; repeat for several (after the images).
    #[arg(long = "video", value_name = "DIR|FRAME,FRAME,...")]
    videos: Vec<String>,
    /// Frames per second the video frames were sampled at, for the temporal positions
    /// (transformers assumes 24 for frames given without it).
    #[arg(long)]
    video_fps: Option<f64>,
    /// The user's question.
    #[arg(long)]
    question: String,
    /// Number of responses.
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep only the k most likely tokens (0: no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Maximum new tokens per response.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Random seed (response i uses stream (seed, i)).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object per response (text, token ids, sampler log-probs, finish reason).
    #[arg(long)]
    json: bool,
    /// Which transformers image processor to reproduce: `torchvision` (transformers 5's
    /// `AutoProcessor` default) or `pil` (`backend="pil"` / `use_fast=False`).
    #[arg(long, default_value = "torchvision", value_name = "torchvision|pil")]
    image_backend: shareflow::operators::policy::ImageBackend,
    #[command(flatten)]
    placement: PlacementArgs,
}

/// Where the policy runs (as `trainer.device` / `trainer.dtype` for `train`).
#[derive(Debug, Args)]
struct PlacementArgs {
    /// cpu, cuda (GPU 0), cuda:N, or auto (a GPU when this binary has CUDA and one answers).
    #[arg(long, default_value = "auto", value_name = "cpu|cuda|cuda:N|auto")]
    device: String,
    /// Compute dtype: f32, bf16 (over f32 weights), or auto (bf16 on a GPU, f32 on the CPU).
    #[arg(long, default_value = "auto", value_name = "f32|bf16|auto")]
    dtype: String,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 1)]
    workers: usize,
    #[command(flatten)]
    cluster: ProcessArgs,
}

/// The processes of a multi-process run: every process runs the same command (with `--workers`
/// threads each) and its own `--process`.
#[derive(Debug, Args)]
struct ProcessArgs {
    /// Number of processes in the cluster.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// This process's index in 0..processes (process 0 reads the input and writes every
    /// output: for `train`, the run directory).
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// One `host:port` line per process (required with --processes > 1).
    #[arg(long)]
    hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    fn config(&self) -> ClusterConfig {
        ClusterConfig {
            workers: self.workers,
            processes: self.cluster.processes,
            process: self.cluster.process,
            hostfile: self.cluster.hostfile.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StdArg {
    /// Over the m*m*n training rows, as the R1-ShareVL release computes it.
    Reference,
    /// Over the m*n unique responses, as the paper's equations read.
    Paper,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EstimatorArg {
    /// Hierarchical advantages with cross-variant sharing (m*m*n rows per seed).
    ShareGrpo,
    /// Plain GRPO over each seed's responses (one row per response).
    Grpo,
    /// Dr. GRPO: reward minus the seed's mean, no std division (one row per response).
    DrGrpo,
    /// RLOO: reward minus the mean of the seed's other responses (one row per response).
    Rloo,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RuleArg {
    /// <think>..</think>..\boxed{}; overall = 0.9 accuracy + 0.1 format.
    Math,
    /// <think>..</think><answer>..</answer>; overall = 0.5 accuracy + 0.5 format.
    R1v,
}

#[derive(Debug, Args)]
struct AdvantagesCmd {
    /// Input JSON lines file, or `-` for standard input.
    #[arg(long)]
    input: String,
    /// Output file (written only if every seed succeeds); standard output if absent.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Population of the global standard deviation.
    #[arg(long, value_enum, default_value = "reference")]
    std: StdArg,
    /// Advantage estimator.
    #[arg(long, value_enum, default_value = "share-grpo")]
    estimator: EstimatorArg,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
struct ScoreCmd {
    /// Input JSON lines file, or `-` for standard input.
    #[arg(long)]
    input: String,
    /// Output file; standard output if absent.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Reward rule.
    #[arg(long, value_enum, default_value = "math")]
    rule: RuleArg,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Writes lines to the output file (through a temporary file and a rename, so a failure leaves
/// no half-written file) or to standard output.
fn write_lines(output: Option<&PathBuf>, lines: &[String]) -> anyhow::Result<()> {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    match output {
        Some(path) => {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming to {}", path.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .context("writing standard output")?;
            out.flush().context("writing standard output")?;
        }
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(items: &[T]) -> anyhow::Result<Vec<String>> {
    items
        .iter()
        .map(|x| serde_json::to_string(x).context("serialising output"))
        .collect()
}

/// timely's TCP set-up prints connection progress on standard output, which would interleave with
/// JSON lines there: a cluster run must write its output to a file.
fn check_output(cluster: &ClusterConfig, output: Option<&PathBuf>) -> anyhow::Result<()> {
    if cluster.processes > 1 && output.is_none() {
        anyhow::bail!(
            "--processes > 1 needs --output FILE (the TCP set-up prints to standard output)"
        );
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Advantages(cmd) => {
            let cluster = cmd.cluster.config();
            check_output(&cluster, cmd.output.as_ref())?;
            let responses = if cluster.is_leader() {
                advantages::parse_responses(&jsonl::read_input(&cmd.input)?, &cmd.input)?
            } else {
                Vec::new()
            };
            let estimator = match (cmd.estimator, cmd.std) {
                (EstimatorArg::Grpo, _) => Estimator::Grpo,
                (EstimatorArg::DrGrpo, _) => Estimator::DrGrpo,
                (EstimatorArg::Rloo, _) => Estimator::Rloo,
                (EstimatorArg::ShareGrpo, StdArg::Reference) => {
                    Estimator::ShareGrpo(StdConvention::Reference)
                }
                (EstimatorArg::ShareGrpo, StdArg::Paper) => {
                    Estimator::ShareGrpo(StdConvention::Paper)
                }
            };
            let rows = advantages::run_advantages(responses, estimator, &cluster)?;
            if cluster.is_leader() {
                write_lines(cmd.output.as_ref(), &to_json(&rows)?)?;
            }
        }
        Command::Score(cmd) => {
            let cluster = cmd.cluster.config();
            check_output(&cluster, cmd.output.as_ref())?;
            let inputs = if cluster.is_leader() {
                score::parse_score_inputs(&jsonl::read_input(&cmd.input)?, &cmd.input)?
            } else {
                Vec::new()
            };
            let rule = match cmd.rule {
                RuleArg::Math => RewardRule::Math,
                RuleArg::R1v => RewardRule::R1v,
            };
            let outputs = score::run_score(inputs, rule, &cluster)?;
            if cluster.is_leader() {
                write_lines(cmd.output.as_ref(), &to_json(&outputs)?)?;
            }
        }
        Command::Logprobs(cmd) => {
            let images = load_images(&cmd.images)?;
            let mut policy = load_policy(&cmd.model, &cmd.placement)?;
            policy.processor.set_image_backend(cmd.image_backend);
            let videos = load_videos(&cmd.videos, cmd.video_fps)?;
            let prompt = policy.prompt_with_videos(&cmd.question, &images, &videos)?;
            let r = policy.log_probs_of_prompt(&prompt, &cmd.response)?;
            let out = serde_json::json!({
                "tokens": r.tokens,
                "token_ids": r.token_ids,
                "logprobs": r.log_probs,
            });
            write_lines(None, &[out.to_string()])?;
        }
        Command::InitModel(cmd) => {
            let spec = shareflow::operators::policy::TinyVlSpec::default();
            shareflow::graphs::train::init::init_model(
                &cmd.out,
                cmd.seed,
                &spec,
                cmd.tokenizer.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            write_lines(None, &[format!("wrote {}", cmd.out.display())])?;
        }
        Command::Data(DataCmd::Shapes {
            out,
            rows,
            val_rows,
        }) => {
            let lines = shareflow::tools::data::export_shapes(&out, rows, val_rows)?;
            write_lines(None, &lines)?;
        }
        Command::Data(DataCmd::Check { spec, sets }) => {
            let lines = shareflow::tools::data::check(&spec, &sets)?;
            write_lines(None, &lines)?;
        }
        Command::Train(cmd) => {
            if cmd.list_config {
                write_lines(None, &[shareflow::graphs::train::describe()])?;
                return Ok(());
            }
            let graph = shareflow::graphs::train::GraphKind::parse(&cmd.graph)
                .map_err(anyhow::Error::msg)?;
            let mut sets = cmd.sets.clone();
            sets.extend(cmd.workers.map(|w| format!("trainer.workers={w}")));
            let run = shareflow::tools::train::train(
                cmd.config.as_deref(),
                &sets,
                graph,
                cmd.quiet,
                cmd.resume.as_deref(),
                &shareflow::tools::train::Processes {
                    count: cmd.cluster.processes,
                    index: cmd.cluster.process,
                    hostfile: cmd.cluster.hostfile.clone(),
                },
            )?;
            write_lines(None, &[serde_json::to_string_pretty(&run.summary)?])?;
        }
        Command::Generate(cmd) => {
            if cmd.n == 0 {
                anyhow::bail!("--n must be at least 1");
            }
            let images = load_images(&cmd.images)?;
            let mut policy = load_policy(&cmd.model, &cmd.placement)?;
            policy.processor.set_image_backend(cmd.image_backend);
            let params = SamplingParams {
                temperature: cmd.temperature,
                top_p: cmd.top_p,
                top_k: cmd.top_k,
                max_new_tokens: cmd.max_new_tokens,
                stop: Vec::new(),
            };
            let videos = load_videos(&cmd.videos, cmd.video_fps)?;
            let prompt = policy.prompt_with_videos(&cmd.question, &images, &videos)?;
            let responses = policy.generate_from_prompt(&prompt, cmd.n, &params, cmd.seed)?;
            let mut lines = Vec::new();
            for (i, r) in responses.iter().enumerate() {
                let finish = if r.generation.stopped {
                    "stop"
                } else {
                    "length"
                };
                if cmd.json {
                    lines.push(
                        serde_json::json!({
                            "index": i,
                            "text": r.text,
                            "token_ids": r.generation.tokens,
                            "logprobs": r.generation.log_probs,
                            "finish_reason": finish,
                            "policy_version": r.generation.policy_version,
                        })
                        .to_string(),
                    );
                } else {
                    lines.push(format!(
                        "--- response {i} ({} tokens, {finish}) ---",
                        r.generation.tokens.len()
                    ));
                    lines.push(r.text.clone());
                }
            }
            write_lines(None, &lines)?;
        }
    }
    Ok(())
}

fn load_images(paths: &[PathBuf]) -> anyhow::Result<Vec<image::DynamicImage>> {
    paths
        .iter()
        .map(|p| load_image(p).map_err(anyhow::Error::from))
        .collect()
}

/// `--video` arguments: a directory of frames (image files in name order) or a comma-separated
/// list of frame files.
fn load_videos(
    specs: &[String],
    fps: Option<f64>,
) -> anyhow::Result<Vec<shareflow::operators::policy::Video>> {
    const FRAME_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "webp", "bmp", "gif"];
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let dir = std::path::Path::new(spec);
        let paths: Vec<PathBuf> = if dir.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir)
                .map_err(|e| anyhow::anyhow!("--video {spec}: cannot read the directory: {e}"))?
            {
                let path = entry
                    .map_err(|e| anyhow::anyhow!("--video {spec}: {e}"))?
                    .path();
                let ext = path
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                if path.is_file() && FRAME_EXTENSIONS.contains(&ext.as_str()) {
                    files.push(path);
                }
            }
            files.sort();
            files
        } else {
            spec.split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        };
        if paths.is_empty() {
            anyhow::bail!(
                "--video {spec}: no frames (give a directory of {} files or a comma-separated \
                 list of frame files)",
                FRAME_EXTENSIONS.join("/")
            );
        }
        out.push(shareflow::operators::policy::Video {
            frames: load_images(&paths)?,
            fps,
        });
    }
    Ok(out)
}

fn load_policy(dir: &std::path::Path, placement: &PlacementArgs) -> anyhow::Result<Policy> {
    use shareflow::operators::policy::{compute_dtype, open_device};
    let device = open_device(&placement.device).context("--device")?;
    let opts = LoadOptions {
        trainable: false,
        freeze_vision: false,
        compute_dtype: compute_dtype(&placement.dtype, &device).context("--dtype")?,
    };
    Policy::load(dir, &device, opts)
        .with_context(|| format!("loading the checkpoint {}", dir.display()))
}

/// Fixes candle's thread count once. Without `RAYON_NUM_THREADS` (or `CANDLE_NUM_THREADS`),
/// candle recounts the machine's cores on every matmul by reading `/proc/cpuinfo`, which took
/// 15% of an evaluation's time on 2 cores (BENCHMARKS.md). The count is candle's own default.
#[allow(unsafe_code)]
fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none()
        && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        let n = shareflow::operators::policy::candle::utils::get_num_threads();
        // SAFETY: the first statement of `main`, before any other thread exists to read the
        // environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    fix_thread_count();
    keep_freed_memory();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ToolError>() {
                Some(ToolError::Input(lines)) => {
                    for l in lines {
                        eprintln!("error: {l}");
                    }
                }
                Some(ToolError::Issues(issues)) => {
                    for i in issues {
                        eprintln!("error: {i}");
                    }
                    eprintln!("error: no output written ({} problem(s))", issues.len());
                }
                _ => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
