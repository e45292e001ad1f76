//! The tools organ: the live tool registry every drafting step binds from, the tool result types (a plain
//! value or a [`TaskCommand`] that changes task state), and the built-in tools.

pub mod builtin;
pub mod compute;
pub mod forge;
pub mod python;
pub mod sandbox;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{Event, EventHub};
use crate::llm::ToolSpec;

/// What a tool call returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolOutput {
    /// A plain value: becomes a tool message for the model.
    Value(Value),
    /// A state change the tool-executing node applies to the task.
    Command(TaskCommand),
}

/// A tool's request to change the running task: update named task fields, optionally jump to a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskCommand {
    /// Field → new value. Allowed fields: `dissonance` (0..=1), `plan`, `context`, `capability_gap`, `note`.
    #[serde(default)]
    pub update: serde_json::Map<String, Value>,
    /// Node to go to after this step: `draft`, `critique`, `toolforge`, `inquiry` or `synthesize`.
    #[serde(default)]
    pub goto: Option<String>,
}

/// Why a tool call failed (reported to the model as a tool error; never a crash).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ToolError {
    /// No such tool.
    #[error("no tool named `{0}`")]
    Unknown(String),
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// The tool ran and failed.
    #[error("tool failed: {0}")]
    Failed(String),
    /// The tool ran past its time limit.
    #[error("tool timed out after {0} ms")]
    Timeout(u64),
    /// The tool's output was not valid (not JSON, too large, malformed Command).
    #[error("invalid tool output: {0}")]
    BadOutput(String),
    /// The sandbox is not usable on this machine.
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
}

/// Something the model can call.
#[async_trait]
pub trait Tool: Send + Sync + fmt::Debug {
    /// Name, description, argument schema.
    fn spec(&self) -> &ToolSpec;
    /// Version number (1 for built-ins; +1 per ToolForge replacement).
    fn version(&self) -> u32;
    /// Where the tool came from (`builtin`, `toolforge`, ...).
    fn origin(&self) -> &str;
    /// Runs the tool.
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError>;
}

/// Name → tool, swapped atomically as a whole.
pub type ToolMap = BTreeMap<String, Arc<dyn Tool>>;

/// The live tool registry. Readers take a snapshot per model call, so a tool registered between two steps
/// of a task is offered on the very next step.
pub struct ToolRegistry {
    tools: ArcSwap<ToolMap>,
    hub: Arc<EventHub>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.tools.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A tool as `list_tools` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolInfo {
    /// Name the model calls it by; unique in the registry (a forged tool of the same name replaces it).
    pub name: String,
    /// What it does, as offered to the model.
    pub description: String,
    /// Argument schema.
    pub parameters: Value,
    /// 1 for built-ins and new tools, +1 each time the ToolForge replaces it.
    pub version: u32,
    /// Where it came from: `builtin` or `toolforge`.
    pub origin: String,
}

impl ToolRegistry {
    /// A registry holding the built-in tools.
    pub fn with_builtins(hub: Arc<EventHub>) -> Arc<Self> {
        let r = Arc::new(Self {
            tools: ArcSwap::from_pointee(BTreeMap::new()),
            hub,
        });
        for t in builtin::all() {
            r.insert(t);
        }
        r
    }

    fn insert(&self, tool: Arc<dyn Tool>) {
        let name = tool.spec().name.clone();
        self.tools.rcu(|m| {
            let mut m = ToolMap::clone(m);
            m.insert(name.clone(), tool.clone());
            m
        });
    }

    /// Registers (or atomically replaces) a tool and announces it with `tool.created`.
    pub fn register(&self, tool: Arc<dyn Tool>) {
        let (name, version, description) = (
            tool.spec().name.clone(),
            tool.version(),
            tool.spec().description.clone(),
        );
        self.insert(tool);
        self.hub.publish(Event::ToolCreated {
            name,
            version,
            description,
        });
    }

    /// Takes a forged tool out of the registry and announces it with `tool.retired`; answers whether it was
    /// there. Built-in tools are never retired (answers `false`). The caller moves its record aside on disk
    /// ([`store::ToolStore::retire`]).
    pub fn retire(&self, name: &str, reason: &str) -> bool {
        let forged = self.get(name).is_some_and(|t| t.origin() != "builtin");
        if !forged {
            return false;
        }
        self.tools.rcu(|m| {
            let mut m = ToolMap::clone(m);
            m.remove(name);
            m
        });
        self.hub.publish(Event::ToolRetired {
            name: name.to_string(),
            reason: batos_protocol::truncate(reason, batos_protocol::EVENT_TEXT_BYTES).to_string(),
        });
        true
    }

    /// The current tool set.
    pub fn snapshot(&self) -> Arc<ToolMap> {
        self.tools.load_full()
    }

    /// One tool.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.load().get(name).cloned()
    }

    /// Every tool, for `list_tools`.
    pub fn list(&self) -> Vec<ToolInfo> {
        self.tools
            .load()
            .values()
            .map(|t| ToolInfo {
                name: t.spec().name.clone(),
                description: t.spec().description.clone(),
                parameters: t.spec().parameters.clone(),
                version: t.version(),
                origin: t.origin().to_string(),
            })
            .collect()
    }
}
