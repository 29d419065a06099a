//! Dependency-free PNG line plots for training curves (reward and eval accuracy per step).
//!
//! Everything is drawn by hand into an [`image::RgbImage`]: axes with "nice" round ticks, light
//! grid lines, a title, axis labels, 2 px lines, optional square markers and a legend. Text uses
//! a built-in 5x7 bitmap font drawn at 2x. The output depends only on the input, so rendering
//! the same plot twice gives the same bytes.

use std::io::Cursor;
use std::path::Path;

use image::{ImageError, ImageFormat, Rgb, RgbImage};

/// One curve of a [`Plot`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Name shown in the legend.
    pub name: String,
    /// Line (and marker) colour.
    pub color: [u8; 3],
    /// `(x, y)` points, joined in the given order. Points with a NaN or infinite coordinate are
    /// skipped (their neighbours are joined).
    pub points: Vec<(f64, f64)>,
    /// Draw a small square at each point, for sparse series such as eval accuracy.
    pub markers: bool,
    /// Join the points in pairs (0-1, 2-3, ...), each pair a segment of its own (the bars of a
    /// timeline), instead of one line through all of them.
    pub segments: bool,
}

/// A line plot: title, axis labels, y range and the curves.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Title drawn above the plot area.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label left of the y axis (drawn bottom to top).
    pub y_label: String,
    /// Fixed `(min, max)` of the y axis; `None` takes the range of the data, padded by 5%.
    pub y_range: Option<(f64, f64)>,
    /// The curves, drawn in order (later ones on top).
    pub series: Vec<Series>,
}

/// Width of the image written by [`save_png`].
pub const PNG_WIDTH: u32 = 800;
/// Height of the image written by [`save_png`].
pub const PNG_HEIGHT: u32 = 480;

/// Renders `plot` into a `width` x `height` RGB image with a white background.
///
/// The x range is taken from the data (widened to a round tick value where that adds at most
/// 5%). Lines are clipped to the plot area. Images too small to hold a plot area come back white.
pub fn render(plot: &Plot, width: u32, height: u32) -> RgbImage {
    render_with_frame(plot, width, height).0
}

