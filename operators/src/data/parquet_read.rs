//! Parquet files through the arrow reader: the columns the trainer uses, in the types HF
//! `datasets`, pandas and pyarrow write.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;

use super::{DataError, DataOptions, RawFile, RawImage, RawRewrites, RawRow, missing_column};

/// Reads one parquet file. A panic inside the parquet crate (possible on corrupt input) is turned
/// into an error.
pub(super) fn read(file: &Path, opts: &DataOptions) -> Result<RawFile, DataError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| read_inner(file, opts))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown failure");
            Err(DataError::file(
                file,
                format!(
                    "the file is corrupt: the parquet reader failed ({what}): re-download or \
                     re-export the file"
                ),
            ))
        }
    }
}

fn corrupt(file: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::file(
        file,
        format!(
            "the file is not readable parquet or is corrupt/truncated ({e}): re-download or \
             re-export the file"
        ),
    )
}

/// The columns to read: (config column name, index in the file's schema).
#[derive(Debug, Default)]
struct Columns {
    prompt: usize,
    answer: usize,
    images: Option<usize>,
    rewrites: Option<usize>,
    id: Option<usize>,
}

fn read_inner(file: &Path, opts: &DataOptions) -> Result<RawFile, DataError> {
    let f = std::fs::File::open(file)
        .map_err(|e| DataError::file(file, format!("cannot open the file: {e}")))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| corrupt(file, e))?;
    check_chunks(builder.metadata(), file_len).map_err(|e| corrupt(file, e))?;
    let schema = builder.schema().clone();
    let present: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |name: &str| present.iter().position(|c| c == name);
    let required =
        |name: &str| find(name).ok_or_else(|| missing_column(file, name, &present, opts));

    let cols = Columns {
        prompt: required(&opts.prompt_key)?,
        answer: required(&opts.answer_key)?,
        images: find(&opts.image_key),
        rewrites: find(&opts.rewrites_key),
        id: find(&opts.id_key),
    };
    let check = |idx: Option<usize>, ok: fn(&DataType) -> bool, expected: &str| {
        let Some(field) = idx.and_then(|i| schema.fields().get(i)) else {
            return Ok(());
        };
        if ok(field.data_type()) {
            Ok(())
        } else {
            let key = opts.key_of(field.name()).unwrap_or("data.<key>");
            Err(DataError::column(
                file,
                field.name(),
                format!(
                    "unsupported column type {}: expected {expected}; convert the column or set \
                     `{key}` to another column",
                    field.data_type()
                ),
            ))
        }
    };
    check(Some(cols.prompt), is_string_type, "a string column")?;
    check(
        Some(cols.answer),
        |t| is_string_type(t) || is_number_type(t),
        "a string or number column",
    )?;
    check(
        cols.images,
        is_images_type,
        "images as list<struct<bytes, path>>, list<binary>, list<string>, struct, binary or string",
    )?;
    check(
        cols.rewrites,
        is_rewrites_type,
        "list<string> or a string holding a Python list",
    )?;
    check(
        cols.id,
        |t| is_string_type(t) || is_int_type(t),
        "a string or integer column",
    )?;

    let mut roots = vec![cols.prompt, cols.answer];
    roots.extend(cols.images);
    roots.extend(cols.rewrites);
    roots.extend(cols.id);
    roots.sort_unstable();
    roots.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(1024)
        .build()
        .map_err(|e| corrupt(file, e))?;

    let mut out = RawFile {
        rows: Vec::new(),
        has_images: cols.images.is_some(),
    };
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(file, e))?;
        let col = |name: &str| batch.column_by_name(name).cloned();
        let prompt = col(&opts.prompt_key);
        let answer = col(&opts.answer_key);
        let images = cols.images.and_then(|_| col(&opts.image_key));
        let rewrites = cols.rewrites.and_then(|_| col(&opts.rewrites_key));
        let id = cols.id.and_then(|_| col(&opts.id_key));
        for i in 0..batch.num_rows() {
            out.rows.push(read_row(
                i,
                opts,
                prompt.as_ref(),
                answer.as_ref(),
                images.as_ref(),
                rewrites.as_ref(),
                id.as_ref(),
            ));
        }
    }
    Ok(out)
}

