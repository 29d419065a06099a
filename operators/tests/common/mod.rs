//! Fixture access shared by the policy tests (`tests/golden/policy/`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shareflow_operators::policy::{PixelValues, load_pixel_values};

/// `tests/golden/policy/` of the repository.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy")
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
