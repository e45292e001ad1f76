//! The living image (issue 17): the whole mind as one versioned, checked, portable file.
//!
//! Every organ already writes its own state atomically as it changes (checkpoints, codex, settings, tools,
//! goals, datasets, adapters, the LanceDB table): those files are the mind's change log, durable to the
//! instant. What they do not give is one consistent picture: nothing to copy to another machine, nothing to
//! fall back on when a file is lost, no way to say "this was the mind at 10:42". The image is that picture,
//! written the way a Smalltalk image is: write the new one beside the old, then drop the oldest.
//!
//! ```text
//!  tick (image.tick_ms) ──▶ ImageActor ── every image.interval_s, or image_save ──▶ image/image-<gen>.img
//!       │                      │  files of data_dir (each read whole: its owner writes it atomically)
//!       │                      │  settings.toml + codex.toml text, personas (model, adapter digest, generation)
//!       │                      │  memory: table + LanceDB version (an export: every row, as Arrow IPC)
//!       │                      └─ rolling: the newest image.keep generations stay
//!       └─ event sequence: data_dir/events.seq reserves image.seq_reserve numbers ahead of use
//!
//!  boot ──▶ newest image whose checksum verifies (a torn/corrupt one is set aside to image/corrupt/,
//!           an image of a newer format refuses the boot) ──▶ files the data folder lost are restored
//!           from it ──▶ the event sequence continues past every number an earlier life reserved
//!  batos image import FILE --data-dir DIR ──▶ a new mind: files, memory rows, settings and codex rewritten
//!           for DIR, the image itself as its first generation
//! ```
//!
//! **The file** ([`format`]): `BATOSIMG`, the format version (u32 LE, read before anything else so a newer
//! format is refused, never misread), a JSON header (writer version, created-at, generation, payload length,
//! SHA-256 of the payload), then the payload: a tar stream whose first entry is the manifest — named fields in
//! MessagePack (`rmp_serde::to_vec_named`: positional arrays would break old files when a field is added) —
//! then `files/<path>` per data file and, in an export, `memory.arrow`. Writes go through
//! [`crate::fsutil::atomic_write`] (temp file, fsync, rename, fsync of the directory): a kill at any instant
//! leaves the previous generation whole and, at worst, a temp file that the next start removes.
//!
//! **Memory by pointer, except in an export.** A periodic image records the table's name, LanceDB version and
//! row count, not its rows: LanceDB is itself versioned and append-only, 100k rows with their vectors are
//! hundreds of megabytes, and copying them every few minutes would make saving cost more than thinking. An
//! export must stand alone, so it carries every row as one Arrow IPC stream (rows, not LanceDB's files: a
//! stream is independent of LanceDB's on-disk version and of compaction running meanwhile).
//!
//! **Consistency.** Each file is read whole and each was written atomically by its owner, so no file is torn;
//! across files the picture is the one a crash at that moment would leave, which every organ already recovers
//! from at start (checkpoints are claimed and resumed, the codex ledger settles, the Curator's sets are
//! append-only). A periodic save is skipped when nothing changed since the last one.
//!
//! **Formats** ([`migrate`]): format 1 had no personas section, no sequence reservation and no memory record;
//! format 2 (written now) adds them. Old images are read by explicit, tested steps (a format-1 fixture is kept
//! in the repository); an image of a format newer than [`FORMAT`] is refused with a message naming both.

mod actor;
pub mod boot;
pub mod format;
pub mod import;
mod messages;
pub mod migrate;
pub mod payload;
pub mod seq;
pub mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use batos_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

pub use actor::{ImageActor, IMAGE_NAME};
pub use boot::{boot, Booted};
pub use import::{import, Imported};
pub use messages::{ImageArgs, ImageMsg};

use crate::ask::{Handle, Organ, OrganError, WireError};

/// The image format this build writes, and the newest it reads.
pub const FORMAT: u32 = 2;

/// What a living image says about one persona.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersonaImage {
    /// The model it thinks with (`lora:<path>` for an adapter on the embedded engine).
    pub model: String,
    /// The adapter's file name under `data_dir/adapters/` (its SHA-256 and `.gguf`) when the model is one:
    /// an import points the persona at its own copy.
    pub adapter: Option<String>,
    /// Its generation when the image was taken (a swap or a restart makes a new one).
    pub generation: u64,
}

/// What a living image holds of the memory table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryRecord {
    /// The table's name (`memory.table`).
    pub table: String,
    /// Its LanceDB version when the image was taken.
    pub version: u64,
    /// Its rows then.
    pub rows: u64,
    /// Whether the rows are in the image (`memory.arrow`): true in an export.
    pub included: bool,
}

/// One data file in an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Relative to `data_dir`, `/`-separated.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
}

