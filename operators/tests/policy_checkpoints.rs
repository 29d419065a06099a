//! Checkpoint layouts users meet: the nested `config.json` transformers 5 writes, tensor names
//! in the `model.language_model.*` / `model.visual.*` spelling, bf16 weights, and sharded saving.
//! Each loads to the same model as the fixture's Hub layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use shareflow_operators::policy::{
    LoadOptions, ModelConfig, ParamStore, PolicyModel, ScoreOptions, Sequence,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shareflow-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn copy_non_weights(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_file() && !name.contains("safetensors") {
            std::fs::copy(&p, to.join(&name))?;
        }
    }
    Ok(())
}

fn log_probs(dir: &Path) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let opts = LoadOptions {
        trainable: false,
        freeze_vision: false,
        ..LoadOptions::default()
    };
    let m = PolicyModel::load(dir, &Device::Cpu, opts)?;
    let ids = [441u32, 20, 21, 22, 442, 30, 31, 32, 33];
    let s = m.score(
        &[Sequence {
            ids: &ids,
            prompt_len: 5,
            images: &[],
        }],
        &ScoreOptions::default(),
    )?;
    Ok(s.row(0)?)
}

#[test]
fn transformers5_nested_config_parses_like_the_hub_layout() -> TestResult {
    let flat = ModelConfig::load(&golden().join("tiny-qwen2_5_vl"))?;
    let text = std::fs::read_to_string(golden().join("config_transformers5_nested.json"))?;
    let nested = ModelConfig::from_json(serde_json::from_str(&text)?, Path::new("nested.json"))?;
    assert!(
        nested.raw.get("text_config").is_some(),
        "fixture is the nested layout"
    );
    assert_eq!(nested.architecture, flat.architecture);
    assert_eq!(nested.text, flat.text);
    assert_eq!(nested.vision, flat.vision);
    assert_eq!(nested.image_token_id, flat.image_token_id);
    Ok(())
}

#[test]
fn nested_tensor_names_load_and_save_in_their_own_spelling() -> TestResult {
    let src = golden().join("tiny-qwen2_5_vl");
    let dir = temp("nested");
    copy_non_weights(&src, &dir)?;
    let (tensors, _) = shareflow_operators::policy::weights::read_checkpoint(&src, &Device::Cpu)?;
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(n, t)| {
            let n = if let Some(r) = n.strip_prefix("visual.") {
                format!("model.visual.{r}")
            } else if let Some(r) = n.strip_prefix("model.") {
                format!("model.language_model.{r}")
            } else {
                n
            };
            (n, t)
        })
        .collect();
    candle_core::safetensors::save(&renamed, dir.join("model.safetensors"))?;
    assert_eq!(log_probs(&dir)?, log_probs(&src)?);
    // Saved back in the same spelling.
    let store = ParamStore::load(&dir, &Device::Cpu, |_| false)?;
    let out = temp("nested-out");
    std::fs::create_dir_all(&out)?;
    store.save(&out, usize::MAX)?;
    let back = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu)?;
    assert!(back.contains_key("model.language_model.norm.weight"));
    assert!(back.contains_key("model.visual.merger.ln_q.weight"));
    assert_eq!(back.len(), renamed.len());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

#[test]
fn bf16_weights_train_in_f32_and_save_as_bf16_in_shards() -> TestResult {
    let src = golden().join("tiny-qwen2");
    let dir = temp("bf16");
    copy_non_weights(&src, &dir)?;
    let (tensors, _) = shareflow_operators::policy::weights::read_checkpoint(&src, &Device::Cpu)?;
    let bf16: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::BF16)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    candle_core::safetensors::save(&bf16, dir.join("model.safetensors"))?;
    let store = ParamStore::load(&dir, &Device::Cpu, |_| true)?;
    assert!(store.tensors().all(|(_, t)| t.dtype() == DType::F32));
    // Shards of at most 64 KiB: an index and several files, every tensor back in bf16.
    let out = temp("bf16-out");
    std::fs::create_dir_all(&out)?;
    store.save(&out, 64 << 10)?;
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        out.join("model.safetensors.index.json"),
    )?)?;
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .ok_or("weight_map")?
        .values()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(files.len() > 2, "{files:?}");
    copy_non_weights(&src, &out)?;
    let (reloaded, _) = shareflow_operators::policy::weights::read_checkpoint(&out, &Device::Cpu)?;
    assert_eq!(reloaded.len(), bf16.len());
    for (n, t) in &reloaded {
        assert_eq!(t.dtype(), DType::BF16, "{n}");
        let d = (t.to_dtype(DType::F32)? - bf16[n].to_dtype(DType::F32)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0, "{n} changed in the round trip");
    }
    assert_eq!(log_probs(&out)?, log_probs(&dir)?);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
