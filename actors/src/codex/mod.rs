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
//!
//! An approval writes two files (codex.toml and `data_dir/amendments.json`); [`ledger`] orders the writes
//! so that a kill at any point is settled at the next start: the amendment is committed exactly when
//! codex.toml holds it.

pub mod actor;
pub mod amend;
pub mod inquiry;
pub mod ledger;
mod messages;
pub mod reload;

use std::sync::Arc;

use async_trait::async_trait;
use batos_protocol::ErrorCode;

pub use crate::principles::{Codex, CodexError, PersonaCodex, MAX_TEXT_BYTES};
pub use actor::{CodexActor, CodexCmdError, CODEX_NAME};
pub use messages::{CodexArgs, CodexMsg, LogLevelFn};

use crate::ask::{Handle, Organ, OrganError, WireError};
use crate::ports::{ModelRecorder, RecordFailed};
pub use amend::AmendmentStatus;
use amend::{Amendment, Proposal};

/// The one way to reach the codex organ. Timeouts come from `gateway.actor_call_timeout_ms` in the live
/// settings, read at each call.
pub type CodexHandle = Handle<CodexActor>;

impl Organ for CodexActor {
    type Msg = CodexMsg;
    type Error = CodexCmdError;
    const LABEL: &'static str = "codex";
    const NAME: &'static str = CODEX_NAME;

    fn crash() -> CodexMsg {
        CodexMsg::Crash
    }
}

impl Handle<CodexActor> {
    /// The codex in force.
    pub async fn get(&self) -> Result<Arc<Codex>, OrganError<CodexCmdError>> {
        Ok(self.ask(CodexMsg::Get).await?)
    }

    /// Every amendment, newest first.
    pub async fn list(&self) -> Result<Vec<Amendment>, OrganError<CodexCmdError>> {
        Ok(self.ask(CodexMsg::List).await?)
    }

    /// Stores a proposal as pending (never applied without approval).
    pub async fn propose(
        &self,
        proposal: Proposal,
        task_id: Option<String>,
    ) -> Result<Amendment, OrganError<CodexCmdError>> {
        self.call(|reply| CodexMsg::Propose {
            proposal,
            task_id,
            reply,
        })
        .await
    }

    /// The Architect approves: the amendment is committed to codex.toml and goes live.
    pub async fn approve(&self, id: String) -> Result<Amendment, OrganError<CodexCmdError>> {
        self.call(|r| CodexMsg::Approve(id, r)).await
    }

    /// The Architect rejects, with a reason shown to the persona.
    pub async fn reject(
        &self,
        id: String,
        reason: String,
    ) -> Result<Amendment, OrganError<CodexCmdError>> {
        self.call(|r| CodexMsg::Reject(id, reason, r)).await
    }

    /// Records `persona`'s new model in settings.toml and in the live settings, as one step of the mailbox
    /// that also applies reloads.
    pub async fn record_model(
        &self,
        persona: String,
        model: String,
    ) -> Result<(), OrganError<CodexCmdError>> {
        self.call(|reply| CodexMsg::RecordModel {
            persona,
            model,
            reply,
        })
        .await
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
            CodexCmdError::Write(_) => ErrorCode::Internal,
        }
    }
}
