//! The ToolForge: when a persona lacks a capability, BRICK writes a Python tool and its tests; the source is
//! checked with Python's own `ast` and the tests are run, both inside the sandbox; failures are fed back for
//! another attempt; a passing tool is stored, registered live, and announced with `tool.created`.

mod actor;
mod draft;
mod messages;

use async_trait::async_trait;
use batos_protocol::ErrorCode;

pub use actor::ToolForge;
pub use draft::{parse_draft, tool_schema, valid_name, Draft};
pub use messages::{ForgeArgs, ForgeMsg};

use crate::ask::{Handle, Organ, OrganError, WireError};
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
    Persona(#[from] PortError),
    /// The passing tool could not be stored.
    #[error("cannot store the tool: {0}")]
    Store(String),
}

impl WireError for ForgeError {
    fn code(&self) -> ErrorCode {
        match self {
            ForgeError::Invalid(_) => ErrorCode::BadRequest,
            ForgeError::GaveUp { .. } => ErrorCode::Failed,
            ForgeError::Persona(_) => ErrorCode::Unavailable,
            ForgeError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// The one way to reach the ToolForge. A forge run may take up to `tools.forge_timeout_ms` (live settings).
pub type ForgeHandle = Handle<ToolForge>;

impl Organ for ToolForge {
    type Msg = ForgeMsg;
    type Error = ForgeError;
    const LABEL: &'static str = "toolforge";
    const NAME: &'static str = FORGE_NAME;

    fn timeout_ms(s: &Settings) -> u64 {
        s.tools.forge_timeout_ms
    }

    fn crash() -> ForgeMsg {
        ForgeMsg::Crash
    }
}

impl Handle<ToolForge> {
    /// Creates a tool for `capability`, for the task `task_id` (None: asked for by an operator); answers the
    /// registered tool's name.
    pub async fn forge(
        &self,
        capability: &str,
        task_id: Option<&str>,
    ) -> Result<String, OrganError<ForgeError>> {
        if capability.trim().is_empty() {
            return Err(OrganError::Refused(ForgeError::Invalid(
                "`capability` must not be empty".into(),
            )));
        }
        let (capability, task_id) = (capability.to_string(), task_id.map(str::to_string));
        self.call(|reply| ForgeMsg::Forge {
            capability,
            task_id,
            reply,
        })
        .await
    }
}

/// The ToolForge's handle is the orchestrator's [`ForgeHook`].
#[async_trait]
impl ForgeHook for ForgeHandle {
    async fn forge(&self, task_id: &str, capability: &str) -> Result<String, PortError> {
        ForgeHandle::forge(self, capability, Some(task_id))
            .await
            .map_err(PortError::from)
    }
}
