//! Taking and writing an image: the data files and what the organs report, into one manifest and one file.
//! Plain functions, so the kill test's child process runs exactly the code the image organ runs.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    format, migrate, payload, FileEntry, ImageError, Manifest, MemoryRecord, PersonaImage, FORMAT,
};

/// What the organs report for an image (the data files are read by [`take`]).
#[derive(Debug, Clone, Default)]
pub struct Picture {
    /// The new image's generation.
    pub generation: u64,
    /// The last event number assigned.
    pub event_seq: u64,
    /// Event numbers reserved on disk.
    pub seq_mark: u64,
    /// Each persona's model and generation.
    pub personas: BTreeMap<String, PersonaImage>,
    /// `settings.toml`'s text.
    pub settings: String,
    /// `codex.toml`'s text.
    pub codex: String,
    /// The base model's absolute path.
    pub base_model: Option<String>,
    /// The memory table's record.
    pub memory: Option<MemoryRecord>,
    /// The memory rows (Arrow IPC), in an export.
    pub memory_rows: Option<Vec<u8>>,
}

/// The manifest and the data files of `data_dir` for `picture`, taken at `now` (unix seconds).
pub fn take(
    data_dir: &Path,
    picture: &Picture,
    now: f64,
) -> Result<(Manifest, payload::Files), ImageError> {
    let files = payload::collect(data_dir)?;
    let manifest = Manifest {
        format: FORMAT,
        writer: env!("CARGO_PKG_VERSION").to_string(),
        created_at: now,
        generation: picture.generation,
        event_seq: picture.event_seq,
        seq_mark: picture.seq_mark,
        personas: picture.personas.clone(),
        settings: picture.settings.clone(),
        codex: picture.codex.clone(),
        base_model: picture.base_model.clone(),
        memory: picture.memory.clone(),
        files: payload::entries(&files),
    };
    Ok((manifest, files))
}

/// What a periodic save compares to decide that nothing changed: the files, settings, codex, personas and
/// memory version (not the time, the generation or the event numbers, which move on their own).
pub fn fingerprint(m: &Manifest) -> String {
    let mut s = String::new();
    for FileEntry { path, sha256, .. } in &m.files {
        s.push_str(path);
        s.push('\0');
        s.push_str(sha256);
        s.push('\n');
    }
    s.push_str(&m.settings);
    s.push_str(&m.codex);
    s.push_str(&format!(
        "{:?}{:?}",
        m.personas,
        m.memory.as_ref().map(|r| r.version)
    ));
    format::sha256_hex(s.as_bytes())
}

/// Writes the image of `manifest` and `files` (and memory rows) to `path` atomically and durably; answers its
/// size in bytes.
pub fn write(
    path: &Path,
    manifest: &Manifest,
    files: &[(String, Vec<u8>)],
    memory_rows: Option<&[u8]>,
) -> Result<u64, ImageError> {
    let payload = payload::pack(&migrate::encode(manifest)?, files, memory_rows)?;
    let head = format::envelope(
        manifest.format,
        &manifest.writer,
        manifest.created_at,
        manifest.generation,
        &payload,
    )?;
    crate::fsutil::atomic_write_parts(path, &[&head, &payload])
        .map_err(|e| ImageError::io("cannot write", path, e))?;
    Ok((head.len() + payload.len()) as u64)
}

/// Deletes the generations in `dir` beyond the newest `keep`; answers how many went.
pub fn prune(dir: &Path, keep: usize) -> usize {
    super::boot::generations(dir)
        .into_iter()
        .skip(keep)
        .filter(|(_, p)| std::fs::remove_file(p).is_ok())
        .count()
}
