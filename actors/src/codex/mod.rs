//! The codex organ: the governor actor that owns `config/codex.toml` (amendments proposed by personas,
//! committed only with a human's approval, hot reload of hand edits) and `config/settings.toml` (live
//! reload of tunables, and the one writer of the file: model swaps are recorded here).
//!
//! One writer per file: every write to settings.toml — a swap's new model, nothing else today — is a
//! message to this actor ([`CodexHandle::record_model`]), handled in the same mailbox as the reload of hand
//! edits. A reload can therefore never read the file between a swap's write and its update of the live
//! settings, which is what made swaps and reloads race when personas wrote the file themselves.
//!
//! ```text
//!  codex.toml  ◀─commit (approve)── CodexActor ──reload──▶ personas.apply_codex
//!  settings.toml ◀─record_model──── CodexActor ──reload──▶ live settings, sampling, swaps, log level
//!        ▲ hand edits ── notify watcher ──▶ FilesChanged
//! ```

pub mod actor;
pub mod amend;
pub mod inquiry;
pub mod reload;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use batos_protocol::ErrorCode;

pub use crate::principles::{Codex, CodexError, PersonaCodex, MAX_TEXT_BYTES};
pub use actor::{CodexActor, CodexArgs, CodexCmdError, CodexMsg, LogLevelFn, CODEX_NAME};

use crate::ask::{ask_named, tell, AskError, WireError};
use crate::personas::{ModelRecorder, RecordFailed};
use crate::settings::Settings;
use amend::{Amendment, Proposal};

const ORGAN: &str = "codex";

/// The one way to reach the codex organ. Timeouts come from `gateway.actor_call_timeout_ms` in the live
/// settings, read at each call.
#[derive(Clone)]
pub struct CodexHandle {
    settings: Arc<ArcSwap<Settings>>,
}

impl std::fmt::Debug for CodexHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodexHandle")
    }
}

impl CodexHandle {
    /// A handle reading its timeout from `settings`.
    pub fn new(settings: Arc<ArcSwap<Settings>>) -> Self {
        Self { settings }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.load().gateway.actor_call_timeout_ms)
    }

    /// The codex in force.
    pub async fn get(&self) -> Result<Arc<Codex>, CodexCmdError> {
        Ok(ask_named(ORGAN, CODEX_NAME, CodexMsg::Get, self.timeout()).await?)
    }

    /// Every amendment, newest first.
    pub async fn list(&self) -> Result<Vec<Amendment>, CodexCmdError> {
        Ok(ask_named(ORGAN, CODEX_NAME, CodexMsg::List, self.timeout()).await?)
    }

    /// Stores a proposal as pending (never applied without approval).
    pub async fn propose(
        &self,
        proposal: Proposal,
        task_id: Option<String>,
    ) -> Result<Amendment, CodexCmdError> {
        ask_named(
            ORGAN,
            CODEX_NAME,
            |reply| CodexMsg::Propose {
                proposal,
                task_id,
                reply,
            },
            self.timeout(),
        )
        .await?
    }

    /// The Architect approves: the amendment is committed to codex.toml and goes live.
    pub async fn approve(&self, id: String) -> Result<Amendment, CodexCmdError> {
        ask_named(
            ORGAN,
            CODEX_NAME,
            |r| CodexMsg::Approve(id, r),
            self.timeout(),
        )
        .await?
    }

    /// The Architect rejects, with a reason shown to the persona.
    pub async fn reject(&self, id: String, reason: String) -> Result<Amendment, CodexCmdError> {
        ask_named(
            ORGAN,
            CODEX_NAME,
            |r| CodexMsg::Reject(id, reason, r),
            self.timeout(),
        )
        .await?
    }

    /// Records `persona`'s new model in settings.toml and in the live settings, as one step of the mailbox
    /// that also applies reloads.
    pub async fn record_model(&self, persona: String, model: String) -> Result<(), CodexCmdError> {
        ask_named(
            ORGAN,
            CODEX_NAME,
            |reply| CodexMsg::RecordModel {
                persona,
                model,
                reply,
            },
            self.timeout(),
        )
        .await?
    }

    /// Fault injection: makes the codex actor panic.
    pub fn crash(&self) -> Result<(), AskError> {
        tell(ORGAN, CODEX_NAME, CodexMsg::Crash)
    }
}

#[async_trait]
impl ModelRecorder for CodexHandle {
    async fn record_model(&self, persona: &str, model: &str) -> Result<(), RecordFailed> {
        CodexHandle::record_model(self, persona.to_string(), model.to_string())
            .await
            .map_err(|e| RecordFailed(e.to_string()))
    }
}

impl WireError for CodexCmdError {
    fn code(&self) -> ErrorCode {
        match self {
            CodexCmdError::NotFound(_) => ErrorCode::NotFound,
            CodexCmdError::Conflict(_) => ErrorCode::Conflict,
            CodexCmdError::Invalid(_) => ErrorCode::BadRequest,
            CodexCmdError::Unreachable(_) => ErrorCode::Unavailable,
            CodexCmdError::Write(_) => ErrorCode::Internal,
        }
    }
}