/// The manifest of a format-2 image (every older format is migrated to this shape when read).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The format it was written in (after migration: [`FORMAT`]).
    pub format: u32,
    /// The batos version that wrote it.
    pub writer: String,
    /// Unix seconds.
    pub created_at: f64,
    /// Its generation: 1 for a mind's first image, +1 per save.
    pub generation: u64,
    /// The last event sequence number assigned when it was taken.
    pub event_seq: u64,
    /// Every number up to this may have been used: a mind started from the image numbers its events after it.
    pub seq_mark: u64,
    /// Each persona's model and generation.
    pub personas: BTreeMap<String, PersonaImage>,
    /// `settings.toml` as it was on disk (persona overrides and recorded swaps live there).
    pub settings: String,
    /// `codex.toml` as it was on disk (amendments committed into it; their history is `amendments.json`).
    pub codex: String,
    /// Where the embedded engine's base model was (absolute): an import on this machine points there.
    pub base_model: Option<String>,
    /// The memory table; `None` when memory did not answer (a periodic image is still worth taking).
    pub memory: Option<MemoryRecord>,
    /// The data files, sorted by path.
    pub files: Vec<FileEntry>,
}

/// An image on disk, as `status` and `image.saved` describe it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    /// Its generation.
    pub generation: u64,
    /// Where it is.
    pub path: String,
    /// Its size, envelope included.
    pub bytes: u64,
    /// Unix seconds when it was taken.
    pub created_at: f64,
    /// Data files in it.
    pub files: usize,
    /// Memory rows it points to (or holds, in an export).
    pub memory_rows: Option<u64>,
    /// How long writing it took.
    pub duration_ms: u64,
    /// `boot`, `interval`, `command`, `export` or `import`.
    pub reason: String,
}

/// The image organ's state, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageStatus {
    /// The newest image (taken in this life, or found at boot).
    pub last: Option<ImageInfo>,
    /// Generations kept in `data_dir/image/`.
    pub kept: usize,
    /// Seconds between periodic saves (0: only on command).
    pub interval_s: u64,
    /// Event numbers up to this are reserved on disk.
    pub seq_reserved: u64,
}

/// Why an image could not be written, read or used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The file is not a whole, unaltered image: bad magic, truncated, checksum mismatch, unreadable payload.
    #[error("{0}")]
    Corrupt(String),
    /// Written by a newer batos.
    #[error("{path} is a living image of format {format}; this batos ({writer}) reads formats up to {supported}: upgrade batos, or move the file out of the image folder")]
    Newer {
        /// The file.
        path: String,
        /// Its format.
        format: u32,
        /// [`FORMAT`].
        supported: u32,
        /// This build's version.
        writer: String,
    },
    /// Bad input (an export path that is not absolute, an import into a folder that is not empty).
    #[error("{0}")]
    Invalid(String),
    /// Memory did not answer where the rows were needed (an export).
    #[error("memory is unavailable: {0}")]
    Memory(String),
}

impl ImageError {
    pub(crate) fn io(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        ImageError::Io(format!("{what} {}: {e}", path.display()))
    }
}

impl WireError for ImageError {
    fn code(&self) -> ErrorCode {
        match self {
            ImageError::Invalid(_) => ErrorCode::BadRequest,
            ImageError::Memory(_) => ErrorCode::Unavailable,
            ImageError::Io(_) | ImageError::Corrupt(_) | ImageError::Newer { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

/// The one way to reach the image organ. Timeouts: `gateway.actor_call_timeout_ms` for status; saves and
/// exports may read every file and every memory row, so they wait `memory.call_timeout_ms` more.
pub type ImageHandle = Handle<ImageActor>;

impl Organ for ImageActor {
    type Msg = ImageMsg;
    type Error = ImageError;
    const LABEL: &'static str = "image";
    const NAME: &'static str = IMAGE_NAME;

    fn crash() -> ImageMsg {
        ImageMsg::Crash
    }
}

impl Handle<ImageActor> {
    /// The timeout of a save or an export: the usual one plus memory's, read now.
    fn long_timeout(&self) -> Duration {
        let s = self.settings().load();
        Duration::from_millis(s.gateway.actor_call_timeout_ms + s.memory.call_timeout_ms)
    }

    /// Saves a new generation now.
    pub async fn save(&self) -> Result<ImageInfo, OrganError<ImageError>> {
        self.call_within(self.long_timeout(), |r| {
            ImageMsg::Save("command".into(), Some(r))
        })
        .await
    }

    /// Writes a self-contained image (memory rows included) to `path`, which must be absolute.
    pub async fn export(&self, path: PathBuf) -> Result<ImageInfo, OrganError<ImageError>> {
        if !path.is_absolute() {
            return Err(OrganError::Refused(ImageError::Invalid(format!(
                "export path must be absolute (it is written by the daemon): {}",
                path.display()
            ))));
        }
        self.call_within(self.long_timeout(), |r| ImageMsg::Export(path, r))
            .await
    }

    /// The last image and the organ's settings.
    pub async fn status(&self) -> Result<ImageStatus, OrganError<ImageError>> {
        Ok(self.ask(ImageMsg::Status).await?)
    }
}
