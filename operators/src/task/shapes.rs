//! The "shapes" task: deterministic samples of (image, question, rewrites, answer).
//!
//! An image is 84x84, white, and shows either 1-5 shapes ({square, circle, triangle} in {red,
//! green, blue, yellow}, sides 14-22 px) or two digits (5x7 glyphs scaled x5, 25x35 px). The
//! policy is a tiny vision model with 14-px patches merged 2x2, i.e. one token per 28x28 window;
//! the image is a 3x3 grid of 28-px cells and each shape sits inside its own cell with at least one
//! white pixel on every side, so shapes never overlap or touch and each is about one token.
//!
//! Five question kinds are drawn with equal probability (see [`QuestionKind`]); answers are the
//! strings the `math` reward rule grades: integers ("3") or a letter ("B").
//!
//! Every question puts the image *after* its text (`...?<image>`, the placeholder the processor
//! and the dataset loader both understand), so that a causal policy's image tokens can attend to
//! the asked colour or shape; with the image first, as Qwen2.5-VL datasets usually have it, only
//! the answer position sees both. "How many X" answers are uniform over 0-5, so answering without
//! the image scores 1/6. Together (their separate effects were not measured) these made the tiny
//! embedded policy learn to count by colour and by shape, which it never did before (RESULTS.md,
//! sessions 7-9).

use image::RgbImage;
use shareflow_runtime::{DetRng, stable_hash};

use super::draw::{self, GLYPH_H, GLYPH_W};
use super::{
    Colour, DrawnDigits, IMAGE_PLACEHOLDER, PlacedShape, QuestionKind, Scene, ShapeKind, Split,
    TaskSample,
};

/// Width and height of every image.
pub const IMAGE_SIDE: u32 = 84;
/// Side of a placement cell (one merged vision token of the tiny policy).
pub const CELL: u32 = 28;
/// Cells per row and column.
pub const GRID: u32 = IMAGE_SIDE / CELL;
/// Smallest shape side in pixels.
pub const MIN_SIDE: u32 = 14;
/// Largest shape side in pixels.
pub const MAX_SIDE: u32 = 22;
/// Most shapes in one image.
pub const MAX_SHAPES: u64 = 5;
/// Pixels per glyph cell of a digit.
pub const DIGIT_SCALE: u32 = 5;

/// The key space of a split's random streams.
fn key(split: Split) -> (&'static str, &'static str) {
    ("shareflow.task.shapes", split.as_str())
}

/// The split an image belongs to: the parity of the stable hash of its pixels. Every image belongs
/// to exactly one split, whatever seed, index or question produced it.
pub fn split_of(image: &RgbImage) -> Split {
    if stable_hash(image.as_raw().as_slice()) & 1 == 0 {
        Split::Train
    } else {
        Split::Eval
    }
}

/// Sample `index` of `split` under `seed`: a pure function of its arguments.
///
/// Attempt `a` draws a scene and question from `DetRng::derive(seed, a, ("shareflow.task.shapes",
/// split), index)`; the first attempt whose image belongs to `split` (see [`split_of`]) is kept
/// (two attempts on average). The splits therefore use different random streams *and* can never
/// share an image: no (image, question) pair of one split appears in the other.
pub fn shapes_sample(seed: u64, split: Split, index: u64) -> TaskSample {
    let mut attempt = 0u64;
    loop {
        let mut rng = DetRng::derive(seed, attempt, &key(split), index);
        let (kind, scene) = draw_question(&mut rng);
        let image = render(&scene);
        if split_of(&image) == split {
            let (question, rewrites) = texts(kind);
            return TaskSample {
                id: format!("shapes-{}-{index}", split.as_str()),
                image,
                question,
                rewrites,
                answer: answer(kind, &scene),
                kind,
                scene,
            };
        }
        attempt += 1;
    }
}

/// Draws the question kind (uniform over five) and a scene it can be asked of.
fn draw_question(rng: &mut DetRng) -> (QuestionKind, Scene) {
    match rng.below(5) {
        0 => {
            let colour = Colour::ALL[rng.below(4) as usize];
            let shapes = draw_counted(
                rng,
                |s, rng| s.colour = other(rng, &Colour::ALL, colour, s.colour),
                |s| s.colour = colour,
            );
            (QuestionKind::CountColour(colour), Scene::Shapes(shapes))
        }
        1 => {
            let kind = ShapeKind::ALL[rng.below(3) as usize];
            let shapes = draw_counted(
                rng,
                |s, rng| s.kind = other(rng, &ShapeKind::ALL, kind, s.kind),
                |s| s.kind = kind,
            );
            (QuestionKind::CountShape(kind), Scene::Shapes(shapes))
        }
        2 => {
            let count = 1 + rng.below(MAX_SHAPES);
            (
                QuestionKind::CountAll,
                Scene::Shapes(draw_shapes(rng, count)),
            )
        }
        3 => {
            let count = 2 + rng.below(MAX_SHAPES - 1);
            let mut shapes = draw_shapes(rng, count);
            recolour_with_unique_majority(rng, &mut shapes);
            (QuestionKind::MostFrequentColour, Scene::Shapes(shapes))
        }
        _ => (QuestionKind::DigitSum, Scene::Digits(draw_digit_pair(rng))),
    }
}