/// Column chunks must lie inside the file. (Regression: a flipped bit in the footer gave a
/// negative offset, on which the parquet crate asserts, i.e. panics, while reading.)
fn check_chunks(meta: &ParquetMetaData, file_len: u64) -> Result<(), String> {
    for (g, rg) in meta.row_groups().iter().enumerate() {
        for (c, col) in rg.columns().iter().enumerate() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            let len = col.compressed_size();
            let inside = start >= 0
                && len >= 0
                && (start as u64)
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= file_len);
            if !inside {
                return Err(format!(
                    "row group {g}, column chunk {c}: byte range {start}+{len} is outside the \
                     file ({file_len} bytes)"
                ));
            }
        }
    }
    Ok(())
}

fn read_row(
    i: usize,
    opts: &DataOptions,
    prompt: Option<&ArrayRef>,
    answer: Option<&ArrayRef>,
    images: Option<&ArrayRef>,
    rewrites: Option<&ArrayRef>,
    id: Option<&ArrayRef>,
) -> RawRow {
    let mut row = RawRow::default();
    let note = |row: &mut RawRow, column: &str, e: String| {
        if row.bad.is_none() {
            row.bad = Some((column.to_string(), e));
        }
    };
    match prompt.map(|a| string_at(a.as_ref(), i)).transpose() {
        Ok(v) => row.problem = v.flatten(),
        Err(e) => note(&mut row, &opts.prompt_key, e),
    }
    match answer.map(|a| answer_at(a.as_ref(), i)).transpose() {
        Ok(v) => row.answer = v.flatten(),
        Err(e) => note(&mut row, &opts.answer_key, e),
    }
    match id.map(|a| answer_at(a.as_ref(), i)).transpose() {
        Ok(v) => row.id = v.flatten(),
        Err(e) => note(&mut row, &opts.id_key, e),
    }
    match images.map(|a| images_at(a.as_ref(), i)).transpose() {
        Ok(v) => row.images = v.unwrap_or_default(),
        Err(e) => note(&mut row, &opts.image_key, e),
    }
    match rewrites.map(|a| rewrites_at(a.as_ref(), i)).transpose() {
        Ok(v) => row.rewrites = v.unwrap_or_default(),
        Err(e) => note(&mut row, &opts.rewrites_key, e),
    }
    row
}

fn is_string_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        // Dictionary-encoded strings (pandas categoricals written by pyarrow).
        DataType::Dictionary(k, v) => k.is_integer() && is_string_type(v),
        _ => false,
    }
}

fn is_int_type(t: &DataType) -> bool {
    t.is_integer()
}

fn is_number_type(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Float32 | DataType::Float64)
}

fn is_binary_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn is_single_image_type(t: &DataType) -> bool {
    match t {
        DataType::Struct(fields) => {
            let bytes = fields.iter().find(|f| f.name() == "bytes");
            let path = fields.iter().find(|f| f.name() == "path");
            (bytes.is_some() || path.is_some())
                && bytes.is_none_or(|f| is_binary_type(f.data_type()) || f.data_type().is_null())
                && path.is_none_or(|f| is_string_type(f.data_type()))
        }
        t => is_binary_type(t) || is_string_type(t),
    }
}

fn is_images_type(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) => is_single_image_type(f.data_type()),
        t => is_single_image_type(t),
    }
}

fn is_rewrites_type(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) => is_string_type(f.data_type()),
        t => is_string_type(t),
    }
}

fn type_error(a: &dyn Array) -> String {
    format!("unexpected value type {}", a.data_type())
}

/// The string at `i` (`None` when null).
fn string_at(a: &dyn Array, i: usize) -> Result<Option<String>, String> {
    if a.is_null(i) {
        return Ok(None);
    }
    let s = match a.data_type() {
        DataType::Utf8 => a.as_string_opt::<i32>().map(|s| s.value(i)),
        DataType::LargeUtf8 => a.as_string_opt::<i64>().map(|s| s.value(i)),
        DataType::Utf8View => a.as_string_view_opt().map(|s| s.value(i)),
        DataType::Dictionary(..) => {
            let d = a.as_any_dictionary_opt().ok_or_else(|| type_error(a))?;
            let key = answer_at(d.keys(), i)?
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|&k| k < d.values().len())
                .ok_or_else(|| format!("dictionary key of row {i} is out of range"))?;
            return string_at(d.values().as_ref(), key);
        }
        _ => None,
    };
    s.map(|s| Some(s.to_string())).ok_or_else(|| type_error(a))
}

