//! JSON-lines files (one object per line, blank lines ignored), or a `.json` file holding one
//! JSON array of objects. Images are file paths (a string, a list of strings, or `{"path": ..}`
//! objects), relative to the file's directory.

use std::path::Path;

use serde_json::Value;

use super::parquet_read::float_text;
use super::{DataError, DataOptions, RawFile, RawImage, RawRewrites, RawRow, missing_column};

pub(super) fn read(file: &Path, opts: &DataOptions) -> Result<RawFile, DataError> {
    let bytes = std::fs::read(file)
        .map_err(|e| DataError::file(file, format!("cannot read the file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        DataError::file(
            file,
            format!(
                "the file is not UTF-8 text ({e}): give a UTF-8 JSON-lines file (one object per \
                 line)"
            ),
        )
    })?;
    // Each entry: a parsed value, or why the line did not parse.
    let values: Vec<Result<Value, String>> = if text.trim_start().starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
            DataError::file(
                file,
                format!("the file is not a valid JSON array ({e}): fix the JSON"),
            )
        })?;
        all.into_iter().map(Ok).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str::<Value>(l)
                    .map_err(|e| format!("line {} is not valid JSON ({e})", n + 1))
            })
            .collect()
    };

    // Columns: the keys of all objects, in first-seen order.
    let mut present: Vec<String> = Vec::new();
    for v in values.iter().flatten() {
        if let Value::Object(m) = v {
            for k in m.keys() {
                if !present.contains(k) {
                    present.push(k.clone());
                }
            }
        }
    }
    if values.iter().any(Result::is_ok) {
        for key in [&opts.prompt_key, &opts.answer_key] {
            if !present.contains(key) {
                return Err(missing_column(file, key, &present, opts));
            }
        }
    }

    let rows = values
        .into_iter()
        .map(|v| match v {
            Ok(Value::Object(m)) => read_row(&m, opts),
            Ok(other) => RawRow {
                bad: Some((
                    String::new(),
                    format!("expected a JSON object, found {}", kind(&other)),
                )),
                ..RawRow::default()
            },
            Err(e) => RawRow {
                bad: Some((String::new(), e)),
                ..RawRow::default()
            },
        })
        .collect();
    Ok(RawFile {
        rows,
        has_images: present.contains(&opts.image_key),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_row(m: &serde_json::Map<String, Value>, opts: &DataOptions) -> RawRow {
    let mut row = RawRow::default();
    let mut bad: Option<(String, String)> = None;
    let mut note = |column: &str, e: String| {
        if bad.is_none() {
            bad = Some((column.to_string(), e));
        }
    };
    match m.get(&opts.prompt_key) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => row.problem = Some(s.clone()),
        Some(v) => note(
            &opts.prompt_key,
            format!("expected a string, found {}", kind(v)),
        ),
    }
    match m.get(&opts.answer_key).map(text_or_number).transpose() {
        Ok(v) => row.answer = v.flatten(),
        Err(e) => note(&opts.answer_key, e),
    }
    match m.get(&opts.id_key).map(text_or_number).transpose() {
        Ok(v) => row.id = v.flatten(),
        Err(e) => note(&opts.id_key, e),
    }
    match m.get(&opts.image_key).map(images).transpose() {
        Ok(v) => row.images = v.unwrap_or_default(),
        Err(e) => note(&opts.image_key, e),
    }
    match m.get(&opts.rewrites_key) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => row.rewrites = RawRewrites::Literal(s.clone()),
        Some(Value::Array(items)) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            match strings {
                Some(s) => row.rewrites = RawRewrites::List(s),
                None => note(
                    &opts.rewrites_key,
                    "expected a list of strings, found other items".to_string(),
                ),
            }
        }
        Some(v) => note(
            &opts.rewrites_key,
            format!("expected a list of strings, found {}", kind(v)),
        ),
    }
    row.bad = bad;
    row
}

fn text_or_number(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i.to_string()))
            } else if let Some(u) = n.as_u64() {
                Ok(Some(u.to_string()))
            } else {
                float_text(n.as_f64().unwrap_or(f64::NAN)).map(Some)
            }
        }
        v => Err(format!("expected a string or a number, found {}", kind(v))),
    }
}

fn images(v: &Value) -> Result<Vec<RawImage>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(image).collect(),
        v => Ok(vec![image(v)?]),
    }
}

fn image(v: &Value) -> Result<RawImage, String> {
    match v {
        Value::Null => Ok(RawImage::Null),
        Value::String(p) => Ok(RawImage::Path(p.clone())),
        Value::Object(m) => match (m.get("bytes"), m.get("path")) {
            (Some(b), _) if !b.is_null() => Err(
                "image bytes inside JSON are not supported: store the images as files and give \
                 their paths"
                    .to_string(),
            ),
            (_, Some(Value::String(p))) => Ok(RawImage::Path(p.clone())),
            _ => Ok(RawImage::Null),
        },
        v => Err(format!(
            "expected an image path or {{\"path\": ...}}, found {}",
            kind(v)
        )),
    }
}
