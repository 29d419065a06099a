//! The Qwen2-VL image processor: `preprocessor_config.json`, `smart_resize`, and an image turned
//! into the flattened patches the vision tower reads (`pixel_values`, `image_grid_thw`).
//!
//! transformers 5 has two implementations of this processor, and they do not give the same
//! pixels; [`ImageBackend`] picks one:
//! - **torchvision** (the default, as in transformers: `AutoProcessor.from_pretrained(dir)`
//!   selects it whenever torchvision is installed): `models/qwen2_vl/image_processing_qwen2_vl.py`
//!   (`Qwen2VLImageProcessor`) on `image_processing_backends.TorchvisionBackend`. Convert to RGB
//!   (PIL's conversion), torchvision's `uint8` resize ([`resize_rgb_torchvision`]), then rescale
//!   and normalise fused in f32: `(x - mean * (1 / rescale_factor)) / (std * (1 / rescale_factor))`
//!   with the mean and std rounded to f32 first.
//! - **pil** (`backend="pil"`, or the deprecated `use_fast=False`):
//!   `image_processing_pil_qwen2_vl.py` (`Qwen2VLImageProcessorPil`) and
//!   `image_transforms.{rescale,normalize}`: convert to RGB, PIL resize of the `u8` image
//!   ([`super::resample::resize_rgb`]), rescale in f64 then cast to f32
//!   (`image.astype(float64) * scale`), normalise in f32 (`(x - mean) / std`).
//!
//! Both patchify with the frame repeated `temporal_patch_size` times. On an image whose size
//! needs no resize the two differ only by the normalisation's rounding (about 1e-7); on a
//! resized one by up to a few `u8` levels per pixel, enough to move a tiny model's log-probs by
//! 1e-2 or more (see `tests/golden/policy/README.md`).

use std::path::Path;

use image::{DynamicImage, RgbImage};
use serde_json::Value;

use super::error::{PolicyError, Result};
use super::resample::{
    Filter, PassOrder, convert_to_rgb, resize_rgb_ordered, resize_rgb_torchvision,
};

/// Which of transformers' two Qwen2-VL image processors to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageBackend {
    /// `Qwen2VLImageProcessor` (torchvision backend): what `AutoProcessor.from_pretrained`
    /// returns in transformers 5 when torchvision is installed.
    #[default]
    Torchvision,
    /// `Qwen2VLImageProcessorPil`: `backend="pil"` / `use_fast=False`, and transformers 4.x's
    /// default for Qwen2-VL.
    Pil,
}

impl std::str::FromStr for ImageBackend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "torchvision" => Ok(Self::Torchvision),
            "pil" => Ok(Self::Pil),
            other => Err(format!(
                "unknown image backend `{other}`: use `torchvision` (transformers 5's default \
                 image processor) or `pil` (its `backend=\"pil\"` / `use_fast=False` one)"
            )),
        }
    }
}

impl std::fmt::Display for ImageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Torchvision => "torchvision",
            Self::Pil => "pil",
        })
    }
}

/// OpenAI CLIP's mean, transformers' `OPENAI_CLIP_MEAN` (the Qwen2-VL default).
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's std, transformers' `OPENAI_CLIP_STD`.
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// One image as the vision tower consumes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PixelValues {
    /// `grid_t * grid_h * grid_w` rows of `patch_dim` values, row-major: exactly HF's
    /// `pixel_values` for this image. Rows go merge window by merge window (`grid_h / merge`,
    /// `grid_w / merge`, `merge`, `merge`); a row is `(channel, temporal, patch_y, patch_x)`.
    pub data: Vec<f32>,
    /// `[grid_t, grid_h, grid_w]`, HF's `image_grid_thw` row: patches in time, height, width.
    pub grid_thw: [usize; 3],
    /// `None` for an image. For a video, HF's `second_per_grid_ts` entry: seconds per temporal
    /// patch (`temporal_patch_size / fps`); it spaces the temporal rotary positions, and the video
    /// fills `<|video_pad|>` placeholders instead of `<|image_pad|>` ones.
    pub second_per_grid_t: Option<f32>,
}

