//! [`Policy`]: a checkpoint directory loaded whole (model + processor), with the user-level
//! operations the CLI exposes: log-probs of a response to a question (with images), and sampling
//! responses.

use std::path::{Path, PathBuf};

use candle_core::Device;
use image::DynamicImage;
use shareflow_runtime::rng::DetRng;

use super::config::Architecture;
use super::error::{PolicyError, Result};
use super::model::{Generation, LoadOptions, PolicyModel, SamplingParams, ScoreOptions, Sequence};
use super::processor::{Processor, Prompt, Video};

/// A loaded checkpoint: the model, its processor and the directory they came from.
#[derive(Debug)]
pub struct Policy {
    pub dir: PathBuf,
    pub model: PolicyModel,
    pub processor: Processor,
}

/// Log-probs of one response.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseLogProbs {
    pub token_ids: Vec<u32>,
    /// Each token decoded on its own.
    pub tokens: Vec<String>,
    pub log_probs: Vec<f32>,
}

/// A sampled response with its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub text: String,
    pub generation: Generation,
}

/// Reads and decodes an image file, naming the file in errors.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| PolicyError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| PolicyError::io(path, e))?;
    reader.decode().map_err(|e| {
        PolicyError::bad_file(
            path,
            format!("cannot decode the image ({e}); PNG, JPEG, WebP, GIF and BMP are supported"),
        )
    })
}

impl Policy {
    /// Loads `dir` (config, weights, tokenizer, chat template, image processor).
    pub fn load(dir: &Path, device: &Device, opts: LoadOptions) -> Result<Self> {
        let model = PolicyModel::load(dir, device, opts)?;
        let processor = Processor::load(dir, model.config().vision.as_ref())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            processor,
        })
    }

    /// The prompt of one user message (images first, then the question) with the generation
    /// prompt added, tokenized with the image placeholders expanded.
    pub fn prompt(&self, question: &str, images: &[DynamicImage]) -> Result<Prompt> {
        if !images.is_empty() && self.model.config().vision.is_none() {
            return Err(PolicyError::Input(format!(
                "{}: {} is a text-only model; it cannot take images",
                self.dir.display(),
                self.model.config().architecture.hf_class()
            )));
        }
        self.processor.prompt(question, images)
    }

    /// [`Self::prompt`] with videos after the images (Qwen2.5-VL; see
    /// [`Processor::prompt_with_videos`]).
    pub fn prompt_with_videos(
        &self,
        question: &str,
        images: &[DynamicImage],
        videos: &[Video],
    ) -> Result<Prompt> {
        if videos.is_empty() {
            return self.prompt(question, images);
        }
        if self.model.config().architecture != Architecture::Qwen2_5Vl {
            return Err(PolicyError::Input(format!(
                "{}: video input is implemented for Qwen2.5-VL only, not for {}",
                self.dir.display(),
                self.model.config().architecture.hf_class()
            )));
        }
        self.processor.prompt_with_videos(question, images, videos)
    }

    /// Per-token log-probs of `response` (tokenized without special tokens) after the prompt.
    pub fn log_probs(
        &self,
        question: &str,
        images: &[DynamicImage],
        response: &str,
    ) -> Result<ResponseLogProbs> {
        self.log_probs_of_prompt(&self.prompt(question, images)?, response)
    }

    /// [`Self::log_probs`] after a prompt already built (e.g. by [`Self::prompt_with_videos`]).
    pub fn log_probs_of_prompt(&self, prompt: &Prompt, response: &str) -> Result<ResponseLogProbs> {
        let response_ids = self.processor.encode(response)?;
        if response_ids.is_empty() {
            return Err(PolicyError::Input("the response is empty".into()));
        }
        let mut ids = prompt.ids.clone();
        ids.extend(&response_ids);
        let seq = Sequence {
            ids: &ids,
            prompt_len: prompt.ids.len(),
            images: &prompt.images,
        };
        let scores = self.model.score(&[seq], &ScoreOptions::default())?;
        let log_probs = scores.row(0)?;
        let tokens = response_ids
            .iter()
            .map(|&t| self.processor.decode(&[t], false))
            .collect::<Result<Vec<_>>>()?;
        Ok(ResponseLogProbs {
            token_ids: response_ids,
            tokens,
            log_probs,
        })
    }

    /// `n` responses to one question, sampled as one batch; response `i` uses the random stream
    /// (seed, i), so a run is reproducible. Stops on the checkpoint's end-of-sequence tokens.
    pub fn generate(
        &self,
        question: &str,
        images: &[DynamicImage],
        n: usize,
        params: &SamplingParams,
        seed: u64,
    ) -> Result<Vec<Response>> {
        self.generate_from_prompt(&self.prompt(question, images)?, n, params, seed)
    }

    /// [`Self::generate`] from a prompt already built (e.g. by [`Self::prompt_with_videos`]).
    pub fn generate_from_prompt(
        &self,
        prompt: &Prompt,
        n: usize,
        params: &SamplingParams,
        seed: u64,
    ) -> Result<Vec<Response>> {
        let mut params = params.clone();
        if params.stop.is_empty() {
            params.stop = self.processor.eos_ids();
        }
        let inputs: Vec<(&[u32], &[super::image::PixelValues])> = (0..n)
            .map(|_| (prompt.ids.as_slice(), prompt.images.as_slice()))
            .collect();
        let mut rngs: Vec<DetRng> = (0..n)
            .map(|i| DetRng::derive(seed, 0, "generate", i as u64))
            .collect();
        let gens = self.model.generate(&inputs, &params, &mut rngs)?;
        gens.into_iter()
            .map(|g| {
                let body: Vec<u32> = g
                    .tokens
                    .iter()
                    .copied()
                    .filter(|t| !params.stop.contains(t))
                    .collect();
                Ok(Response {
                    text: self.processor.decode(&body, true)?,
                    generation: g,
                })
            })
            .collect()
    }
}
