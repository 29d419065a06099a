//! The embedded default policy: a tiny Qwen2.5-VL checkpoint (HF layout, loaded by the same code
//! as real checkpoints) compiled into the binary, so `shareflow train` runs with no download.
//! It lives in `assets/shapes-vl-tiny/`; README "Embedded policy" gives the commands that
//! regenerate it (`shareflow init-model`, then `shareflow train --graph sft`).

use std::path::Path;

macro_rules! asset {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/shapes-vl-tiny/",
                $name
            ))
            .as_slice(),
        )
    };
}

/// The checkpoint's files.
pub const FILES: &[(&str, &[u8])] = &[
    asset!("config.json"),
    asset!("generation_config.json"),
    asset!("model.safetensors"),
    asset!("tokenizer.json"),
    asset!("tokenizer_config.json"),
    asset!("chat_template.json"),
    asset!("preprocessor_config.json"),
];

/// Writes the embedded checkpoint's files into `dir` (created if needed; files already there
/// with the same content are left alone).
pub fn unpack(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|b| b == *bytes) {
            continue;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
    }
    Ok(())
}
