//! Dataset specs: a file, a directory of shards, or `dir@split`, resolved to data files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Parquet,
    Json,
}

/// The reader for a file, from its extension.
pub(super) fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "parquet" => Some(Kind::Parquet),
        "jsonl" | "json" => Some(Kind::Json),
        _ => None,
    }
}

/// JSON files that HF tooling writes beside data and that are not data.
const METADATA_JSON: &[&str] = &[
    "dataset_info.json",
    "dataset_dict.json",
    "state.json",
    "dataset_infos.json",
    "config.json",
];

/// The data files `spec` names, in load order.
pub(super) fn resolve(spec: &str) -> Result<Vec<PathBuf>, DataError> {
    let (path, split) = split_spec(spec);
    if !path.exists() {
        let hint = if split.is_some() {
            ""
        } else {
            " (to pick a split write `DIR@split`)"
        };
        return Err(DataError::file(
            &path,
            format!(
                "no such file or directory: set the dataset path to an existing .parquet or \
                 .jsonl file or a directory of them{hint}"
            ),
        ));
    }
    if path.is_file() {
        if kind_of(&path).is_none() {
            return Err(DataError::file(
                &path,
                "unknown file type: give a .parquet, .jsonl or .json file, or a directory of them",
            ));
        }
        if let Some(split) = &split {
            let root = path.parent().unwrap_or(Path::new(""));
            if !in_split(root, &path, split) {
                return Err(DataError::file(
                    &path,
                    format!(
                        "the file is not part of split `{split}`: drop `@{split}` or give the \
                         directory that holds the split"
                    ),
                ));
            }
        }
        return Ok(vec![path]);
    }
    let mut all = Vec::new();
    let mut arrow_files = 0usize;
    walk(&path, &mut all, &mut arrow_files)
        .map_err(|e| DataError::file(&path, format!("cannot list the directory: {e}")))?;
    all.sort();
    let parquet: Vec<PathBuf> = all
        .iter()
        .filter(|p| kind_of(p) == Some(Kind::Parquet))
        .cloned()
        .collect();
    let files = if parquet.is_empty() {
        all.into_iter()
            .filter(|p| {
                kind_of(p) == Some(Kind::Json)
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| METADATA_JSON.contains(&n))
            })
            .collect()
    } else {
        parquet
    };
    if files.is_empty() {
        let hint = if arrow_files > 0 {
            " (it holds .arrow files from `save_to_disk`: export them with \
             `dataset.to_parquet(\"train.parquet\")`)"
        } else {
            ""
        };
        return Err(DataError::file(
            &path,
            format!(
                "the directory has no data files (.parquet, .jsonl or .json){hint}: give a \
                 directory that holds the dataset's files"
            ),
        ));
    }
    let Some(split) = split else {
        return Ok(files);
    };
    let chosen: Vec<PathBuf> = files
        .iter()
        .filter(|f| in_split(&path, f, &split))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let found = splits_found(&path, &files);
        return Err(DataError::file(
            &path,
            format!(
                "no files of split `{split}` (splits found: {}): write `{}@SPLIT` with one of \
                 them",
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.into_iter().collect::<Vec<_>>().join(", ")
                },
                path.display()
            ),
        ));
    }
    Ok(chosen)
}

/// `path@split` -> (path, Some(split)); a spec that exists as a path is taken whole.
fn split_spec(spec: &str) -> (PathBuf, Option<String>) {
    if Path::new(spec).exists() {
        return (PathBuf::from(spec), None);
    }
    match spec.rsplit_once('@') {
        Some((p, s)) if !s.is_empty() && !s.contains(['/', '\\']) => {
            (PathBuf::from(p), Some(s.to_string()))
        }
        _ => (PathBuf::from(spec), None),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, arrow_files: &mut usize) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() || (ty.is_symlink() && path.is_dir()) {
            walk(&path, out, arrow_files)?;
        } else if kind_of(&path).is_some() {
            out.push(path);
        } else if path.extension().is_some_and(|e| e == "arrow") {
            *arrow_files += 1;
        }
    }
    Ok(())
}

fn in_split(root: &Path, file: &Path, split: &str) -> bool {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let by_name = name
        .strip_prefix(split)
        .is_some_and(|rest| rest.starts_with(['-', '.', '_']));
    let by_dir = file
        .parent()
        .and_then(|p| p.strip_prefix(root).ok())
        .is_some_and(|rel| rel.components().any(|c| c.as_os_str() == split));
    by_name || by_dir
}

/// Split names the files suggest (for the unknown-split error).
fn splits_found(root: &Path, files: &[PathBuf]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for f in files {
        if let Some(stem) = f.file_name().and_then(|n| n.to_str())
            && let Some(i) = stem.find(['-', '.', '_'])
        {
            found.insert(stem[..i].to_string());
        }
        if let Some(rel) = f.parent().and_then(|p| p.strip_prefix(root).ok()) {
            for c in rel.components() {
                let c = c.as_os_str().to_string_lossy();
                if c != "data" {
                    found.insert(c.into_owned());
                }
            }
        }
    }
    found
}
