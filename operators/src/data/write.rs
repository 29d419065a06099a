//! Writing rows as parquet in the layout of HF `datasets` (`Sequence(Image())` images, the
//! rewrites as a Python list literal like the released R1-ShareVL-52K).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::OffsetBufferBuilder;
use arrow_array::{Array, ArrayRef, BinaryArray, ListArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{DataError, py_repr_list};

/// A row to export. `images` are encoded image files (PNG, JPEG, ...), stored as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportRow {
    pub id: String,
    pub problem: String,
    pub answer: String,
    pub images: Vec<Vec<u8>>,
    pub rewrites: Vec<String>,
}

/// HF `datasets` features of the written file, so that `datasets.load_dataset("parquet", ..)`
/// decodes `images` as images. (`datasets` ignores them when a field is declared non-nullable,
/// so every field is nullable.)
const HF_FEATURES: &str = r#"{"info": {"features": {"id": {"dtype": "string", "_type": "Value"}, "problem": {"dtype": "string", "_type": "Value"}, "answer": {"dtype": "string", "_type": "Value"}, "images": {"feature": {"_type": "Image"}, "_type": "Sequence"}, "new_questions": {"dtype": "string", "_type": "Value"}}}}"#;

/// Writes `rows` to `path` as parquet with columns `id`, `problem`, `answer` (utf8), `images`
/// (`list<struct<bytes: binary, path: utf8>>`, path null) and `new_questions` (utf8: Python's
/// `repr` of the list). The file is written beside `path` under a temporary name and renamed
/// into place, so readers never see a partial file.
pub fn write_parquet(path: &Path, rows: &[ExportRow]) -> Result<(), DataError> {
    let batch = to_batch(rows)
        .map_err(|e| DataError::file(path, format!("cannot build the parquet columns: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset.parquet".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_file(&tmp, &batch).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename the temporary file: {e}"))
    });
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::file(
            path,
            format!("cannot write the file ({e}): check the directory exists and is writable"),
        )
    })
}

fn write_file(tmp: &PathBuf, batch: &RecordBatch) -> Result<(), String> {
    let file = std::fs::File::create(tmp).map_err(|e| e.to_string())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| e.to_string())?;
    writer.write(batch).map_err(|e| e.to_string())?;
    let file = writer.into_inner().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())
}

fn image_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

fn to_batch(rows: &[ExportRow]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let strings = |f: fn(&ExportRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let bytes = BinaryArray::from_iter_values(rows.iter().flat_map(|r| r.images.iter()));
    let n_images = bytes.len();
    let paths = StringArray::new_null(n_images);
    let structs = StructArray::try_new(
        image_fields(),
        vec![Arc::new(bytes) as ArrayRef, Arc::new(paths)],
        None,
    )?;
    let mut offsets = OffsetBufferBuilder::<i32>::new(rows.len());
    for r in rows {
        offsets.push_length(r.images.len());
    }
    let item = Arc::new(Field::new("item", DataType::Struct(image_fields()), true));
    let images = ListArray::try_new(item.clone(), offsets.finish(), Arc::new(structs), None)?;
    let rewrites: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| py_repr_list(&r.rewrites)),
    ));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("problem", DataType::Utf8, true),
        Field::new("answer", DataType::Utf8, true),
        Field::new("images", DataType::List(item), true),
        Field::new("new_questions", DataType::Utf8, true),
    ])
    .with_metadata([("huggingface", HF_FEATURES)]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            strings(|r| &r.id),
            strings(|r| &r.problem),
            strings(|r| &r.answer),
            Arc::new(images),
            rewrites,
        ],
    )
}