fn binary_at(a: &dyn Array, i: usize) -> Option<&[u8]> {
    match a.data_type() {
        DataType::Binary => a.as_binary_opt::<i32>().map(|s| s.value(i)),
        DataType::LargeBinary => a.as_binary_opt::<i64>().map(|s| s.value(i)),
        DataType::BinaryView => a.as_binary_view_opt().map(|s| s.value(i)),
        _ => None,
    }
}

/// A float as the answer text: the shortest decimal that reads back as the same value
/// (`2.5` -> "2.5", `3.0` -> "3").
pub(super) fn float_text(v: f64) -> Result<String, String> {
    if v.is_finite() {
        Ok(format!("{v}"))
    } else {
        Err(format!("the number {v} is not finite"))
    }
}

/// A string, or a number as its decimal text (`None` when null).
fn answer_at(a: &dyn Array, i: usize) -> Result<Option<String>, String> {
    if a.is_null(i) {
        return Ok(None);
    }
    macro_rules! int {
        ($t:ty) => {
            a.as_primitive_opt::<$t>()
                .map(|p| p.value(i).to_string())
                .ok_or_else(|| type_error(a))
        };
    }
    let text = match a.data_type() {
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        // f32 through its own shortest text, so 0.1f32 gives "0.1".
        DataType::Float32 => a
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| type_error(a))
            .and_then(|p| {
                let v = p.value(i);
                float_text(f64::from(v)).map(|_| format!("{v}"))
            }),
        DataType::Float64 => a
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| type_error(a))
            .and_then(|p| float_text(p.value(i))),
        _ => return string_at(a, i),
    };
    text.map(Some)
}

/// The images of row `i` (an empty list when the cell is null).
fn images_at(a: &dyn Array, i: usize) -> Result<Vec<RawImage>, String> {
    if a.is_null(i) {
        return Ok(Vec::new());
    }
    let list = match a.data_type() {
        DataType::List(_) => a.as_list_opt::<i32>().map(|l| l.value(i)),
        DataType::LargeList(_) => a.as_list_opt::<i64>().map(|l| l.value(i)),
        _ => return Ok(vec![image_at(a, i)?]),
    };
    let list = list.ok_or_else(|| type_error(a))?;
    (0..list.len())
        .map(|j| image_at(list.as_ref(), j))
        .collect()
}

/// One image entry: struct{bytes, path}, binary or a path string.
fn image_at(a: &dyn Array, i: usize) -> Result<RawImage, String> {
    if a.is_null(i) {
        return Ok(RawImage::Null);
    }
    if let Some(s) = a.as_struct_opt() {
        if let Some(b) = s.column_by_name("bytes")
            && !b.is_null(i)
            && let Some(bytes) = binary_at(b.as_ref(), i)
        {
            return Ok(RawImage::Bytes(Arc::from(bytes)));
        }
        if let Some(p) = s.column_by_name("path")
            && let Some(path) = string_at(p.as_ref(), i)?
        {
            return Ok(RawImage::Path(path));
        }
        return Ok(RawImage::Null);
    }
    if let Some(bytes) = binary_at(a, i) {
        return Ok(RawImage::Bytes(Arc::from(bytes)));
    }
    Ok(string_at(a, i)?.map_or(RawImage::Null, RawImage::Path))
}

fn rewrites_at(a: &dyn Array, i: usize) -> Result<RawRewrites, String> {
    if a.is_null(i) {
        return Ok(RawRewrites::None);
    }
    let list = match a.data_type() {
        DataType::List(_) => a.as_list_opt::<i32>().map(|l| l.value(i)),
        DataType::LargeList(_) => a.as_list_opt::<i64>().map(|l| l.value(i)),
        _ => return Ok(string_at(a, i)?.map_or(RawRewrites::None, RawRewrites::Literal)),
    };
    let list = list.ok_or_else(|| type_error(a))?;
    let mut out = Vec::with_capacity(list.len());
    for j in 0..list.len() {
        match string_at(list.as_ref(), j)? {
            Some(s) => out.push(s),
            None => return Err(format!("rewrite {j} is null")),
        }
    }
    Ok(RawRewrites::List(out))
}
