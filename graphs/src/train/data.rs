//! Where seed questions come from: the embedded `shapes` task or a dataset (parquet / JSON lines,
//! loaded by [`shareflow_operators::data`]), and the order a run reads them in.
//!
//! Training reads the source as a stream of positions `0, 1, 2, ...` (position
//! `step * rollout_batch_size + b`). The embedded task is unbounded, so position p is its train
//! sample `start + p`, where `start` is 0 for `data.seed = 1` (the default) and moves 2^40
//! samples on per data seed: runs with different data seeds train on different questions. A
//! dataset of L rows is read in epochs of L positions, each epoch in a fresh permutation drawn
//! from `data.seed` and the epoch number (or in file order with `data.shuffle = false`). The data
//! cursor is therefore a function of the step, which makes resuming a run exact.

use std::fmt;
use std::sync::{Arc, Mutex};

use shareflow_operators::data::{DataOptions, OnBadRow, load_dataset};
use shareflow_operators::policy::fit_pixels;
use shareflow_operators::task::{IMAGE_PLACEHOLDER, Seed, Split, shapes_sample};
use shareflow_runtime::DetRng;

use super::config::Config;

/// The task's questions do not depend on the run seed: runs with different seeds and the same
/// `data.seed` see the same questions in the same order and differ in their sampling.
pub const TASK_SEED: u64 = 0;

/// How far apart (in samples) the embedded task's training streams of consecutive `data.seed`s
/// start: far more than any run reads.
pub const SHAPES_STREAM_STRIDE: u64 = 1 << 40;

/// A source of seed questions.
pub struct SeedSource {
    spec: String,
    kind: Kind,
    /// The dataset rows the loader dropped (`data.on_bad_row = skip`), one message each.
    skipped: Vec<String>,
}

enum Kind {
    Shapes {
        split: Split,
        /// The sample index of training position 0.
        start: u64,
    },
    Rows {
        rows: Arc<Vec<shareflow_operators::data::Row>>,
        min_pixels: u64,
        max_pixels: u64,
        shuffle: Option<u64>,
        /// The permutation of the last epoch read: (epoch, order).
        epoch: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
    },
}

impl fmt::Debug for SeedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedSource")
            .field("spec", &self.spec)
            .field("len", &self.len())
            .finish()
    }
}

impl PartialEq for SeedSource {
    fn eq(&self, other: &Self) -> bool {
        let start = |s: &Self| match s.kind {
            Kind::Shapes { start, .. } => Some(start),
            Kind::Rows { .. } => None,
        };
        self.spec == other.spec && self.len() == other.len() && start(self) == start(other)
    }
}

/// Where a training position lands in a finite dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Position within the current pass.
    pub offset: u64,
}

impl SeedSource {
    /// The embedded task's split, read from sample 0.
    pub fn shapes(split: Split) -> Self {
        Self::shapes_from(split, 0)
    }

    /// The embedded task's training stream of `data.seed = data_seed`: training position p is
    /// sample `(data_seed - 1) * SHAPES_STREAM_STRIDE + p` (wrapping), so data seed 1 reads samples
    /// 0, 1, 2, ... and each other data seed a different run of questions.
    pub fn shapes_train(data_seed: u64) -> Self {
        Self::shapes_from(
            Split::Train,
            data_seed.wrapping_sub(1).wrapping_mul(SHAPES_STREAM_STRIDE),
        )
    }

    fn shapes_from(split: Split, start: u64) -> Self {
        Self {
            spec: format!("shapes@{}", split.as_str()),
            kind: Kind::Shapes { split, start },
            skipped: Vec::new(),
        }
    }

    /// Rows of a loaded dataset; images are resized into `[min_pixels, max_pixels]` (0 = no
    /// bound) when a seed is made; `shuffle` holds the seed of the per-epoch permutations.
    pub fn rows(
        spec: &str,
        rows: Vec<shareflow_operators::data::Row>,
        min_pixels: u64,
        max_pixels: u64,
        shuffle: Option<u64>,
    ) -> Self {
        Self {
            spec: spec.to_string(),
            kind: Kind::Rows {
                rows: Arc::new(rows),
                min_pixels,
                max_pixels,
                shuffle,
                epoch: Mutex::new(None),
            },
            skipped: Vec::new(),
        }
    }

