//! Checkpoint weights: read `model.safetensors` or a sharded `model.safetensors.index.json`,
//! keep the parameters as candle `Var`s (trainable) or plain tensors (frozen), and write them back
//! under the checkpoint's own tensor names and dtype.
//!
//! Internally tensors are named as on the Hugging Face Hub (`model.layers.N...`, `visual...`,
//! `lm_head.weight`). transformers 5 saves Qwen2.5-VL as `model.language_model.*` and
//! `model.visual.*`; both spellings load, and a checkpoint is saved in the spelling it came in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;

use super::error::{PolicyError, Result};

/// How the checkpoint spelled its tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `model.layers.*`, `visual.*` (the Hub checkpoints, transformers 4).
    Hub,
    /// `model.language_model.*`, `model.visual.*` (transformers 5 `save_pretrained`).
    Nested,
}

impl Naming {
    fn to_internal(self, name: &str) -> String {
        match self {
            Self::Hub => name.to_string(),
            Self::Nested => {
                if let Some(rest) = name.strip_prefix("model.language_model.") {
                    format!("model.{rest}")
                } else if let Some(rest) = name.strip_prefix("model.visual.") {
                    format!("visual.{rest}")
                } else {
                    name.to_string()
                }
            }
        }
    }

    fn to_external(self, name: &str) -> String {
        match self {
            Self::Hub => name.to_string(),
            Self::Nested => {
                if let Some(rest) = name.strip_prefix("visual.") {
                    format!("model.visual.{rest}")
                } else if let Some(rest) = name.strip_prefix("model.") {
                    format!("model.language_model.{rest}")
                } else {
                    name.to_string()
                }
            }
        }
    }
}

/// One parameter: trainable (a `Var`) or frozen (a plain tensor).
#[derive(Debug, Clone)]
enum Param {
    Trainable(Var),
    Frozen(Tensor),
}

impl Param {
    fn tensor(&self) -> &Tensor {
        match self {
            Self::Trainable(v) => v.as_tensor(),
            Self::Frozen(t) => t,
        }
    }
}

/// The parameters of a policy, by internal name, in f32 on one device.
#[derive(Debug, Clone)]
pub struct ParamStore {
    params: BTreeMap<String, Param>,
    /// Names requested by the model (to report tensors the checkpoint has but nobody uses).
    source: PathBuf,
    naming: Naming,
    /// dtype of each tensor in the checkpoint, to save in the same dtype.
    dtypes: HashMap<String, DType>,
    device: Device,
}

/// Reads every tensor of a checkpoint directory: `(internal name -> tensor)`, the naming, and the
/// file the weights came from (for messages).
pub fn read_checkpoint(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, PathBuf)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let mut tensors = HashMap::new();
    let source;
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| PolicyError::io(&index, e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| PolicyError::bad_file(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| PolicyError::bad_file(&index, "field `weight_map` missing"))?;
        let mut files: Vec<&str> = Vec::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                PolicyError::bad_file(&index, format!("weight_map[{name:?}] is not a file name"))
            })?;
            if !files.contains(&file) {
                files.push(file);
            }
        }
        for file in &files {
            let path = dir.join(file);
            let loaded = load_file(&path, device)?;
            tensors.extend(loaded);
        }
        for name in map.keys() {
            if !tensors.contains_key(name) {
                return Err(PolicyError::bad_file(
                    &index,
                    format!("lists tensor `{name}`, but its shard does not contain it"),
                ));
            }
        }
        source = index;
    } else if single.exists() {
        tensors = load_file(&single, device)?;
        source = single;
    } else {
        return Err(PolicyError::MissingFile {
            path: single,
            hint: "expected model.safetensors or model.safetensors.index.json with its shards \
                   (PyTorch .bin checkpoints are not supported: convert them with \
                   `save_pretrained(..., safe_serialization=True)`)"
                .into(),
        });
    }
    Ok((tensors, source))
}

