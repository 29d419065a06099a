//! Share-GRPO variant expansion (DESIGN.md "Share-GRPO, exactly", item 1): m variants of a seed
//! question, each a textual variant (sampled from the question and its rewrites) paired with a
//! visual variant (the image, or the image under one random transform), the compensatory sentence
//! naming that transform, and the format prompt.
//!
//! Reference: R1-ShareVL `verl/utils/dataset.py` (`RLHFDataset.__getitem__`, `process_image`).
//! The prompt layout follows it: `transform_prompt + question + " " + format_prompt`, where every
//! compensatory sentence ends in a newline (the release omits it for one of its ten sentences; we
//! do not reproduce that slip). The images are resized to [min_pixels, max_pixels] later, by the
//! processor, not here.

use image::{Rgb, RgbImage, imageops};
use serde::{Deserialize, Serialize};
use shareflow_runtime::DetRng;

/// The reference's format prompt, appended to every question.
pub const FORMAT_PROMPT: &str = "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}.";

/// The standard deviations of the gaussian-noise transform.
pub const NOISE_STDS: [u8; 3] = [10, 25, 50];

/// A visual variant of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VisualTransform {
    /// The image as it is.
    None,
    /// Rotated 90 degrees clockwise (PIL `rotate(-90, expand=True)`).
    Rotate90Cw,
    /// Rotated 90 degrees counter-clockwise (PIL `rotate(90, expand=True)`).
    Rotate90Ccw,
    /// Rotated 180 degrees.
    Rotate180,
    /// Gaussian noise of mean 0 and this standard deviation (10, 25 or 50) added to every channel,
    /// clamped to 0..=255 and truncated to `u8` (numpy's `clip(..).astype(uint8)`).
    Noise {
        /// Standard deviation, in pixel levels.
        std: u8,
    },
    /// Upside down (PIL `FLIP_TOP_BOTTOM`).
    FlipVertical,
    /// Mirrored left to right (PIL `FLIP_LEFT_RIGHT`).
    FlipHorizontal,
    /// Both flips (PIL `ROTATE_180`: the same pixels as [`Self::Rotate180`], another sentence).
    FlipBoth,
}

impl VisualTransform {
    /// The seven transform choices; `Noise` stands for all three standard deviations.
    pub const CHOICES: usize = 7;

    /// The reference's name of the transform (`rotate_90cw`, `gaussian_noise_mean0_std25`, ...),
    /// `none` for the identity; for logs and metrics.
    pub fn name(self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Rotate90Cw => "rotate_90cw".into(),
            Self::Rotate90Ccw => "rotate_90ccw".into(),
            Self::Rotate180 => "rotate_180".into(),
            Self::Noise { std } => format!("gaussian_noise_mean0_std{std}"),
            Self::FlipVertical => "vertically_flipped".into(),
            Self::FlipHorizontal => "horizontally_flipped".into(),
            Self::FlipBoth => "horizontally_vertically_flipped".into(),
        }
    }
}

/// The sentence that tells the model which transform its image underwent; `None` for
/// [`VisualTransform::None`]. It always describes the transform applied (the release swaps the two
/// 90-degree sentences; see DESIGN.md). Noise has one sentence whatever its standard deviation.
pub fn compensatory_prompt(t: VisualTransform) -> Option<&'static str> {
    Some(match t {
        VisualTransform::None => return None,
        VisualTransform::Rotate90Cw => {
            "The image is rotated 90 degrees clockwise. Please rotate it back and help me solve the question based on the corrected image."
        }
        VisualTransform::Rotate90Ccw => {
            "The image is rotated 90 degrees counterclockwise. Please rotate it back and help me solve the question based on the corrected image."
        }
        VisualTransform::Rotate180 => {
            "The image is rotated 180 degrees counterclockwise. Please rotate it back and help me solve the question based on the corrected image."
        }
        VisualTransform::Noise { .. } => {
            "This image has been corrupted with noise. Please solve the question based on this image."
        }
        VisualTransform::FlipVertical => {
            "The image is vertically flipped. Please flip it back to its original orientation and help me solve the question based on the corrected image."
        }
        VisualTransform::FlipHorizontal => {
            "The image is horizontally flipped. Please flip it back to its original orientation and help me solve the question based on the corrected image."
        }
        VisualTransform::FlipBoth => {
            "The image is flipped both horizontally and vertically, which is equivalent to a 180-degree rotation. Please restore it to its original orientation and help me solve the question based on the corrected image."
        }
    })
}