/// Renders `plot` at 800x480 and writes it to `path` as a PNG: first to a temporary file in the
/// same directory, then renamed over `path`, so readers never see a partial file.
pub fn save_png(plot: &Plot, path: &Path) -> std::io::Result<()> {
    let img = render(plot, PNG_WIDTH, PNG_HEIGHT);
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(image_to_io)?;
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("plot path {} has no file name", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::write(&tmp, bytes.get_ref()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn image_to_io(error: ImageError) -> std::io::Error {
    match error {
        ImageError::IoError(e) => e,
        other => std::io::Error::other(other),
    }
}

// ---------------------------------------------------------------------------------------------
// Layout and rendering
// ---------------------------------------------------------------------------------------------

const WHITE: [u8; 3] = [255, 255, 255];
const TEXT: [u8; 3] = [30, 30, 30];
const AXIS: [u8; 3] = [70, 70, 70];
const GRID: [u8; 3] = [228, 228, 228];
const LEGEND_BORDER: [u8; 3] = [170, 170, 170];

/// A pixel rectangle, inclusive on all sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Rect {
    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.left && x <= self.right && y >= self.top && y <= self.bottom
    }
}

/// Where things ended up, for the tests.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))]
struct Frame {
    /// The plot area (axes box included).
    plot: Rect,
    /// The legend box, if one was drawn.
    legend: Option<Rect>,
}

/// A linear map from data values to pixel coordinates.
#[derive(Debug, Clone, Copy)]
struct Axis {
    min: f64,
    max: f64,
    /// Pixel of `min`.
    from: f64,
    /// Pixel of `max`.
    to: f64,
}

impl Axis {
    fn map(&self, v: f64) -> f64 {
        let p = self.from + (v - self.min) / (self.max - self.min) * (self.to - self.from);
        // Keep far-away points far away without overflowing the pixel arithmetic.
        p.clamp(-1.0e7, 1.0e7)
    }
}

fn render_with_frame(plot: &Plot, width: u32, height: u32) -> (RgbImage, Frame) {
    let mut canvas = Canvas::new(width, height);
    let scale: i64 = if width >= 320 && height >= 200 { 2 } else { 1 };
    let font = Font { scale };
    let w = i64::from(width);
    let h = i64::from(height);

    let (x_min, x_max) = padded_range(x_extent(plot), 0.0);
    let (x_min, x_max) = snap_to_ticks(x_min, x_max);
    let (y_min, y_max) = match plot.y_range {
        Some((a, b)) if a.is_finite() && b.is_finite() && a != b => (a.min(b), a.max(b)),
        _ => padded_range(y_extent(plot), 0.05),
    };
    let x_ticks = ticks(x_min, x_max);
    let y_ticks = ticks(y_min, y_max);
    let x_labels = tick_labels(&x_ticks);
    let y_labels = tick_labels(&y_ticks);

    // Margins around the plot area.
    let gap = 4 * scale;
    let tick_len = 3 * scale;
    let line_h = font.line_height();
    let top = if plot.title.is_empty() {
        6 * scale
    } else {
        gap + line_h + 2 * gap
    };
    let mut bottom_margin = tick_len + gap + line_h + gap;
    if !plot.x_label.is_empty() {
        bottom_margin += line_h + gap;
    }
    let y_label_room = if plot.y_label.is_empty() {
        0
    } else {
        line_h + gap
    };
    let widest_y = y_labels.iter().map(|s| font.width(s)).max().unwrap_or(0);
    let left = gap + y_label_room + widest_y + gap + tick_len;
    let last_x_half = x_labels.last().map_or(0, |s| font.width(s) / 2);
    let right_margin = (6 * scale).max(last_x_half + gap);
    let area = Rect {
        left,
        top,
        right: w - 1 - right_margin,
        bottom: h - 1 - bottom_margin,
    };
    let mut frame = Frame {
        plot: area,
        legend: None,
    };
    if area.right - area.left < 10 || area.bottom - area.top < 10 {
        return (canvas.img, frame);
    }

    let x_axis = Axis {
        min: x_min,
        max: x_max,
        from: area.left as f64,
        to: area.right as f64,
    };
    let y_axis = Axis {
        min: y_min,
        max: y_max,
        from: area.bottom as f64,
        to: area.top as f64,
    };

    // Grid.
    for &t in &x_ticks {
        let px = x_axis.map(t).round() as i64;
        canvas.vline(px, area.top, area.bottom, GRID);
    }
    for &t in &y_ticks {
        let py = y_axis.map(t).round() as i64;
        canvas.hline(area.left, area.right, py, GRID);
    }

    // Series, clipped to the inside of the axes box; remember which pixels they cover so the
    // legend can go where it hides the least.
    let inner = Rect {
        left: area.left + 1,
        top: area.top + 1,
        right: area.right - 1,
        bottom: area.bottom - 1,
    };
    canvas.mask = Some(vec![false; canvas.img.as_raw().len() / 3]);
    for series in &plot.series {
        draw_series(&mut canvas, series, x_axis, y_axis, inner, scale);
    }
    let mask = canvas.mask.take();

    // Axes box and ticks.
    canvas.hline(area.left, area.right, area.top, AXIS);
    canvas.hline(area.left, area.right, area.bottom, AXIS);
    canvas.vline(area.left, area.top, area.bottom, AXIS);
    canvas.vline(area.right, area.top, area.bottom, AXIS);
    let glyph_h = font.cap_height();
    for (&t, label) in x_ticks.iter().zip(&x_labels) {
        let px = x_axis.map(t).round() as i64;
        canvas.vline(px, area.bottom, area.bottom + tick_len, AXIS);
        let lw = font.width(label);
        font.draw(
            &mut canvas,
            label,
            px - lw / 2,
            area.bottom + tick_len + gap,
            TEXT,
        );
    }
    for (&t, label) in y_ticks.iter().zip(&y_labels) {
        let py = y_axis.map(t).round() as i64;
        canvas.hline(area.left - tick_len, area.left, py, AXIS);
        let lw = font.width(label);
        let x = area.left - tick_len - gap - lw;
        font.draw(&mut canvas, label, x, py - glyph_h / 2, TEXT);
    }

    // Axis labels and title.
    if !plot.x_label.is_empty() {
        let lw = font.width(&plot.x_label);
        let cx = (area.left + area.right) / 2;
        let y = area.bottom + tick_len + gap + line_h + gap;
        font.draw(&mut canvas, &plot.x_label, cx - lw / 2, y, TEXT);
    }
    if !plot.y_label.is_empty() {
        let lw = font.width(&plot.y_label);
        let cy = (area.top + area.bottom) / 2;
        font.draw_up(&mut canvas, &plot.y_label, gap, cy + lw / 2, TEXT);
    }
    if !plot.title.is_empty() {
        let lw = font.width(&plot.title);
        let cx = (area.left + area.right) / 2;
        font.draw(&mut canvas, &plot.title, cx - lw / 2, gap, TEXT);
    }

    frame.legend = draw_legend(&mut canvas, plot, inner, mask.as_deref(), font);
    (canvas.img, frame)
}

fn draw_series(canvas: &mut Canvas, series: &Series, xa: Axis, ya: Axis, clip: Rect, scale: i64) {
    let pixels: Vec<(f64, f64)> = series
        .points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| (xa.map(x), ya.map(y)))
        .collect();
    let pairs: Vec<&[(f64, f64)]> = if series.segments {
        pixels.chunks(2).collect()
    } else {
        pixels.windows(2).collect()
    };
    for pair in pairs {
        if let [a, b] = pair {
            canvas.thick_line(*a, *b, clip, series.color);
        }
    }
    // A lone point would be invisible without a marker.
    if series.markers || pixels.len() == 1 {
        let half = scale + 1;
        for &(px, py) in &pixels {
            let (cx, cy) = (px.round() as i64, py.round() as i64);
            canvas.fill_rect(
                Rect {
                    left: cx - half,
                    top: cy - half,
                    right: cx + half,
                    bottom: cy + half,
                },
                Some(clip),
                series.color,
            );
        }
    }
}