impl PixelValues {
    /// Number of patches (rows).
    pub fn num_patches(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// Number of `<|image_pad|>` tokens the image takes in the prompt: one per merge window.
    pub fn num_tokens(&self, merge_size: usize) -> usize {
        self.num_patches() / (merge_size * merge_size).max(1)
    }

    /// Values per row: `channels * temporal_patch_size * patch_size^2`.
    pub fn patch_dim(&self) -> usize {
        self.data.len() / self.num_patches().max(1)
    }

    /// Number of language-model tokens the image becomes (alias of [`Self::num_tokens`]).
    pub fn llm_tokens(&self, merge_size: usize) -> usize {
        self.num_tokens(merge_size)
    }

    /// The values as a `(patches, patch_dim)` f32 tensor.
    pub fn to_tensor(&self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        Ok(candle_core::Tensor::from_slice(
            &self.data,
            (self.num_patches(), self.patch_dim()),
            device,
        )?)
    }
}

/// Reads pixel values stored as safetensors (tensor `NAME` of shape (patches, patch_dim) and
/// `NAME.image_grid_thw` of shape (3)), as the policy fixtures store HF processor outputs; videos
/// (`NAME.video_grid_thw`) come with `second_per_grid_t` = `Some(0.0)` (the file does not hold it:
/// set it from the processor's `second_per_grid_ts`). Keys
/// are the tensor names.
pub fn load_pixel_values(path: &Path) -> Result<std::collections::HashMap<String, PixelValues>> {
    let all = candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| {
        crate::policy::PolicyError::bad_file(path, format!("not a readable safetensors file: {e}"))
    })?;
    let mut out = std::collections::HashMap::new();
    for (name, t) in &all {
        let (grid, video) = match (
            all.get(&format!("{name}.image_grid_thw")),
            all.get(&format!("{name}.video_grid_thw")),
        ) {
            (Some(g), _) => (g, false),
            (None, Some(g)) => (g, true),
            (None, None) => continue,
        };
        let g: Vec<i64> = grid.to_dtype(candle_core::DType::I64)?.to_vec1()?;
        let [gt, gh, gw] = g.as_slice() else {
            return Err(crate::policy::PolicyError::bad_file(
                path,
                format!("the grid of `{name}` must hold 3 values"),
            ));
        };
        let dim = |v: i64| usize::try_from(v).unwrap_or(0);
        out.insert(
            name.clone(),
            PixelValues {
                data: t
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?,
                grid_thw: [dim(*gt), dim(*gh), dim(*gw)],
                second_per_grid_t: video.then_some(0.0),
            },
        );
    }
    Ok(out)
}

/// `preprocessor_config.json` of a Qwen2-VL / Qwen2.5-VL checkpoint, with transformers'
/// defaults for absent fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Smallest resized area (`min_pixels`, or `size.shortest_edge`); default 56*56.
    pub min_pixels: usize,
    /// Largest resized area (`max_pixels`, or `size.longest_edge`); default 28*28*1280.
    pub max_pixels: usize,
    /// Side of a vision patch; default 14.
    pub patch_size: usize,
    /// Side of the window of patches merged into one LM token; default 2.
    pub merge_size: usize,
    /// Frames per temporal patch; a still image is repeated this many times; default 2.
    pub temporal_patch_size: usize,
    /// Per-channel mean, as numpy's `float32` array of the config's numbers.
    pub image_mean: [f32; 3],
    /// Per-channel std, as numpy's `float32` array of the config's numbers.
    pub image_std: [f32; 3],
    /// Multiplier from `u8` to `[0, 1]`; default 1/255.
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    pub do_convert_rgb: bool,
    /// PIL filter of the resize (`resample`, default 3 = bicubic).
    pub resample: Filter,
    /// Which transformers image processor to reproduce (not in the config file): torchvision,
    /// transformers 5's default, unless set.
    pub backend: ImageBackend,
    /// With the PIL backend, the Pillow version whose resize to reproduce (not in the config
    /// file): Pillow 13 by default; set [`PassOrder::HorizontalFirst`] to match a reference run
    /// with Pillow 12 or older.
    pub pass_order: PassOrder,
}

impl Default for ImageProcessor {
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            image_mean: CLIP_MEAN.map(|v| v as f32),
            image_std: CLIP_STD.map(|v| v as f32),
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            do_convert_rgb: true,
            resample: Filter::Bicubic,
            backend: ImageBackend::Torchvision,
            pass_order: PassOrder::Pillow13,
        }
    }
}