/// The image placeholder of dataset questions (EasyR1 / R1-ShareVL): the processor puts the
/// row's images where these stand, in order (see `Processor::prompt`).
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// The question text a variant's prompt holds: `[compensatory sentence + "\n"] + text + " " +
/// FORMAT_PROMPT`, the reference's `transform_prompt + question + " " + format_prompt.strip()`.
///
/// Placeholders ([`IMAGE_PLACEHOLDER`]) that open `text` stay in front, so the sentence starts the
/// first text segment after the images, as in the reference (which splits the question at the
/// placeholders and prefixes the text that follows). The reference prefixes every text segment of
/// a question with several segments; shareflow says it once, before the first.
pub fn format_question(text: &str, transform: VisualTransform) -> String {
    let mut rest = text;
    while let Some(r) = rest.strip_prefix(IMAGE_PLACEHOLDER) {
        rest = r;
    }
    let lead = &text[..text.len() - rest.len()];
    match compensatory_prompt(transform) {
        Some(sentence) => format!("{lead}{sentence}\n{rest} {FORMAT_PROMPT}"),
        None => format!("{text} {FORMAT_PROMPT}"),
    }
}

/// The image under `t`. Only [`VisualTransform::Noise`] draws from `rng` (one normal sample per
/// channel value, row-major, channels in RGB order); rotations by 90 degrees swap width and height.
pub fn apply_transform(img: &RgbImage, t: VisualTransform, rng: &mut DetRng) -> RgbImage {
    match t {
        VisualTransform::None => img.clone(),
        VisualTransform::Rotate90Cw => imageops::rotate90(img),
        VisualTransform::Rotate90Ccw => imageops::rotate270(img),
        VisualTransform::Rotate180 | VisualTransform::FlipBoth => imageops::rotate180(img),
        VisualTransform::FlipVertical => imageops::flip_vertical(img),
        VisualTransform::FlipHorizontal => imageops::flip_horizontal(img),
        VisualTransform::Noise { std } => {
            let mut out = img.clone();
            let std = f64::from(std);
            for Rgb(px) in out.pixels_mut() {
                for c in px.iter_mut() {
                    let v = f64::from(*c) + std * rng.normal();
                    // In range after the clamp, so the cast only truncates like numpy's astype.
                    *c = v.clamp(0.0, 255.0) as u8;
                }
            }
            out
        }
    }
}

/// With probability `p_transform`, one of the [`VisualTransform::CHOICES`] seven transforms
/// uniformly (noise's standard deviation then uniform over [`NOISE_STDS`]); otherwise `None`.
///
/// The release draws uniformly among nine keys (three of them noise levels), so noise is a third
/// of its transforms; shareflow counts noise as one choice of seven, as DESIGN.md lists them.
pub fn sample_transform(p_transform: f64, rng: &mut DetRng) -> VisualTransform {
    if rng.next_f64() >= p_transform {
        return VisualTransform::None;
    }
    match rng.below(VisualTransform::CHOICES as u64) {
        0 => VisualTransform::Rotate90Cw,
        1 => VisualTransform::Rotate90Ccw,
        2 => VisualTransform::Rotate180,
        3 => VisualTransform::Noise {
            std: NOISE_STDS[rng.below(NOISE_STDS.len() as u64) as usize],
        },
        4 => VisualTransform::FlipVertical,
        5 => VisualTransform::FlipHorizontal,
        _ => VisualTransform::FlipBoth,
    }
}

/// One variant Q_k of a seed question.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The seed question's id.
    pub seed_id: String,
    /// The variant's index, `0..m`.
    pub k: usize,
    /// The textual variant alone (one of the seed's texts).
    pub text: String,
    /// The full question: [`format_question`]`(text, transform)`.
    pub question: String,
    /// The seed's images under `transform` (not resized), in order.
    pub images: Vec<RgbImage>,
    /// The visual transform applied.
    pub transform: VisualTransform,
}

/// The m variants of a seed question, deterministic given `rng`.
///
/// `texts` holds the original question first, then its rewrites. Textual variants: `m.min(n)`
/// distinct indices are drawn uniformly without replacement from the `n` texts (the reference's
/// `random.sample`), in random order; variant `k` takes the `k % m.min(n)`-th of them. So with
/// `n >= m` the m texts are distinct, and with `n < m` (where the reference would raise) every text
/// is used once, in a random order, before any repeats, and the variants cycle through that order.
/// Then per variant, in order of `k`: a transform from [`sample_transform`]`(p_transform, rng)` and
/// its application with [`apply_transform`] to each image in turn (the reference transforms every
/// image of a row the same way). No variants when `texts` is empty or `m` is 0.
pub fn expand_variants(
    texts: &[String],
    images: &[RgbImage],
    seed_id: &str,
    m: usize,
    p_transform: f64,
    rng: &mut DetRng,
) -> Vec<Variant> {
    if texts.is_empty() || m == 0 {
        return Vec::new();
    }
    let order = rng.choose_distinct(texts.len(), m);
    (0..m)
        .map(|k| {
            let text = texts[order[k % order.len()]].clone();
            let transform = sample_transform(p_transform, rng);
            let images = images
                .iter()
                .map(|img| apply_transform(img, transform, rng))
                .collect();
            Variant {
                seed_id: seed_id.to_string(),
                k,
                question: format_question(&text, transform),
                text,
                images,
                transform,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "variants_tests.rs"]
mod tests;
