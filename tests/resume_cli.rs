//! `shareflow train --resume`: a run killed (SIGKILL) while writing its second checkpoint keeps
//! the first as `latest`; `--resume auto` continues from it and ends exactly where a straight run
//! ends (final weights bitwise, metrics lines except timings).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_json_lines, shareflow, temp_dir};
use serde_json::Value;
use shareflow::operators::policy::candle::{Device, safetensors};

fn args(out: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--quiet",
        "--set",
        "trainer.total_steps=4",
        "--set",
        "trainer.save_freq=1",
        "--set",
        "data.rollout_batch_size=1",
        "--set",
        "worker.rollout.n=2",
        "--set",
        "data.max_response_length=8",
        "--set",
        "data.val_size=2",
        "--set",
        "trainer.val_freq=2",
        "--set",
        "worker.actor.global_batch_size=4",
        "--set",
        "worker.actor.micro_batch_size_per_device_for_update=4",
        "--set",
        "trainer.max_staleness=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "--set".into(),
        format!("trainer.output_dir={}", out.display()),
        "--set".into(),
        format!("trainer.experiment_name={name}"),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String]) -> (bool, String) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = shareflow(&argv, None);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Metrics lines without the wall-clock fields.
fn untimed(path: &Path) -> Vec<Value> {
    read_json_lines(path)
        .into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| !k.starts_with("timing/") && k != "throughput/tokens_per_s");
            }
            v
        })
        .collect()
}

/// Every tensor of a safetensors file as (name, f32 bits).
fn tensor_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let map = safetensors::load(path, &Device::Cpu).expect("readable safetensors");
    let mut out: Vec<(String, Vec<u32>)> = map
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32 tensor");
            (n, v.into_iter().map(f32::to_bits).collect())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn killed_mid_checkpoint_then_resume_auto_equals_the_straight_run() {
    let dir = temp_dir("resume-cli");
    let t0 = Instant::now();
    let (ok, err) = run(&args(&dir, "straight", &[]));
    assert!(ok, "{err}");

    // Killed while the checkpoint of step 2 is written but not yet in place.
    let argv = args(&dir, "killed", &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_shareflow"))
        .args(&argv)
        .env("SHAREFLOW_FAULT_CHECKPOINT_PAUSE_MS", "3000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shareflow");
    let run_dir = dir.join("killed");
    let ckpts = run_dir.join("checkpoints");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ckpts.join(".tmp-step_2").is_dir() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before writing checkpoint 2");
        }
        assert!(Instant::now() < deadline, "no .tmp-step_2 after 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let latest = std::fs::read_to_string(ckpts.join("latest")).expect("latest");
    assert_eq!(latest.trim(), "step_1");
    assert!(!ckpts.join("step_2").exists());

    // Without --resume the run directory is refused, pointing at --resume auto.
    let (ok, err) = run(&argv);
    assert!(!ok && err.contains("--resume auto"), "{err}");

    let mut resume = argv.clone();
    resume.extend(["--resume".into(), "auto".into()]);
    let (ok, err) = run(&resume);
    assert!(ok, "{err}");
    assert!(
        err.contains("resuming from") && err.contains("step_1"),
        "{err}"
    );
    assert!(!ckpts.join(".tmp-step_2").exists(), "stale temporary kept");
    assert_eq!(
        std::fs::read_to_string(ckpts.join("latest"))
            .expect("latest")
            .trim(),
        "step_4"
    );

    let straight = dir.join("straight");
    assert_eq!(
        tensor_bits(&ckpts.join("step_4/model.safetensors")),
        tensor_bits(&straight.join("checkpoints/step_4/model.safetensors")),
        "final weights differ"
    );
    let m = untimed(&run_dir.join("metrics.jsonl"));
    assert_eq!(m.len(), 4);
    assert_eq!(
        m,
        untimed(&straight.join("metrics.jsonl")),
        "metrics differ"
    );
    assert_eq!(
        untimed(&ckpts.join("step_4/metrics.jsonl")),
        m,
        "checkpoint metrics"
    );
    // A finished run resumes to nothing and stays complete.
    let (ok, err) = run(&resume);
    assert!(ok && err.contains("step_4"), "{err}");
    assert_eq!(untimed(&run_dir.join("metrics.jsonl")), m);
    // `--resume checkpoints/step_N` names a checkpoint relative to the run directory.
    let mut explicit = argv.clone();
    explicit.extend(["--resume".into(), "checkpoints/step_4".into()]);
    let (ok, err) = run(&explicit);
    assert!(ok && err.contains("step_4"), "{err}");
    assert_eq!(untimed(&run_dir.join("metrics.jsonl")), m);
    let mut missing = argv.clone();
    missing.extend(["--resume".into(), "checkpoints/step_9".into()]);
    let (ok, err) = run(&missing);
    assert!(!ok && err.contains("not a directory"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(120), "too slow");
    let _ = std::fs::remove_dir_all(&dir);
}

/// bf16 compute (`trainer.dtype=bf16`) resumes exactly too, with staleness 1: the published
/// rollout versions are kept in bf16, saved as f32 and cast back on resume to the same bits. A
/// run stopped after step 2 and resumed ends with bitwise the straight run's weights and metrics.
#[test]
fn bf16_run_stopped_and_resumed_equals_the_straight_run() {
    let dir = temp_dir("resume-bf16");
    let bf16 = ["--set", "trainer.dtype=bf16", "--set", "trainer.device=cpu"];
    let (ok, err) = run(&args(&dir, "straight", &bf16));
    assert!(ok, "{err}");
    let mut stop = bf16.to_vec();
    stop.extend(["--set", "trainer.stop_at_step=2"]);
    let (ok, err) = run(&args(&dir, "stopped", &stop));
    assert!(ok, "{err}");
    let mut resume = args(&dir, "stopped", &bf16);
    resume.extend(["--resume".into(), "auto".into()]);
    let (ok, err) = run(&resume);
    assert!(ok && err.contains("step_2"), "{err}");
    let (a, b) = (dir.join("stopped"), dir.join("straight"));
    assert_eq!(
        tensor_bits(&a.join("checkpoints/step_4/model.safetensors")),
        tensor_bits(&b.join("checkpoints/step_4/model.safetensors")),
        "final weights differ"
    );
    let m = untimed(&a.join("metrics.jsonl"));
    assert_eq!(m.len(), 4);
    assert_eq!(m, untimed(&b.join("metrics.jsonl")), "metrics differ");
    let _ = std::fs::remove_dir_all(&dir);
}
