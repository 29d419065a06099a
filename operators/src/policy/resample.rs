//! Pillow's image resampling and RGB conversion, re-implemented bit for bit, so that images reach
//! the vision tower exactly as Hugging Face's PIL backed image processors deliver them; and
//! torchvision's `uint8` resize ([`resize_rgb_torchvision`]), for transformers 5's default
//! (torchvision backed) image processors.
//!
//! Reference: Pillow `src/libImaging/Resample.c` (`ImagingResample`, `precompute_coeffs`,
//! `normalize_coeffs_8bpc`, `ImagingResample{Horizontal,Vertical}_8bpc`) and
//! `src/libImaging/AlphaComposite.c`; transformers `image_transforms.convert_to_rgb`.
//! Checked byte for byte against Pillow 13 (`tests/golden/policy/make_image_golden.py`) and
//! Pillow 12 (`make_pillow12_golden.py`).
//!
//! The algorithm: a separable convolution, horizontal pass first (over only the rows the vertical
//! pass will read), then vertical; a pass is skipped when its size does not change. Pillow 13
//! runs the vertical pass first when the height shrinks by more than twice as many pixels as the
//! width ([`PassOrder`]); the orders round differently, so the Pillow version matters. When
//! downscaling, the filter support is stretched by the scale factor (antialiasing). Each output
//! sample's weights are normalised to sum to one in f64, converted to fixed point with
//! `PRECISION_BITS = 32 - 8 - 2`, accumulated in `i32` starting from one half, then shifted and
//! clipped to `u8`; the intermediate image is `u8` too.

use image::{DynamicImage, RgbImage};

/// Bits of the fixed-point filter weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A PIL resampling filter (`PIL.Image.Resampling`). `NEAREST` takes another code path in
/// Pillow and is not implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Resampling.BOX` (4).
    Box,
    /// `Resampling.BILINEAR` (2).
    Bilinear,
    /// `Resampling.HAMMING` (5).
    Hamming,
    /// `Resampling.BICUBIC` (3), Keys' cubic with a = -0.5: what Qwen2-VL uses.
    Bicubic,
    /// `Resampling.LANCZOS` (1), three lobes.
    Lanczos,
}

impl Filter {
    /// The filter for a PIL resample code, as found in `preprocessor_config.json` (`"resample"`).
    pub fn from_pil(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            4 => Some(Self::Box),
            5 => Some(Self::Hamming),
            _ => None,
        }
    }

    /// Half-width of the kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    /// The kernel, written exactly as Pillow writes it (same operations in the same order).
    fn eval(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow: sin(x) / x * (0.54f + 0.46f * cos(x)), float literals widened
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fixed-point weights of a 1-D resampling: output sample `i` reads `len[i]` inputs starting at
/// `start[i]` with weights `weights[i * ksize..][..len[i]]`.
struct Coeffs {
    /// Fraction bits of the fixed-point weights.
    bits: u32,
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    // Pillow computes `in1 - in0` in f32 (box coordinates are floats); exact for real sizes.
    let scale = f64::from(in_size as f32) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // `(int)` truncates toward zero, as `as i64` does
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        start.push(xmin as usize);
        len.push(n);
    }
    Coeffs {
        bits: PRECISION_BITS,
        ksize,
        start,
        len,
        weights,
    }
}

/// One weighted sum of `u8` samples at `stride` with `bits` fraction bits in the weights, as
/// Pillow (and ATen's uint8 kernels) accumulate it: start from one half, drop the fraction
/// bits, clamp to `0..=255` (Pillow's `clip8`).
#[inline]
fn convolve(src: &[u8], first: usize, stride: usize, weights: &[i32], bits: u32) -> u8 {
    let mut acc: i32 = 1 << (bits - 1);
    for (i, &w) in weights.iter().enumerate() {
        acc += i32::from(src[first + i * stride]) * w;
    }
    (acc >> bits).clamp(0, 255) as u8
}

/// Which of Pillow's two pass orders to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow 13: horizontal then vertical, except when the height shrinks by more than twice as
    /// many pixels as the width does; then vertical first (python-pillow PR 9549).
    #[default]
    Pillow13,
    /// Pillow 12 and earlier: always horizontal then vertical.
    HorizontalFirst,
}

impl PassOrder {
    /// Whether a resize from `in_w` x `in_h` to `out_w` x `out_h` that changes both sides runs
    /// the vertical pass first.
    pub fn vertical_first(self, in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
        self == Self::Pillow13
            && out_h < in_h
            && (in_h - out_h) as i64 > 2 * (in_w as i64 - out_w as i64)
    }
}

