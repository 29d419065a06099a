//! `config.json` of a Hugging Face checkpoint: which architecture, and the sizes the weights must
//! have. Reads the flat layout of the Hub checkpoints (transformers 4: text fields at top level)
//! and the nested layout transformers 5 writes (`text_config`), so both load the same way.

use std::path::Path;

use serde_json::Value;

use super::error::{PolicyError, Result};

/// The model families this build implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Text-only Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`).
    Qwen2,
    /// Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`): vision tower + Qwen2 decoder with
    /// multimodal rotary positions.
    Qwen2_5Vl,
    /// Text-only Qwen3 (`Qwen3ForCausalLM`): the Qwen2 decoder with RMS-normed queries and keys
    /// and no attention biases.
    Qwen3,
    /// Qwen3-VL (`Qwen3VLForConditionalGeneration`): a vision tower with learned, interpolated
    /// position embeddings whose intermediate features are added into the first decoder layers
    /// ("deepstack"), and a Qwen3 decoder with interleaved multimodal rotary positions.
    Qwen3Vl,
}

impl Architecture {
    /// The `architectures` entry HF writes for this family.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen2_5Vl => "Qwen2_5_VLForConditionalGeneration",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Qwen3Vl => "Qwen3VLForConditionalGeneration",
        }
    }

    /// Whether the family has a vision tower.
    pub fn is_multimodal(self) -> bool {
        matches!(self, Self::Qwen2_5Vl | Self::Qwen3Vl)
    }
}

/// Sizes of the text decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Multimodal rotary sections (t, h, w) in frequency pairs; `None` for 1-D rotary.
    pub mrope_section: Option<Vec<usize>>,
    /// Qwen3-VL's layout of the sections: frequencies cycle t, h, w (the first `3 * h` and
    /// `3 * w` of them) instead of contiguous blocks (Qwen2-VL / Qwen2.5-VL).
    pub mrope_interleaved: bool,
    /// Biases on the q, k and v projections (Qwen2 family: always; Qwen3: `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Qwen3 with `attention_bias`).
    pub o_bias: bool,
    /// RMS norms over each head of the queries and keys before rotary (Qwen3).
    pub qk_norm: bool,
}

/// Activation of the vision MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAct {
    /// `silu`: Qwen2.5-VL's gated MLP.
    Silu,
    /// `gelu` (exact, erf).
    GeluErf,
    /// `gelu_pytorch_tanh` / `gelu_new` (tanh approximation): Qwen3-VL.
    GeluTanh,
}

/// Sizes of the vision tower (Qwen2.5-VL or Qwen3-VL; the fields of the other family keep
/// their defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub in_channels: usize,
    pub tokens_per_second: f64,
    pub hidden_act: VisionAct,
    /// Qwen3-VL: size of the learned position-embedding table (a square grid, interpolated to
    /// each image's patch grid); `None` for Qwen2.5-VL.
    pub num_position_embeddings: Option<usize>,
    /// Qwen3-VL: blocks whose output is merged and added into decoder layers 0, 1, ...
    pub deepstack_visual_indexes: Vec<usize>,
    /// Base of the vision tower's 2-D rotary frequencies.
    pub rope_theta: f64,
}

impl VisionConfig {
    /// Channels times temporal patch times patch area: the length of one flattened patch.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub text: TextConfig,
    pub vision: Option<VisionConfig>,
    pub image_token_id: Option<u32>,
    pub video_token_id: Option<u32>,
    pub vision_start_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The original JSON, written back unchanged when the policy is saved.
    pub raw: Value,
}

struct Fields<'a> {
    path: &'a Path,
    /// Objects searched in order (e.g. `text_config` then the top level).
    scopes: Vec<(&'a str, &'a Value)>,
}

