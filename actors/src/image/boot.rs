//! What a starting daemon does with its images, before any organ runs: find the newest one that verifies
//! (setting aside the torn or corrupt ones above it, refusing to start on one of a newer format), restore
//! from it what the data folder has lost, and reserve the event numbers of this life.
//!
//! What "lost" means is deliberately narrow: a top-level entry of the data folder (a file such as
//! `amendments.json`, or a whole organ folder such as `tools/` or `checkpoints/`) that the image has and the
//! folder does not. A single file missing inside a folder that exists was most likely removed on purpose (a
//! forgotten task's checkpoint, a pruned adapter); bringing it back would resurrect a finished task. The live
//! files are newer than any image, so they always win.

use std::path::{Path, PathBuf};

use super::payload::{self, Contents};
use super::{format, seq, ImageError, ImageInfo};

/// What boot found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Booted {
    /// The first event of this life is numbered after this.
    pub last_seq: u64,
    /// Event numbers up to this are reserved on disk.
    pub reserved: u64,
    /// The newest image that verified.
    pub newest: Option<ImageInfo>,
    /// The highest generation number found (corrupt ones included): the next save is numbered after it.
    pub generation: u64,
    /// Top-level entries restored from the newest image.
    pub restored: Vec<String>,
    /// Images set aside as corrupt (moved to `image/corrupt/`).
    pub set_aside: Vec<String>,
}

/// The image folder of a data folder.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("image")
}

/// The file of generation `generation`.
pub fn image_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("image-{generation:012}.img"))
}

/// The generations in `dir`, newest first.
pub fn generations(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let g = name
                .strip_prefix("image-")?
                .strip_suffix(".img")?
                .parse()
                .ok()?;
            Some((g, e.path()))
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.0));
    out
}

/// Reads, checks and unpacks an image file.
pub fn open(path: &Path) -> Result<(format::Header, Contents, u64), ImageError> {
    let (fmt, header, payload) = format::read(path)?;
    let contents = payload::unpack(fmt, &payload)?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or_default();
    Ok((header, contents, bytes))
}

/// The description of an opened image.
pub fn info(path: &Path, c: &Contents, bytes: u64, reason: &str) -> ImageInfo {
    ImageInfo {
        generation: c.manifest.generation,
        path: path.display().to_string(),
        bytes,
        created_at: c.manifest.created_at,
        files: c.manifest.files.len(),
        memory_rows: c.manifest.memory.as_ref().map(|m| m.rows),
        duration_ms: 0,
        reason: reason.into(),
    }
}

/// Boots `data_dir` from its images (see the module's essay), reserving `reserve` event numbers.
pub fn boot(data_dir: &Path, reserve: u64) -> Result<Booted, ImageError> {
    let dir = dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| ImageError::io("cannot create", &dir, e))?;
    crate::fsutil::clean_stale_temps(&dir);
    // A restore killed before its renames left its staging folder; the entries it held are restored again.
    let stage = data_dir.join(STAGE);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| ImageError::io("cannot remove", &stage, e))?;
    }
    let mut booted = Booted::default();
    let mut chosen = None;
    for (generation, path) in generations(&dir) {
        booted.generation = booted.generation.max(generation);
        match open(&path) {
            Ok((_, contents, bytes)) => {
                chosen = Some((path, contents, bytes));
                break;
            }
            Err(e @ ImageError::Newer { .. }) => return Err(e),
            Err(e) => {
                let aside = dir.join("corrupt");
                let name = path
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default();
                std::fs::create_dir_all(&aside)
                    .and_then(|_| std::fs::rename(&path, aside.join(&name)))
                    .map_err(|io| ImageError::io("cannot set aside", &path, io))?;
                tracing::error!(event = "image.set_aside", path = %path.display(), moved_to = %aside.display(), error = %e, "a living image does not verify: set aside, the previous generation is used");
                booted.set_aside.push(path.display().to_string());
            }
        }
    }
    let mut image_mark = 0;
    if let Some((path, contents, bytes)) = chosen {
        booted.restored = restore_lost(data_dir, &contents)?;
        if !booted.restored.is_empty() {
            tracing::warn!(event = "image.restored", image = %path.display(), entries = ?booted.restored, "the data folder had lost these; restored from the newest living image");
        }
        if let Some(m) = &contents.manifest.memory {
            if m.rows > 0 && !data_dir.join("memory").exists() {
                // A generation points at the table; only an export carries its rows.
                tracing::error!(event = "image.memory_lost", image = %path.display(), table = %m.table, version = m.version, rows = m.rows, "the memory table is gone and this image only points to it: memory starts empty (an export restores it: batos image import)");
            }
        }
        image_mark = contents.manifest.seq_mark.max(contents.manifest.event_seq);
        booted.newest = Some(info(&path, &contents, bytes, "boot"));
    }
    let seq_file = seq::path(data_dir);
    let on_disk = seq::read(&seq_file).unwrap_or_else(|e| {
        tracing::error!(event = "image.seq_unreadable", path = %seq_file.display(), error = %e, "the event sequence's reservation is unreadable: continuing after the newest image's");
        0
    });
    booted.last_seq = on_disk.max(image_mark);
    booted.reserved = booted.last_seq.saturating_add(reserve);
    seq::write(&seq_file, booted.reserved)?;
    Ok(booted)
}

/// Writes back every top-level entry of the image that `data_dir` lacks entirely; answers their names.
pub fn restore_lost(data_dir: &Path, c: &Contents) -> Result<Vec<String>, ImageError> {
    let lost: Vec<(&str, &[u8])> = c
        .files
        .iter()
        .filter(|(path, _)| {
            let top = path.split('/').next().unwrap_or(path);
            !data_dir.join(top).exists()
        })
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    write_tree(data_dir, &lost)
}

/// The staging folder of [`write_tree`] (a leftover of a killed restore is removed before the next one).
const STAGE: &str = ".tmp-restore";

/// Writes `files` (relative paths) into `root`, whose top-level entries they name must not exist yet, so that
/// each top-level entry appears whole or not at all: everything is written under `root/.tmp-restore/` without
/// a sync per file, made durable by one `syncfs`, then each top-level entry is renamed into place and `root`
/// fsynced. A kill at any moment leaves whole entries and a staging folder the next restore removes (10,000
/// files: one sync instead of 20,000). Answers the top-level names written, in order.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) -> Result<Vec<String>, ImageError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let stage = root.join(STAGE);
    let io = |what: &str, p: &Path, e: std::io::Error| ImageError::io(what, p, e);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| io("cannot remove", &stage, e))?;
    }
    let mut tops: Vec<String> = Vec::new();
    for (path, data) in files {
        let target = stage.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        }
        std::fs::write(&target, data).map_err(|e| io("cannot write", &target, e))?;
        let top = path.split('/').next().unwrap_or(path).to_string();
        if !tops.contains(&top) {
            tops.push(top);
        }
    }
    let dir = std::fs::File::open(&stage).map_err(|e| io("cannot open", &stage, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| io("cannot sync", &stage, e.into()))?;
    for top in &tops {
        let (from, to) = (stage.join(top), root.join(top));
        std::fs::rename(&from, &to).map_err(|e| io("cannot move into place", &to, e))?;
    }
    crate::fsutil::sync_dir(root).map_err(|e| io("cannot sync", root, e))?;
    std::fs::remove_dir_all(&stage).map_err(|e| io("cannot remove", &stage, e))?;
    Ok(tops)
}
