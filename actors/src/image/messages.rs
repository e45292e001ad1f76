//! What the image organ is started with ([`ImageArgs`]) and the messages it handles ([`ImageMsg`]).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::RpcReplyPort;

use super::{Booted, ImageError, ImageInfo, ImageStatus};
use crate::events::EventHub;
use crate::memory::MemoryHandle;
use crate::personas::Personas;
use crate::settings::Settings;

/// Start-up arguments of the image organ.
#[derive(Clone)]
pub struct ImageArgs {
    /// The data folder it pictures (`data_dir/image/` holds the generations).
    pub data_dir: PathBuf,
    /// `settings.toml` (its text goes into each image).
    pub settings_path: PathBuf,
    /// Live settings (`[image]`, `codex_path`, `memory.table`, the base model's path).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Event bus: `image.saved`, and the sequence numbers to reserve.
    pub hub: Arc<EventHub>,
    /// The personas' models and generations.
    pub personas: Arc<Personas>,
    /// The memory table's version, or rows.
    pub memory: MemoryHandle,
    /// What boot found: the reservation made and the newest image.
    pub booted: Booted,
}

/// Messages the image organ handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum ImageMsg {
    /// Save a new generation (`reason`: `interval` or `command`); `None` when nothing changed since the last
    /// (periodic saves only).
    Save(String, Option<RpcReplyPort<Result<ImageInfo, ImageError>>>),
    /// Write a self-contained image to a file.
    Export(PathBuf, RpcReplyPort<Result<ImageInfo, ImageError>>),
    /// Its state.
    Status(RpcReplyPort<ImageStatus>),
    /// Look at the clock and the event sequence's reservation (sent by the ticker job).
    Tick,
    /// Fault injection: panic.
    Crash,
}
