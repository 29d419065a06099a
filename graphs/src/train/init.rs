//! Creating the embedded policy from nothing: a byte-level BPE tokenizer trained on the task's
//! text and a randomly initialised tiny Qwen2.5-VL checkpoint (`shareflow init-model`), which the
//! `sft` graph then warm-starts.

use std::path::Path;

use shareflow_operators::policy::{
    TinyVlSpec, create_random_checkpoint, read_tokenizer, train_tokenizer,
};
use shareflow_operators::task::{
    FORMAT_PROMPT, IMAGE_PLACEHOLDER, NOISE_STDS, Split, VisualTransform, compensatory_prompt,
    reference_response, shapes_sample,
};

use super::steps::TASK_SEED;

/// The text the tokenizer is trained on: questions, rewrites and reference responses of the first
/// `samples` training questions, every compensatory sentence, the format prompt and the chat
/// template's fixed words.
pub fn task_corpus(samples: u64) -> Vec<String> {
    let mut out = vec![
        FORMAT_PROMPT.to_string(),
        "You are a helpful assistant.".to_string(),
        "system".to_string(),
        "user".to_string(),
        "assistant".to_string(),
    ];
    let transforms = [
        VisualTransform::Rotate90Cw,
        VisualTransform::Rotate90Ccw,
        VisualTransform::Rotate180,
        VisualTransform::FlipVertical,
        VisualTransform::FlipHorizontal,
        VisualTransform::FlipBoth,
    ]
    .into_iter()
    .chain(NOISE_STDS.iter().map(|&std| VisualTransform::Noise { std }));
    out.extend(
        transforms
            .filter_map(compensatory_prompt)
            .map(str::to_string),
    );
    for i in 0..samples {
        let s = shapes_sample(TASK_SEED, Split::Train, i);
        out.push(reference_response(&s));
        // The processor removes the image placeholder before encoding.
        out.extend(s.texts().iter().map(|t| t.replace(IMAGE_PLACEHOLDER, "")));
    }
    out
}

/// Vocabulary size (bytes + merges) of the embedded tokenizer.
pub const EMBEDDED_VOCAB: usize = 512;

/// Writes a fresh checkpoint: random weights from `seed` and a tokenizer, trained on
/// [`task_corpus`] or, with `tokenizer`, read from that `tokenizer.json`. The weights depend only
/// on `seed`, `spec` and the tokenizer's vocabulary size.
pub fn init_model(
    dir: &Path,
    seed: u64,
    spec: &TinyVlSpec,
    tokenizer: Option<&Path>,
) -> Result<(), String> {
    let tokenizer = match tokenizer {
        Some(path) => read_tokenizer(path),
        None => train_tokenizer(&task_corpus(2000), EMBEDDED_VOCAB),
    }
    .map_err(|e| e.to_string())?;
    create_random_checkpoint(dir, spec, &tokenizer, seed).map_err(|e| e.to_string())
}