/// Draws the legend in the corner of `area` where it covers the fewest series pixels (ties:
/// top right, top left, bottom right, bottom left).
fn draw_legend(
    canvas: &mut Canvas,
    plot: &Plot,
    area: Rect,
    mask: Option<&[bool]>,
    font: Font,
) -> Option<Rect> {
    if plot.series.is_empty() {
        return None;
    }
    let s = font.scale;
    let pad = 4 * s;
    let swatch = 12 * s;
    let row_h = font.line_height() + s;
    let rows = i64::try_from(plot.series.len()).unwrap_or(i64::MAX / 2);
    let names = plot
        .series
        .iter()
        .map(|series| font.width(&series.name))
        .max()
        .unwrap_or(0);
    let box_w = pad + swatch + pad + names + pad;
    let box_h = pad + rows.saturating_mul(row_h) - s + pad;
    let inset = 4 * s;
    let lefts = [area.right - inset - box_w + 1, area.left + inset];
    let tops = [area.top + inset, area.bottom - inset - box_h + 1];
    let candidates = [
        (lefts[0], tops[0]),
        (lefts[1], tops[0]),
        (lefts[0], tops[1]),
        (lefts[1], tops[1]),
    ];
    let covered = |left: i64, top: i64| -> usize {
        let Some(mask) = mask else { return 0 };
        let mut n = 0;
        for y in top.max(0)..(top + box_h).min(canvas.height()) {
            for x in left.max(0)..(left + box_w).min(canvas.width()) {
                if canvas
                    .index(x, y)
                    .is_some_and(|i| mask.get(i) == Some(&true))
                {
                    n += 1;
                }
            }
        }
        n
    };
    let mut best = candidates[0];
    let mut best_n = covered(best.0, best.1);
    for &(l, t) in &candidates[1..] {
        let n = covered(l, t);
        if n < best_n {
            best = (l, t);
            best_n = n;
        }
    }
    let rect = Rect {
        left: best.0,
        top: best.1,
        right: best.0 + box_w - 1,
        bottom: best.1 + box_h - 1,
    };
    canvas.fill_rect(rect, None, WHITE);
    canvas.hline(rect.left, rect.right, rect.top, LEGEND_BORDER);
    canvas.hline(rect.left, rect.right, rect.bottom, LEGEND_BORDER);
    canvas.vline(rect.left, rect.top, rect.bottom, LEGEND_BORDER);
    canvas.vline(rect.right, rect.top, rect.bottom, LEGEND_BORDER);
    let mut y = rect.top + pad;
    for series in &plot.series {
        let mid = y + font.cap_height() / 2;
        let x0 = rect.left + pad;
        canvas.fill_rect(
            Rect {
                left: x0,
                top: mid - s / 2,
                right: x0 + swatch - 1,
                bottom: mid - s / 2 + 1,
            },
            None,
            series.color,
        );
        if series.markers {
            let half = s + 1;
            let cx = x0 + swatch / 2;
            canvas.fill_rect(
                Rect {
                    left: cx - half,
                    top: mid - half,
                    right: cx + half,
                    bottom: mid + half,
                },
                None,
                series.color,
            );
        }
        font.draw(canvas, &series.name, x0 + swatch + pad, y, TEXT);
        y += row_h;
    }
    Some(rect)
}