    /// The rows the loader skipped, one message each (file, row, column, reason).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// What the source was made from (`shapes@train`, or the dataset spec).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The number of distinct seeds; `None` for the unbounded embedded task.
    pub fn len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Shapes { .. } => None,
            Kind::Rows { rows, .. } => Some(rows.len() as u64),
        }
    }

    /// True for a dataset without rows (the loader refuses those, so never in practice).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Where training position `position` reads (a finite source), else `None`.
    pub fn cursor(&self, position: u64) -> Option<Cursor> {
        let len = self.len()?.max(1);
        Some(Cursor {
            epoch: position / len,
            offset: position % len,
        })
    }

    /// The seed at training position `position` (see the module docs for the order).
    pub fn train_seed(&self, position: u64) -> Result<Seed, String> {
        match &self.kind {
            Kind::Shapes { start, .. } => self.seed(start.wrapping_add(position)),
            Kind::Rows { shuffle, epoch, .. } => {
                let Some(c) = self.cursor(position) else {
                    return Err(format!("{}: the dataset has no rows", self.spec));
                };
                let index = match shuffle {
                    None => c.offset,
                    Some(seed) => {
                        let order = {
                            let mut cache = epoch
                                .lock()
                                .map_err(|_| "the data order cache is poisoned".to_string())?;
                            match cache.as_ref() {
                                Some((e, order)) if *e == c.epoch => Arc::clone(order),
                                _ => {
                                    let order = Arc::new(permutation(
                                        self.len().unwrap_or(0),
                                        *seed,
                                        c.epoch,
                                    ));
                                    *cache = Some((c.epoch, Arc::clone(&order)));
                                    order
                                }
                            }
                        };
                        order
                            .get(c.offset as usize)
                            .map_or(c.offset, |&i| u64::from(i))
                    }
                };
                self.seed(index)
            }
        }
    }

    /// The seed at index `index` in source order (evaluation reads 0, 1, 2, ...).
    pub fn seed(&self, index: u64) -> Result<Seed, String> {
        match &self.kind {
            Kind::Shapes { split, .. } => Ok(shapes_sample(TASK_SEED, *split, index).into()),
            Kind::Rows {
                rows,
                min_pixels,
                max_pixels,
                ..
            } => {
                let row = usize::try_from(index)
                    .ok()
                    .and_then(|i| rows.get(i))
                    .ok_or_else(|| {
                        format!("{}: no row {index} ({} rows)", self.spec, rows.len())
                    })?;
                let images = row
                    .images
                    .iter()
                    .enumerate()
                    .map(|(k, img)| {
                        img.decode()
                            .map(|d| fit_pixels(d.to_rgb8(), *min_pixels, *max_pixels))
                            .map_err(|e| {
                                format!("{}: row {}, image {k}: {e}", row.file.display(), row.row)
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Seed {
                    id: row.id.clone(),
                    question: row.problem.clone(),
                    rewrites: row.rewrites.clone(),
                    images,
                    answer: row.answer.clone(),
                    reference: None,
                })
            }
        }
    }
}

/// The loader options of a configuration (`data.*_key`, `data.on_bad_row`).
pub fn data_options(c: &Config) -> Result<DataOptions, String> {
    let on_bad_row = match c.str("data.on_bad_row")?.as_str() {
        "error" => OnBadRow::Error,
        "skip" => OnBadRow::Skip,
        other => {
            return Err(format!(
                "`data.on_bad_row` = {other:?}: expected error or skip"
            ));
        }
    };
    Ok(DataOptions {
        prompt_key: c.str("data.prompt_key")?,
        answer_key: c.str("data.answer_key")?,
        image_key: c.str("data.image_key")?,
        rewrites_key: c.str("data.rewrites_key")?,
        id_key: c.str("data.id_key")?,
        on_bad_row,
    })
}

/// The training and validation sources of a configuration (`data.*` keys).
pub fn sources(c: &Config) -> Result<(SeedSource, SeedSource), String> {
    let opts = data_options(c)?;
    let min_pixels = c.usize("data.min_pixels")? as u64;
    let max_pixels = c.usize("data.max_pixels")? as u64;
    let data_seed = u64::try_from(c.int("data.seed")?)
        .map_err(|_| "`data.seed` must not be negative".to_string())?;
    let shuffle = c.bool("data.shuffle")?.then_some(data_seed);
    let load = |key: &str, spec: &str, shuffle: Option<u64>| -> Result<SeedSource, String> {
        let ds = load_dataset(spec, &opts).map_err(|e| format!("{key} = {spec:?}: {e}"))?;
        let mut src = SeedSource::rows(spec, ds.rows, min_pixels, max_pixels, shuffle);
        src.skipped = ds.skipped.iter().map(|e| e.to_string()).collect();
        Ok(src)
    };
    let train_spec = c.str("data.train_files")?;
    let train = match train_spec.as_str() {
        "shapes" => SeedSource::shapes_train(data_seed),
        spec => load("data.train_files", spec, shuffle)?,
    };
    let val = match (c.str("data.val_files")?.as_str(), train_spec.as_str()) {
        ("shapes", _) | ("auto", "shapes") => SeedSource::shapes(Split::Eval),
        ("auto" | "none", _) => SeedSource::rows("none", Vec::new(), 0, 0, None),
        (spec, _) => load("data.val_files", spec, None)?,
    };
    Ok((train, val))
}

/// The embedded task's `split` samples `0..count` as dataset rows in the R1-ShareVL-52K layout
/// (`problem` holding its `<image>` placeholder, after the question as the embedded task asks it,
/// `answer`, one PNG image, `new_questions` rewrites with the placeholder too), plus an `id`
/// column so a run on the exported file draws the same random streams as a run on the embedded
/// source.
pub fn shapes_rows(
    split: Split,
    count: u64,
) -> Result<Vec<shareflow_operators::data::ExportRow>, String> {
    (0..count)
        .map(|i| {
            let s = shapes_sample(TASK_SEED, split, i);
            let mut png = Vec::new();
            s.image
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| format!("{}: cannot encode the image: {e}", s.id))?;
            Ok(shareflow_operators::data::ExportRow {
                id: s.id,
                problem: with_placeholder(&s.question),
                answer: s.answer,
                images: vec![png],
                rewrites: s.rewrites.iter().map(|r| with_placeholder(r)).collect(),
            })
        })
        .collect()
}

/// `text` as a dataset problem: its own `<image>` placeholder kept (the embedded questions put the
/// image last), else one in front.
fn with_placeholder(text: &str) -> String {
    if text.contains(IMAGE_PLACEHOLDER) {
        text.to_string()
    } else {
        format!("{IMAGE_PLACEHOLDER}{text}")
    }
}

/// A uniform permutation of `0..len` (Fisher-Yates) from `(seed, epoch)`.
fn permutation(len: u64, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    let mut rng = DetRng::derive(seed, epoch, "data-order", 0);
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_complete_and_differ_by_epoch() {
        let a = permutation(100, 7, 0);
        let b = permutation(100, 7, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_ne!(a, b);
        assert_eq!(a, permutation(100, 7, 0));
        assert_ne!(a, permutation(100, 8, 0));
    }

    #[test]
    fn shapes_positions_are_train_samples() -> Result<(), String> {
        let s = SeedSource::shapes(Split::Train);
        assert_eq!(s.len(), None);
        assert_eq!(s.cursor(5), None);
        let seed = s.train_seed(5)?;
        let sample = shapes_sample(TASK_SEED, Split::Train, 5);
        assert_eq!(seed.id, sample.id);
        assert_eq!(seed.texts(), sample.texts());
        assert_eq!(seed.images, vec![sample.image]);
        Ok(())
    }

    #[test]
    fn the_data_seed_picks_the_embedded_training_stream() -> Result<(), String> {
        let ids = |data_seed: u64| -> Result<Vec<String>, String> {
            let c = Config::resolve(None, &[format!("data.seed={data_seed}")])?;
            let (train, val) = sources(&c)?;
            assert_eq!(
                val.seed(3)?.id,
                "shapes-eval-3",
                "the eval split ignores data.seed"
            );
            (0..8).map(|p| Ok(train.train_seed(p)?.id)).collect()
        };
        let one = ids(1)?;
        let expected: Vec<String> = (0..8).map(|i| format!("shapes-train-{i}")).collect();
        assert_eq!(
            one, expected,
            "data.seed 1 (the default) reads samples 0, 1, 2, ..."
        );
        let two = ids(2)?;
        assert_ne!(
            SeedSource::shapes_train(2),
            SeedSource::shapes(Split::Train)
        );
        assert_eq!(two[0], format!("shapes-train-{SHAPES_STREAM_STRIDE}"));
        assert!(two.iter().all(|id| !one.contains(id)));
        let c = Config::resolve(None, &["data.seed=2".into()])?;
        let (train, _) = sources(&c)?;
        let (a, b) = (
            train.train_seed(0)?,
            SeedSource::shapes(Split::Train).train_seed(0)?,
        );
        assert_ne!(
            (a.texts(), a.images.clone()),
            (b.texts(), b.images.clone()),
            "another data seed asks other questions"
        );
        Ok(())
    }
}