/// A scene for "how many X": the answer `a` is uniform over 0..=5 (so guessing the most frequent
/// answer scores 1/6 and the image must be read), the shape count uniform over max(a, 1)..=5;
/// the first `a` shapes (in random cells) are made X by `make`, the others not X by `unmake`.
fn draw_counted(
    rng: &mut DetRng,
    unmake: impl Fn(&mut PlacedShape, &mut DetRng),
    make: impl Fn(&mut PlacedShape),
) -> Vec<PlacedShape> {
    let a = rng.below(MAX_SHAPES + 1);
    let low = a.max(1);
    let count = low + rng.below(MAX_SHAPES - low + 1);
    let mut shapes = draw_shapes(rng, count);
    for (i, s) in shapes.iter_mut().enumerate() {
        if (i as u64) < a {
            make(s);
        } else {
            unmake(s, rng);
        }
    }
    shapes
}

/// `current` if it differs from `not`, else one of the other values of `all`, uniformly.
fn other<T: Copy + PartialEq>(rng: &mut DetRng, all: &[T], not: T, current: T) -> T {
    if current != not {
        return current;
    }
    let rest: Vec<T> = all.iter().copied().filter(|v| *v != not).collect();
    rest[rng.below(rest.len() as u64) as usize]
}

/// `count` shapes (1..=5), each in its own cell of the 3x3 grid, uniform kind, colour and side.
fn draw_shapes(rng: &mut DetRng, count: u64) -> Vec<PlacedShape> {
    let cells = rng.choose_distinct((GRID * GRID) as usize, count as usize);
    cells
        .into_iter()
        .map(|cell| {
            let size = MIN_SIDE + rng.below(u64::from(MAX_SIDE - MIN_SIDE + 1)) as u32;
            // Offsets 1..=CELL-1-size keep a white pixel between the box and the cell's edges.
            let free = u64::from(CELL - 1 - size);
            let (cx, cy) = (cell as u32 % GRID, cell as u32 / GRID);
            let x = cx * CELL + 1 + rng.below(free) as u32;
            let y = cy * CELL + 1 + rng.below(free) as u32;
            PlacedShape {
                kind: ShapeKind::ALL[rng.below(3) as usize],
                colour: Colour::ALL[rng.below(4) as usize],
                x,
                y,
                size,
            }
        })
        .collect()
}

/// How many shapes have each colour, in [`Colour::ALL`] order.
fn colour_counts(shapes: &[PlacedShape]) -> [usize; 4] {
    let mut counts = [0; 4];
    for s in shapes {
        counts[s.colour as usize] += 1;
    }
    counts
}

/// The most frequent colour if it is unique.
pub fn unique_majority(shapes: &[PlacedShape]) -> Option<Colour> {
    let counts = colour_counts(shapes);
    let max = counts.iter().copied().max()?;
    let mut winners = Colour::ALL.iter().zip(counts).filter(|(_, c)| *c == max);
    match (winners.next(), winners.next()) {
        (Some((colour, _)), None) => Some(*colour),
        _ => None,
    }
}

/// Redraws the colours until one is strictly most frequent (after 64 failed draws, which has
/// probability below 1e-20, every shape takes the first shape's colour).
fn recolour_with_unique_majority(rng: &mut DetRng, shapes: &mut [PlacedShape]) {
    for _ in 0..64 {
        if unique_majority(shapes).is_some() {
            return;
        }
        for s in shapes.iter_mut() {
            s.colour = Colour::ALL[rng.below(4) as usize];
        }
    }
    if let Some(first) = shapes.first().map(|s| s.colour) {
        shapes.iter_mut().for_each(|s| s.colour = first);
    }
}

/// Two digits 0-9, one in each half of the image, at random heights.
fn draw_digit_pair(rng: &mut DetRng) -> DrawnDigits {
    let (w, h) = (GLYPH_W * DIGIT_SCALE, GLYPH_H * DIGIT_SCALE);
    let half = IMAGE_SIDE / 2;
    // Left glyph starts in 2..=half-2-w, right glyph in half+2..=IMAGE_SIDE-2-w.
    let x_choices = u64::from(half - 3 - w);
    let y_choices = u64::from(IMAGE_SIDE - 3 - h);
    let d0 = rng.below(10) as u8;
    let d1 = rng.below(10) as u8;
    let o0 = (
        2 + rng.below(x_choices) as u32,
        2 + rng.below(y_choices) as u32,
    );
    let o1 = (
        half + 2 + rng.below(x_choices) as u32,
        2 + rng.below(y_choices) as u32,
    );
    DrawnDigits {
        digits: [d0, d1],
        origins: [o0, o1],
        scale: DIGIT_SCALE,
    }
}