/// Finite `(min, max)` of the x coordinates of all finite points.
fn x_extent(plot: &Plot) -> Option<(f64, f64)> {
    extent(plot, |(x, _)| x)
}

/// Finite `(min, max)` of the y coordinates of all finite points.
fn y_extent(plot: &Plot) -> Option<(f64, f64)> {
    extent(plot, |(_, y)| y)
}

fn extent(plot: &Plot, pick: impl Fn((f64, f64)) -> f64) -> Option<(f64, f64)> {
    plot.series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(pick)
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
        })
}

/// Pads a data range by `frac` of its width on each side; widens empty or degenerate ranges.
fn padded_range(extent: Option<(f64, f64)>, frac: f64) -> (f64, f64) {
    let Some((lo, hi)) = extent else {
        return (0.0, 1.0);
    };
    let span = hi - lo;
    if !span.is_finite() {
        return (lo.max(-f64::MAX / 4.0), hi.min(f64::MAX / 4.0));
    }
    if span <= 0.0 {
        let half = (lo.abs() * 0.1).max(0.5);
        return (lo - half, hi + half);
    }
    (lo - span * frac, hi + span * frac)
}

/// The distance between about five round ticks (1, 2 or 5 times a power of ten) over
/// `[min, max]`.
fn nice_step(min: f64, max: f64) -> Option<f64> {
    let span = max - min;
    if !span.is_finite() || span <= 0.0 {
        return None;
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction < 1.5 {
        1.0
    } else if fraction < 3.0 {
        2.0
    } else if fraction < 7.0 {
        5.0
    } else {
        10.0
    };
    let step = nice * magnitude;
    (step.is_finite() && step > 0.0).then_some(step)
}

/// Widens `[min, max]` to the neighbouring multiples of the tick step where that adds at most
/// 5% on a side, so that an axis over steps 1..=200 starts at 0.
fn snap_to_ticks(min: f64, max: f64) -> (f64, f64) {
    let Some(step) = nice_step(min, max) else {
        return (min, max);
    };
    let slack = (max - min) * 0.05;
    let lo = (min / step).floor() * step;
    let hi = (max / step).ceil() * step;
    let lo = if lo.is_finite() && min - lo <= slack {
        lo
    } else {
        min
    };
    let hi = if hi.is_finite() && hi - max <= slack {
        hi
    } else {
        max
    };
    (lo, hi)
}

/// About five round tick values within `[min, max]`.
fn ticks(min: f64, max: f64) -> Vec<f64> {
    let Some(step) = nice_step(min, max) else {
        return Vec::new();
    };
    let eps = 1e-9;
    let first = (min / step - eps).ceil();
    let last = (max / step + eps).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 50.0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut k = first;
    while k <= last {
        let v = k * step;
        // Avoid "-0" and values like 0.30000000000000004 drifting off the grid.
        out.push(if v.abs() < step * eps { 0.0 } else { v });
        k += 1.0;
    }
    out
}

/// Labels for evenly spaced ticks, with just enough decimals to tell them apart.
fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let step = match ticks {
        [a, b, ..] => (b - a).abs(),
        [only] => only.abs().max(1.0),
        [] => return Vec::new(),
    };
    let largest = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scientific = largest >= 1.0e6 || (largest > 0.0 && largest < 1.0e-3);
    if scientific {
        let exponent = largest.log10().floor();
        let mantissa_step = step / 10f64.powf(exponent);
        let decimals = decimals_for(mantissa_step);
        ticks
            .iter()
            .map(|v| {
                if *v == 0.0 {
                    "0".to_string()
                } else {
                    format!("{v:.decimals$e}")
                }
            })
            .collect()
    } else {
        let decimals = decimals_for(step);
        ticks.iter().map(|v| format!("{v:.decimals$}")).collect()
    }
}

