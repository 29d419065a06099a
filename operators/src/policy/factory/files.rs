//! The JSON files and weight shards of a created checkpoint, with the field set of the Hub's
//! `Qwen/Qwen2.5-VL-*-Instruct` repositories (as `tests/golden/policy/make_fixtures.py` writes
//! them for the `tiny-qwen2_5_vl` fixture).

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

use super::TinyVlSpec;
use super::bpe::SPECIAL_TOKENS;
use crate::policy::error::{PolicyError, Result};

/// The chat template of `Qwen/Qwen2-VL-*-Instruct` and `Qwen/Qwen2.5-VL-*-Instruct`
/// (`chat_template.json` on the Hub), verbatim.
pub const QWEN2_VL_CHAT_TEMPLATE: &str = concat!(
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}",
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}",
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}",
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}",
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}",
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}",
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>",
    "{% elif content['type'] == 'video' or 'video' in content %}",
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}",
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>",
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n",
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
);

/// What the transformers version fields say (the version the layout was checked against).
const TRANSFORMERS_VERSION: &str = "5.23.0";
const MAX_POSITION_EMBEDDINGS: usize = 4096;

/// Ids of the special tokens, in [`SPECIAL_TOKENS`] order.
pub type SpecialIds = [u32; SPECIAL_TOKENS.len()];
const ENDOFTEXT: usize = 0;
const IM_END: usize = 2;
const VISION_START: usize = 3;
const VISION_END: usize = 4;
const IMAGE_PAD: usize = 5;
const VIDEO_PAD: usize = 6;

/// The ids of the Qwen2-VL special tokens in `tokenizer`.
pub fn special_ids(tokenizer: &Tokenizer) -> Result<SpecialIds> {
    let mut ids = [0u32; SPECIAL_TOKENS.len()];
    for (slot, tok) in ids.iter_mut().zip(SPECIAL_TOKENS) {
        *slot = tokenizer.token_to_id(tok).ok_or_else(|| {
            PolicyError::Input(format!(
                "the tokenizer lacks the special token {tok:?}; a Qwen2.5-VL checkpoint needs \
                 all of {SPECIAL_TOKENS:?} (train_tokenizer adds them)"
            ))
        })?;
    }
    Ok(ids)
}

/// `config.json`: the flat Hub layout (text fields at the top level, `vision_config` nested,
/// `rope_scaling = {"type": "mrope", ...}`).
pub fn config_json(spec: &TinyVlSpec, vocab_size: usize, ids: &SpecialIds) -> Value {
    let vision = json!({
        "depth": spec.vision_depth,
        "hidden_act": "silu",
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_intermediate,
        "num_heads": spec.vision_heads,
        "in_chans": 3,
        "in_channels": 3,
        "out_hidden_size": spec.hidden,
        "patch_size": spec.patch_size,
        "spatial_merge_size": spec.spatial_merge_size,
        "spatial_patch_size": spec.patch_size,
        "window_size": spec.window_size,
        "fullatt_block_indexes": spec.fullatt_block_indexes,
        "tokens_per_second": 2,
        "temporal_patch_size": spec.temporal_patch_size,
    });
    json!({
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END],
        "image_token_id": ids[IMAGE_PAD],
        "video_token_id": ids[VIDEO_PAD],
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "initializer_range": super::INITIALIZER_RANGE,
        "intermediate_size": spec.intermediate,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "max_window_layers": spec.layers,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_theta": spec.rope_theta,
        "sliding_window": MAX_POSITION_EMBEDDINGS,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": true,
        "use_sliding_window": false,
        "vision_config": vision,
        "rope_scaling": { "type": "mrope", "mrope_section": spec.mrope_section },
        "vocab_size": vocab_size,
    })
}

/// `generation_config.json`: the Hub's minus the sampling defaults (a bare `generate()` is
/// greedy); generation stops at `<|im_end|>` or `<|endoftext|>`.
pub fn generation_config_json(ids: &SpecialIds) -> Value {
    json!({
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
        "pad_token_id": ids[ENDOFTEXT],
        "transformers_version": TRANSFORMERS_VERSION,
    })
}

/// `tokenizer_config.json` of a `Qwen2Tokenizer` with the Qwen2-VL special tokens.
pub fn tokenizer_config_json(ids: &SpecialIds) -> Value {
    let mut added = Map::new();
    for (id, tok) in ids.iter().zip(SPECIAL_TOKENS) {
        added.insert(
            id.to_string(),
            json!({
                "content": tok,
                "lstrip": false,
                "normalized": false,
                "rstrip": false,
                "single_word": false,
                "special": true,
            }),
        );
    }
    json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": added,
        "additional_special_tokens": &SPECIAL_TOKENS[1..],
        "bos_token": null,
        "chat_template": QWEN2_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    })
}

/// `preprocessor_config.json` of the Qwen2-VL image processor (CLIP normalisation, bicubic).
pub fn preprocessor_config_json(spec: &TinyVlSpec) -> Value {
    json!({
        "do_convert_rgb": true,
        "do_normalize": true,
        "do_rescale": true,
        "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "max_pixels": spec.max_pixels,
        "merge_size": spec.spatial_merge_size,
        "min_pixels": spec.min_pixels,
        "patch_size": spec.patch_size,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255.0,
        "size": { "longest_edge": spec.max_pixels, "shortest_edge": spec.min_pixels },
        "temporal_patch_size": spec.temporal_patch_size,
    })
}

/// Writes pretty JSON (keys sorted, as transformers' `save_pretrained` writes them).
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| PolicyError::bad_file(path, format!("cannot serialize: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|e| PolicyError::io(path, e))
}

/// Writes `tensors` (sorted by name) as `shards` f32 safetensors files with the metadata
/// `{"format": "pt"}` and `model.safetensors.index.json`. A tensor goes to shard
/// `min(shards - 1, bytes_before * shards / total_bytes)`, as `make_fixtures.py` splits.
pub fn write_shards(dir: &Path, tensors: Vec<(String, Tensor)>, shards: usize) -> Result<()> {
    let shards = shards.max(1);
    let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    let total: usize = tensors.iter().map(|(_, t)| size(t)).sum();
    let mut parts: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); shards];
    let mut before = 0usize;
    for (name, t) in tensors {
        let idx = (before * shards)
            .checked_div(total)
            .unwrap_or(0)
            .min(shards - 1);
        before += size(&t);
        parts[idx].push((name, t));
    }
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let mut weight_map = Map::new();
    for (i, part) in parts.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        for (name, _) in &part {
            weight_map.insert(name.clone(), Value::String(file.clone()));
        }
        let path = dir.join(&file);
        safetensors::serialize_to_file(part, Some(metadata.clone()), &path)
            .map_err(|e| PolicyError::bad_file(&path, format!("cannot write: {e}")))?;
    }
    write_json(
        &dir.join("model.safetensors.index.json"),
        &json!({ "metadata": { "total_size": total }, "weight_map": weight_map }),
    )
}
