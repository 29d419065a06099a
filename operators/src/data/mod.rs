//! Training datasets in the EasyR1 / verl layout (R1-ShareVL's `verl/utils/dataset.py`): rows
//! with a `problem` (which may hold `<image>` placeholders), an `answer`, `images` and the
//! textual rewrites `new_questions` used by Share-GRPO.
//!
//! [`load_dataset`] resolves a spec (`file.parquet`, `file.jsonl`, a directory of shards,
//! `dir@split`), reads every file, and validates every row up front — images are decoded, the
//! rewrites parsed, placeholder counts checked — so that a bad row stops (or is skipped at) load
//! time rather than step 500 of a long run. [`write_parquet`] writes rows back in the layout HF
//! `datasets` uses for `Sequence(Image())`.

mod jsonl;
mod parquet_read;
mod pylist;
mod spec;
mod validate;
mod write;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use pylist::py_repr_str;
pub use pylist::{parse_py_list, py_repr_list};
pub use write::{ExportRow, write_parquet};

/// What to do with a row that fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadRow {
    /// Stop loading and return the row's error (the default).
    #[default]
    Error,
    /// Leave the row out, record its error in [`Dataset::skipped`] and go on.
    Skip,
}

impl std::str::FromStr for OnBadRow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "skip" => Ok(Self::Skip),
            other => Err(format!(
                "unknown on_bad_row value `{other}`: use `error` or `skip`"
            )),
        }
    }
}

/// Column names and the bad-row policy (the trainer's `data.*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOptions {
    /// Column of the question text (`data.prompt_key`, default `problem`). Required.
    pub prompt_key: String,
    /// Column of the ground-truth answer (`data.answer_key`, default `answer`). Required.
    pub answer_key: String,
    /// Column of the images (`data.image_key`, default `images`). Optional: a file without it is
    /// text-only.
    pub image_key: String,
    /// Column of the textual rewrites (`data.rewrites_key`, default `new_questions`). Optional.
    pub rewrites_key: String,
    /// Column of a row id (`data.id_key`, default `id`). Optional: absent or null gives
    /// `"<file stem>:<row>"`.
    pub id_key: String,
    /// What to do with rows that fail validation (`data.on_bad_row`, default `error`).
    pub on_bad_row: OnBadRow,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            prompt_key: "problem".into(),
            answer_key: "answer".into(),
            image_key: "images".into(),
            rewrites_key: "new_questions".into(),
            id_key: "id".into(),
            on_bad_row: OnBadRow::Error,
        }
    }
}

impl DataOptions {
    /// The config key that names `column`, for error messages.
    fn key_of(&self, column: &str) -> Option<&'static str> {
        [
            (&self.prompt_key, "data.prompt_key"),
            (&self.answer_key, "data.answer_key"),
            (&self.image_key, "data.image_key"),
            (&self.rewrites_key, "data.rewrites_key"),
            (&self.id_key, "data.id_key"),
        ]
        .into_iter()
        .find(|(c, _)| c.as_str() == column)
        .map(|(_, k)| k)
    }
}

/// One image of a row: its encoded bytes, or a file (already resolved against the directory of
/// the dataset file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Bytes(Arc<[u8]>),
    Path(PathBuf),
}

impl ImageRef {
    /// Decodes the image (format guessed from its content: PNG, JPEG, WebP, GIF, BMP).
    pub fn decode(&self) -> Result<image::DynamicImage, String> {
        let reader = match self {
            Self::Bytes(b) => image::ImageReader::new(std::io::Cursor::new(b.as_ref()))
                .with_guessed_format()
                .map_err(|e| format!("cannot read the image bytes: {e}"))?
                .decode(),
            Self::Path(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| format!("cannot read image file {}: {e}", p.display()))?;
                image::ImageReader::new(std::io::Cursor::new(bytes.as_slice()))
                    .with_guessed_format()
                    .map_err(|e| format!("cannot read image file {}: {e}", p.display()))?
                    .decode()
            }
        };
        reader.map_err(|e| match self {
            Self::Bytes(b) => format!("cannot decode the image ({} bytes): {e}", b.len()),
            Self::Path(p) => format!("cannot decode image file {}: {e}", p.display()),
        })
    }
}

/// One validated dataset row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The id column's value, or `"<file stem>:<row>"`.
    pub id: String,
    /// The file the row came from.
    pub file: PathBuf,
    /// 0-based index of the row within its file.
    pub row: usize,
    /// The question (non-empty); may hold `<image>` placeholders, then one per image.
    pub problem: String,
    /// The ground truth (non-empty; numbers as their decimal text).
    pub answer: String,
    /// The images, in order; each decoded successfully at load time.
    pub images: Vec<ImageRef>,
    /// Textual rewrites of `problem` (empty when the column is absent or null).
    pub rewrites: Vec<String>,
}

