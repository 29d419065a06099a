//! TensorBoard event files, so that `tensorboard --logdir runs/` shows a run's metrics as it
//! does for every other RL trainer: one `events.out.tfevents.*` file per run attempt in the run
//! directory, each step's metrics as scalars under their `metrics.jsonl` names.
//!
//! The format is TensorFlow's record file: per record, the length (u64 LE), its masked CRC-32C,
//! the bytes and their masked CRC-32C; each record an `Event` protobuf (wall time, step, and a
//! file version (field 3), a `Summary` of `simple_value` scalars (5), or a `SessionLog` (7)). The few protobuf
//! fields are encoded here (the `prost` tool chain would need `protoc` and TensorFlow's `.proto`
//! files for three messages); the bytes equal TensorBoard's own writer's
//! (`tests/golden/tensorboard/`). Each attempt's file opens with a `SessionLog` START at its
//! first step: TensorBoard ignores a run directory's first START, and on each later one (a
//! resumed run) drops the earlier attempts' events from that step on (they were not part of the
//! run that continued).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends events to one event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field key: number and wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// An `Event` with wall time and step (proto3: zero values are not written) and the given
/// payload field (already encoded, with its key).
fn event(wall_time: f64, step: u64, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(16 + payload.len());
    if wall_time != 0.0 {
        key(&mut e, 1, 1);
        e.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        key(&mut e, 2, 0);
        varint(&mut e, step);
    }
    e.extend_from_slice(payload);
    e
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<seconds>.<host>.<pid>.shareflow` and writes the file
    /// version event.
    pub fn create(dir: &Path, wall_time: f64) -> std::io::Result<Self> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let name = format!(
            "events.out.tfevents.{}.{host}.{}.shareflow",
            wall_time as u64,
            std::process::id()
        );
        Self::create_file(&dir.join(name), wall_time)
    }

    /// Creates the event file `path` (its name must contain `tfevents` for TensorBoard to read it)
    /// and writes the file version event.
    pub fn create_file(path: &Path, wall_time: f64) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        let mut w = Self {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        };
        let mut payload = Vec::new();
        bytes_field(&mut payload, 3, b"brain.Event:2");
        w.record(&event(wall_time, 0, &payload))?;
        w.out.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }

    /// A `SessionLog` START at `step`: from the second one of a run directory on, TensorBoard
    /// drops the events read before it at steps from `step` on (a resumed run's restart).
    pub fn session_start(&mut self, step: u64, wall_time: f64) -> std::io::Result<()> {
        let mut log = Vec::new();
        key(&mut log, 1, 0);
        varint(&mut log, 1); // SessionLog.START
        let mut payload = Vec::new();
        bytes_field(&mut payload, 7, &log);
        self.record(&event(wall_time, step, &payload))?;
        self.out.flush()
    }

    /// One event holding `scalars` (tag, value) at `step`, flushed to the file.
    pub fn scalars(
        &mut self,
        step: u64,
        wall_time: f64,
        scalars: &[(&str, f32)],
    ) -> std::io::Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in scalars {
            let mut value = Vec::new();
            bytes_field(&mut value, 1, tag.as_bytes());
            key(&mut value, 2, 5);
            value.extend_from_slice(&v.to_le_bytes());
            bytes_field(&mut summary, 1, &value);
        }
        let mut payload = Vec::new();
        bytes_field(&mut payload, 5, &summary);
        self.record(&event(wall_time, step, &payload))?;
        self.out.flush()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The numeric fields of a `metrics.jsonl` line (every key but `step`), as scalars.
pub fn scalars_of(line: &serde_json::Value) -> Vec<(&str, f32)> {
    line.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "step")
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.as_str(), x as f32)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same events as `tests/golden/tensorboard/make_events_golden.py` writes with
    /// TensorBoard's own RecordWriter and protos: byte for byte.
    #[test]
    fn events_equal_tensorboards_own_bytes() -> std::io::Result<()> {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/tensorboard/events.out.tfevents.golden");
        let dir = std::env::temp_dir().join(format!("sf-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("events.out.tfevents.test");
        let mut w = EventWriter::create_file(&path, 1_700_000_000.0)?;
        w.session_start(3, 1_700_000_001.0)?;
        w.scalars(
            3,
            1_700_000_002.25,
            &[
                ("reward/overall", 0.5),
                ("actor/pg_loss", -0.125),
                ("val/accuracy", 0.3125),
            ],
        )?;
        w.scalars(
            4,
            1_700_000_003.5,
            &[
                ("reward/overall", 0.75),
                ("actor/pg_loss", 0.0),
                ("timing/step_s", 1.0e-3),
            ],
        )?;
        drop(w);
        let (got, want) = (std::fs::read(&path)?, std::fs::read(&golden)?);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got.len(), want.len(), "lengths differ");
        assert!(got == want, "bytes differ from TensorBoard's");
        Ok(())
    }

    #[test]
    fn metrics_lines_become_scalars_without_the_step() {
        let line = serde_json::json!({"step": 3, "reward/overall": 0.5, "note": "x", "n": 2});
        let mut s = scalars_of(&line);
        s.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(s, vec![("n", 2.0), ("reward/overall", 0.5)]);
    }
}