/// Resizes an RGB image to `width` x `height` exactly like Pillow 13's
/// `Image.resize((width, height), resample=filter)` on a mode "RGB" image.
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    resize_rgb_ordered(img, width, height, filter, PassOrder::Pillow13)
}

/// [`resize_rgb`] with the pass order of a given Pillow version. The two orders round
/// differently (by a few levels on some pixels), so matching the reference's Pillow matters;
/// the Pillow 13 rule is checked on thousands of random sizes against Pillow 13.0.
///
/// Sizes of zero give an empty image (Pillow refuses them; callers validate first).
pub fn resize_rgb_ordered(
    img: &RgbImage,
    width: u32,
    height: u32,
    filter: Filter,
    order: PassOrder,
) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(width, height);
    }
    let vertical_first = order.vertical_first(in_w, in_h, out_w, out_h);
    let src = img.as_raw().as_slice();
    let vert = precompute(in_h, out_h, filter);
    let data = match (out_w != in_w, out_h != in_h) {
        (false, false) => return img.clone(),
        (true, false) => horizontal(src, in_w, 0..in_h, &precompute(in_w, out_w, filter)),
        (false, true) => vertical(src, in_w, &vert, 0),
        (true, true) if vertical_first => {
            let tmp = vertical(src, in_w, &vert, 0);
            horizontal(&tmp, in_w, 0..out_h, &precompute(in_w, out_w, filter))
        }
        (true, true) => {
            // only the source rows the vertical pass reads go through the horizontal pass
            let first = vert.start[0];
            let last = vert.start[out_h - 1] + vert.len[out_h - 1];
            let tmp = horizontal(src, in_w, first..last, &precompute(in_w, out_w, filter));
            vertical(&tmp, out_w, &vert, first)
        }
    };
    to_image(width, height, data)
}

/// Pillow's `ImagingResampleHorizontal_8bpc` over the source `rows` of an image `src_w` wide.
fn horizontal(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, k: &Coeffs) -> Vec<u8> {
    let out_w = k.start.len();
    let mut buf = vec![0u8; out_w * rows.len() * 3];
    for (y, out_row) in buf.chunks_exact_mut(out_w * 3).enumerate() {
        let in_row = (y + rows.start) * src_w * 3;
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            let w = &k.weights[xx * k.ksize..][..k.len[xx]];
            let first = in_row + k.start[xx] * 3;
            for (c, v) in px.iter_mut().enumerate() {
                *v = convolve(src, first + c, 3, w, k.bits);
            }
        }
    }
    buf
}

/// Pillow's `ImagingResampleVertical_8bpc`; `src` starts at source row `row_offset`.
fn vertical(src: &[u8], src_w: usize, k: &Coeffs, row_offset: usize) -> Vec<u8> {
    let out_h = k.start.len();
    let stride = src_w * 3;
    let mut out = vec![0u8; stride * out_h];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let w = &k.weights[yy * k.ksize..][..k.len[yy]];
        let first_row = (k.start[yy] - row_offset) * stride;
        for (i, v) in out_row.iter_mut().enumerate() {
            *v = convolve(src, first_row + i, stride, w, k.bits);
        }
    }
    out
}

/// Resizes an RGB image to `width` x `height` exactly like torchvision's
/// `tvF.resize(image, [height, width], interpolation, antialias=True)` on a CPU `uint8` tensor,
/// which is what transformers 5's default (torchvision backend) image processors do.
///
/// PyTorch resizes `uint8` images natively (ATen `_upsample_bicubic2d_aa` /
/// `_upsample_bilinear2d_aa`, `UpSampleKernel.cpp` and, on AVX2 CPUs,
/// `UpSampleKernelAVXAntialias.h`): the same separable convolution as Pillow, but with `int16`
/// weights whose fraction bits are chosen per dimension (the most below 22 that keep the
/// largest weight under 2^15), Keys' cubic written as ATen writes it, and always the
/// horizontal pass first. Checked byte for byte against PyTorch 2.15 with all three CPU kernels
/// (`ATEN_CPU_CAPABILITY=default|avx2|avx512`) by `tests/golden/policy/make_window_golden.py`.
///
/// Only bicubic and bilinear are supported (`None` otherwise): torchvision has no box or hamming
/// filter, and its Lanczos is not reproduced. Bilinear on a CPU without AVX2 (or NEON) goes
/// through float32 in torchvision and is not reproduced either.
pub fn resize_rgb_torchvision(
    img: &RgbImage,
    width: u32,
    height: u32,
    filter: Filter,
) -> Option<RgbImage> {
    if !matches!(filter, Filter::Bicubic | Filter::Bilinear) {
        return None;
    }
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return Some(RgbImage::new(width, height));
    }
    let src = img.as_raw().as_slice();
    let data = match (out_w != in_w, out_h != in_h) {
        (false, false) => return Some(img.clone()),
        (true, false) => horizontal(src, in_w, 0..in_h, &precompute_aten(in_w, out_w, filter)),
        (false, true) => vertical(src, in_w, &precompute_aten(in_h, out_h, filter), 0),
        (true, true) => {
            let tmp = horizontal(src, in_w, 0..in_h, &precompute_aten(in_w, out_w, filter));
            vertical(&tmp, out_w, &precompute_aten(in_h, out_h, filter), 0)
        }
    };
    Some(to_image(width, height, data))
}

