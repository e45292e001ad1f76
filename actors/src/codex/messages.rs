//! What the codex organ is started with ([`CodexArgs`]) and the messages it handles ([`CodexMsg`]).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::RpcReplyPort;

use super::amend::{Amendment, Proposal};
use super::{Codex, CodexCmdError};
use crate::events::EventHub;
use crate::personas::Personas;
use crate::ports::TaskResumer;
use crate::settings::Settings;

/// Applies a log level directive; returns whether it changed anything.
pub type LogLevelFn = Arc<dyn Fn(&str) -> Result<bool, String> + Send + Sync>;

/// Start-up arguments.
#[derive(Clone)]
pub struct CodexArgs {
    /// `config/codex.toml`.
    pub path: PathBuf,
    /// `config/settings.toml`, watched too (None: no settings reload).
    pub settings_path: Option<PathBuf>,
    /// Where pending amendments are kept (`data_dir/amendments.json`).
    pub store: PathBuf,
    /// Live settings: the codex organ stores each reloaded settings.toml and each recorded swap here.
    pub live: Arc<ArcSwap<Settings>>,
    /// The personas that receive codex and settings changes.
    pub personas: Option<Arc<Personas>>,
    /// Event bus.
    pub hub: Arc<EventHub>,
    /// Applies a new log level.
    pub log_level: Option<LogLevelFn>,
    /// Where a task paused for an amendment is resumed once the amendment is decided (the orchestrator).
    pub tasks: Arc<dyn TaskResumer>,
}

/// Messages the codex actor handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum CodexMsg {
    /// The codex currently in force.
    Get(RpcReplyPort<Arc<Codex>>),
    /// Store a proposal as pending (never applied without approval).
    Propose {
        /// The persona's proposal; checked against the codex in force (else `Invalid`) before it is stored.
        proposal: Proposal,
        /// The paused task that raised it.
        task_id: Option<String>,
        /// Answer.
        reply: RpcReplyPort<Result<Amendment, CodexCmdError>>,
    },
    /// Every amendment, newest first.
    List(RpcReplyPort<Vec<Amendment>>),
    /// The Architect approves: commit it.
    Approve(String, RpcReplyPort<Result<Amendment, CodexCmdError>>),
    /// The Architect rejects amendment `.0` with reason `.1`; a paused task that raised it resumes with
    /// the reason as guidance.
    Reject(
        String,
        String,
        RpcReplyPort<Result<Amendment, CodexCmdError>>,
    ),
    /// Record a persona's new model in settings.toml and the live settings (the one writer of that file).
    RecordModel {
        /// Persona whose `[personas.<NAME>] model` key is rewritten.
        persona: String,
        /// The model its new actor already thinks with (the swap is live before it is recorded).
        model: String,
        /// Answer, once both are updated.
        reply: RpcReplyPort<Result<(), CodexCmdError>>,
    },
    /// From the file watcher.
    FilesChanged(Vec<PathBuf>),
    /// Fault injection: panic.
    Crash,
}