impl Fields<'_> {
    fn find(&self, key: &str) -> Option<&Value> {
        self.scopes
            .iter()
            .find_map(|(_, v)| v.get(key).filter(|x| !x.is_null()))
    }

    fn err(&self, key: &str, what: &str) -> PolicyError {
        let scopes: Vec<&str> = self.scopes.iter().map(|(n, _)| *n).collect();
        PolicyError::bad_file(
            self.path,
            format!("field `{key}` {what} (looked in {})", scopes.join(", ")),
        )
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .find(key)
            .ok_or_else(|| self.err(key, "missing, expected a non-negative integer"))?;
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| self.err(key, &format!("is {v}, expected a non-negative integer")))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.find(key) {
            None => Ok(default),
            Some(_) => self.usize(key),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.find(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, &format!("is {v}, expected a number"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.find(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, &format!("is {v}, expected true or false"))),
        }
    }

    fn token(&self, key: &str) -> Result<Option<u32>> {
        match self.find(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.err(key, &format!("is {v}, expected a token id"))),
        }
    }

    fn usize_list(&self, key: &str) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.find(key) else {
            return Ok(None);
        };
        let list = v
            .as_array()
            .ok_or_else(|| self.err(key, &format!("is {v}, expected a list of integers")))?;
        list.iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| self.err(key, &format!("has {x}, expected integers")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !path.exists() {
            return Err(PolicyError::MissingFile {
                path,
                hint: "a Hugging Face checkpoint directory needs config.json".into(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| PolicyError::bad_file(&path, format!("not valid JSON: {e}")))?;
        Self::from_json(raw, &path)
    }

    /// Parses a `config.json` already read; `path` is used in error messages.
    pub fn from_json(raw: Value, path: &Path) -> Result<Self> {
        if !raw.is_object() {
            return Err(PolicyError::bad_file(path, "expected a JSON object"));
        }
        let architecture = detect_architecture(&raw, path)?;
        let mut scopes: Vec<(&str, &Value)> = Vec::new();
        if let Some(t) = raw.get("text_config").filter(|v| v.is_object()) {
            scopes.push(("text_config", t));
        }
        scopes.push(("top level", &raw));
        let f = Fields { path, scopes };

        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        if num_attention_heads == 0
            || (f.find("head_dim").is_none() && hidden_size % num_attention_heads != 0)
        {
            return Err(f.err(
                "num_attention_heads",
                &format!("({num_attention_heads}) must divide hidden_size ({hidden_size})"),
            ));
        }
        let num_key_value_heads = f.usize_or("num_key_value_heads", num_attention_heads)?;
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                &format!(
                    "({num_key_value_heads}) must divide num_attention_heads ({num_attention_heads})"
                ),
            ));
        }
        let head_dim = f.usize_or("head_dim", hidden_size / num_attention_heads)?;
        let mrope_section = mrope_section(&f)?;
        let qwen2_family = matches!(architecture, Architecture::Qwen2 | Architecture::Qwen2_5Vl);
        if let Some(sec) = &mrope_section
            && sec.iter().sum::<usize>() * 2 != head_dim
        {
            return Err(f.err(
                "rope_scaling.mrope_section",
                &format!(
                    "is {sec:?}; its sum must be head_dim / 2 = {}",
                    head_dim / 2
                ),
            ));
        }
        let rope_theta = match f.find("rope_theta") {
            Some(_) => f.f64_or("rope_theta", 10_000.0)?,
            None => f
                .find("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10_000.0),
        };
        let text = TextConfig {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            // The top-level flag decides for VL models (the text config may carry its own).
            tie_word_embeddings: match raw.get("tie_word_embeddings").and_then(Value::as_bool) {
                Some(b) => b,
                None => f.bool_or("tie_word_embeddings", false)?,
            },
            mrope_section,
            mrope_interleaved: architecture == Architecture::Qwen3Vl,
            qkv_bias: qwen2_family || f.bool_or("attention_bias", false)?,
            o_bias: !qwen2_family && f.bool_or("attention_bias", false)?,
            qk_norm: !qwen2_family,
        };
        if let Some(act) = f.find("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(f.err(
                "hidden_act",
                &format!("is {act:?}; only \"silu\" is supported"),
            ));
        }

        let vision = if architecture.is_multimodal() {
            let v = raw
                .get("vision_config")
                .filter(|v| v.is_object())
                .ok_or_else(|| {
                    PolicyError::bad_file(
                        path,
                        format!(
                            "field `vision_config` missing ({})",
                            architecture.hf_class()
                        ),
                    )
                })?;
            Some(vision_config(v, path, architecture)?)
        } else {
            None
        };
        if architecture.is_multimodal() && text.mrope_section.is_none() {
            return Err(f.err(
                "rope_scaling.mrope_section",
                &format!(
                    "missing; {} needs multimodal rotary sections",
                    architecture.hf_class()
                ),
            ));
        }
        let top = Fields {
            path,
            scopes: vec![("top level", &raw)],
        };
        let eos_token_ids = match f.find("eos_token_id") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| f.err("eos_token_id", "expected token ids"))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => f.token("eos_token_id")?.into_iter().collect(),
        };
        Ok(Self {
            architecture,
            vision,
            image_token_id: top.token("image_token_id")?,
            video_token_id: top.token("video_token_id")?,
            vision_start_token_id: top.token("vision_start_token_id")?,
            eos_token_ids,
            text,
            raw,
        })
    }
}

fn detect_architecture(raw: &Value, path: &Path) -> Result<Architecture> {
    let arch = raw
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    let model_type = raw.get("model_type").and_then(Value::as_str);
    let by_arch = match arch {
        Some("Qwen2ForCausalLM") => Some(Architecture::Qwen2),
        Some("Qwen2_5_VLForConditionalGeneration") => Some(Architecture::Qwen2_5Vl),
        Some("Qwen3ForCausalLM") => Some(Architecture::Qwen3),
        Some("Qwen3VLForConditionalGeneration") => Some(Architecture::Qwen3Vl),
        _ => None,
    };
    let by_type = match model_type {
        Some("qwen2") => Some(Architecture::Qwen2),
        Some("qwen2_5_vl") => Some(Architecture::Qwen2_5Vl),
        Some("qwen3") => Some(Architecture::Qwen3),
        Some("qwen3_vl") => Some(Architecture::Qwen3Vl),
        _ => None,
    };
    match (by_arch, by_type) {
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(a), None) if model_type.is_none() => Ok(a),
        (None, Some(b)) if arch.is_none() => Ok(b),
        _ => Err(PolicyError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            what: format!(
                "(architectures {:?}, model_type {:?})",
                arch.unwrap_or("absent"),
                model_type.unwrap_or("absent")
            ),
        }),
    }
}

