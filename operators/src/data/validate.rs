//! Row validation: everything the trainer will need from a row is checked at load time
//! (non-empty question and answer, parsable rewrites, every image decodes, placeholder count).

use std::path::{Path, PathBuf};

use super::{
    DataError, DataOptions, ImageRef, RawFile, RawImage, RawRewrites, RawRow, Row, parse_py_list,
};

/// The placeholder the reference trainer splits prompts on.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

const WHAT_TO_DO: &str = "fix or remove the row, or set `data.on_bad_row: skip`";

/// Validates the rows of one file, in order; images are decoded on all available cores.
pub(super) fn validate_all(
    file: &Path,
    raw: RawFile,
    opts: &DataOptions,
) -> Vec<Result<Row, DataError>> {
    let ctx = Ctx {
        file,
        dir: file.parent().unwrap_or(Path::new("")).to_path_buf(),
        stem: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        has_images: raw.has_images,
        opts,
    };
    let rows: Vec<(usize, RawRow)> = raw.rows.into_iter().enumerate().collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    if threads <= 1 || rows.len() < 2 {
        return rows.into_iter().map(|(i, r)| ctx.row(i, r)).collect();
    }
    let chunk = rows.len().div_ceil(threads);
    let mut chunks: Vec<Vec<(usize, RawRow)>> = Vec::new();
    let mut rest = rows.into_iter();
    loop {
        let c: Vec<_> = rest.by_ref().take(chunk).collect();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    let ctx = &ctx;
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    c.into_iter()
                        .map(|(i, r)| ctx.row(i, r))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

#[derive(Debug)]
struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    stem: String,
    has_images: bool,
    opts: &'a DataOptions,
}

impl Ctx<'_> {
    fn bad(&self, row: usize, column: &str, message: String) -> DataError {
        DataError {
            file: self.file.to_path_buf(),
            row: Some(row),
            column: (!column.is_empty()).then(|| column.to_string()),
            message: format!("{message}: {WHAT_TO_DO}"),
        }
    }

    fn row(&self, i: usize, raw: RawRow) -> Result<Row, DataError> {
        let o = self.opts;
        if let Some((column, message)) = raw.bad {
            return Err(self.bad(i, &column, message));
        }
        let problem = match raw.problem {
            None => return Err(self.bad(i, &o.prompt_key, "the question is null".into())),
            Some(p) if p.trim().is_empty() => {
                return Err(self.bad(i, &o.prompt_key, "the question is empty".into()));
            }
            Some(p) => p,
        };
        let answer = match raw.answer {
            None => return Err(self.bad(i, &o.answer_key, "the answer is null".into())),
            Some(a) if a.trim().is_empty() => {
                return Err(self.bad(i, &o.answer_key, "the answer is empty".into()));
            }
            Some(a) => a,
        };
        let rewrites = match raw.rewrites {
            RawRewrites::None => Vec::new(),
            RawRewrites::List(l) => l,
            RawRewrites::Literal(s) if s.trim().is_empty() => Vec::new(),
            RawRewrites::Literal(s) => parse_py_list(&s).map_err(|e| {
                self.bad(
                    i,
                    &o.rewrites_key,
                    format!("cannot parse the rewrites as a Python list of strings: {e}"),
                )
            })?,
        };
        let mut images = Vec::with_capacity(raw.images.len());
        for (j, img) in raw.images.into_iter().enumerate() {
            let img = match img {
                RawImage::Bytes(b) => ImageRef::Bytes(b),
                RawImage::Path(p) => ImageRef::Path(self.dir.join(p)),
                RawImage::Null => {
                    return Err(self.bad(
                        i,
                        &o.image_key,
                        format!("image {j} is null (it has neither bytes nor a path)"),
                    ));
                }
            };
            img.decode()
                .map_err(|e| self.bad(i, &o.image_key, format!("image {j}: {e}")))?;
            images.push(img);
        }
        let placeholders = problem.matches(IMAGE_PLACEHOLDER).count();
        if placeholders != 0 && placeholders != images.len() {
            let hint = if self.has_images {
                String::new()
            } else {
                format!(
                    " (the file has no column `{}`; set `data.image_key` if the images are in \
                     another column)",
                    o.image_key
                )
            };
            return Err(self.bad(
                i,
                &o.image_key,
                format!(
                    "the question has {placeholders} `{IMAGE_PLACEHOLDER}` placeholder(s) but the \
                     row has {} image(s){hint}",
                    images.len()
                ),
            ));
        }
        Ok(Row {
            id: raw.id.unwrap_or_else(|| format!("{}:{i}", self.stem)),
            file: self.file.to_path_buf(),
            row: i,
            problem,
            answer,
            images,
            rewrites,
        })
    }
}
