//! What the ToolForge is started with ([`ForgeArgs`]) and the messages it handles ([`ForgeMsg`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::RpcReplyPort;

use super::ForgeError;
use crate::events::EventHub;
use crate::ports::Think;
use crate::settings::Settings;
use crate::tools::store::ToolStore;
use crate::tools::ToolRegistry;

/// Start-up arguments.
#[derive(Clone)]
pub struct ForgeArgs {
    /// The live registry tools are added to.
    pub registry: Arc<ToolRegistry>,
    /// Who writes tools.
    pub personas: Arc<dyn Think>,
    /// `data_dir/tools`.
    pub store: ToolStore,
    /// Live settings, the source of `[tools]`: attempts, size and time limits (restart-only keys).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Event bus (a crashed forge run is an `actor.failed` event).
    pub hub: Arc<EventHub>,
}

/// Messages the ToolForge handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum ForgeMsg {
    /// Create a tool for a capability; answers the registered tool's name.
    Forge {
        /// What the tool must do.
        capability: String,
        /// The task that needs it.
        task_id: Option<String>,
        /// Answer.
        reply: RpcReplyPort<Result<String, ForgeError>>,
    },
    /// Fault injection: panic.
    Crash,
}