fn decimals_for(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        return 0;
    }
    let d = (-step.log10() - 1e-9).ceil();
    if d <= 0.0 { 0 } else { (d as usize).min(10) }
}

// ---------------------------------------------------------------------------------------------
// Pixels
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Canvas {
    img: RgbImage,
    /// When set, every pixel drawn is also marked here (row-major, one entry per pixel).
    mask: Option<Vec<bool>>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Self {
            img: RgbImage::from_pixel(width, height, Rgb(WHITE)),
            mask: None,
        }
    }

    fn width(&self) -> i64 {
        i64::from(self.img.width())
    }

    fn height(&self) -> i64 {
        i64::from(self.img.height())
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        if x < 0 || y < 0 || x >= self.width() || y >= self.height() {
            return None;
        }
        usize::try_from(y * self.width() + x).ok()
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        let (Ok(ux), Ok(uy)) = (u32::try_from(x), u32::try_from(y)) else {
            return;
        };
        if ux >= self.img.width() || uy >= self.img.height() {
            return;
        }
        self.img.put_pixel(ux, uy, Rgb(color));
        if let Some(i) = self.index(x, y)
            && let Some(m) = self.mask.as_mut().and_then(|m| m.get_mut(i))
        {
            *m = true;
        }
    }

    fn hline(&mut self, x0: i64, x1: i64, y: i64, color: [u8; 3]) {
        let lo = x0.min(x1).max(0);
        let hi = x0.max(x1).min(self.width() - 1);
        for x in lo..=hi {
            self.set(x, y, color);
        }
    }

    fn vline(&mut self, x: i64, y0: i64, y1: i64, color: [u8; 3]) {
        let lo = y0.min(y1).max(0);
        let hi = y0.max(y1).min(self.height() - 1);
        for y in lo..=hi {
            self.set(x, y, color);
        }
    }

    /// Fills `rect`, restricted to `clip` if given.
    fn fill_rect(&mut self, rect: Rect, clip: Option<Rect>, color: [u8; 3]) {
        let mut r = rect;
        if let Some(c) = clip {
            r.left = r.left.max(c.left);
            r.top = r.top.max(c.top);
            r.right = r.right.min(c.right);
            r.bottom = r.bottom.min(c.bottom);
        }
        r.left = r.left.max(0);
        r.top = r.top.max(0);
        r.right = r.right.min(self.width() - 1);
        r.bottom = r.bottom.min(self.height() - 1);
        for y in r.top..=r.bottom {
            for x in r.left..=r.right {
                self.set(x, y, color);
            }
        }
    }

    /// A 2 px line from `a` to `b` (pixel coordinates), clipped to `clip`.
    fn thick_line(&mut self, a: (f64, f64), b: (f64, f64), clip: Rect, color: [u8; 3]) {
        let Some((a, b)) = clip_segment(a, b, clip) else {
            return;
        };
        let (mut x, mut y) = (a.0.round() as i64, a.1.round() as i64);
        let (x1, y1) = (b.0.round() as i64, b.1.round() as i64);
        let dx = (x1 - x).abs();
        let dy = -(y1 - y).abs();
        let sx = if x < x1 { 1 } else { -1 };
        let sy = if y < y1 { 1 } else { -1 };
        let mut err = dx + dy;
        // Thicken across the line: steep lines get a second column, flat ones a second row.
        let (ox, oy) = if dx >= -dy { (0, 1) } else { (1, 0) };
        loop {
            for (px, py) in [(x, y), (x + ox, y + oy)] {
                if clip.contains(px, py) {
                    self.set(px, py, color);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Liang–Barsky clipping of a segment to `clip`; `None` if nothing of it is inside.
fn clip_segment(a: (f64, f64), b: (f64, f64), clip: Rect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let mut t0: f64 = 0.0;
    let mut t1: f64 = 1.0;
    let checks = [
        (-dx, a.0 - clip.left as f64),
        (dx, clip.right as f64 - a.0),
        (-dy, a.1 - clip.top as f64),
        (dy, clip.bottom as f64 - a.1),
    ];
    for (p, q) in checks {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    if t0.is_nan() || t1.is_nan() || t0 > t1 {
        return None;
    }
    Some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

// ---------------------------------------------------------------------------------------------
// Text: a 5x7 bitmap font
// ---------------------------------------------------------------------------------------------

/// The built-in font at an integer scale.
#[derive(Debug, Clone, Copy)]
struct Font {
    scale: i64,
}

/// Glyph cell: 5 columns plus 1 spacing; 7 rows plus 2 for descenders.
const CELL_W: i64 = 6;
const CELL_H: i64 = 9;

impl Font {
    fn width(&self, text: &str) -> i64 {
        let n = i64::try_from(text.chars().count()).unwrap_or(i64::MAX / 64);
        (n * CELL_W - 1).max(0) * self.scale
    }

    fn line_height(&self) -> i64 {
        CELL_H * self.scale
    }

    /// Height of capitals and digits.
    fn cap_height(&self) -> i64 {
        7 * self.scale
    }

    /// Draws `text` left to right with its top-left corner at `(x, y)`.
    fn draw(&self, canvas: &mut Canvas, text: &str, x: i64, y: i64, color: [u8; 3]) {
        self.draw_with(text, |gx, gy| {
            canvas.fill_rect(
                Rect {
                    left: x + gx,
                    top: y + gy,
                    right: x + gx + self.scale - 1,
                    bottom: y + gy + self.scale - 1,
                },
                None,
                color,
            );
        });
    }

    /// Draws `text` bottom to top (rotated 90° anticlockwise), starting at the bottom-left
    /// corner `(x, y)`.
    fn draw_up(&self, canvas: &mut Canvas, text: &str, x: i64, y: i64, color: [u8; 3]) {
        self.draw_with(text, |gx, gy| {
            canvas.fill_rect(
                Rect {
                    left: x + gy,
                    top: y - gx - self.scale + 1,
                    right: x + gy + self.scale - 1,
                    bottom: y - gx,
                },
                None,
                color,
            );
        });
    }

    /// Calls `dot` with the offset (in pixels, already scaled) of every lit glyph pixel.
    fn draw_with(&self, text: &str, mut dot: impl FnMut(i64, i64)) {
        let s = self.scale;
        for (i, c) in text.chars().enumerate() {
            let Ok(i) = i64::try_from(i) else { return };
            let (rows, drop) = glyph(c);
            for (r, bits) in (0i64..).zip(rows) {
                for col in 0..5i64 {
                    if bits & (0b10000 >> col) != 0 {
                        dot((i * CELL_W + col) * s, (r + drop) * s);
                    }
                }
            }
        }
    }
}

/// The rows of a glyph (bit 4 is the leftmost column) and how many rows it is moved down
/// (descenders).
#[rustfmt::skip]
fn glyph(c: char) -> ([u8; 7], i64) {
    let up = |rows: [u8; 7]| (rows, 0);
    match c {
        ' ' => up([0; 7]),
        '0' => up([0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110]),
        '1' => up([0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
        '2' => up([0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111]),
        '3' => up([0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110]),
        '4' => up([0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010]),
        '5' => up([0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110]),
        '6' => up([0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110]),
        '7' => up([0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000]),
        '8' => up([0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110]),
        '9' => up([0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100]),
        'A' => up([0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
        'B' => up([0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110]),
        'C' => up([0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110]),
        'D' => up([0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100]),
        'E' => up([0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111]),
        'F' => up([0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000]),
        'G' => up([0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111]),
        'H' => up([0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
        'I' => up([0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
        'J' => up([0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100]),
        'K' => up([0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001]),
        'L' => up([0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111]),
        'M' => up([0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001]),
        'N' => up([0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001]),
        'O' => up([0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
        'P' => up([0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000]),
        'Q' => up([0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101]),
        'R' => up([0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001]),
        'S' => up([0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110]),
        'T' => up([0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100]),
        'U' => up([0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
        'V' => up([0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
        'W' => up([0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010]),
        'X' => up([0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001]),
        'Y' => up([0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100]),
        'Z' => up([0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111]),
        'a' => up([0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111]),
        'b' => up([0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110]),
        'c' => up([0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110]),
        'd' => up([0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111]),
        'e' => up([0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110]),
        'f' => up([0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000]),
        'g' => ([0b01111, 0b10001, 0b10001, 0b10011, 0b01101, 0b00001, 0b01110], 2),
        'h' => up([0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001]),
        'i' => up([0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110]),
        'j' => ([0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100], 1),
        'k' => up([0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010]),
        'l' => up([0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
        'm' => up([0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001]),
        'n' => up([0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001]),
        'o' => up([0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110]),
        'p' => ([0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000], 2),
        'q' => ([0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001], 2),
        'r' => up([0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000]),
        's' => up([0b00000, 0b00000, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110]),
        't' => up([0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110]),
        'u' => up([0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101]),
        'v' => up([0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
        'w' => up([0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010]),
        'x' => up([0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001]),
        'y' => ([0b10001, 0b10001, 0b10001, 0b10011, 0b01101, 0b00001, 0b01110], 2),
        'z' => up([0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111]),
        '.' => up([0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100]),
        ',' => ([0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000], 1),
        '-' => up([0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000]),
        '+' => up([0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000]),
        '/' => up([0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000]),
        ':' => up([0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000]),
        '(' => up([0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010]),
        ')' => up([0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000]),
        '_' => ([0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111], 1),
        '%' => up([0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011]),
        '=' => up([0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000]),
        '!' => up([0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100]),
        '?' => up([0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100]),
        '\'' => up([0b00100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000]),
        '*' => up([0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000]),
        '<' => up([0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010]),
        '>' => up([0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000]),
        '[' => up([0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110]),
        ']' => up([0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110]),
        // Anything else: a small box.
        _ => up([0b00000, 0b11111, 0b10001, 0b10001, 0b10001, 0b11111, 0b00000]),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    const RED: [u8; 3] = [214, 39, 40];
    const BLUE: [u8; 3] = [31, 119, 180];

    fn example() -> Plot {
        let reward: Vec<(f64, f64)> = (1..=200)
            .map(|i| {
                let x = f64::from(i);
                let trend = 0.85 - 0.6 * (-x / 60.0).exp();
                let wiggle = 0.04 * (x * 0.7).sin() + 0.025 * (x * 2.3).cos();
                (x, trend + wiggle)
            })
            .collect();
        let eval: Vec<(f64, f64)> = (0..=8)
            .map(|k| {
                let x = f64::from(k * 25).max(1.0);
                (x, 0.2 + 0.55 * (1.0 - (-x / 70.0).exp()))
            })
            .collect();
        Plot {
            title: "Training run: reward and eval accuracy".into(),
            x_label: "step".into(),
            y_label: "reward / accuracy".into(),
            y_range: None,
            series: vec![
                Series {
                    name: "mean reward".into(),
                    color: BLUE,
                    points: reward,
                    markers: false,
                    segments: false,
                },
                Series {
                    name: "eval accuracy".into(),
                    color: RED,
                    points: eval,
                    markers: true,
                    segments: false,
                },
            ],
        }
    }

    fn count_color(img: &RgbImage, rect: Rect, exclude: Option<Rect>, color: [u8; 3]) -> usize {
        img.enumerate_pixels()
            .filter(|&(x, y, p)| {
                let (x, y) = (i64::from(x), i64::from(y));
                p.0 == color && rect.contains(x, y) && !exclude.is_some_and(|e| e.contains(x, y))
            })
            .count()
    }

    #[test]
    fn two_series_render() {
        let plot = example();
        let (img, frame) = render_with_frame(&plot, 800, 480);
        assert_eq!(img.dimensions(), (800, 480));
        assert_eq!(img.get_pixel(0, 0).0, WHITE);
        assert_eq!(img.get_pixel(799, 479).0, WHITE);
        let legend = frame.legend.expect("legend drawn");
        for color in [BLUE, RED] {
            let in_plot = count_color(&img, frame.plot, Some(legend), color);
            assert!(in_plot > 100, "{color:?}: {in_plot} pixels in plot area");
            let in_legend = count_color(&img, legend, None, color);
            assert!(in_legend > 10, "{color:?}: {in_legend} pixels in legend");
        }
        // Nothing of the series' colours outside the plot area.
        let whole = Rect {
            left: 0,
            top: 0,
            right: 799,
            bottom: 479,
        };
        let all_blue = count_color(&img, whole, None, BLUE);
        assert_eq!(all_blue, count_color(&img, frame.plot, None, BLUE));
        // Some text (dark pixels) above the plot area: the title.
        let title_rect = Rect {
            bottom: frame.plot.top - 1,
            ..whole
        };
        assert!(count_color(&img, title_rect, None, TEXT) > 50);
    }

    #[test]
    fn deterministic() {
        let plot = example();
        assert_eq!(
            render(&plot, 800, 480).as_raw(),
            render(&plot, 800, 480).as_raw()
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut plot = example();
        plot.series.push(Series {
            name: "nan".into(),
            color: [0, 150, 0],
            points: vec![
                (f64::NAN, 1.0),
                (2.0, f64::INFINITY),
                (3.0, 0.5),
                (f64::NEG_INFINITY, f64::NAN),
                (5.0, 0.6),
            ],
            markers: true,
            segments: false,
        });
        plot.series.push(Series {
            name: "empty".into(),
            color: [0, 0, 0],
            points: Vec::new(),
            markers: false,
            segments: false,
        });
        let img = render(&plot, 800, 480);
        assert_eq!(img.dimensions(), (800, 480));

        // Only empty or non-finite series; a single point; fixed and weird y ranges.
        let mut lonely = Plot {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            y_range: None,
            series: vec![Series {
                name: "µ ☃ unknown glyphs".into(),
                color: RED,
                points: vec![(f64::NAN, f64::NAN)],
                markers: false,
                segments: false,
            }],
        };
        let _ = render(&lonely, 800, 480);
        lonely.series[0].points = vec![(3.0, 7.0)];
        let (img, frame) = render_with_frame(&lonely, 800, 480);
        assert!(count_color(&img, frame.plot, frame.legend, RED) > 0);
        for range in [
            Some((0.0, 1.0)),
            Some((1.0, 0.0)),
            Some((2.0, 2.0)),
            Some((f64::NAN, 1.0)),
            Some((-1e300, 1e300)),
            Some((1e-12, 2e-12)),
        ] {
            lonely.y_range = range;
            let _ = render(&lonely, 800, 480);
        }
        lonely.y_range = Some((0.0, 1.0));
        lonely.series[0].points = vec![(0.0, -1e308), (1.0, 1e308), (2.0, 0.5), (1e300, 0.2)];
        let _ = render(&lonely, 800, 480);
        for (w, h) in [(0, 0), (1, 1), (10, 10), (50, 30), (200, 120), (3000, 100)] {
            let img = render(&plot, w, h);
            assert_eq!(img.dimensions(), (w, h));
        }
        let empty = Plot {
            series: Vec::new(),
            ..lonely
        };
        let (_, frame) = render_with_frame(&empty, 800, 480);
        assert!(frame.legend.is_none());
    }

    #[test]
    fn nice_ticks_and_labels() {
        assert_eq!(
            ticks(-0.05, 1.05),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(
            tick_labels(&ticks(-0.05, 1.05)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(tick_labels(&ticks(1.0, 200.0)), ["50", "100", "150", "200"]);
        assert_eq!(
            tick_labels(&ticks(-1.0, 1.0)),
            ["-1.0", "-0.5", "0.0", "0.5", "1.0"]
        );
        assert_eq!(tick_labels(&ticks(0.0, 3.0e6))[1], "5.0e5");
        assert!(ticks(1.0, 1.0).is_empty());
        assert_eq!(snap_to_ticks(1.0, 200.0), (0.0, 200.0));
        assert_eq!(snap_to_ticks(3.0, 1003.0), (0.0, 1003.0));
        assert!(ticks(f64::NAN, 1.0).is_empty());
    }

    #[test]
    fn save_png_round_trips() {
        let dir = std::env::temp_dir().join(format!("shareflow-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("curves.png");
        save_png(&example(), &path).expect("save");
        let back = image::open(&path).expect("valid png");
        assert_eq!((back.width(), back.height()), (PNG_WIDTH, PNG_HEIGHT));
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary file left behind: {leftovers:?}"
        );
        assert!(save_png(&example(), &dir.join("missing").join("x.png")).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// `SHAREFLOW_PLOT_EXAMPLE=/tmp/plot_example.png cargo test example_png` writes an example.
    #[test]
    fn example_png() {
        if let Some(path) = std::env::var_os("SHAREFLOW_PLOT_EXAMPLE") {
            save_png(&example(), Path::new(&path)).expect("write example");
        }
    }
}