/// ATen's antialiased filters (`HelperInterpCubic::aa_filter`, `HelperInterpLinear::aa_filter`),
/// in ATen's operation order.
fn aten_filter(filter: Filter, x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    match filter {
        Filter::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        _ => {
            if x < 1.0 {
                // cubic_convolution1
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                // cubic_convolution2
                ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
            } else {
                0.0
            }
        }
    }
}

/// ATen's `_compute_index_ranges_int16_weights` (antialias, `align_corners=False`, no explicit
/// scale) for one dimension.
fn precompute_aten(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let interp_size = if filter == Filter::Bilinear { 2.0 } else { 4.0 };
    let scale = in_size as f64 / out_size as f64;
    let support = if scale >= 1.0 {
        interp_size * 0.5 * scale
    } else {
        interp_size * 0.5
    };
    // ATen: `(int)ceilf(support) * 2 + 1`, the support narrowed to f32 first
    let ksize = (support as f32).ceil() as usize * 2 + 1;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut real = vec![0f64; out_size * ksize];
    let mut wt_max = 0f64;
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xsize = (((center + support + 0.5) as i64).min(in_size as i64) - xmin)
            .clamp(0, ksize as i64) as usize;
        let w = &mut real[i * ksize..][..xsize];
        let mut total = 0.0;
        for (j, wj) in w.iter_mut().enumerate() {
            *wj = aten_filter(filter, (j as f64 + xmin as f64 - center + 0.5) * invscale);
            total += *wj;
        }
        if total != 0.0 {
            for wj in w.iter_mut() {
                *wj /= total;
                wt_max = wt_max.max(*wj);
            }
        }
        start.push(xmin as usize);
        len.push(xsize);
    }
    // the most fraction bits (below 22) that keep the largest weight below 2^15
    let mut bits = 0u32;
    while bits < 22 {
        let next = (0.5 + wt_max * f64::from(1u32 << (bits + 1))) as i64;
        if next >= 1 << 15 {
            break;
        }
        bits += 1;
    }
    let weights = real
        .iter()
        .map(|&w| {
            let v = w * f64::from(1u32 << bits);
            // `static_cast<int16_t>(v < 0 ? v - 0.5 : v + 0.5)`
            i32::from((if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i16)
        })
        .collect();
    Coeffs {
        bits,
        ksize,
        start,
        len,
        weights,
    }
}

fn to_image(width: u32, height: u32, data: Vec<u8>) -> RgbImage {
    // the buffer length is width * height * 3 by construction
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height))
}

