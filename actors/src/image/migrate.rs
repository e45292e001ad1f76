//! Reading every image format this build knows, as the current [`Manifest`]: one explicit step per version
//! (Erlang's `code_change`), each tested against a fixture kept in the repository.
//!
//! - Format 1: writer, created-at, generation, the last event number, settings and codex text, the files.
//! - Format 2: adds each persona's model, adapter and generation, the event sequence's reservation
//!   (`seq_mark`), the base model's path and the memory table's record.
//!
//! Manifests are MessagePack maps with named fields (`to_vec_named`), so a reader of one format never
//! misplaces a field of another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FileEntry, ImageError, Manifest, PersonaImage, FORMAT};

/// The manifest of a format-1 image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestV1 {
    /// 1.
    pub format: u32,
    /// The batos version that wrote it.
    pub writer: String,
    /// Unix seconds.
    pub created_at: f64,
    /// Its generation.
    pub generation: u64,
    /// The last event sequence number assigned when it was taken.
    pub event_seq: u64,
    /// `settings.toml`'s text.
    pub settings: String,
    /// `codex.toml`'s text.
    pub codex: String,
    /// The data files.
    pub files: Vec<FileEntry>,
}

fn unreadable(format: u32, e: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt(format!("unreadable format-{format} manifest: {e}"))
}

/// Decodes a manifest written in `format` and migrates it to the current one.
pub fn manifest(format: u32, bytes: &[u8]) -> Result<Manifest, ImageError> {
    match format {
        1 => {
            let v1: ManifestV1 = rmp_serde::from_slice(bytes).map_err(|e| unreadable(1, e))?;
            Ok(v1_to_v2(v1))
        }
        2 => rmp_serde::from_slice(bytes).map_err(|e| unreadable(2, e)),
        other => Err(ImageError::Corrupt(format!(
            "no reader for image format {other} (this build reads 1..={FORMAT})"
        ))),
    }
}

/// Encodes a current manifest (named fields).
pub fn encode(m: &Manifest) -> Result<Vec<u8>, ImageError> {
    rmp_serde::to_vec_named(m)
        .map_err(|e| ImageError::Io(format!("cannot encode the manifest: {e}")))
}

/// Encodes a format-1 manifest (the fixture's writer; nothing writes format 1 any more).
pub fn encode_v1(m: &ManifestV1) -> Result<Vec<u8>, ImageError> {
    rmp_serde::to_vec_named(m)
        .map_err(|e| ImageError::Io(format!("cannot encode the manifest: {e}")))
}

/// Format 1 → 2. Personas come from the settings it carries (their models were recorded there; generations
/// were not, so each is 0); every event number up to the last one it saw counts as used; it had no record
/// of the memory table (the table is taken as it is) nor of the base model's path.
pub fn v1_to_v2(v1: ManifestV1) -> Manifest {
    Manifest {
        format: FORMAT,
        writer: v1.writer,
        created_at: v1.created_at,
        generation: v1.generation,
        event_seq: v1.event_seq,
        seq_mark: v1.event_seq,
        personas: personas_of(&v1.settings),
        settings: v1.settings,
        codex: v1.codex,
        base_model: None,
        memory: None,
        files: v1.files,
    }
}

/// Each `[personas.<NAME>] model` of a settings text, with the adapter file it names, if any.
pub fn personas_of(settings: &str) -> BTreeMap<String, PersonaImage> {
    let Ok(doc) = settings.parse::<toml_edit::DocumentMut>() else {
        return BTreeMap::new();
    };
    let Some(table) = doc.get("personas").and_then(|p| p.as_table_like()) else {
        return BTreeMap::new();
    };
    table
        .iter()
        .filter_map(|(name, t)| {
            let model = t.get("model")?.as_str()?.to_string();
            Some((
                name.to_string(),
                PersonaImage {
                    adapter: adapter_of(&model),
                    model,
                    generation: 0,
                },
            ))
        })
        .collect()
}

/// The adapter file a `lora:<path>` model names, when it lies in an `adapters` folder (where the forge puts
/// them, content-addressed).
pub fn adapter_of(model: &str) -> Option<String> {
    let path = std::path::Path::new(model.strip_prefix("lora:")?);
    let dir = path.parent()?.file_name()?;
    (dir == "adapters")
        .then(|| path.file_name())??
        .to_str()
        .map(str::to_string)
}
