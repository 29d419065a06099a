//! Fixture access shared by the policy tests (`tests/golden/policy/`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shareflow_operators::policy::{PixelValues, load_pixel_values};

/// `tests/golden/policy/` of the repository: the one this test was built in, or
/// `$SHAREFLOW_REPO` (a test binary carried to another machine, e.g. by `scripts/gpu_check.sh`).
pub fn golden_dir() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy");
    match std::env::var_os("SHAREFLOW_REPO") {
        Some(repo) if !built.exists() => Path::new(&repo).join("tests/golden/policy"),
        _ => built,
    }
}

/// The device the policy tests run on: `$SHAREFLOW_TEST_DEVICE` (cpu, cuda, cuda:N; default
/// cpu). `scripts/gpu_check.sh` runs the parity tests again with `cuda`, at the same tolerances.
pub fn test_device() -> shareflow_operators::policy::candle::Device {
    let spec = std::env::var("SHAREFLOW_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    match shareflow_operators::policy::open_device(&spec) {
        Ok(d) => d,
        Err(e) => panic!("SHAREFLOW_TEST_DEVICE={spec}: {e}"),
    }
}

/// A JSON list of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON list of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// The HF processor's pixel values of the fixture images, keyed as cases.json names them
/// (`images/NAME.png`).
pub fn pixel_values() -> Result<HashMap<String, PixelValues>, Box<dyn std::error::Error>> {
    let all = load_pixel_values(&golden_dir().join("pixel_values.safetensors"))?;
    Ok(all
        .into_iter()
        .map(|(k, v)| (format!("images/{k}"), v))
        .collect())
}

/// The largest absolute difference of two equally long lists.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
