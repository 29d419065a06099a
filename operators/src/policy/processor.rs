//! The input processor: (question, images) to prompt token ids and pixel values, as
//! transformers' `Qwen2_5_VLProcessor` (with the slow image processor) produces them; plus the
//! tokenizer's encode / decode and the special token ids the trainer needs.
//!
//! Reference: transformers 5.23 `models/qwen2_5_vl/processing_qwen2_5_vl.py`,
//! `processing_utils.py` (`apply_chat_template`), `models/qwen2/tokenization_qwen2.py`.
//! The prompt is the chat template applied to one user message whose content is the images
//! then the question (a plain string when there are no images, as EasyR1 builds it), with
//! `add_generation_prompt=True`; it is tokenized without added special tokens (the template
//! writes them) and each `<|image_pad|>` is expanded to one token per merged patch window.
//! Checked against transformers by `operators/tests/processor_golden.rs`.

use std::path::{Path, PathBuf};

use image::DynamicImage;
use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

use super::chat::{ChatTemplate, find_template};
use super::config::VisionConfig;
use super::error::{PolicyError, Result};
use super::image::{ImageBackend, ImageProcessor, PixelValues};

/// A tokenized prompt and its images.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Token ids, image placeholders expanded.
    pub ids: Vec<u32>,
    /// One entry per image, in prompt order.
    pub images: Vec<PixelValues>,
}

/// Tokenizer, chat template and (for vision models) image processor of a checkpoint.
pub struct Processor {
    dir: PathBuf,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// `eos_token`, `pad_token`, ... as the template sees them.
    special_tokens: Map<String, Value>,
    eos_ids: Vec<u32>,
    pad_id: Option<u32>,
    image_token_id: Option<u32>,
    image_processor: Option<ImageProcessor>,
    video_token_id: Option<u32>,
    video_processor: Option<ImageProcessor>,
    clean_up_tokenization_spaces: bool,
}

/// The frames of one video and the rate they were sampled at (`None`: transformers' 24).
#[derive(Debug, Clone)]
pub struct Video {
    pub frames: Vec<DynamicImage>,
    pub fps: Option<f64>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("dir", &self.dir)
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("template", &self.template)
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("image_token_id", &self.image_token_id)
            .field("image_processor", &self.image_processor)
            .finish_non_exhaustive()
    }
}

/// Reads and parses an optional JSON file.
fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| PolicyError::bad_file(path, format!("not valid JSON: {e}")))
}

