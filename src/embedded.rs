//! The embedded default policy: a tiny Qwen2.5-VL checkpoint shipped inside the binary.

use std::path::Path;

/// Writes the embedded checkpoint's files into `dir`.
pub fn unpack(dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!(
        "{}: the embedded checkpoint is not built into this binary yet; set worker.actor.model.model_path=DIR",
        dir.display()
    )
}