/// The scene drawn on a white 84x84 canvas.
pub fn render(scene: &Scene) -> RgbImage {
    let mut img = draw::blank(IMAGE_SIDE, IMAGE_SIDE);
    match scene {
        Scene::Shapes(shapes) => shapes.iter().for_each(|s| draw::draw_shape(&mut img, s)),
        Scene::Digits(d) => draw::draw_digits(&mut img, d),
    }
    img
}

/// The ground truth of `kind` asked of `scene` ("0" if the kind does not fit the scene, which the
/// generator never produces).
pub fn answer(kind: QuestionKind, scene: &Scene) -> String {
    let shapes: &[PlacedShape] = match scene {
        Scene::Shapes(s) => s,
        Scene::Digits(_) => &[],
    };
    match (kind, scene) {
        (QuestionKind::DigitSum, Scene::Digits(d)) => (d.digits[0] + d.digits[1]).to_string(),
        (QuestionKind::CountColour(c), _) => {
            shapes.iter().filter(|s| s.colour == c).count().to_string()
        }
        (QuestionKind::CountShape(k), _) => {
            shapes.iter().filter(|s| s.kind == k).count().to_string()
        }
        (QuestionKind::CountAll, _) => shapes.len().to_string(),
        (QuestionKind::MostFrequentColour, _) => unique_majority(shapes)
            .map_or("A", Colour::letter)
            .to_string(),
        (QuestionKind::DigitSum, Scene::Shapes(_)) => "0".to_string(),
    }
}

/// `(A) red (B) green (C) blue (D) yellow`.
pub fn colour_options() -> String {
    Colour::ALL
        .iter()
        .map(|c| format!("({}) {}", c.letter(), c.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The canonical question of `kind` and its three rewrites (fixed templates), each ending in the
/// image placeholder: `How many red shapes are in the image?<image>`.
pub fn texts(kind: QuestionKind) -> (String, Vec<String>) {
    let all: [String; 4] = match kind {
        QuestionKind::CountColour(c) => {
            let c = c.name();
            [
                format!("How many {c} shapes are in the image?"),
                format!("Count the {c} shapes in the picture."),
                format!("What is the number of {c} shapes shown?"),
                format!("In this image, how many shapes are {c}?"),
            ]
        }
        QuestionKind::CountShape(k) => {
            let p = k.plural();
            [
                format!("How many {p} are in the image?"),
                format!("Count the {p} in the picture."),
                format!("What is the number of {p} shown?"),
                format!("In this image, how many of the shapes are {p}?"),
            ]
        }
        QuestionKind::CountAll => [
            "How many shapes are in the image?".to_string(),
            "Count all the shapes in the picture.".to_string(),
            "What is the total number of shapes shown?".to_string(),
            "In this image, how many shapes are there in total?".to_string(),
        ],
        QuestionKind::MostFrequentColour => {
            let o = colour_options();
            [
                format!("Which colour appears most often? {o}"),
                format!("Which colour do most of the shapes have? {o}"),
                format!("What is the most common shape colour in the picture? {o}"),
                format!("Among the shapes shown, which colour occurs most frequently? {o}"),
            ]
        }
        QuestionKind::DigitSum => [
            "What is the sum of the two digits in the image?".to_string(),
            "Add the two digits shown in the picture. What is the result?".to_string(),
            "What do the two digits in the image add up to?".to_string(),
            "Compute the sum of the two numbers drawn in the image.".to_string(),
        ],
    };
    // The image follows the question, so its tokens can attend to the asked colour, shape or
    // options (see the module docs).
    let all = all.map(|t| format!("{t}{IMAGE_PLACEHOLDER}"));
    let [question, rewrites @ ..] = all;
    (question, rewrites.to_vec())
}

/// A short correct response in the `math` rule's format, e.g.
/// `<think>I see 2 red shapes.</think> \boxed{2}`; a function of the sample alone.
pub fn reference_response(sample: &TaskSample) -> String {
    let a = sample.answer.as_str();
    let noun = |one: &str, many: &str| if a == "1" { one } else { many }.to_string();
    let thought = match sample.kind {
        QuestionKind::CountColour(c) => {
            format!("I see {a} {} {}.", c.name(), noun("shape", "shapes"))
        }
        QuestionKind::CountShape(k) => format!("I see {a} {}.", noun(k.name(), k.plural())),
        QuestionKind::CountAll => format!("I see {a} {} in total.", noun("shape", "shapes")),
        QuestionKind::MostFrequentColour => match Colour::ALL.iter().find(|c| c.letter() == a) {
            Some(c) => format!("Most shapes are {}.", c.name()),
            None => format!("The answer is {a}."),
        },
        QuestionKind::DigitSum => match &sample.scene {
            Scene::Digits(d) => format!("{} + {} = {a}.", d.digits[0], d.digits[1]),
            Scene::Shapes(_) => format!("The sum is {a}."),
        },
    };
    format!("<think>{thought}</think> \\boxed{{{a}}}")
}

#[cfg(test)]
#[path = "shapes_tests.rs"]
mod tests;
