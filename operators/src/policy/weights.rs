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

/// Reads one safetensors file tensor by tensor (header, then each tensor's bytes), so that
/// loading never holds the whole file in memory beside the tensors made from it: with the
/// conversion to f32 in [`ParamStore::load`], the peak is the f32 weights plus one tensor (a
/// Qwen3-VL-4B bf16 checkpoint: 17.6 GB instead of 26.5 GB).
fn load_file(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    use std::io::{Read, Seek, SeekFrom};
    if !path.exists() {
        return Err(PolicyError::MissingFile {
            path: path.to_path_buf(),
            hint: "a shard named in model.safetensors.index.json is absent".into(),
        });
    }
    let bad =
        |m: String| PolicyError::bad_file(path, format!("not a readable safetensors file: {m}"));
    let mut f = std::fs::File::open(path).map_err(|e| PolicyError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| PolicyError::io(path, e))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len.saturating_sub(8) || header_len > 100 << 20 {
        return Err(bad(format!(
            "header length {header_len} does not fit the file of {file_len} bytes (truncated?)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read the header: {e}")))?;
    let header: Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let entries = header
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_start = 8 + header_len;
    let mut order: Vec<(&String, u64, u64, DType, Vec<usize>)> = Vec::new();
    for (name, info) in entries {
        if name == "__metadata__" {
            continue;
        }
        let dtype = match info.get("dtype").and_then(Value::as_str) {
            Some("F32") => DType::F32,
            Some("BF16") => DType::BF16,
            Some("F16") => DType::F16,
            Some("F64") => DType::F64,
            Some("I64") => DType::I64,
            Some("U32") => DType::U32,
            Some("U8") => DType::U8,
            other => {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {other:?}; supported: F32, BF16, F16, F64, I64, U32, U8"
                )));
            }
        };
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as usize)
                    .collect()
            })
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let [begin, stop] = offsets[..] else {
            return Err(bad(format!("tensor `{name}` has no data_offsets")));
        };
        let want = shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64;
        if stop < begin || stop - begin != want || data_start + stop > file_len {
            return Err(bad(format!(
                "tensor `{name}`: bytes {begin}..{stop} do not hold shape {shape:?} of {dtype:?} \
                 within the file of {file_len} bytes (truncated?)"
            )));
        }
        order.push((name, begin, stop, dtype, shape));
    }
    // In file order: one forward pass over the data.
    order.sort_by_key(|e| e.1);
    let mut out = HashMap::with_capacity(order.len());
    let mut buf = Vec::new();
    for (name, begin, stop, dtype, shape) in order {
        buf.resize((stop - begin) as usize, 0);
        f.seek(SeekFrom::Start(data_start + begin))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let t = Tensor::from_raw_buffer(&buf, dtype, &shape, device)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
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

    /// A deep copy whose trainable parameters are new variables with the same values (a
    /// data-parallel replica: its optimizer steps change neither store); frozen tensors, which
    /// nothing writes, are shared.
    pub fn replica(&self) -> Result<Self> {
        let mut params = BTreeMap::new();
        for (n, p) in &self.params {
            let copy = match p {
                Param::Trainable(v) => Param::Trainable(Var::from_tensor(&v.as_tensor().detach())?),
                Param::Frozen(t) => Param::Frozen(t.clone()),
            };
            params.insert(n.clone(), copy);
        }
        Ok(Self {
            params,
            source: self.source.clone(),
            naming: self.naming,
            dtypes: self.dtypes.clone(),
            device: self.device.clone(),
        })
    }

    /// The same store with its frozen tensors (not the trainable ones) in `dtype`: a model
    /// computing in bf16 keeps what it never trains or saves (a published rollout version, an
    /// inference or reference model) in bf16 once, instead of casting every weight at every
    /// forward pass (every sampled token). Trainable ones stay f32 master weights.
    pub fn frozen_in(mut self, dtype: DType) -> Result<Self> {
        for p in self.params.values_mut() {
            if let Param::Frozen(t) = p
                && t.dtype() != dtype
            {
                *t = t.to_dtype(dtype)?;
            }
        }
        Ok(self)
    }

    /// Writes the weights as safetensors under their checkpoint names and dtype, sharded by
    /// `max_shard_bytes` like `save_pretrained` (one `model.safetensors` when they fit). Each
    /// tensor is converted and written on its own, so saving needs one tensor of memory beyond
    /// the weights (not a second copy of them in the saved dtype).
    pub fn save(&self, dir: &Path, max_shard_bytes: usize) -> Result<()> {
        let mut shards: Vec<Vec<(String, &Tensor, DType)>> = vec![Vec::new()];
        let mut current = 0usize;
        for (name, p) in &self.params {
            let dtype = self.dtypes.get(name).copied().unwrap_or(DType::F32);
            let t = p.tensor();
            let bytes = t.elem_count() * dtype.size_in_bytes();
            if current > 0 && current + bytes > max_shard_bytes {
                shards.push(Vec::new());
                current = 0;
            }
            current += bytes;
            if let Some(last) = shards.last_mut() {
                last.push((self.naming.to_external(name), t, dtype));
            }
        }
        if shards.len() == 1 {
            let path = dir.join("model.safetensors");
            let data = shards.pop().unwrap_or_default();
            return write_safetensors(&path, &data);
        }
        let total = shards.len();
        let mut weight_map = serde_json::Map::new();
        let mut total_size = 0usize;
        for (i, shard) in shards.into_iter().enumerate() {
            let file = format!("model-{:05}-of-{total:05}.safetensors", i + 1);
            for (name, t, dtype) in &shard {
                weight_map.insert(name.clone(), Value::String(file.clone()));
                total_size += t.elem_count() * dtype.size_in_bytes();
            }
            write_safetensors(&dir.join(&file), &shard)?;
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

/// The safetensors name of a dtype.
fn dtype_name(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "F32",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::U32 => "U32",
        DType::U8 => "U8",
        other => {
            return Err(PolicyError::Input(format!(
                "cannot save a tensor of dtype {other:?}"
            )));
        }
    })
}

/// Writes `(name, tensor, dtype)` as one safetensors file (header with `format: pt`, padded to 8
/// bytes as the `safetensors` crate writes it, then the data in the listed order), converting
/// and writing one tensor at a time.
fn write_safetensors(path: &Path, tensors: &[(String, &Tensor, DType)]) -> Result<()> {
    use std::io::Write;
    let err = |e: String| PolicyError::bad_file(path, format!("cannot write: {e}"));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, t, dtype) in tensors {
        let len = t.elem_count() * dtype.size_in_bytes();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype_name(*dtype)?,
                "shape": t.dims(),
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).map_err(|e| err(e.to_string()))?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let file = std::fs::File::create(path).map_err(|e| PolicyError::io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|_| w.write_all(&header))
        .map_err(|e| PolicyError::io(path, e))?;
    for (_, t, dtype) in tensors {
        let converted = t.to_dtype(*dtype)?.contiguous()?;
        let bytes = safetensors::View::data(&converted);
        w.write_all(&bytes).map_err(|e| PolicyError::io(path, e))?;
    }
    w.flush().map_err(|e| PolicyError::io(path, e))
}