/// A dataset problem: a file-level one (`row: None`) or a bad row.
///
/// Displays as `<file>: row 17, column `images`: <message>`; rows count from 0 like
/// [`Row::row`], and the message ends with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub file: PathBuf,
    pub row: Option<usize>,
    pub column: Option<String>,
    pub message: String,
}

impl DataError {
    fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            row: None,
            column: None,
            message: message.into(),
        }
    }

    fn column(file: impl Into<PathBuf>, column: &str, message: impl Into<String>) -> Self {
        Self {
            column: Some(column.to_string()),
            ..Self::file(file, message)
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        match (self.row, &self.column) {
            (Some(r), Some(c)) => write!(f, "row {r}, column `{c}`: ")?,
            (Some(r), None) => write!(f, "row {r}: ")?,
            (None, Some(c)) => write!(f, "column `{c}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DataError {}

/// A loaded, validated dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The spec it was loaded from.
    pub spec: String,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// The good rows, in file order then row order.
    pub rows: Vec<Row>,
    /// The rows left out under [`OnBadRow::Skip`], with why.
    pub skipped: Vec<DataError>,
}

/// Loads and validates a dataset.
///
/// `spec` is a `.parquet` file, a JSON-lines file (`.jsonl`, or `.json` holding JSON lines or one
/// JSON array of objects), or a directory searched recursively for data files (parquet shards;
/// JSON files when it has no parquet), sorted by path. `dir@split` keeps the files of one split:
/// a file name starting with `split-`, `split.` or `split_`, or a directory below `dir` named
/// `split`.
///
/// File-level problems (no such path, no data files, unknown split, unreadable or corrupt file, a
/// required column missing or of an unsupported type) are always errors; bad rows follow
/// `opts.on_bad_row`. An empty result is an error.
pub fn load_dataset(spec: &str, opts: &DataOptions) -> Result<Dataset, DataError> {
    let files = spec::resolve(spec)?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for file in &files {
        let raw = read_file(file, opts)?;
        for result in validate::validate_all(file, raw, opts) {
            match result {
                Ok(row) => rows.push(row),
                Err(e) if opts.on_bad_row == OnBadRow::Skip => {
                    tracing::warn!("skipping bad row: {e}");
                    skipped.push(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
    if rows.is_empty() {
        let (file, what) = match files.as_slice() {
            [one] => (one.clone(), "the file"),
            _ => (PathBuf::from(spec), "the dataset"),
        };
        let message = if skipped.is_empty() {
            format!("{what} has no rows: give a dataset with at least one row")
        } else {
            format!(
                "{what} has no valid rows ({} skipped; the first: {}): fix the data",
                skipped.len(),
                skipped[0]
            )
        };
        return Err(DataError::file(file, message));
    }
    Ok(Dataset {
        spec: spec.to_string(),
        files,
        rows,
        skipped,
    })
}

/// A row as read from a file, before validation. Cell-level problems found while reading (a
/// value of the wrong type) are kept in `bad` and reported by validation.
#[derive(Debug, Default)]
struct RawRow {
    id: Option<String>,
    problem: Option<String>,
    answer: Option<String>,
    images: Vec<RawImage>,
    rewrites: RawRewrites,
    /// A problem found while reading the row: (column, message).
    bad: Option<(String, String)>,
}

#[derive(Debug)]
enum RawImage {
    Bytes(Arc<[u8]>),
    /// A path as written in the file (resolved during validation).
    Path(String),
    /// A null entry in the list, or a struct with neither bytes nor path.
    Null,
}

#[derive(Debug, Default)]
enum RawRewrites {
    #[default]
    None,
    List(Vec<String>),
    Literal(String),
}

/// The rows of one file plus whether it had an images column.
#[derive(Debug, Default)]
struct RawFile {
    rows: Vec<RawRow>,
    has_images: bool,
}

fn read_file(file: &std::path::Path, opts: &DataOptions) -> Result<RawFile, DataError> {
    match spec::kind_of(file) {
        Some(spec::Kind::Parquet) => parquet_read::read(file, opts),
        Some(spec::Kind::Json) => jsonl::read(file, opts),
        None => Err(DataError::file(
            file,
            "unknown file type: give a .parquet, .jsonl or .json file",
        )),
    }
}

/// The error for a required column the file lacks.
fn missing_column(
    file: &std::path::Path,
    column: &str,
    present: &[String],
    opts: &DataOptions,
) -> DataError {
    let key = opts.key_of(column).unwrap_or("data.<key>");
    DataError::column(
        file,
        column,
        format!(
            "the file has no column `{column}` (columns present: {}): set `{key}` to the column \
             that holds it",
            if present.is_empty() {
                "none".to_string()
            } else {
                present
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    )
}

#[cfg(test)]
mod tests;
