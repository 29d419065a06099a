//! The dataset loader against the fixtures of tests/golden/data/ (written by
//! make_data_fixtures.py with HF `datasets` and pyarrow): every fixture's rows equal
//! expected.json, splits pick the right shards, bad rows and missing columns are reported where
//! they are, written files read back the same, and corrupt inputs give errors, never panics.

use std::path::{Path, PathBuf};

use serde_json::Value;
use shareflow_operators::data::{
    DataOptions, ExportRow, ImageRef, OnBadRow, Row, load_dataset, parse_py_list, py_repr_list,
    write_parquet,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/data")
}

fn expected() -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        golden().join("expected.json"),
    )?)?)
}

fn spec(name: &str) -> String {
    format!("{}/{name}", golden().display())
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn image_bytes(im: &ImageRef) -> Result<Vec<u8>, std::io::Error> {
    match im {
        ImageRef::Bytes(b) => Ok(b.to_vec()),
        ImageRef::Path(p) => std::fs::read(p),
    }
}

/// A row in expected.json's form.
fn row_json(r: &Row) -> Result<Value, Box<dyn std::error::Error>> {
    let mut images = Vec::new();
    for im in &r.images {
        let bytes = image_bytes(im)?;
        let decoded = im.decode()?;
        let lossless = !matches!(
            image::guess_format(&bytes)?,
            image::ImageFormat::Jpeg | image::ImageFormat::WebP
        );
        images.push(serde_json::json!({
            "width": decoded.width(),
            "height": decoded.height(),
            "fnv_bytes": fnv1a64(&bytes),
            "fnv_rgb8": lossless.then(|| fnv1a64(decoded.to_rgb8().as_raw())),
        }));
    }
    Ok(serde_json::json!({
        "row": r.row,
        "id": r.id,
        "problem": r.problem,
        "answer": r.answer,
        "rewrites": r.rewrites,
        "images": images,
    }))
}

#[test]
fn every_fixture_loads_as_expected() -> TestResult {
    let exp = expected()?;
    let fixtures = exp["fixtures"].as_object().ok_or("no fixtures")?;
    assert!(fixtures.len() >= 9);
    for (name, rows) in fixtures {
        let ds = load_dataset(&spec(name), &DataOptions::default())
            .map_err(|e| format!("{name}: {e}"))?;
        assert!(ds.skipped.is_empty(), "{name}: {:?}", ds.skipped);
        let got: Vec<Value> = ds.rows.iter().map(row_json).collect::<Result<_, _>>()?;
        assert_eq!(&Value::Array(got), rows, "{name}");
    }
    Ok(())
}

#[test]
fn splits_select_their_shards_in_order() -> TestResult {
    let names = |s: &str| -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let ds = load_dataset(&spec(s), &DataOptions::default())?;
        for r in &ds.rows {
            assert!(ds.files.contains(&r.file));
        }
        Ok(ds
            .files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    };
    assert_eq!(
        names("sharded@train")?,
        [
            "train-00000-of-00002.parquet",
            "train-00001-of-00002.parquet"
        ]
    );
    assert_eq!(names("sharded@test")?, ["test-00000-of-00001.parquet"]);
    assert_eq!(names("sharded")?.len(), 3);
    // A split directory below the root also selects (`image_types` is a directory of `data`).
    assert_eq!(names("@image_types")?.len(), 4);

    let err = load_dataset(&spec("sharded@validation"), &DataOptions::default())
        .err()
        .ok_or("unknown split loaded")?
        .to_string();
    assert!(err.contains("no files of split `validation`"), "{err}");
    assert!(err.contains("test, train"), "{err}");
    Ok(())
}

#[test]
fn bad_rows_error_or_are_skipped() -> TestResult {
    let exp = expected()?;
    let bad = &exp["bad_rows"];
    let file = bad["file"].as_str().ok_or("file")?;
    let want: Vec<(usize, String)> = bad["bad"]
        .as_array()
        .ok_or("bad")?
        .iter()
        .map(|b| {
            (
                b["row"].as_u64().unwrap_or(u64::MAX) as usize,
                b["column"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();

    let err = load_dataset(&spec(file), &DataOptions::default())
        .err()
        .ok_or("bad file loaded")?;
    assert_eq!(err.file, golden().join(file));
    assert_eq!(
        (err.row, err.column.clone()),
        (Some(want[0].0), Some(want[0].1.clone()))
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "bad_rows.parquet: row {}, column `{}`: ",
            want[0].0, want[0].1
        )),
        "{text}"
    );
    assert!(text.contains("data.on_bad_row"), "{text}");

    let opts = DataOptions {
        on_bad_row: OnBadRow::Skip,
        ..DataOptions::default()
    };
    let ds = load_dataset(&spec(file), &opts)?;
    let kept: Vec<u64> = ds.rows.iter().map(|r| r.row as u64).collect();
    let good: Vec<u64> = bad["good"]
        .as_array()
        .ok_or("good")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(kept, good);
    let skipped: Vec<(usize, String)> = ds
        .skipped
        .iter()
        .map(|e| {
            (
                e.row.unwrap_or(usize::MAX),
                e.column.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(skipped, want);
    let messages: Vec<String> = ds.skipped.iter().map(ToString::to_string).collect();
    assert!(messages[1].contains("image 1"), "{}", messages[1]);
    assert!(
        messages[3].contains("2 `<image>` placeholder(s)"),
        "{}",
        messages[3]
    );
    Ok(())
}

#[test]
fn missing_and_unsupported_columns_are_file_errors() -> TestResult {
    let exp = expected()?;
    let m = &exp["missing_column"];
    let file = m["file"].as_str().ok_or("file")?;
    for on_bad_row in [OnBadRow::Error, OnBadRow::Skip] {
        let opts = DataOptions {
            on_bad_row,
            ..DataOptions::default()
        };
        let err = load_dataset(&spec(file), &opts).err().ok_or("loaded")?;
        assert_eq!(err.row, None);
        assert_eq!(err.column.as_deref(), m["column"].as_str());
        let text = err.to_string();
        for c in m["present"].as_array().ok_or("present")? {
            let c = c.as_str().ok_or("column")?;
            assert!(text.contains(&format!("`{c}`")), "{text}");
        }
        assert!(text.contains(m["key"].as_str().ok_or("key")?), "{text}");
    }
    // Setting the key fixes it.
    let opts = DataOptions {
        prompt_key: "question".into(),
        ..DataOptions::default()
    };
    assert_eq!(load_dataset(&spec(file), &opts)?.rows.len(), 1);

    // A struct column as the answer is refused, naming the column and the key.
    let opts = DataOptions {
        answer_key: "extra".into(),
        ..DataOptions::default()
    };
    let text = load_dataset(&spec("paths.parquet"), &opts)
        .err()
        .ok_or("loaded")?
        .to_string();
    assert!(
        text.contains("column `extra`: unsupported column type"),
        "{text}"
    );
    assert!(text.contains("data.answer_key"), "{text}");
    Ok(())
}

#[test]
fn python_list_literals() {
    let ok = |s: &str| parse_py_list(s).ok();
    let v = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        ok("['What is x?', \"It's y\"]"),
        v(&["What is x?", "It's y"])
    );
    assert_eq!(
        ok(r#"['It\'s y: say "x"', 'tab\there \\ back', 'caf\xe9 \u00b2']"#),
        v(&["It's y: say \"x\"", "tab\there \\ back", "café ²"])
    );
    assert_eq!(ok("  [\n  'a',\n  'b',\n]  "), v(&["a", "b"]));
    assert_eq!(ok("[]"), v(&[]));
    for garbage in ["", "['a'", "[1]", "['a'] ['b']", "{'a'}", "['a' 'b'"] {
        assert_eq!(ok(garbage), None, "{garbage:?}");
    }
}

/// `py_repr_list` against Python's `repr(list_of_str)`, and back through `parse_py_list`.
#[test]
fn python_repr_of_string_lists() -> TestResult {
    let exp = expected()?;
    for case in exp["py_repr"].as_array().ok_or("py_repr")? {
        let items: Vec<String> = serde_json::from_value(case["items"].clone())?;
        let repr = case["repr"].as_str().ok_or("repr")?;
        assert_eq!(py_repr_list(&items), repr, "{items:?}");
        assert_eq!(parse_py_list(repr).as_ref(), Ok(&items), "{repr}");
    }
    Ok(())
}

#[test]
fn written_rows_load_back_identically() -> TestResult {
    let ds = load_dataset(&spec("hf_images.parquet"), &DataOptions::default())?;
    let export: Vec<ExportRow> = ds
        .rows
        .iter()
        .map(|r| -> Result<ExportRow, std::io::Error> {
            Ok(ExportRow {
                id: r.id.clone(),
                problem: r.problem.clone(),
                answer: r.answer.clone(),
                images: r.images.iter().map(image_bytes).collect::<Result<_, _>>()?,
                rewrites: r.rewrites.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    let dir = temp_dir("export")?;
    let out = dir.join("export.parquet");
    write_parquet(&out, &export)?;
    let back = load_dataset(&out.to_string_lossy(), &DataOptions::default())?;
    assert_eq!(back.rows.len(), ds.rows.len());
    for (a, b) in ds.rows.iter().zip(&back.rows) {
        assert_eq!(
            (&a.id, a.row, &a.problem, &a.answer, &a.images, &a.rewrites),
            (&b.id, b.row, &b.problem, &b.answer, &b.images, &b.rewrites)
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn temp_dir(name: &str) -> Result<PathBuf, std::io::Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "shareflow-data-test-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// xorshift64: deterministic noise without a crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn data_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), std::io::Error> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            data_files(&p, out)?;
        } else if p
            .extension()
            .is_some_and(|x| x == "parquet" || x == "jsonl")
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Bit-flipped copies per fixture file.
const FLIPS: usize = 300;

/// Truncated, bit-flipped and random files must give `Ok` or `Err`, never a panic.
///
/// Regressions it found: a flipped footer bit giving a negative column-chunk offset (the parquet
/// crate asserts on it; now refused before reading), and a dictionary page with zero values
/// (a division by zero inside the parquet crate, caught by the loader's `catch_unwind`; its panic
/// message still reaches stderr through the default panic hook).
#[test]
fn corrupt_files_never_panic() -> TestResult {
    let mut fixtures = Vec::new();
    data_files(&golden(), &mut fixtures)?;
    fixtures.sort();
    assert!(fixtures.len() >= 10);
    let dir = temp_dir("fuzz")?;
    let opts = DataOptions {
        on_bad_row: OnBadRow::Skip,
        ..DataOptions::default()
    };
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut n = 0usize;
    let mut try_load = |bytes: &[u8], ext: &str| -> Result<(), std::io::Error> {
        n += 1;
        let path = dir.join(format!("case{n}.{ext}"));
        std::fs::write(&path, bytes)?;
        let _ = load_dataset(&path.to_string_lossy(), &opts);
        std::fs::remove_file(&path)
    };
    for f in &fixtures {
        let bytes = std::fs::read(f)?;
        let ext = f
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let len = bytes.len();
        let mut cuts: Vec<usize> = (0..40).map(|k| k * len / 40).collect();
        cuts.extend(len.saturating_sub(16)..len);
        for cut in cuts {
            try_load(&bytes[..cut], &ext)?;
        }
        for _ in 0..FLIPS {
            let mut copy = bytes.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(len);
                copy[i] ^= 1 << rng.below(8);
            }
            try_load(&copy, &ext)?;
        }
        for _ in 0..FLIPS / 4 {
            // Random bytes inside the file (structure damaged, footer intact).
            let mut copy = bytes.clone();
            let start = rng.below(len);
            for b in copy.iter_mut().skip(start).take(1 + rng.below(64)) {
                *b = rng.next() as u8;
            }
            try_load(&copy, &ext)?;
        }
    }
    for k in 0..50 {
        let len = rng.below(4096);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if k % 2 == 0 && bytes.len() >= 8 {
            // A parquet magic at both ends, so the footer parser runs on garbage.
            bytes[..4].copy_from_slice(b"PAR1");
            let l = bytes.len();
            bytes[l - 4..].copy_from_slice(b"PAR1");
        }
        try_load(&bytes, if k % 3 == 0 { "jsonl" } else { "parquet" })?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
