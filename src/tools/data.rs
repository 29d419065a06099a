//! `shareflow data`: export the embedded task as a parquet dataset in the R1-ShareVL-52K layout,
//! and check a dataset the way `shareflow train` loads it.

use std::path::Path;

use shareflow_graphs::train::Config;
use shareflow_graphs::train::data::{data_options, shapes_rows};
use shareflow_operators::data::{load_dataset, write_parquet};
use shareflow_operators::task::Split;

/// Writes `out/train-00000-of-00001.parquet` (`rows` train samples) and
/// `out/test-00000-of-00001.parquet` (`val_rows` eval samples). Returns what it wrote, one line
/// per file.
pub fn export_shapes(out: &Path, rows: u64, val_rows: u64) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    let mut lines = Vec::new();
    for (split, name, count) in [
        (Split::Train, "train", rows),
        (Split::Eval, "test", val_rows),
    ] {
        if count == 0 {
            continue;
        }
        let path = out.join(format!("{name}-00000-of-00001.parquet"));
        let data = shapes_rows(split, count).map_err(anyhow::Error::msg)?;
        write_parquet(&path, &data)?;
        lines.push(format!("wrote {} ({count} rows)", path.display()));
    }
    lines.push(format!(
        "train on it with: shareflow train --set data.train_files={0}@train --set data.val_files={0}@test",
        out.display()
    ));
    Ok(lines)
}

/// Loads `spec` with the `data.*` keys of `sets` (defaults otherwise) and describes what was
/// read; an error names the file, row and column.
pub fn check(spec: &str, sets: &[String]) -> anyhow::Result<Vec<String>> {
    let config = Config::resolve(None, sets).map_err(anyhow::Error::msg)?;
    let opts = data_options(&config).map_err(anyhow::Error::msg)?;
    let ds = load_dataset(spec, &opts)?;
    let images: usize = ds.rows.iter().map(|r| r.images.len()).sum();
    let with_rewrites = ds.rows.iter().filter(|r| !r.rewrites.is_empty()).count();
    let mut lines = vec![format!(
        "{spec}: {} rows from {} files, {images} images, {with_rewrites} rows with rewrites, {} skipped",
        ds.rows.len(),
        ds.files.len(),
        ds.skipped.len()
    )];
    for f in &ds.files {
        lines.push(format!("  file {}", f.display()));
    }
    for e in &ds.skipped {
        lines.push(format!("  skipped: {e}"));
    }
    Ok(lines)
}