impl ImageProcessor {
    /// Reads `preprocessor_config.json`. `min_pixels` / `max_pixels` take precedence over
    /// `size: {shortest_edge, longest_edge}`, as in transformers.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| PolicyError::bad_file(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&json).map_err(|message| PolicyError::bad_file(path, message))
    }

    /// Parses the JSON of a `preprocessor_config.json`; the error names the field.
    pub fn from_json(json: &Value) -> std::result::Result<Self, String> {
        let obj = json
            .as_object()
            .ok_or("expected a JSON object (preprocessor_config.json)")?;
        let mut p = Self::default();
        let uint = |key: &str, default: usize| -> std::result::Result<usize, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .map(|v| v as usize)
                    .ok_or(format!("`{key}` must be a non-negative integer, found {v}")),
            }
        };
        let flag = |key: &str, default: bool| -> std::result::Result<bool, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or(format!("`{key}` must be true or false, found {v}")),
            }
        };
        let size = obj.get("size").and_then(Value::as_object);
        let edge = |key: &str| size.and_then(|s| s.get(key)).and_then(Value::as_u64);
        if size.is_some() && (edge("shortest_edge").is_none() || edge("longest_edge").is_none()) {
            let has = |k| obj.get(k).is_some_and(|v| !v.is_null());
            if !(has("min_pixels") && has("max_pixels")) {
                return Err(
                    "`size` must have integer `shortest_edge` and `longest_edge` \
                            (the pixel bounds), or give `min_pixels` and `max_pixels`"
                        .into(),
                );
            }
        }
        p.min_pixels = uint(
            "min_pixels",
            edge("shortest_edge").map_or(p.min_pixels, |v| v as usize),
        )?;
        p.max_pixels = uint(
            "max_pixels",
            edge("longest_edge").map_or(p.max_pixels, |v| v as usize),
        )?;
        p.patch_size = uint("patch_size", p.patch_size)?;
        p.merge_size = uint("merge_size", p.merge_size)?;
        p.temporal_patch_size = uint("temporal_patch_size", p.temporal_patch_size)?;
        p.do_resize = flag("do_resize", p.do_resize)?;
        p.do_rescale = flag("do_rescale", p.do_rescale)?;
        p.do_normalize = flag("do_normalize", p.do_normalize)?;
        p.do_convert_rgb = flag("do_convert_rgb", p.do_convert_rgb)?;
        if let Some(v) = obj.get("rescale_factor").filter(|v| !v.is_null()) {
            p.rescale_factor = v
                .as_f64()
                .ok_or(format!("`rescale_factor` must be a number, found {v}"))?;
        }
        p.image_mean = channels(obj.get("image_mean"), "image_mean", CLIP_MEAN)?;
        p.image_std = channels(obj.get("image_std"), "image_std", CLIP_STD)?;
        if let Some(v) = obj.get("resample").filter(|v| !v.is_null()) {
            p.resample = v.as_i64().and_then(Filter::from_pil).ok_or(format!(
                "`resample` {v} is not supported: use 3 (bicubic), 2 (bilinear), 1 (lanczos), \
                 4 (box) or 5 (hamming)"
            ))?;
        }
        if p.patch_size == 0 || p.merge_size == 0 || p.temporal_patch_size == 0 {
            return Err("`patch_size`, `merge_size` and `temporal_patch_size` must be > 0".into());
        }
        Ok(p)
    }

    /// Qwen2-VL's `smart_resize`: the `(height, width)` an image is resized to, multiples of
    /// `patch_size * merge_size` with the area in `[min_pixels, max_pixels]` and the aspect
    /// ratio kept as far as possible. Same float operations as transformers (Python `round`
    /// rounds half to even).
    pub fn smart_resize(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let factor = self.patch_size * self.merge_size;
        if height == 0 || width == 0 {
            return Err(PolicyError::Input(format!(
                "image of {width}x{height} pixels (width x height) is empty"
            )));
        }
        let ratio = height.max(width) as f64 / height.min(width) as f64;
        if ratio > 200.0 {
            return Err(PolicyError::Input(format!(
                "image of {width}x{height} pixels (width x height): absolute aspect ratio must be \
                 at most 200, got {ratio}; crop or pad the image"
            )));
        }
        let (h, w, f) = (height as f64, width as f64, factor as f64);
        let mut h_bar = (h / f).round_ties_even() as usize * factor;
        let mut w_bar = (w / f).round_ties_even() as usize * factor;
        if h_bar * w_bar > self.max_pixels {
            let beta = ((height * width) as f64 / self.max_pixels as f64).sqrt();
            h_bar = factor.max((h / beta / f).floor() as usize * factor);
            w_bar = factor.max((w / beta / f).floor() as usize * factor);
        } else if h_bar * w_bar < self.min_pixels {
            let beta = (self.min_pixels as f64 / (height * width) as f64).sqrt();
            h_bar = (h * beta / f).ceil() as usize * factor;
            w_bar = (w * beta / f).ceil() as usize * factor;
        }
        Ok((h_bar, w_bar))
    }

    /// Converts, resizes, rescales, normalises and patchifies one image.
    pub fn preprocess(&self, img: &DynamicImage) -> Result<PixelValues> {
        let rgb = if self.do_convert_rgb {
            convert_to_rgb(img)
        } else {
            match img {
                DynamicImage::ImageRgb8(rgb) => rgb.clone(),
                other => {
                    return Err(PolicyError::Input(format!(
                        "image of {}x{} pixels has color type {:?} but do_convert_rgb is false \
                         in preprocessor_config.json: give RGB 8-bit images",
                        other.width(),
                        other.height(),
                        other.color()
                    )));
                }
            }
        };
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let rgb = if self.do_resize {
            let (rh, rw) = self.smart_resize(h, w)?;
            match self.backend {
                ImageBackend::Pil => {
                    resize_rgb_ordered(&rgb, rw as u32, rh as u32, self.resample, self.pass_order)
                }
                ImageBackend::Torchvision => {
                    resize_rgb_torchvision(&rgb, rw as u32, rh as u32, self.resample).ok_or_else(
                        || {
                            PolicyError::Input(format!(
                                "preprocessor_config.json `resample` {:?} is not reproduced with \
                                 the torchvision image backend (bicubic and bilinear are); \
                                 choose the pil backend",
                                self.resample
                            ))
                        },
                    )?
                }
            }
        } else {
            let factor = self.patch_size * self.merge_size;
            if h % factor != 0 || w % factor != 0 || h == 0 || w == 0 {
                return Err(PolicyError::Input(format!(
                    "image of {w}x{h} pixels: with do_resize false both sides must be positive \
                     multiples of patch_size * merge_size = {factor}"
                )));
            }
            rgb
        };
        Ok(self.patchify(std::slice::from_ref(&rgb)))
    }

    /// The frames of one video, as transformers' `Qwen2VLVideoProcessor` (torchvision backend,
    /// frames given as images, `do_sample_frames` false) makes them: every frame resized to the
    /// size `smart_resize` gives the first frame (all frames must have one size), rescaled and
    /// normalised, the last frame repeated up to a multiple of `temporal_patch_size`, and
    /// consecutive frames stacked into temporal patches. `fps` is the rate the frames were
    /// sampled at; without it transformers assumes 24 (`VideoMetadata.sampled_fps`).
    pub fn preprocess_video(
        &self,
        frames: &[DynamicImage],
        fps: Option<f64>,
    ) -> Result<PixelValues> {
        let Some(first) = frames.first() else {
            return Err(PolicyError::Input(
                "a video needs at least one frame".into(),
            ));
        };
        let fps = fps.unwrap_or(24.0);
        if !(fps.is_finite() && fps > 0.0) {
            return Err(PolicyError::Input(format!(
                "video fps must be a positive number, got {fps}"
            )));
        }
        let (w0, h0) = (first.width(), first.height());
        let (rh, rw) = if self.do_resize {
            self.smart_resize(h0 as usize, w0 as usize)?
        } else {
            (h0 as usize, w0 as usize)
        };
        let factor = self.patch_size * self.merge_size;
        if rh % factor != 0 || rw % factor != 0 || rh == 0 || rw == 0 {
            return Err(PolicyError::Input(format!(
                "video frames of {w0}x{h0} pixels: with do_resize false both sides must be \
                 positive multiples of patch_size * merge_size = {factor}"
            )));
        }
        let mut rgb = Vec::with_capacity(frames.len());
        for (i, f) in frames.iter().enumerate() {
            if (f.width(), f.height()) != (w0, h0) {
                return Err(PolicyError::Input(format!(
                    "video frame {i} is {}x{} pixels but frame 0 is {w0}x{h0}; all frames of a \
                     video must have one size",
                    f.width(),
                    f.height()
                )));
            }
            let frame = convert_to_rgb(f);
            rgb.push(if self.do_resize {
                resize_rgb_torchvision(&frame, rw as u32, rh as u32, self.resample).ok_or_else(
                    || {
                        PolicyError::Input(format!(
                            "preprocessor_config.json `resample` {:?} is not reproduced for \
                             videos (transformers' video processor is torchvision-only; bicubic \
                             and bilinear are reproduced)",
                            self.resample
                        ))
                    },
                )?
            } else {
                frame
            });
        }
        let t = self.temporal_patch_size;
        while rgb.len() % t != 0 {
            let last = rgb[rgb.len() - 1].clone();
            rgb.push(last);
        }
        let video = Self {
            backend: ImageBackend::Torchvision,
            ..self.clone()
        };
        let mut pv = video.patchify(&rgb);
        pv.second_per_grid_t = Some((t as f64 / fps) as f32);
        Ok(pv)
    }

    /// The value of one `u8` sample after rescale and normalise, for channel `c`.
    fn value(&self, v: u8, c: usize) -> f32 {
        if self.backend == ImageBackend::Torchvision {
            return self.value_torchvision(v, c);
        }
        // transformers: `image.astype(np.float64) * scale` then `.astype(np.float32)`;
        // without rescale, normalize casts the u8 image to float32
        let x = if self.do_rescale {
            (f64::from(v) * self.rescale_factor) as f32
        } else {
            f32::from(v)
        };
        if self.do_normalize {
            (x - self.image_mean[c]) / self.image_std[c]
        } else {
            x
        }
    }

    /// `TorchvisionBackend.rescale_and_normalize`: rescale folded into a float32 mean and std
    /// (`torch.tensor(mean) * (1.0 / rescale_factor)`), then `tvF.normalize` of the float32
    /// image; a rescale alone is `image * rescale_factor` in float32.
    fn value_torchvision(&self, v: u8, c: usize) -> f32 {
        let x = f32::from(v);
        match (self.do_rescale, self.do_normalize) {
            (true, true) => {
                let inv = (1.0 / self.rescale_factor) as f32;
                (x - self.image_mean[c] * inv) / (self.image_std[c] * inv)
            }
            (false, true) => (x - self.image_mean[c]) / self.image_std[c],
            (true, false) => x * self.rescale_factor as f32,
            (false, false) => x,
        }
    }

    /// HF's patch layout of (already resized) frames: one frame is repeated
    /// `temporal_patch_size` times (an image); otherwise every `temporal_patch_size` consecutive
    /// frames make one temporal patch (a video; the count must be a multiple).
    fn patchify(&self, frames: &[RgbImage]) -> PixelValues {
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (w, h) = (frames[0].width() as usize, frames[0].height() as usize);
        let (gh, gw) = (h / p, w / p);
        let image = frames.len() == 1;
        let gt = if image { 1 } else { frames.len() / t };
        // per-channel lookup of the 256 possible values
        let lut: Vec<[f32; 256]> = (0..3)
            .map(|c| std::array::from_fn(|v| self.value(v as u8, c)))
            .collect();
        let patch_dim = 3 * t * p * p;
        let mut data = Vec::with_capacity(gt * gh * gw * patch_dim);
        for tt in 0..gt {
            for bh in 0..gh / m {
                for bw in 0..gw / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            let (y0, x0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                            for (c, lut) in lut.iter().enumerate() {
                                for k in 0..t {
                                    let raw = frames[if image { 0 } else { tt * t + k }].as_raw();
                                    for py in 0..p {
                                        let row = ((y0 + py) * w + x0) * 3 + c;
                                        data.extend(
                                            (0..p).map(|px| lut[raw[row + px * 3] as usize]),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        PixelValues {
            data,
            grid_thw: [gt, gh, gw],
            second_per_grid_t: None,
        }
    }
}

/// A per-channel list (or a single number for all channels) of a preprocessor config.
fn channels(
    v: Option<&Value>,
    key: &str,
    default: [f64; 3],
) -> std::result::Result<[f32; 3], String> {
    let vals = match v {
        None | Some(Value::Null) => default.to_vec(),
        Some(Value::Number(n)) => vec![n.as_f64().unwrap_or(f64::NAN); 3],
        Some(Value::Array(a)) => a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect(),
        Some(other) => {
            return Err(format!(
                "`{key}` must be a list of 3 numbers, found {other}"
            ));
        }
    };
    match <[f64; 3]>::try_from(vals) {
        Ok(a) if a.iter().all(|x| x.is_finite()) => Ok(a.map(|x| x as f32)),
        _ => Err(format!(
            "`{key}` must be 3 finite numbers (one per RGB channel)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(min_pixels: usize, max_pixels: usize) -> ImageProcessor {
        ImageProcessor {
            min_pixels,
            max_pixels,
            ..ImageProcessor::default()
        }
    }

    // Expected values from transformers' `smart_resize` (factor 28).
    #[test]
    fn smart_resize_matches_transformers() -> Result<()> {
        let p = proc(3136, 200704);
        assert_eq!(p.smart_resize(47, 61)?, (56, 56));
        assert_eq!(p.smart_resize(9, 13)?, (56, 84));
        // exact halves round to even: 70/28 = 2.5 -> 2; 98/28 = 3.5 -> 4, 126/28 = 4.5 -> 4
        assert_eq!(p.smart_resize(42, 70)?, (56, 56));
        assert_eq!(p.smart_resize(98, 126)?, (112, 112));
        // above max_pixels: floor of the scaled sides
        assert_eq!(p.smart_resize(1000, 800)?, (476, 392));
        assert_eq!(proc(3136, 4704).smart_resize(75, 90)?, (56, 56));
        // below min_pixels: ceil
        assert_eq!(p.smart_resize(10, 20)?, (56, 84));
        assert_eq!(p.smart_resize(1, 1)?, (56, 56));
        // sides below the factor are upscaled, not rejected (transformers 5.x)
        assert_eq!(p.smart_resize(5, 900)?, (28, 756));
        // the downscale branch never goes below one factor per side
        assert_eq!(proc(3136, 3136).smart_resize(20, 3000)?, (28, 672));
        Ok(())
    }

    #[test]
    fn smart_resize_rejects_elongated_and_empty_images() {
        let p = ImageProcessor::default();
        let err = p.smart_resize(10, 2001).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("2001x10") && e.contains("aspect ratio"))
        );
        assert!(p.smart_resize(10, 2000).is_ok()); // exactly 200 is allowed
        assert!(p.smart_resize(0, 5).is_err());
    }

    #[test]
    fn config_size_form_and_precedence() -> std::result::Result<(), String> {
        let j = serde_json::json!({"size": {"shortest_edge": 100, "longest_edge": 1000}});
        let p = ImageProcessor::from_json(&j)?;
        assert_eq!((p.min_pixels, p.max_pixels), (100, 1000));
        let j = serde_json::json!({"size": {"shortest_edge": 100, "longest_edge": 1000},
            "min_pixels": 5, "max_pixels": 6, "image_mean": 0.5, "resample": 2});
        let p = ImageProcessor::from_json(&j)?;
        assert_eq!((p.min_pixels, p.max_pixels), (5, 6));
        assert_eq!(p.image_mean, [0.5; 3]);
        assert_eq!(p.resample, Filter::Bilinear);
        assert!(ImageProcessor::from_json(&serde_json::json!({"size": {"height": 3}})).is_err());
        assert!(ImageProcessor::from_json(&serde_json::json!({"resample": 0})).is_err());
        assert!(ImageProcessor::from_json(&serde_json::json!({"image_std": [1, 2]})).is_err());
        Ok(())
    }

    #[test]
    fn patch_layout_follows_hf_transpose() {
        // a 56x28 (w x h) image whose sample value encodes (y, x, c)
        let p = ImageProcessor {
            do_rescale: false,
            do_normalize: false,
            do_resize: false,
            ..ImageProcessor::default()
        };
        let img = RgbImage::from_fn(56, 28, |x, y| {
            image::Rgb([(y * 4 + x / 14) as u8, x as u8, (y + 100) as u8])
        });
        let pv = p.patchify(std::slice::from_ref(&img));
        assert_eq!(pv.grid_thw, [1, 2, 4]);
        assert_eq!(pv.patch_dim(), 3 * 2 * 14 * 14);
        // row r = ((bh * (gw/m) + bw) * m + mh) * m + mw; col = ((c * t + ti) * p + py) * p + px
        let at = |r: usize, c: usize, ti: usize, py: usize, px: usize| {
            pv.data[r * pv.patch_dim() + ((c * 2 + ti) * 14 + py) * 14 + px]
        };
        // row 5: bh 0, bw 1, mh 0, mw 1 -> patch (0, 3): x0 = 42
        assert_eq!(at(5, 1, 1, 3, 7), 49.0);
        assert_eq!(at(5, 2, 0, 3, 7), 103.0);
        // row 2: bh 0, bw 0, mh 1, mw 0 -> patch (1, 0): y0 = 14
        assert_eq!(at(2, 0, 1, 2, 0), ((14 + 2) * 4) as f32);
    }
}