fn mrope_section(f: &Fields<'_>) -> Result<Option<Vec<usize>>> {
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(rs) = f.find(key).filter(|v| v.is_object()) {
            let inner = Fields {
                path: f.path,
                scopes: vec![(key, rs)],
            };
            if let Some(sec) = inner.usize_list("mrope_section")? {
                return Ok(Some(sec));
            }
        }
    }
    Ok(None)
}

fn vision_config(v: &Value, path: &Path, architecture: Architecture) -> Result<VisionConfig> {
    let f = Fields {
        path,
        scopes: vec![("vision_config", v)],
    };
    let qwen3 = architecture == Architecture::Qwen3Vl;
    let hidden_size = f.usize("hidden_size")?;
    let num_heads = f.usize("num_heads")?;
    if num_heads == 0 || hidden_size % num_heads != 0 || (hidden_size / num_heads) % 4 != 0 {
        return Err(f.err(
            "num_heads",
            &format!("({num_heads}) must divide hidden_size ({hidden_size}) into heads of a multiple of 4"),
        ));
    }
    let act_name = f
        .find("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or(if qwen3 { "gelu_pytorch_tanh" } else { "silu" });
    let hidden_act = match (qwen3, act_name) {
        (_, "silu") => VisionAct::Silu,
        (true, "gelu") => VisionAct::GeluErf,
        (true, "gelu_pytorch_tanh" | "gelu_new") => VisionAct::GeluTanh,
        (false, act) => {
            return Err(f.err(
                "hidden_act",
                &format!("is {act:?}; only \"silu\" is supported for Qwen2.5-VL"),
            ));
        }
        (true, act) => {
            return Err(f.err(
                "hidden_act",
                &format!(
                    "is {act:?}; supported: \"gelu_pytorch_tanh\", \"gelu_new\", \"gelu\", \"silu\""
                ),
            ));
        }
    };
    let patch_size = f.usize_or("patch_size", if qwen3 { 16 } else { 14 })?;
    let spatial_merge_size = f.usize_or("spatial_merge_size", 2)?;
    let window_size = f.usize_or("window_size", 112)?;
    if patch_size == 0
        || spatial_merge_size == 0
        || (!qwen3 && window_size < patch_size * spatial_merge_size)
    {
        return Err(f.err(
            "window_size",
            &format!("({window_size}) must be at least patch_size * spatial_merge_size"),
        ));
    }
    let depth = f.usize("depth")?;
    let fullatt_block_indexes = f.usize_list("fullatt_block_indexes")?.unwrap_or_default();
    if let Some(&bad) = fullatt_block_indexes.iter().find(|&&i| i >= depth) {
        return Err(f.err(
            "fullatt_block_indexes",
            &format!("names block {bad}, but depth is {depth}"),
        ));
    }
    let (num_position_embeddings, deepstack_visual_indexes) = if qwen3 {
        let n = f.usize("num_position_embeddings")?;
        let side = (n as f64).sqrt().round() as usize;
        if n == 0 || side * side != n {
            return Err(f.err(
                "num_position_embeddings",
                &format!("({n}) must be a square number (a grid of position embeddings)"),
            ));
        }
        let deep = f
            .usize_list("deepstack_visual_indexes")?
            .unwrap_or_default();
        if let Some(&bad) = deep.iter().find(|&&i| i >= depth) {
            return Err(f.err(
                "deepstack_visual_indexes",
                &format!("names block {bad}, but depth is {depth}"),
            ));
        }
        (Some(n), deep)
    } else {
        (None, Vec::new())
    };
    let rope_theta = match f.find("rope_parameters").and_then(|p| p.get("rope_theta")) {
        None | Some(Value::Null) => 10_000.0,
        Some(t) => t.as_f64().ok_or_else(|| {
            f.err(
                "rope_parameters.rope_theta",
                &format!("is {t}, expected a number"),
            )
        })?,
    };
    Ok(VisionConfig {
        depth,
        hidden_size,
        intermediate_size: f.usize("intermediate_size")?,
        num_heads,
        out_hidden_size: f.usize("out_hidden_size")?,
        patch_size,
        temporal_patch_size: f.usize_or("temporal_patch_size", 2)?,
        spatial_merge_size,
        window_size,
        fullatt_block_indexes,
        in_channels: match f.find("in_channels") {
            Some(_) => f.usize("in_channels")?,
            None => f.usize_or("in_chans", 3)?,
        },
        tokens_per_second: f.f64_or("tokens_per_second", 2.0)?,
        hidden_act,
        num_position_embeddings,
        deepstack_visual_indexes,
        rope_theta,
    })
}
