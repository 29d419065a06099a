//! Filling pixels by hand: the shapes and the 5x7 digit glyphs of the task's images.
//!
//! A pixel belongs to a shape when its centre `(px + 0.5, py + 0.5)` lies inside the shape; every
//! shape stays inside its bounding box, so shapes with disjoint boxes never touch.

use image::{Rgb, RgbImage};

use super::{DrawnDigits, PlacedShape, ShapeKind};

/// The background colour.
pub const WHITE: [u8; 3] = [255, 255, 255];

/// The ink colour of digits.
pub const INK: [u8; 3] = [20, 20, 20];

/// Glyph width and height in cells.
pub const GLYPH_W: u32 = 5;
/// Glyph height in cells.
pub const GLYPH_H: u32 = 7;

/// The classic 5x7 font for 0-9: one `u8` per row, bit 4 is the leftmost cell.
const GLYPHS: [[u8; 7]; 10] = [
    [
        0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
    ],
    [
        0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
    ],
    [
        0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
    ],
    [
        0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
    ],
];

/// A white canvas.
pub fn blank(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, Rgb(WHITE))
}

/// Whether the pixel centre at offset `(u, v)` (pixels, from the box's top-left) is inside a
/// shape of `kind` with side `size`.
pub fn inside(kind: ShapeKind, size: u32, u: f64, v: f64) -> bool {
    let s = f64::from(size);
    if !(0.0..=s).contains(&u) || !(0.0..=s).contains(&v) {
        return false;
    }
    let half = s / 2.0;
    match kind {
        ShapeKind::Square => true,
        ShapeKind::Circle => (u - half).powi(2) + (v - half).powi(2) <= half * half,
        // Apex at (half, 0), base from (0, s) to (s, s).
        ShapeKind::Triangle => (u - half).abs() <= half * v / s,
    }
}

/// Fills one shape (pixels outside the image are skipped).
pub fn draw_shape(img: &mut RgbImage, shape: &PlacedShape) {
    let rgb = Rgb(shape.colour.rgb());
    for dy in 0..shape.size {
        for dx in 0..shape.size {
            let (px, py) = (shape.x + dx, shape.y + dy);
            if px >= img.width() || py >= img.height() {
                continue;
            }
            if inside(
                shape.kind,
                shape.size,
                f64::from(dx) + 0.5,
                f64::from(dy) + 0.5,
            ) {
                img.put_pixel(px, py, rgb);
            }
        }
    }
}

/// Whether cell `(cx, cy)` of digit `d`'s glyph is inked (`false` for a digit above 9).
pub fn glyph_cell(d: u8, cx: u32, cy: u32) -> bool {
    let Some(rows) = GLYPHS.get(usize::from(d)) else {
        return false;
    };
    let Some(row) = rows.get(cy as usize) else {
        return false;
    };
    cx < GLYPH_W && (row >> (GLYPH_W - 1 - cx)) & 1 == 1
}

/// Draws both digits, each cell a `scale` x `scale` block of ink.
pub fn draw_digits(img: &mut RgbImage, digits: &DrawnDigits) {
    for (&d, &(ox, oy)) in digits.digits.iter().zip(&digits.origins) {
        for cy in 0..GLYPH_H {
            for cx in 0..GLYPH_W {
                if !glyph_cell(d, cx, cy) {
                    continue;
                }
                for yy in 0..digits.scale {
                    for xx in 0..digits.scale {
                        let (px, py) = (ox + cx * digits.scale + xx, oy + cy * digits.scale + yy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Rgb(INK));
                        }
                    }
                }
            }
        }
    }
}

/// The number of 4-connected components of non-white pixels (a test oracle: drawn shapes never
/// touch, so this equals the number of shapes).
pub fn count_components(img: &RgbImage) -> usize {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut seen = vec![false; w * h];
    let mut count = 0;
    let mut stack = Vec::new();
    for start in 0..w * h {
        let (sx, sy) = ((start % w) as u32, (start / w) as u32);
        if seen[start] || img.get_pixel(sx, sy).0 == WHITE {
            continue;
        }
        count += 1;
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let mut neighbours = Vec::with_capacity(4);
            if x > 0 {
                neighbours.push(i - 1);
            }
            if x + 1 < w {
                neighbours.push(i + 1);
            }
            if y > 0 {
                neighbours.push(i - w);
            }
            if y + 1 < h {
                neighbours.push(i + w);
            }
            for j in neighbours {
                let (jx, jy) = ((j % w) as u32, (j / w) as u32);
                if !seen[j] && img.get_pixel(jx, jy).0 != WHITE {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Colour;

    fn shape(kind: ShapeKind, size: u32) -> PlacedShape {
        PlacedShape {
            kind,
            colour: Colour::Blue,
            x: 10,
            y: 20,
            size,
        }
    }

    fn filled(img: &RgbImage) -> usize {
        img.pixels().filter(|p| p.0 != WHITE).count()
    }

    #[test]
    fn shapes_fill_about_their_area_inside_their_box() {
        for size in [14u32, 18, 22] {
            let s2 = f64::from(size * size);
            for (kind, frac) in [
                (ShapeKind::Square, 1.0),
                (ShapeKind::Circle, std::f64::consts::PI / 4.0),
                (ShapeKind::Triangle, 0.5),
            ] {
                let mut img = blank(64, 64);
                let sh = shape(kind, size);
                draw_shape(&mut img, &sh);
                let n = filled(&img) as f64;
                assert!((n / s2 - frac).abs() < 0.08, "{kind:?} {size}: {n}");
                for (x, y, p) in img.enumerate_pixels() {
                    let in_box = (10..10 + size).contains(&x) && (20..20 + size).contains(&y);
                    if p.0 != WHITE {
                        assert!(in_box && p.0 == Colour::Blue.rgb());
                    }
                }
                // The box's centre is always inked.
                let c = img.get_pixel(10 + size / 2, 20 + size / 2).0;
                assert_eq!(c, Colour::Blue.rgb(), "{kind:?} {size}");
                assert_eq!(count_components(&img), 1);
            }
        }
    }

    #[test]
    fn glyphs_are_distinct_and_scaled() {
        let mut seen = std::collections::HashSet::new();
        for d in 0..10u8 {
            let cells: Vec<bool> = (0..GLYPH_H)
                .flat_map(|y| (0..GLYPH_W).map(move |x| glyph_cell(d, x, y)))
                .collect();
            assert!(seen.insert(cells.clone()), "glyph {d} repeats another");
            let mut img = blank(40, 40);
            let dd = DrawnDigits {
                digits: [d, d],
                origins: [(2, 2), (2, 2)],
                scale: 4,
            };
            draw_digits(&mut img, &dd);
            let cells_on = cells.len() - cells.iter().filter(|c| !**c).count();
            assert_eq!(filled(&img), cells_on * 16, "glyph {d}");
        }
        assert!(!glyph_cell(10, 0, 0));
    }
}
