//! `shareflow train` end to end on the embedded policy with tiny sizes: the run directory holds
//! the resolved config, one metrics line per step with the expected metrics, a loadable HF
//! checkpoint, the plot and the summary; configuration mistakes are clear errors.

mod common;

use common::{shareflow, temp_dir};
use serde_json::Value;
use shareflow_operators::policy::candle;

fn tiny(out: &str, name: &str) -> Vec<String> {
    [
        "train",
        "--quiet",
        "--set",
        "trainer.total_steps=2",
        "--set",
        "data.rollout_batch_size=1",
        "--set",
        "worker.rollout.n=2",
        "--set",
        "data.max_response_length=8",
        "--set",
        "data.val_size=2",
        "--set",
        "trainer.val_freq=1",
        "--set",
        "worker.actor.global_batch_size=4",
        "--set",
        "worker.actor.micro_batch_size_per_device_for_update=4",
        "--set",
        "sft.steps=2",
        "--set",
        "sft.batch_size=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--set".into(),
        format!("trainer.output_dir={out}"),
        "--set".into(),
        format!("trainer.experiment_name={name}"),
    ])
    .collect()
}

fn run(args: &[String]) -> (bool, String, String) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = shareflow(&argv, None);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn share_grpo_run_writes_metrics_checkpoint_plot_and_summary() {
    let dir = temp_dir("train-run");
    let out = dir.to_string_lossy().into_owned();
    let (ok, stdout, err) = run(&tiny(&out, "sg"));
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(&stdout).expect("summary JSON on stdout");
    assert_eq!(summary["steps"], 2);
    let run_dir = dir.join("sg");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics");
    let lines: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m["step"], i as u64 + 1);
        for key in [
            "reward/overall",
            "reward/accuracy",
            "reward/format",
            "actor/pg_loss",
            "actor/grad_norm",
            "actor/ppo_kl",
            "advantage/tied_fraction",
            "response_length/mean",
            "timing/step_s",
            "val/accuracy",
        ] {
            let v = m[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "step {}: {key} = {}", i + 1, m[key]);
        }
        assert!((0.0..=1.0).contains(&m["reward/overall"].as_f64().unwrap_or(-1.0)));
    }
    for f in ["config.toml", "plot.png", "summary.json", "timeline.png"] {
        assert!(run_dir.join(f).exists(), "{f} missing");
    }
    // The stage timeline: every stage's busy spans.
    let trace: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("trace.json")).expect("trace.json"),
    )
    .expect("trace.json is JSON");
    let slices: Vec<&Value> = trace["traceEvents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["ph"] == "X")
        .collect();
    for stage in ["encode", "rollout", "old-log-probs", "update"] {
        assert!(
            slices.iter().any(|e| e["cat"] == stage),
            "no {stage} spans in trace.json"
        );
    }
    // A span per handler call: the update stage's for each step (its rows, then its end).
    let mut updates: Vec<u64> = slices
        .iter()
        .filter(|e| e["cat"] == "update")
        .filter_map(|e| e["args"]["step"].as_u64())
        .collect();
    updates.dedup();
    assert_eq!(
        updates,
        vec![1, 2],
        "update spans of steps 1 and 2, in order"
    );
    let busy = &summary["stage_busy_seconds"];
    assert!(busy["rollout"].as_f64().unwrap_or(0.0) > 0.0, "{busy}");
    let ratio = summary["wall_over_stage_busy_sum"].as_f64().unwrap_or(0.0);
    assert!(ratio > 0.0 && ratio.is_finite(), "{ratio}");
    // The TensorBoard event file (its bytes are checked against TensorBoard's own writer in
    // src/tools/tensorboard.rs): every metric's tag is in it.
    let events: Vec<_> = std::fs::read_dir(&run_dir)
        .expect("run dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(events.len(), 1, "one event file");
    let bytes = std::fs::read(events[0].path()).expect("event file");
    for tag in ["reward/overall", "actor/pg_loss", "val/accuracy"] {
        assert!(
            bytes.windows(tag.len()).any(|w| w == tag.as_bytes()),
            "{tag} not in the event file"
        );
    }
    let ckpt = run_dir.join("checkpoints/step_2");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(ckpt.join(f).exists(), "checkpoint file {f} missing");
    }
    // The checkpoint is a usable HF directory.
    let (ok, stdout, err) = run(&[
        "generate".into(),
        "--model".into(),
        ckpt.to_string_lossy().into_owned(),
        "--question".into(),
        "How many shapes are in the image?".into(),
        "--max-new-tokens".into(),
        "4".into(),
    ]);
    assert!(ok && stdout.contains("response 0"), "{err}");
    // trainer.val_only re-evaluates the checkpoint: the run's own final evaluation, exactly.
    let mut args = tiny(&out, "sg-val");
    args.extend([
        "--set".into(),
        format!("worker.actor.model.model_path={}", ckpt.display()),
        "--set".into(),
        "trainer.val_only=true".into(),
    ]);
    let (ok, stdout, err) = run(&args);
    assert!(ok, "{err}");
    let val: Value = serde_json::from_str(&stdout).expect("val_only summary");
    assert_eq!(val["val_questions"], 2);
    assert_eq!(
        val["eval_accuracy"], summary["eval_accuracy_after"],
        "{val} vs {summary}"
    );
    assert!(
        !dir.join("sg-val/metrics.jsonl").exists(),
        "val_only trained"
    );
    // A second run into the same directory is refused rather than overwriting it.
    let (ok, _, err) = run(&tiny(&out, "sg"));
    assert!(!ok && err.contains("already there"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_other_graph_runs() {
    let dir = temp_dir("train-graphs");
    let out = dir.to_string_lossy().into_owned();
    for graph in ["grpo", "dr-grpo", "rloo", "dapo", "adaptive-share", "sft"] {
        let mut args = tiny(&out, graph);
        args.extend(["--graph".into(), graph.into()]);
        let (ok, stdout, err) = run(&args);
        assert!(ok, "{graph}: {err}");
        let summary: Value = serde_json::from_str(&stdout).expect("summary");
        assert_eq!(summary["graph"], graph);
        assert!(
            dir.join(graph)
                .join("checkpoints/step_2/model.safetensors")
                .exists()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn configuration_mistakes_are_clear_errors() {
    let dir = temp_dir("train-errors");
    let out = dir.to_string_lossy().into_owned();
    let mut args = tiny(&out, "bad");
    args.extend(["--set".into(), "worker.rollout.nn=3".into()]);
    let (ok, _, err) = run(&args);
    assert!(
        !ok && err.contains("unknown configuration key `worker.rollout.nn`"),
        "{err}"
    );
    assert!(
        err.contains("worker.rollout.n"),
        "suggests the closest key: {err}"
    );
    let mut args = tiny(&out, "bad");
    args.extend(["--set".into(), "worker.rollout.temperature=hot".into()]);
    let (ok, _, err) = run(&args);
    assert!(!ok && err.contains("wrong type"), "{err}");
    let mut args = tiny(&out, "bad");
    args.extend(["--graph".into(), "ppo".into()]);
    let (ok, _, err) = run(&args);
    assert!(!ok && err.contains("unknown graph"), "{err}");
    for (set, want) in [
        ("trainer.device=tpu", "expected cpu, cuda, cuda:N"),
        ("trainer.dtype=f16", "expected f32, bf16 or auto"),
    ] {
        let mut args = tiny(&out, "bad");
        args.extend(["--set".into(), set.into()]);
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(want), "{set}: {err}");
    }
    if !shareflow_operators::policy::built_with_cuda() {
        let mut args = tiny(&out, "bad");
        args.extend(["--set".into(), "trainer.device=cuda".into()]);
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains("--features cuda"), "{err}");
    }
    let (ok, stdout, _) = run(&["train".into(), "--list-config".into()]);
    assert!(
        ok && stdout.contains("worker.rollout.question_num = 2"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shareflow train` on a Qwen3-VL checkpoint (the tiny random one of
/// `tests/golden/policy/qwen3/`): Share-GRPO writes a checkpoint under transformers' names that
/// the CLI loads again, and SFT moves the weights with finite, non-zero gradients.
#[test]
fn qwen3_vl_checkpoint_trains() {
    let dir = temp_dir("train-qwen3-vl");
    let out = dir.to_string_lossy().into_owned();
    let src = common::root().join("tests/golden/policy/qwen3/tiny-qwen3_vl");
    for graph in ["share-grpo", "sft"] {
        let mut args = tiny(&out, graph);
        args.extend([
            "--graph".into(),
            graph.into(),
            "--set".into(),
            format!("worker.actor.model.model_path={}", src.display()),
        ]);
        let (ok, stdout, err) = run(&args);
        assert!(ok, "{graph}: {err}");
        let summary: Value = serde_json::from_str(&stdout).expect("summary");
        assert_eq!(summary["steps"], 2, "{graph}");
        let ckpt = dir.join(graph).join("checkpoints/step_2");
        let (ok, stdout, err) = run(&[
            "generate".into(),
            "--model".into(),
            ckpt.to_string_lossy().into_owned(),
            "--image".into(),
            common::root()
                .join("tests/golden/policy/qwen3/images/q120x90.png")
                .to_string_lossy()
                .into_owned(),
            "--question".into(),
            "How many shapes are there?".into(),
            "--max-new-tokens".into(),
            "4".into(),
        ]);
        assert!(ok && stdout.contains("response 0"), "{graph}: {err}");
        let load = |p: std::path::PathBuf| {
            candle::safetensors::load(p, &candle::Device::Cpu).expect("safetensors")
        };
        let saved = load(ckpt.join("model.safetensors"));
        let original = load(src.join("model.safetensors"));
        let mut names: Vec<&String> = saved.keys().collect();
        let mut want: Vec<&String> = original.keys().collect();
        names.sort();
        want.sort();
        assert_eq!(names, want, "{graph}: tensor names");
        if graph == "sft" {
            let metrics = std::fs::read_to_string(dir.join("sft/metrics.jsonl")).expect("metrics");
            for line in metrics.lines() {
                let m: Value = serde_json::from_str(line).expect("JSON line");
                let g = m["actor/grad_norm"].as_f64().unwrap_or(f64::NAN);
                assert!(g.is_finite() && g > 0.0, "sft grad_norm {g}");
            }
            for name in [
                "model.language_model.layers.0.self_attn.q_norm.weight",
                "model.visual.pos_embed.weight",
                "model.visual.deepstack_merger_list.0.linear_fc1.weight",
            ] {
                let moved = (&saved[name] - &original[name])
                    .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
                    .expect("difference");
                assert!(moved > 0.0, "SFT left {name} unchanged");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `trainer.dtype=bf16` (what a GPU run uses by default) on the CPU: Share-GRPO and SFT run
/// with bf16 compute; the master weights, their checkpoint and the optimizer state stay f32; the
/// metrics are finite; SFT's first loss and gradient norm are within bf16 rounding (3% / 10%)
/// of the f32 run's on the same batch, and the weights move.
#[test]
fn bf16_compute_trains_f32_master_weights() {
    let dir = temp_dir("train-bf16");
    let out = dir.to_string_lossy().into_owned();
    let metrics = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(name).join("metrics.jsonl"))
            .expect("metrics")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    let mut first = Vec::new();
    for (graph, dtype) in [("share-grpo", "bf16"), ("sft", "bf16"), ("sft", "f32")] {
        let name = format!("{graph}-{dtype}");
        let mut args = tiny(&out, &name);
        args.extend([
            "--graph".into(),
            graph.into(),
            "--set".into(),
            format!("trainer.dtype={dtype}"),
            "--set".into(),
            "trainer.device=cpu".into(),
        ]);
        let (ok, stdout, err) = run(&args);
        assert!(ok, "{name}: {err}");
        let summary: Value = serde_json::from_str(&stdout).expect("summary JSON on stdout");
        assert_eq!(summary["policy_placement"]["dtype"], dtype, "{summary}");
        assert_eq!(summary["policy_placement"]["device"], "cpu", "{summary}");
        let m = metrics(&name);
        for line in &m {
            for key in ["actor/pg_loss", "actor/grad_norm", "actor/ppo_kl"] {
                let v = line[key].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite(), "{name}: {key} = {}", line[key]);
            }
        }
        if graph == "sft" {
            first.push((
                m[0]["actor/pg_loss"].as_f64(),
                m[0]["actor/grad_norm"].as_f64(),
            ));
        }
    }
    let [(Some(l16), Some(g16)), (Some(l32), Some(g32))] = first[..] else {
        panic!("SFT metrics missing: {first:?}");
    };
    assert!(
        g16 > 0.0 && (l16 - l32).abs() <= 0.03 * l32.abs(),
        "loss {l16} vs {l32}"
    );
    assert!((g16 - g32).abs() <= 0.1 * g32, "grad norm {g16} vs {g32}");
    let dev = candle::Device::Cpu;
    let start = common::root().join("assets/shapes-vl-tiny/model.safetensors");
    let ckpt = dir.join("sft-bf16/checkpoints/step_2");
    let a = candle::safetensors::load(&start, &dev).expect("initial weights");
    let b = candle::safetensors::load(ckpt.join("model.safetensors"), &dev).expect("weights");
    let mut moved = 0;
    for (name, t) in &a {
        let u = &b[name];
        assert_eq!(t.dtype(), u.dtype(), "{name}: saved dtype");
        let d = (t.to_dtype(candle::DType::F32).expect("f32")
            - u.to_dtype(candle::DType::F32).expect("f32"))
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("diff");
        if d > 0.0 {
            moved += 1;
        }
    }
    assert!(
        moved > a.len() / 2,
        "only {moved} of {} tensors moved",
        a.len()
    );
    let optim = candle::safetensors::load(ckpt.join("optimizer.safetensors"), &dev)
        .expect("optimizer state");
    assert!(optim.values().all(|t| t.dtype() == candle::DType::F32));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--workers 2` (each worker samples its own seed of two) ends with the checkpoint of
/// `--workers 1`, byte for byte.
#[test]
fn two_workers_write_the_checkpoint_of_one() {
    let dir = temp_dir("train-workers");
    let out = dir.to_string_lossy().into_owned();
    let mut weights = Vec::new();
    for workers in ["1", "2"] {
        let mut args = tiny(&out, &format!("w{workers}"));
        args.extend([
            "--set".into(),
            "data.rollout_batch_size=2".into(),
            "--set".into(),
            "data.val_size=0".into(),
            "--workers".into(),
            workers.into(),
        ]);
        let (ok, _, err) = run(&args);
        assert!(ok, "--workers {workers}: {err}");
        let config = std::fs::read_to_string(dir.join(format!("w{workers}/config.toml")))
            .expect("config.toml");
        assert!(
            config.contains(&format!("workers = {workers}")),
            "--workers {workers} not in the run's config:\n{config}"
        );
        let ckpt = dir.join(format!("w{workers}/checkpoints/step_2/model.safetensors"));
        weights.push(std::fs::read(&ckpt).expect("checkpoint"));
    }
    assert!(
        weights[0] == weights[1],
        "--workers 2 trained other weights"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free TCP port on 127.0.0.1 (bound, then released for the cluster to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The metrics of a run without its timings (which differ between runs).
fn metrics_without_timings(run_dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("JSON line");
            if let Some(m) = v.as_object_mut() {
                m.retain(|k, _| !k.starts_with("timing/") && !k.starts_with("throughput/"));
            }
            v
        })
        .collect()
}

/// Two processes over TCP on 127.0.0.1 (one worker each, each a policy replica computing one
/// of every mini-batch's two micro-batches) end with the checkpoint of one process, byte for
/// byte, and the same metrics, at staleness 0 and 1. Process 1 writes nothing.
/// Writes a hostfile of two free ports on 127.0.0.1 at `path`.
fn two_hosts(path: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(
        path,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("write hostfile");
    path.to_path_buf()
}

/// Starts `shareflow` with `args` as process `process` of 2 over `hostfile`.
fn spawn_process(
    mut args: Vec<String>,
    process: &str,
    hostfile: &std::path::Path,
    stdout: std::process::Stdio,
) -> std::process::Child {
    args.extend([
        "--processes".into(),
        "2".into(),
        "--process".into(),
        process.into(),
        "--hostfile".into(),
        hostfile.to_string_lossy().into_owned(),
    ]);
    std::process::Command::new(env!("CARGO_BIN_EXE_shareflow"))
        .args(&args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn process")
}

#[test]
fn two_processes_write_the_checkpoint_of_one() {
    let dir = temp_dir("train-processes");
    let out = dir.to_string_lossy().into_owned();
    for staleness in ["0", "1"] {
        let args = |name: &str| {
            let mut a = tiny(&out, name);
            a.extend([
                "--set".into(),
                "data.rollout_batch_size=2".into(),
                "--set".into(),
                "data.val_size=0".into(),
                "--set".into(),
                "worker.actor.micro_batch_size_per_device_for_update=2".into(),
                "--set".into(),
                format!("trainer.max_staleness={staleness}"),
            ]);
            a
        };
        let one = format!("one-s{staleness}");
        let (ok, _, err) = run(&args(&one));
        assert!(ok, "one process: {err}");

        let hostfile = two_hosts(&dir.join(format!("hosts-{staleness}")));
        let two = format!("two-s{staleness}");
        let follower_dir = format!("follower-s{staleness}");
        let spawn = |process: &str, name: &str| {
            spawn_process(args(name), process, &hostfile, std::process::Stdio::piped())
        };
        // The follower gets another run name: it must not write anything under it.
        let p1 = spawn("1", &follower_dir);
        let p0 = spawn("0", &two);
        let out0 = p0.wait_with_output().expect("process 0");
        let out1 = p1.wait_with_output().expect("process 1");
        assert!(
            out0.status.success(),
            "process 0: {}",
            String::from_utf8_lossy(&out0.stderr)
        );
        assert!(
            out1.status.success(),
            "process 1: {}",
            String::from_utf8_lossy(&out1.stderr)
        );
        assert!(
            !dir.join(&follower_dir).exists(),
            "process 1 wrote a run directory"
        );
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let a = std::fs::read(dir.join(format!("{one}/checkpoints/step_2/{file}")))
                .expect("one process's checkpoint");
            let b = std::fs::read(dir.join(format!("{two}/checkpoints/step_2/{file}")))
                .expect("two processes' checkpoint");
            assert!(a == b, "staleness {staleness}: {file} differs");
        }
        assert_eq!(
            metrics_without_timings(&dir.join(&one)),
            metrics_without_timings(&dir.join(&two)),
            "staleness {staleness}: metrics differ"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Killing one process of a two-process run (SIGKILL, after the first checkpoint) stops the
/// other within seconds with an error that says what happened, instead of hanging; both then
/// resume from the last checkpoint (`--resume auto`) and end with the weights of a straight
/// one-process run, byte for byte.
#[cfg(unix)]
#[test]
fn a_killed_process_stops_its_peer_and_the_run_resumes_exactly() {
    let dir = temp_dir("train-kill");
    let out = dir.to_string_lossy().into_owned();
    let args = |name: &str| {
        let mut a = tiny(&out, name);
        a.extend([
            "--set".into(),
            "trainer.total_steps=8".into(),
            "--set".into(),
            "trainer.save_freq=1".into(),
            "--set".into(),
            "data.val_size=0".into(),
            "--set".into(),
            "worker.actor.micro_batch_size_per_device_for_update=2".into(),
        ]);
        a
    };
    let (ok, _, err) = run(&args("straight"));
    assert!(ok, "straight run: {err}");

    let spawn = |process: &str, hostfile: &std::path::Path, extra: &[&str]| {
        let mut a = args("cluster");
        a.extend(extra.iter().map(|s| s.to_string()));
        spawn_process(a, process, hostfile, std::process::Stdio::null())
    };
    let hosts = |name: &str| two_hosts(&dir.join(name));
    let first = hosts("hosts-first");
    let mut p1 = spawn("1", &first, &[]);
    let p0 = spawn("0", &first, &[]);
    let latest = dir.join("cluster/checkpoints/latest");
    let t = std::time::Instant::now();
    while !latest.exists() && t.elapsed() < std::time::Duration::from_secs(300) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(latest.exists(), "no checkpoint within 300 s");
    p1.kill().expect("SIGKILL process 1");
    let _ = p1.wait();
    let killed = std::time::Instant::now();
    let out0 = p0.wait_with_output().expect("process 0");
    let waited = killed.elapsed();
    let err0 = String::from_utf8_lossy(&out0.stderr);
    assert!(!out0.status.success(), "process 0 finished the run: {err0}");
    assert!(
        waited < std::time::Duration::from_secs(30),
        "process 0 took {waited:?} to stop"
    );
    assert!(
        err0.contains("another process of the run exited"),
        "process 0's error: {err0}"
    );

    let second = hosts("hosts-second");
    let p1 = spawn("1", &second, &["--resume", "auto"]);
    let p0 = spawn("0", &second, &["--resume", "auto"]);
    let out0 = p0.wait_with_output().expect("process 0");
    let out1 = p1.wait_with_output().expect("process 1");
    assert!(
        out0.status.success(),
        "resumed process 0: {}",
        String::from_utf8_lossy(&out0.stderr)
    );
    assert!(
        out1.status.success(),
        "resumed process 1: {}",
        String::from_utf8_lossy(&out1.stderr)
    );
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(dir.join(format!("straight/checkpoints/step_8/{file}")))
            .expect("straight checkpoint");
        let b = std::fs::read(dir.join(format!("cluster/checkpoints/step_8/{file}")))
            .expect("resumed checkpoint");
        assert!(a == b, "the resumed cluster run's {file} differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run stopped on one worker resumes on two (data-parallel replicas) and ends with the
/// straight one-worker run's checkpoint, byte for byte: the worker count may change on resume.
#[test]
fn a_run_resumes_on_another_worker_count() {
    let dir = temp_dir("train-resume-workers");
    let out = dir.to_string_lossy().into_owned();
    let args = |name: &str, extra: &[&str]| {
        let mut a = tiny(&out, name);
        a.extend(
            [
                "--set",
                "trainer.total_steps=4",
                "--set",
                "data.val_size=0",
                "--set",
                "worker.actor.micro_batch_size_per_device_for_update=2",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        a
    };
    let (ok, _, err) = run(&args("straight", &[]));
    assert!(ok, "straight: {err}");
    let (ok, _, err) = run(&args("moved", &["--set", "trainer.stop_at_step=2"]));
    assert!(ok, "first half: {err}");
    let (ok, _, err) = run(&args("moved", &["--workers", "2", "--resume", "auto"]));
    assert!(ok, "resumed on 2 workers: {err}");
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(dir.join(format!("straight/checkpoints/step_4/{file}")))
            .expect("straight checkpoint");
        let b = std::fs::read(dir.join(format!("moved/checkpoints/step_4/{file}")))
            .expect("resumed checkpoint");
        assert!(a == b, "{file} differs after resuming on 2 workers");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
