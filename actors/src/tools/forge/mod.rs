//! The ToolForge: when a persona lacks a capability, BRICK writes a Python tool and its tests; the source is
//! checked with Python's own `ast` and the tests are run, both inside the sandbox; failures are fed back for
//! another attempt; a passing tool is stored, registered live, and announced with `tool.created`.

mod actor;
mod draft;
mod messages;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use batos_protocol::ErrorCode;

pub use actor::ToolForge;
pub use draft::{parse_draft, tool_schema, valid_name, Draft};
pub use messages::{ForgeArgs, ForgeMsg};

use crate::ask::{AskError, OrganRef, WireError};
use crate::personas::PersonaError;
use crate::ports::{ForgeHook, PortError};
use crate::settings::Settings;

/// Global name of the ToolForge actor.
pub const FORGE_NAME: &str = "toolforge";
/// Longest tool name.
pub const MAX_NAME: usize = 48;

/// Why no tool was forged. Nothing is registered in any of these cases.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ForgeError {
    /// The request itself is unusable (an empty capability).
    #[error("{0}")]
    Invalid(String),
    /// Every attempt's tool failed its checks or tests: the model could not write it.
    #[error("the ToolForge gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// Attempts made (`tools.max_attempts`).
        attempts: u32,
        /// Why the last attempt failed.
        last: String,
    },
    /// BRICK could not be asked (restarting) or its model call failed.
    #[error("BRICK could not write the tool: {0}")]
    Persona(#[from] PersonaError),
    /// The passing tool could not be stored.
    #[error("cannot store the tool: {0}")]
    Store(String),
    /// The ToolForge did not answer (restarting, crashed mid-run, or over `tools.forge_timeout_ms`).
    #[error(transparent)]
    Unreachable(#[from] AskError),
}

impl WireError for ForgeError {
    fn code(&self) -> ErrorCode {
        match self {
            ForgeError::Invalid(_) => ErrorCode::BadRequest,
            ForgeError::GaveUp { .. } => ErrorCode::Failed,
            ForgeError::Persona(_) | ForgeError::Unreachable(_) => ErrorCode::Unavailable,
            ForgeError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// The one way to reach the ToolForge. A forge run may take up to `tools.forge_timeout_ms` (live settings).
#[derive(Debug, Clone)]
pub struct ForgeHandle(OrganRef);

impl ForgeHandle {
    /// A handle reading its timeout from `settings`.
    pub fn new(settings: Arc<ArcSwap<Settings>>) -> Self {
        Self(OrganRef::new("toolforge", FORGE_NAME, settings, |s| {
            s.tools.forge_timeout_ms
        }))
    }

    /// Creates a tool for `capability`, for the task `task_id` (None: asked for by an operator); answers the
    /// registered tool's name.
    pub async fn forge(
        &self,
        capability: &str,
        task_id: Option<&str>,
    ) -> Result<String, ForgeError> {
        if capability.trim().is_empty() {
            return Err(ForgeError::Invalid("`capability` must not be empty".into()));
        }
        let (capability, task_id) = (capability.to_string(), task_id.map(str::to_string));
        self.0
            .ask(|reply| ForgeMsg::Forge {
                capability,
                task_id,
                reply,
            })
            .await?
    }

    /// Fault injection: makes the ToolForge panic.
    pub fn crash(&self) -> Result<(), AskError> {
        self.0.tell(ForgeMsg::Crash)
    }
}

/// The ToolForge's handle is the orchestrator's [`ForgeHook`].
#[async_trait]
impl ForgeHook for ForgeHandle {
    async fn forge(&self, task_id: &str, capability: &str) -> Result<String, PortError> {
        ForgeHandle::forge(self, capability, Some(task_id))
            .await
            .map_err(|e| match e {
                ForgeError::Unreachable(a) => PortError::Unreachable(a),
                other => PortError::Refused(other.to_string()),
            })
    }
}
