//! The embedded visual-reasoning task ("shapes") and Share-GRPO's variant expansion.
//!
//! - [`shapes`]: a procedurally generated task small enough for a tiny vision-language policy:
//!   84x84 white images holding 1-5 big coloured shapes (or two big digits), questions whose
//!   answers are short strings the `math` reward rule grades, three or more textual rewrites per
//!   question, and a short reference response for the SFT warm start. Every sample is a pure
//!   function of (seed, split, index).
//! - [`variants`]: DESIGN.md "Share-GRPO, exactly", item 1 — m textual variants sampled from the
//!   question and its rewrites, each with a random visual transform (probability 0.3) and the
//!   compensatory sentence naming it, followed by the format prompt.
//! - [`draw`]: the pixel-filling the generator draws with (no crates beyond `image`).
//!
//! Randomness comes only from [`shareflow_runtime::DetRng`].

pub mod draw;
pub mod shapes;
pub mod variants;

use serde::{Deserialize, Serialize};

pub use shapes::{reference_response, shapes_sample};
pub use variants::{
    FORMAT_PROMPT, IMAGE_PLACEHOLDER, NOISE_STDS, Variant, VisualTransform, apply_transform,
    compensatory_prompt, expand_variants, format_question, sample_transform,
};

/// Which half of the task a sample comes from. The halves are disjoint by construction (see
/// [`shapes_sample`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Samples the policy trains on.
    Train,
    /// Held-out samples for evaluation.
    Eval,
}

impl Split {
    /// `"train"` or `"eval"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Eval => "eval",
        }
    }
}

/// The palette: four clearly distinct colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Colour {
    /// (220, 30, 30); option (A).
    Red,
    /// (30, 160, 50); option (B).
    Green,
    /// (30, 70, 220); option (C).
    Blue,
    /// (240, 200, 20); option (D).
    Yellow,
}

impl Colour {
    /// Every colour, in option order (A) to (D).
    pub const ALL: [Colour; 4] = [Self::Red, Self::Green, Self::Blue, Self::Yellow];

    /// The colour's English name, as the questions use it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Green => "green",
            Self::Blue => "blue",
            Self::Yellow => "yellow",
        }
    }

    /// The pixel value drawn.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Self::Red => [220, 30, 30],
            Self::Green => [30, 160, 50],
            Self::Blue => [30, 70, 220],
            Self::Yellow => [240, 200, 20],
        }
    }

    /// The multiple-choice letter of the colour in the most-frequent-colour question.
    pub fn letter(self) -> &'static str {
        match self {
            Self::Red => "A",
            Self::Green => "B",
            Self::Blue => "C",
            Self::Yellow => "D",
        }
    }
}

/// The shapes drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ShapeKind {
    /// A filled axis-aligned square.
    Square,
    /// A filled disc.
    Circle,
    /// A filled isosceles triangle, apex up.
    Triangle,
}

impl ShapeKind {
    /// Every shape kind.
    pub const ALL: [ShapeKind; 3] = [Self::Square, Self::Circle, Self::Triangle];

    /// Singular English name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Square => "square",
            Self::Circle => "circle",
            Self::Triangle => "triangle",
        }
    }

    /// Plural English name, as the questions use it.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Square => "squares",
            Self::Circle => "circles",
            Self::Triangle => "triangles",
        }
    }
}

/// One shape as drawn: its kind, colour and bounding box (top-left corner, side in pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlacedShape {
    /// What is drawn.
    pub kind: ShapeKind,
    /// Its colour.
    pub colour: Colour,
    /// Left edge of the bounding box.
    pub x: u32,
    /// Top edge of the bounding box.
    pub y: u32,
    /// Side of the (square) bounding box.
    pub size: u32,
}

/// Two digits drawn as scaled 5x7 glyphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DrawnDigits {
    /// Left digit, right digit (0-9 each).
    pub digits: [u8; 2],
    /// Top-left corner of each glyph.
    pub origins: [(u32, u32); 2],
    /// Pixels per glyph cell.
    pub scale: u32,
}

/// What a sample's image shows: the generator's metadata, from which every answer is computed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scene {
    /// 1-5 non-overlapping shapes.
    Shapes(Vec<PlacedShape>),
    /// Two digits.
    Digits(DrawnDigits),
}

/// The kind of question asked, with its parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuestionKind {
    /// "How many red shapes are in the image?" — answer "0".."5".
    CountColour(Colour),
    /// "How many circles are in the image?" — answer "0".."5".
    CountShape(ShapeKind),
    /// "How many shapes are in the image?" — answer "1".."5".
    CountAll,
    /// "Which colour appears most often? (A) red (B) green (C) blue (D) yellow" — answer a letter;
    /// the most frequent colour is unique in every image asked this.
    MostFrequentColour,
    /// "What is the sum of the two digits in the image?" — answer "0".."18".
    DigitSum,
}

impl QuestionKind {
    /// The kind's name without its parameter (for metrics and tests).
    pub fn name(self) -> &'static str {
        match self {
            Self::CountColour(_) => "count_colour",
            Self::CountShape(_) => "count_shape",
            Self::CountAll => "count_all",
            Self::MostFrequentColour => "most_frequent_colour",
            Self::DigitSum => "digit_sum",
        }
    }
}

/// One sample of the task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSample {
    /// `shapes-{split}-{index}`: unique within a (seed, split).
    pub id: String,
    /// The image (84x84 RGB, white background); not resized here.
    pub image: image::RgbImage,
    /// The canonical question.
    pub question: String,
    /// At least three semantically equivalent rewrites, distinct from the question and each other.
    pub rewrites: Vec<String>,
    /// The ground truth: an integer ("3") or a letter ("B").
    pub answer: String,
    /// What is asked.
    pub kind: QuestionKind,
    /// What is drawn (the generator's metadata).
    pub scene: Scene,
}

impl TaskSample {
    /// The question followed by its rewrites: the `texts` argument of [`expand_variants`].
    pub fn texts(&self) -> Vec<String> {
        std::iter::once(self.question.clone())
            .chain(self.rewrites.iter().cloned())
            .collect()
    }
}

/// A seed question as the training graphs consume it (DESIGN.md's `Seed` record), from the
/// embedded task or a dataset row: the question (which may hold `<image>` placeholders), its
/// textual rewrites, the decoded images and the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    /// Unique within its source; random streams of the seed derive from it.
    pub id: String,
    /// The original question.
    pub question: String,
    /// Semantically equivalent rewrites (the dataset's `new_questions`); may be empty.
    pub rewrites: Vec<String>,
    /// The images, RGB, already resized to the data's pixel bounds; may be empty.
    pub images: Vec<image::RgbImage>,
    /// The ground truth the reward grades against.
    pub answer: String,
    /// A reference response (SFT's target): the embedded task has one for every question; a
    /// dataset row has none.
    pub reference: Option<String>,
}

impl Seed {
    /// The question followed by its rewrites: the `texts` argument of [`expand_variants`].
    pub fn texts(&self) -> Vec<String> {
        std::iter::once(self.question.clone())
            .chain(self.rewrites.iter().cloned())
            .collect()
    }
}

impl From<TaskSample> for Seed {
    fn from(s: TaskSample) -> Self {
        let reference = Some(shapes::reference_response(&s));
        Self {
            reference,
            id: s.id,
            question: s.question,
            rewrites: s.rewrites,
            images: vec![s.image],
            answer: s.answer,
        }
    }
}
