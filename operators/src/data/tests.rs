//! Unit tests of the loader that need no fixture files: write/load round trip, spec errors.

use std::path::PathBuf;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> Result<PathBuf, std::io::Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "shareflow-data-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn png(w: u32, h: u32, seed: u8) -> Result<Vec<u8>, image::ImageError> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(31) ^ seed,
            (y as u8).wrapping_mul(17),
            seed,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[test]
fn write_then_load_gives_the_same_rows() -> TestResult {
    let dir = temp_dir("roundtrip")?;
    let rows = vec![
        ExportRow {
            id: "a".into(),
            problem: "<image><image>Which is bigger?".into(),
            answer: "left".into(),
            images: vec![png(8, 6, 1)?, png(3, 5, 2)?],
            rewrites: vec![
                "Which one's bigger?".into(),
                "say \"x\" it's".into(),
                "back\\slash\nnew\ttab é".into(),
            ],
        },
        ExportRow {
            id: "b".into(),
            problem: "2 + 2?".into(),
            answer: "4".into(),
            images: vec![],
            rewrites: vec![],
        },
    ];
    let path = dir.join("out.parquet");
    write_parquet(&path, &rows)?;
    let leftovers: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("out.parquet")]);

    let ds = load_dataset(&path.to_string_lossy(), &DataOptions::default())?;
    assert!(ds.skipped.is_empty());
    assert_eq!(ds.files, vec![path.clone()]);
    assert_eq!(ds.rows.len(), rows.len());
    for (i, (got, want)) in ds.rows.iter().zip(&rows).enumerate() {
        assert_eq!(got.id, want.id);
        assert_eq!(got.row, i);
        assert_eq!(got.file, path);
        assert_eq!(got.problem, want.problem);
        assert_eq!(got.answer, want.answer);
        assert_eq!(got.rewrites, want.rewrites);
        let bytes: Vec<Vec<u8>> = got
            .images
            .iter()
            .map(|im| match im {
                ImageRef::Bytes(b) => b.to_vec(),
                ImageRef::Path(p) => p.to_string_lossy().as_bytes().to_vec(),
            })
            .collect();
        assert_eq!(bytes, want.images);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn spec_errors_say_what_to_do() -> TestResult {
    let dir = temp_dir("specs")?;
    let opts = DataOptions::default();
    let err = |spec: &str| match load_dataset(spec, &opts) {
        Ok(_) => String::from("loaded"),
        Err(e) => e.to_string(),
    };
    let missing = dir.join("nope.parquet");
    assert!(err(&missing.to_string_lossy()).contains("no such file or directory"));
    assert!(err(&dir.to_string_lossy()).contains("has no data files"));
    std::fs::write(dir.join("x.csv"), "a,b\n")?;
    assert!(err(&dir.join("x.csv").to_string_lossy()).contains("unknown file type"));
    std::fs::write(dir.join("x.parquet"), b"PAR1 not really")?;
    let e = err(&dir.join("x.parquet").to_string_lossy());
    assert!(e.contains("corrupt"), "{e}");
    std::fs::write(dir.join("empty.jsonl"), "\n\n")?;
    let e = err(&dir.join("empty.jsonl").to_string_lossy());
    assert!(e.contains("has no rows"), "{e}");
    let e = err(&format!("{}@validation", dir.to_string_lossy()));
    assert!(e.contains("no files of split `validation`"), "{e}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn on_bad_row_parses() {
    assert_eq!("skip".parse::<OnBadRow>(), Ok(OnBadRow::Skip));
    assert_eq!(" Error ".parse::<OnBadRow>(), Ok(OnBadRow::Error));
    assert!("ignore".parse::<OnBadRow>().is_err());
}

#[test]
fn display_names_file_row_and_column() {
    let e = DataError {
        file: PathBuf::from("d/train.parquet"),
        row: Some(17),
        column: Some("images".into()),
        message: "image 1: bad: fix it".into(),
    };
    assert_eq!(
        e.to_string(),
        "d/train.parquet: row 17, column `images`: image 1: bad: fix it"
    );
}
