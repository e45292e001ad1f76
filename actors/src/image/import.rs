//! `batos image import FILE --data-dir DIR`: a new, working batos from one image, on this machine or another.
//!
//! The data files go into DIR; the memory rows (an export carries them) into a fresh LanceDB table there;
//! `settings.toml` and `codex.toml` into the config folder, rewritten for their new place: `data_dir` and
//! `codex_path` point at DIR and the new codex, each persona on an adapter points at DIR's copy of it, and the
//! base model keeps the path it had when that file exists here (else the operator is told to place it). The
//! event sequence continues after the image's reservation, and the image itself becomes DIR's first
//! generation, so the new mind has a backup from its first second.

use std::path::{Path, PathBuf};

use super::boot::{dir, image_path};
use super::{boot, seq, ImageError, ImageInfo};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The new `settings.toml` (start the mind with `batos run --config` this).
    pub settings: PathBuf,
    /// Data files written.
    pub files: usize,
    /// Memory rows written (`None`: the image carried none; memory starts empty).
    pub memory_rows: Option<u64>,
    /// Personas pointed at their adapter's new copy.
    pub adapters: Vec<String>,
    /// Whether the base model named in the image exists on this machine.
    pub base_model_found: bool,
    /// The image as DIR's first generation.
    pub image: ImageInfo,
}

fn empty_or_absent(dir: &Path) -> Result<bool, ImageError> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(ImageError::io("cannot list", dir, e)),
    }
}

fn absolute(p: &Path) -> Result<PathBuf, ImageError> {
    std::path::absolute(p).map_err(|e| ImageError::io("cannot resolve", p, e))
}

/// Imports `file` into `data_dir` (absent or empty), writing the configuration into `config_dir`.
pub async fn import(
    file: &Path,
    data_dir: &Path,
    config_dir: &Path,
) -> Result<Imported, ImageError> {
    let (header, contents, bytes) = boot::open(file)?;
    let (data_dir, config_dir) = (absolute(data_dir)?, absolute(config_dir)?);
    if !empty_or_absent(&data_dir)? {
        return Err(ImageError::Invalid(format!(
            "{} is not empty: an image is imported into a new data folder",
            data_dir.display()
        )));
    }
    let settings_path = config_dir.join("settings.toml");
    let codex_path = config_dir.join("codex.toml");
    for p in [&settings_path, &codex_path] {
        if p.exists() {
            return Err(ImageError::Invalid(format!(
                "{} exists: choose a config folder without settings.toml and codex.toml",
                p.display()
            )));
        }
    }
    let m = &contents.manifest;
    let mut doc: toml_edit::DocumentMut = m.settings.parse().map_err(|e| {
        ImageError::Corrupt(format!("the image's settings.toml does not parse: {e}"))
    })?;
    doc["data_dir"] = toml_edit::value(data_dir.display().to_string());
    doc["codex_path"] = toml_edit::value(codex_path.display().to_string());
    let mut adapters = Vec::new();
    for (name, p) in &m.personas {
        if let Some(a) = &p.adapter {
            let model = format!("lora:{}", data_dir.join("adapters").join(a).display());
            doc["personas"][name.as_str()]["model"] = toml_edit::value(model);
            adapters.push(name.clone());
        }
    }
    let base_model_found = match &m.base_model {
        Some(b) if Path::new(b).is_file() => {
            doc["llm"]["embedded"]["model_path"] = toml_edit::value(b.as_str());
            true
        }
        _ => false,
    };
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| ImageError::io("cannot create", &data_dir, e))?;
    let files: Vec<(&str, &[u8])> = contents
        .files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    boot::write_tree(&data_dir, &files)?;
    let memory_rows = match (&contents.memory, &m.memory) {
        (Some(ipc), Some(rec)) => Some(
            crate::memory::restore_rows(&data_dir.join("memory"), &rec.table, ipc)
                .await
                .map_err(|e| ImageError::Io(format!("cannot restore the memory rows: {e}")))?,
        ),
        _ => None,
    };
    seq::write(&seq::path(&data_dir), m.seq_mark.max(m.event_seq))?;
    let first = image_path(&dir(&data_dir), m.generation.max(header.generation).max(1));
    let raw = std::fs::read(file).map_err(|e| ImageError::io("cannot read", file, e))?;
    crate::fsutil::atomic_write(&first, &raw)
        .map_err(|e| ImageError::io("cannot write", &first, e))?;
    crate::fsutil::atomic_write(&codex_path, m.codex.as_bytes())
        .map_err(|e| ImageError::io("cannot write", &codex_path, e))?;
    // Last: a settings.toml exists only once everything it points at does.
    crate::fsutil::atomic_write(&settings_path, doc.to_string().as_bytes())
        .map_err(|e| ImageError::io("cannot write", &settings_path, e))?;
    Ok(Imported {
        files: contents.files.len(),
        image: boot::info(&first, &contents, bytes, "import"),
        data_dir,
        settings: settings_path,
        memory_rows,
        adapters,
        base_model_found,
    })
}