/// transformers' `convert_to_rgb` on a PIL image: images with an alpha channel (or a palette
/// transparency, which the PNG decoder turns into alpha) are composited onto opaque white with
/// Pillow's `alpha_composite` integer arithmetic, then the alpha is dropped; grey is replicated.
///
/// 16-bit images are reduced to their high byte (what Pillow's PNG decoder does for RGB(A)
/// 16-bit; for 16-bit grey Pillow keeps mode "I;16" and its RGB conversion clips instead, which
/// is not reproduced). Float images go through `image`'s own conversion.
pub fn convert_to_rgb(img: &DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let composite = |px: &mut dyn Iterator<Item = [u8; 4]>| -> RgbImage {
        let mut data = Vec::with_capacity(w as usize * h as usize * 3);
        for [r, g, b, a] in px {
            data.extend_from_slice(&over_white([r, g, b], a));
        }
        to_image(w, h, data)
    };
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        DynamicImage::ImageLuma8(l) => {
            let data = l.as_raw().iter().flat_map(|&v| [v, v, v]).collect();
            to_image(w, h, data)
        }
        DynamicImage::ImageRgba8(rgba) => composite(&mut rgba.pixels().map(|p| p.0)),
        DynamicImage::ImageLumaA8(la) => composite(&mut la.pixels().map(|p| {
            let [l, a] = p.0;
            [l, l, l, a]
        })),
        DynamicImage::ImageRgb16(rgb) => {
            let data = rgb.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            to_image(w, h, data)
        }
        DynamicImage::ImageLuma16(l) => {
            let data = l
                .as_raw()
                .iter()
                .flat_map(|&v| [(v >> 8) as u8; 3])
                .collect();
            to_image(w, h, data)
        }
        DynamicImage::ImageRgba16(rgba) => composite(&mut rgba.pixels().map(|p| {
            let [r, g, b, a] = p.0.map(|v| (v >> 8) as u8);
            [r, g, b, a]
        })),
        DynamicImage::ImageLumaA16(la) => composite(&mut la.pixels().map(|p| {
            let [l, a] = p.0.map(|v| (v >> 8) as u8);
            [l, l, l, a]
        })),
        other if other.color().has_alpha() => {
            composite(&mut other.to_rgba8().pixels().map(|p| p.0))
        }
        other => other.to_rgb8(),
    }
}

/// Pillow's `ImagingAlphaComposite` of one pixel `src` (straight alpha `a`) over opaque white.
fn over_white(src: [u8; 3], a: u8) -> [u8; 3] {
    const PREC: u32 = 7;
    if a == 0 {
        return [255; 3];
    }
    let shift_div255 = |v: u32| ((v >> 8) + v) >> 8;
    let (sa, da) = (u32::from(a), 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PREC) / outa255;
    let coef2 = 255 * (1 << PREC) - coef1;
    src.map(|s| {
        let tmp = u32::from(s) * coef1 + 255 * coef2;
        (shift_div255(tmp + (0x80 << PREC)) >> PREC) as u8
    })
}

/// The reference's dataset-side resize (R1-ShareVL / EasyR1 `process_image`): an image with more
/// than `max_pixels` pixels is scaled down, then one with fewer than `min_pixels` scaled up, by
/// `sqrt(bound / (width * height))` with Python's `int()` truncation of the new sides, bicubic as
/// PIL's `Image.resize` default. The reference resizes before converting to RGB; shareflow
/// converts first (the same for RGB sources). A bound of 0 is no bound.
pub fn fit_pixels(img: RgbImage, min_pixels: u64, max_pixels: u64) -> RgbImage {
    let scale = |img: RgbImage, bound: u64| {
        let area = f64::from(img.width()) * f64::from(img.height());
        let f = (bound as f64 / area).sqrt();
        // Truncation, as `int(width * factor)`; at least one pixel.
        let w = ((f64::from(img.width()) * f) as u32).max(1);
        let h = ((f64::from(img.height()) * f) as u32).max(1);
        resize_rgb(&img, w, h, Filter::Bicubic)
    };
    let area = u64::from(img.width()) * u64::from(img.height());
    let img = if max_pixels > 0 && area > max_pixels {
        scale(img, max_pixels)
    } else {
        img
    };
    let area = u64::from(img.width()) * u64::from(img.height());
    if min_pixels > 0 && area > 0 && area < min_pixels {
        scale(img, min_pixels)
    } else {
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(61, 28), (9, 56), (128, 40), (3, 56), (100, 99)] {
            let c = precompute(i, o, Filter::Bicubic);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..][..c.len[xx]]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.len[xx] as i64,
                    "{i}->{o}"
                );
            }
        }
    }

    #[test]
    fn same_size_is_a_copy_and_constant_stays_constant() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 9]));
        assert_eq!(resize_rgb(&img, 7, 5, Filter::Bicubic), img);
        let flat = RgbImage::from_pixel(13, 11, image::Rgb([200, 3, 77]));
        for f in [Filter::Bicubic, Filter::Lanczos, Filter::Bilinear] {
            let out = resize_rgb(&flat, 29, 4, f);
            assert!(out.pixels().all(|p| p.0 == [200, 3, 77]), "{f:?}");
        }
    }

    #[test]
    fn alpha_composite_extremes() {
        assert_eq!(over_white([10, 20, 30], 0), [255, 255, 255]);
        assert_eq!(over_white([10, 20, 30], 255), [10, 20, 30]);
        assert_eq!(over_white([0, 0, 0], 128), [127, 127, 127]);
    }
}