/// A special token of `tokenizer_config.json`: a string or an `AddedToken` object.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Processor {
    /// Loads the processor of the checkpoint in `dir`.
    ///
    /// Reads `tokenizer.json` (required), `tokenizer_config.json` (special tokens),
    /// `generation_config.json` (extra end-of-sequence ids) and the chat template (see
    /// [`super::chat`] for where it is looked for). With `vision` (a vision model),
    /// `preprocessor_config.json` is required and must agree with the vision config.
    pub fn load(dir: &Path, vision: Option<&VisionConfig>) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(PolicyError::MissingFile {
                path: tok_path,
                hint: "the fast-tokenizer file of the checkpoint is needed; copy tokenizer.json \
                       from the model's Hugging Face repository (checkpoints with only \
                       vocab.json + merges.txt can be converted by loading them with \
                       transformers' AutoTokenizer and calling save_pretrained)"
                    .into(),
            });
        }
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| PolicyError::bad_file(&tok_path, format!("cannot load tokenizer: {e}")))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?;
        let mut special_tokens = Map::new();
        for key in [
            "bos_token",
            "eos_token",
            "unk_token",
            "sep_token",
            "pad_token",
            "cls_token",
            "mask_token",
        ] {
            if let Some(t) = token_string(cfg.as_ref().and_then(|c| c.get(key))) {
                special_tokens.insert(key.into(), Value::String(t));
            }
        }
        let id_of = |key: &str, file: &Path| -> Result<Option<u32>> {
            match special_tokens.get(key).and_then(Value::as_str) {
                None => Ok(None),
                Some(t) => tokenizer.token_to_id(t).map(Some).ok_or_else(|| {
                    PolicyError::bad_file(file, format!("`{key}` {t:?} is not in tokenizer.json"))
                }),
            }
        };
        let mut eos_ids: Vec<u32> = id_of("eos_token", &cfg_path)?.into_iter().collect();
        let pad_id = id_of("pad_token", &cfg_path)?;
        let gen_path = dir.join("generation_config.json");
        if let Some(gen_cfg) = read_json(&gen_path)? {
            let ids = match gen_cfg.get("eos_token_id") {
                None | Some(Value::Null) => Some(vec![]),
                Some(Value::Array(a)) => a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>(),
                Some(v) => v.as_u64().map(|id| vec![id]),
            }
            .ok_or_else(|| {
                PolicyError::bad_file(&gen_path, "`eos_token_id` must be an id or a list of ids")
            })?;
            for id in ids {
                let id = u32::try_from(id).map_err(|_| {
                    PolicyError::bad_file(&gen_path, format!("eos_token_id {id} is too large"))
                })?;
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let clean_up_tokenization_spaces = cfg
            .as_ref()
            .and_then(|c| c.get("clean_up_tokenization_spaces"))
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let (source, origin) =
            find_template(dir, vision.is_some(), cfg.as_ref())?.ok_or_else(|| {
                PolicyError::MissingFile {
                    path: dir.join("chat_template.jinja"),
                    hint: "no chat template found (looked for chat_template.jinja, \
                       chat_template.json, processor_config.json and tokenizer_config.json \
                       `chat_template`); copy the template of the instruct model this \
                       checkpoint was tuned from"
                        .into(),
                }
            })?;
        let template = ChatTemplate::new(source, origin.display().to_string())?;

        let image_token = token_string(cfg.as_ref().and_then(|c| c.get("image_token")))
            .unwrap_or_else(|| "<|image_pad|>".into());
        let image_token_id = tokenizer.token_to_id(&image_token);
        let image_processor = match vision {
            None => None,
            Some(v) => Some(Self::load_image_processor(dir, v, image_token_id)?),
        };
        let video_token = token_string(cfg.as_ref().and_then(|c| c.get("video_token")))
            .unwrap_or_else(|| "<|video_pad|>".into());
        let video_token_id = tokenizer.token_to_id(&video_token);
        let video_processor = match &image_processor {
            None => None,
            Some(ip) => Some(Self::load_video_processor(dir, ip)?),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            tokenizer,
            template,
            special_tokens,
            eos_ids,
            pad_id,
            image_token_id,
            image_processor,
            video_token_id,
            video_processor,
            clean_up_tokenization_spaces,
        })
    }

    /// transformers' `Qwen2VLVideoProcessor` settings: `video_preprocessor_config.json` when the
    /// checkpoint has one, else `preprocessor_config.json` (as `AutoVideoProcessor` falls back),
    /// with the video pixel bounds (128 * 28 * 28 to 768 * 28 * 28 per frame) where the file gives
    /// none.
    fn load_video_processor(dir: &Path, image: &ImageProcessor) -> Result<ImageProcessor> {
        let own = dir.join("video_preprocessor_config.json");
        let path = if own.is_file() {
            own
        } else {
            dir.join("preprocessor_config.json")
        };
        let Some(json) = read_json(&path)? else {
            return Ok(image.clone());
        };
        let mut vp =
            ImageProcessor::from_json(&json).map_err(|m| PolicyError::bad_file(&path, m))?;
        let given = |k: &str| json.get(k).is_some_and(|v| !v.is_null());
        if !given("size") && !given("min_pixels") {
            vp.min_pixels = 128 * 28 * 28;
        }
        if !given("size") && !given("max_pixels") {
            vp.max_pixels = 768 * 28 * 28;
        }
        vp.backend = ImageBackend::Torchvision;
        if (vp.patch_size, vp.merge_size, vp.temporal_patch_size)
            != (
                image.patch_size,
                image.merge_size,
                image.temporal_patch_size,
            )
        {
            return Err(PolicyError::bad_file(
                &path,
                "the video processor's patch_size / merge_size / temporal_patch_size differ from \
                 the image processor's",
            ));
        }
        Ok(vp)
    }

    /// The prompt for `question` about `images` then `videos` (Qwen2.5-VL): the user message's
    /// content is the images, the videos, then the text, as transformers renders
    /// `[{"type": "image"}.., {"type": "video"}.., {"type": "text"}]`; each `<|video_pad|>` is
    /// expanded to one token per merged patch of the video's temporal patches. The prompt's
    /// `images` hold the images then the videos, in prompt order.
    pub fn prompt_with_videos(
        &self,
        question: &str,
        images: &[DynamicImage],
        videos: &[Video],
    ) -> Result<Prompt> {
        if videos.is_empty() {
            return self.prompt(question, images);
        }
        let (Some(ip), Some(vp), Some(image_id), Some(video_id)) = (
            &self.image_processor,
            &self.video_processor,
            self.image_token_id,
            self.video_token_id,
        ) else {
            return Err(PolicyError::Input(format!(
                "{} video(s) given but the checkpoint in {} has no vision config or no \
                 <|video_pad|> token",
                videos.len(),
                self.dir.display()
            )));
        };
        let mut parts: Vec<Value> = images.iter().map(|_| json!({"type": "image"})).collect();
        parts.extend(videos.iter().map(|_| json!({"type": "video"})));
        parts.push(json!({"type": "text", "text": question}));
        let text = self.render_chat(
            &json!([{"role": "user", "content": Value::Array(parts)}]),
            true,
        )?;
        let ids = self.encode(&text)?;
        let mut image_px = images
            .iter()
            .map(|img| ip.preprocess(img))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let mut video_px = videos
            .iter()
            .enumerate()
            .map(|(i, v)| {
                vp.preprocess_video(&v.frames, v.fps).map_err(|e| match e {
                    PolicyError::Input(m) => PolicyError::Input(format!("video {i}: {m}")),
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let count = |id: u32| ids.iter().filter(|&&t| t == id).count();
        if count(image_id) != images.len() || count(video_id) != videos.len() {
            return Err(PolicyError::Input(format!(
                "the rendered prompt has {} image and {} video placeholders for {} images and {} \
                 videos (does the chat template render {{\"type\": \"video\"}}?)",
                count(image_id),
                count(video_id),
                images.len(),
                videos.len()
            )));
        }
        let mut expanded = Vec::with_capacity(ids.len());
        let mut items = Vec::with_capacity(images.len() + videos.len());
        for id in ids {
            let next = if id == image_id {
                image_px.next()
            } else if id == video_id {
                video_px.next()
            } else {
                None
            };
            match next {
                Some(p) => {
                    expanded.extend(std::iter::repeat_n(id, p.num_tokens(ip.merge_size)));
                    items.push(p);
                }
                None => expanded.push(id),
            }
        }
        Ok(Prompt {
            ids: expanded,
            images: items,
        })
    }

    fn load_image_processor(
        dir: &Path,
        vision: &VisionConfig,
        image_token_id: Option<u32>,
    ) -> Result<ImageProcessor> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Err(PolicyError::MissingFile {
                path,
                hint: "a vision model needs its image processor config; copy \
                       preprocessor_config.json from the model's Hugging Face repository"
                    .into(),
            });
        }
        let ip = ImageProcessor::from_file(&path)?;
        let pairs = [
            ("patch_size", ip.patch_size, "patch_size", vision.patch_size),
            (
                "temporal_patch_size",
                ip.temporal_patch_size,
                "temporal_patch_size",
                vision.temporal_patch_size,
            ),
            (
                "merge_size",
                ip.merge_size,
                "spatial_merge_size",
                vision.spatial_merge_size,
            ),
        ];
        for (key, ours, vkey, theirs) in pairs {
            if ours != theirs {
                return Err(PolicyError::bad_file(
                    &path,
                    format!(
                        "`{key}` is {ours} but config.json's vision_config `{vkey}` is {theirs}"
                    ),
                ));
            }
        }
        if vision.in_channels != 3 {
            return Err(PolicyError::bad_file(
                dir.join("config.json"),
                format!(
                    "vision_config `in_channels` is {}; the image processor makes RGB (3)",
                    vision.in_channels
                ),
            ));
        }
        if image_token_id.is_none() {
            return Err(PolicyError::bad_file(
                dir.join("tokenizer.json"),
                "a vision model's tokenizer needs the image placeholder token <|image_pad|>",
            ));
        }
        Ok(ip)
    }

    /// The prompt for `question` about `images`: chat template, tokens, expanded image
    /// placeholders and pixel values.
    ///
    /// Where the images go: if `question` holds `<image>` placeholders (the EasyR1 / R1-ShareVL
    /// dataset convention), there must be one per image and each image takes the place of its
    /// placeholder (the text is split there, as the reference does); otherwise the images come
    /// first, then the text.
    pub fn prompt(&self, question: &str, images: &[DynamicImage]) -> Result<Prompt> {
        const PLACEHOLDER: &str = "<image>";
        let marked = question.matches(PLACEHOLDER).count();
        let content = if marked > 0 {
            if marked != images.len() {
                return Err(PolicyError::Input(format!(
                    "the question has {marked} {PLACEHOLDER} placeholders for {} images; give one \
                     placeholder per image, or none to put the images first",
                    images.len()
                )));
            }
            let mut parts = Vec::new();
            for (i, segment) in question.split(PLACEHOLDER).enumerate() {
                if i > 0 {
                    parts.push(json!({"type": "image"}));
                }
                if !segment.is_empty() {
                    parts.push(json!({"type": "text", "text": segment}));
                }
            }
            Value::Array(parts)
        } else if images.is_empty() {
            Value::String(question.into())
        } else {
            let mut parts: Vec<Value> = images.iter().map(|_| json!({"type": "image"})).collect();
            parts.push(json!({"type": "text", "text": question}));
            Value::Array(parts)
        };
        let vision = match (&self.image_processor, self.image_token_id) {
            (Some(ip), Some(id)) => Some((ip, id)),
            _ => None,
        };
        if !images.is_empty() && vision.is_none() {
            return Err(PolicyError::Input(format!(
                "{} image(s) given but the checkpoint in {} is text-only (no vision_config); use \
                 a vision-language checkpoint (Qwen2.5-VL, Qwen3-VL) or a dataset without images",
                images.len(),
                self.dir.display()
            )));
        }
        let text = self.render_chat(&json!([{"role": "user", "content": content}]), true)?;
        let ids = self.encode(&text)?;
        let Some((ip, image_id)) = vision.filter(|_| !images.is_empty()) else {
            return Ok(Prompt {
                ids,
                images: vec![],
            });
        };
        let pixels = images
            .iter()
            .map(|img| ip.preprocess(img))
            .collect::<Result<Vec<_>>>()?;
        let placeholders = ids.iter().filter(|&&id| id == image_id).count();
        if placeholders != images.len() {
            return Err(PolicyError::Input(format!(
                "the prompt has {placeholders} image placeholder tokens for {} images (does the \
                 question contain <|image_pad|>, or the chat template drop images?)",
                images.len()
            )));
        }
        let extra: usize = pixels
            .iter()
            .map(|p| p.num_tokens(ip.merge_size).saturating_sub(1))
            .sum();
        let mut expanded = Vec::with_capacity(ids.len() + extra);
        let mut next = pixels.iter();
        for id in ids {
            if id == image_id {
                let n = next.next().map_or(1, |p| p.num_tokens(ip.merge_size));
                expanded.extend(std::iter::repeat_n(image_id, n));
            } else {
                expanded.push(id);
            }
        }
        Ok(Prompt {
            ids: expanded,
            images: pixels,
        })
    }

    /// The chat template applied to `messages` (a JSON list of `{"role", "content"}`).
    pub fn render_chat(&self, messages: &Value, add_generation_prompt: bool) -> Result<String> {
        self.render_chat_with(messages, add_generation_prompt, &Map::new())
    }

    /// [`Self::render_chat`] with extra template variables (`tools`, `enable_thinking`, ...),
    /// which override the special tokens of the same name.
    pub fn render_chat_with(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
        vars: &Map<String, Value>,
    ) -> Result<String> {
        let mut all = self.special_tokens.clone();
        all.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.template.render(messages, add_generation_prompt, &all)
    }

    /// Token ids of `text`, with no special tokens added (special tokens written in the text,
    /// like `<|im_end|>`, are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, false)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| PolicyError::Input(format!("cannot tokenize text: {e}")))
    }

    /// The text of `ids`; `skip_special` drops special tokens (`<|im_end|>`, ...).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, skip_special)
            .map_err(|e| PolicyError::Input(format!("cannot decode token ids: {e}")))?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// The id of a token (a special token, or a vocabulary entry).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// End-of-sequence ids: `eos_token` of tokenizer_config.json, then generation_config.json's
    /// `eos_token_id`(s), without repeats.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_ids.clone()
    }

    /// The padding id (`pad_token` of tokenizer_config.json).
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The image placeholder id (`<|image_pad|>`).
    pub fn image_token_id(&self) -> Option<u32> {
        self.image_token_id
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The image processor (vision models only).
    pub fn image_processor(&self) -> Option<&ImageProcessor> {
        self.image_processor.as_ref()
    }

    /// Chooses which of transformers' image processors to reproduce (torchvision, the
    /// default, or PIL); no effect on a text-only model.
    pub fn set_image_backend(&mut self, backend: super::ImageBackend) {
        if let Some(ip) = &mut self.image_processor {
            ip.backend = backend;
        }
    }
}

/// transformers' `clean_up_tokenization` (only used when the tokenizer config asks for it).
fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
