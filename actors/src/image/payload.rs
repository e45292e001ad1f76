//! The payload of a living image: a tar stream whose first entry is the manifest, then `files/<path>` per data
//! file and, in an export, `memory.arrow`. Also which files of a data folder belong in an image, and how
//! they are read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use super::{migrate, FileEntry, ImageError, Manifest};

/// Name of the manifest entry.
const MANIFEST: &str = "manifest";
/// Prefix of the data files' entries.
const FILES: &str = "files/";
/// Name of the memory rows' entry.
const MEMORY: &str = "memory.arrow";

/// Top-level names of a data folder that are not part of the mind: the images themselves, the memory table
/// (recorded by version, or carried as rows), the base model, logs, the sandbox's runtime state, the lock,
/// the gateway's secret (a copied mind gets its own), the event sequence's reservation (in the manifest) and
/// `config/`, where `batos image import` puts settings.toml and codex.toml by default (in the manifest too).
pub const NOT_IN_IMAGE: &[&str] = &[
    "image",
    "memory",
    "models",
    "logs",
    "sandbox",
    "batos.lock",
    "gateway.token",
    "events.seq",
    "config",
];

/// Data files as an image holds them: each one's path relative to `data_dir` (`/`-separated) and its bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// What an image holds, unpacked and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    /// The manifest, migrated to the current format.
    pub manifest: Manifest,
    /// Each data file's bytes by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The memory rows (Arrow IPC), when included.
    pub memory: Option<Vec<u8>>,
}

fn corrupt(why: String) -> ImageError {
    ImageError::Corrupt(format!("image payload: {why}"))
}

/// A relative path of plain components only: what an image may name (never `..`, never absolute).
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Packs a manifest (already encoded), files and memory rows into a payload.
pub fn pack(
    manifest: &[u8],
    files: &[(String, Vec<u8>)],
    memory: Option<&[u8]>,
) -> Result<Vec<u8>, ImageError> {
    let err = |e: std::io::Error| ImageError::Io(format!("cannot build the image payload: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data)
    };
    add(MANIFEST, manifest).map_err(err)?;
    for (path, data) in files {
        add(&format!("{FILES}{path}"), data).map_err(err)?;
    }
    if let Some(m) = memory {
        add(MEMORY, m).map_err(err)?;
    }
    b.into_inner().map_err(err)
}

/// Unpacks and checks a payload of `format`: the manifest is migrated to the current format, every file it
/// lists must be present with its checksum, and no entry may name a path outside the data folder.
pub fn unpack(format: u32, payload: &[u8]) -> Result<Contents, ImageError> {
    let mut archive = tar::Archive::new(std::io::Cursor::new(payload));
    let mut manifest = None;
    let mut files = BTreeMap::new();
    let mut memory = None;
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(format!("bad entry: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| corrupt(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        // An entry cannot hold more than the payload: a hostile size must not reserve memory it does not have.
        let mut data = Vec::with_capacity((entry.size() as usize).min(payload.len()));
        entry
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("entry {name}: {e}")))?;
        if name == MANIFEST {
            manifest = Some(migrate::manifest(format, &data)?);
        } else if name == MEMORY {
            memory = Some(data);
        } else if let Some(path) = name.strip_prefix(FILES) {
            if !safe_relative(path) {
                return Err(corrupt(format!("unsafe file path {path:?}")));
            }
            files.insert(path.to_string(), data);
        } else {
            return Err(corrupt(format!("unknown entry {name:?}")));
        }
    }
    let manifest = manifest.ok_or_else(|| corrupt("no manifest".into()))?;
    for f in &manifest.files {
        let data = files
            .get(&f.path)
            .ok_or_else(|| corrupt(format!("{} is listed but missing", f.path)))?;
        if super::format::sha256_hex(data) != f.sha256 {
            return Err(corrupt(format!("{} does not match its checksum", f.path)));
        }
    }
    if manifest.memory.as_ref().is_some_and(|m| m.included) != memory.is_some() {
        return Err(corrupt(
            "the manifest and the memory rows disagree on whether rows are included".into(),
        ));
    }
    Ok(Contents {
        manifest,
        files,
        memory,
    })
}

/// The data files of `data_dir` that belong in an image, sorted by path, each read whole. A file that
/// disappears while the folder is walked (a checkpoint removed as its task was forgotten) is left out; temp
/// files of an interrupted write, lock files and symbolic links are never included.
pub fn collect(data_dir: &Path) -> Result<Files, ImageError> {
    let mut out = Vec::new();
    walk(data_dir, "", &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Files) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("cannot list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("cannot list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (rel.is_empty() && NOT_IN_IMAGE.contains(&name.as_str()))
            || name.starts_with(".tmp-")
            || name.ends_with(".lock")
        {
            continue;
        }
        let path = entry.path();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, &child, out)?;
        } else if kind.is_file() {
            match std::fs::read(&path) {
                Ok(data) => out.push((child, data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("cannot read", &path, e)),
            }
        }
    }
    Ok(())
}

/// The manifest's entries for `files`.
pub fn entries(files: &[(String, Vec<u8>)]) -> Vec<FileEntry> {
    files
        .iter()
        .map(|(path, data)| FileEntry {
            path: path.clone(),
            bytes: data.len() as u64,
            sha256: super::format::sha256_hex(data),
        })
        .collect()
}
