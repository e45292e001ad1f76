//! The typed handle of one live persona actor (one generation of one persona), the errors a persona call
//! can end with, and the guard that retires a replaced generation once the last task holding it lets go.

use std::time::Duration;

use batos_protocol::ErrorCode;
use ractor::ActorRef;
use serde_json::Value;

use super::proto::{Editable, ProtoMsg};
use crate::ask::{ask, AskError, WireError};
use crate::llm::{BackendKind, LlmError};
use crate::ports::think::{ThinkRequest, Thought};

/// Why a persona operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PersonaError {
    /// No persona of that name.
    #[error("no persona named `{0}` (known: ALFRED, BABS, BRICK, ROBIN)")]
    Unknown(String),
    /// The persona's actor did not answer (restarting, crashed mid-call, or too slow).
    #[error("persona {persona} is not available right now: {source}")]
    Unreachable {
        /// Persona whose actor did not answer.
        persona: String,
        /// How the call failed.
        source: AskError,
    },
    /// The persona answered, but its model call failed.
    #[error("{persona} could not think: {source}")]
    Model {
        /// Persona whose model call failed.
        persona: String,
        /// The backend's error.
        source: LlmError,
    },
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The swap could not be carried out.
    #[error("swap failed: {0}")]
    Swap(String),
    /// An override could not be kept on disk (nothing changed).
    #[error("{0}")]
    Store(String),
}

impl WireError for PersonaError {
    fn code(&self) -> ErrorCode {
        match self {
            PersonaError::Unknown(_) => ErrorCode::NotFound,
            PersonaError::Unreachable { .. } | PersonaError::Model { .. } => ErrorCode::Unavailable,
            PersonaError::Invalid(_) => ErrorCode::BadRequest,
            PersonaError::Swap(_) | PersonaError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// A live persona actor, as a task sees it.
#[derive(Debug)]
pub struct PersonaHandle {
    /// Persona name, the registry key (`ALFRED`, `BABS`, `BRICK` or `ROBIN`).
    pub name: String,
    /// The model this actor thinks with (fixed for the actor's life).
    pub model: String,
    /// Generation: one counter over all personas, +1 per start, restart or swap of any of them.
    pub generation: u64,
    /// Backend serving the model.
    pub backend: BackendKind,
    /// The actor; reached through the methods below.
    pub(super) actor: ActorRef<ProtoMsg>,
    pub(super) _guard: RetireGuard,
}

/// The organ name persona calls report in their errors.
const ORGAN: &str = "persona";

impl PersonaHandle {
    fn unreachable(&self, source: AskError) -> PersonaError {
        PersonaError::Unreachable {
            persona: self.name.clone(),
            source,
        }
    }

    /// One model call by this generation of the persona, waiting at most `timeout` (queueing included).
    pub async fn think(
        &self,
        req: ThinkRequest,
        timeout: Duration,
    ) -> Result<Thought, PersonaError> {
        ask(
            ORGAN,
            &self.actor,
            |r| ProtoMsg::Think(Box::new(req), r),
            timeout,
        )
        .await
        .map_err(|e| self.unreachable(e))?
        .map_err(|source| PersonaError::Model {
            persona: self.name.clone(),
            source,
        })
    }

    /// The actor's live state as JSON.
    pub async fn state(&self, timeout: Duration) -> Result<Value, PersonaError> {
        ask(ORGAN, &self.actor, ProtoMsg::GetState, timeout)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Replaces the editable state (surgery); answers the new state.
    pub async fn set_editable(
        &self,
        editable: Editable,
        timeout: Duration,
    ) -> Result<Value, PersonaError> {
        ask(
            ORGAN,
            &self.actor,
            |r| ProtoMsg::SetEditable(editable, r),
            timeout,
        )
        .await
        .map_err(|e| self.unreachable(e))
    }

    /// Whether this generation's actor is still running (not crashed, not retired).
    pub fn is_alive(&self) -> bool {
        matches!(
            self.actor.get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Upgrading
        )
    }

    /// Fault injection: makes this generation's actor panic.
    pub fn crash(&self) -> Result<(), PersonaError> {
        self.actor
            .cast(ProtoMsg::Crash)
            .map_err(|_| self.unreachable(AskError::Stopped { organ: ORGAN }))
    }

    /// The bare actor, for benchmarks that compare a handle call with a bare ractor call. Organs use the
    /// methods above.
    pub fn raw_actor(&self) -> &ActorRef<ProtoMsg> {
        &self.actor
    }

    pub(super) fn tell(&self, msg: ProtoMsg) {
        // A generation that already stopped has nothing to update; its successor reads the new config.
        let _ = self.actor.cast(msg);
    }
}

/// Stops a persona actor once nothing refers to its handle any more (drain-then-retire).
#[derive(Debug)]
pub struct RetireGuard(pub(super) ActorRef<ProtoMsg>);

impl Drop for RetireGuard {
    fn drop(&mut self) {
        // Stopping an actor that already died (crash + restart) is a no-op.
        self.0.stop(Some("retired".into()));
    }
}