fn load_file(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(PolicyError::MissingFile {
            path: path.to_path_buf(),
            hint: "a shard named in model.safetensors.index.json is absent".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| PolicyError::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| PolicyError::bad_file(path, format!("not a readable safetensors file: {e}")))
}

impl ParamStore {
    /// Loads a checkpoint directory's tensors. Tensors for which `trainable(name)` is true become
    /// `Var`s (gradients are computed for them); the rest are frozen.
    pub fn load(dir: &Path, device: &Device, trainable: impl Fn(&str) -> bool) -> Result<Self> {
        let (raw, source) = read_checkpoint(dir, device)?;
        let naming = if raw
            .keys()
            .any(|k| k.starts_with("model.language_model.") || k.starts_with("model.visual."))
        {
            Naming::Nested
        } else {
            Naming::Hub
        };
        let mut params = BTreeMap::new();
        let mut dtypes = HashMap::new();
        for (name, t) in raw {
            let internal = naming.to_internal(&name);
            dtypes.insert(internal.clone(), t.dtype());
            let t = t.to_dtype(DType::F32)?;
            let p = if trainable(&internal) {
                Param::Trainable(Var::from_tensor(&t)?)
            } else {
                Param::Frozen(t)
            };
            params.insert(internal, p);
        }
        Ok(Self {
            params,
            source,
            naming,
            dtypes,
            device: device.clone(),
        })
    }

    /// The tensor `name` (internal naming), checked against the shape config.json implies.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let p = self
            .params
            .get(name)
            .ok_or_else(|| PolicyError::MissingTensor {
                path: self.source.clone(),
                name: self.naming.to_external(name),
                expected: shape.to_vec(),
            })?;
        let t = p.tensor();
        if t.dims() != shape {
            return Err(PolicyError::ShapeMismatch {
                path: self.source.clone(),
                name: self.naming.to_external(name),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t.clone())
    }

    /// Whether the checkpoint has `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// The trainable parameters, by internal name, in a stable (sorted) order.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.params
            .iter()
            .filter_map(|(n, p)| match p {
                Param::Trainable(v) => Some((n.clone(), v.clone())),
                Param::Frozen(_) => None,
            })
            .collect()
    }

    /// Every parameter's current value, by internal name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.params.iter().map(|(n, p)| (n.as_str(), p.tensor()))
    }

    /// The dtype `name` (internal naming) had in the checkpoint, which [`ParamStore::save`]
    /// writes it in (f32 for a parameter the checkpoint did not have).
    pub fn saved_dtype(&self, name: &str) -> DType {
        self.dtypes.get(name).copied().unwrap_or(DType::F32)
    }

    /// The file the weights were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A deep copy whose values no later optimizer step changes (an immutable published version
    /// of the weights, e.g. for rollout while the optimizer writes the live copy).
    pub fn snapshot(&self) -> Result<Self> {
        let mut params = BTreeMap::new();
        for (n, p) in &self.params {
            params.insert(n.clone(), Param::Frozen(p.tensor().copy()?.detach()));
        }
        Ok(Self {
            params,
            source: self.source.clone(),
            naming: self.naming,
            dtypes: self.dtypes.clone(),
            device: self.device.clone(),
        })
    }

    /// Writes the weights as safetensors under their checkpoint names and dtype, sharded by
    /// `max_shard_bytes` like `save_pretrained` (one `model.safetensors` when they fit).
    pub fn save(&self, dir: &Path, max_shard_bytes: usize) -> Result<()> {
        let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
        let mut current = 0usize;
        for (name, p) in &self.params {
            let dtype = self.dtypes.get(name).copied().unwrap_or(DType::F32);
            let t = p.tensor().to_dtype(dtype)?.contiguous()?;
            let bytes = t.elem_count() * dtype.size_in_bytes();
            if current > 0 && current + bytes > max_shard_bytes {
                shards.push(Vec::new());
                current = 0;
            }
            current += bytes;
            if let Some(last) = shards.last_mut() {
                last.push((self.naming.to_external(name), t));
            }
        }
        let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        if shards.len() == 1 {
            let path = dir.join("model.safetensors");
            let data = shards.pop().unwrap_or_default();
            safetensors::serialize_to_file(data, Some(metadata), &path)
                .map_err(|e| PolicyError::bad_file(&path, format!("cannot write: {e}")))?;
            return Ok(());
        }
        let total = shards.len();
        let mut weight_map = serde_json::Map::new();
        let mut total_size = 0usize;
        for (i, shard) in shards.into_iter().enumerate() {
            let file = format!("model-{:05}-of-{total:05}.safetensors", i + 1);
            for (name, t) in &shard {
                weight_map.insert(name.clone(), Value::String(file.clone()));
                total_size += t.elem_count() * t.dtype().size_in_bytes();
            }
            let path = dir.join(&file);
            safetensors::serialize_to_file(shard, Some(metadata.clone()), &path)
                .map_err(|e| PolicyError::bad_file(&path, format!("cannot write: {e}")))?;
        }
        let index = serde_json::json!({
            "metadata": { "total_size": total_size },
            "weight_map": weight_map,
        });
        let path = dir.join("model.safetensors.index.json");
        let text = serde_json::to_string_pretty(&index)
            .map_err(|e| PolicyError::bad_file(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| PolicyError::io(&path, e))
    }
}
