//! The ToolForge: when a persona lacks a capability, BRICK writes a Python tool and its tests; the source is
//! checked with Python's own `ast` and the tests are run, both inside the sandbox; failures are fed back for
//! another attempt; a passing tool is stored, registered live, and announced with `tool.created`.

mod draft;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use batos_protocol::{ErrorCode, Persona};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::{json, Value};

pub use draft::{parse_draft, tool_schema, valid_name, Draft};

use super::python::{Provenance, PythonTool, ToolRecord};
use super::sandbox::pool;
use super::store::ToolStore;
use super::ToolRegistry;
use crate::ask::{AskError, OrganRef, WireError};
use crate::events::EventHub;
use crate::job::Jobs;
use crate::llm::{ChatMessage, Role};
use crate::personas::{PersonaError, Personas, ThinkRequest};
use crate::ports::{ForgeHook, PortError};
use crate::settings::{Settings, ToolsSettings};

/// Global name of the ToolForge actor.
pub const FORGE_NAME: &str = "toolforge";
/// Longest tool name.
pub const MAX_NAME: usize = 48;

/// The ToolForge.
#[derive(Debug, Default, Clone, Copy)]
pub struct ToolForge;

/// Start-up arguments.
#[derive(Clone)]
pub struct ForgeArgs {
    /// The live registry tools are added to.
    pub registry: Arc<ToolRegistry>,
    /// Who writes tools.
    pub personas: Arc<Personas>,
    /// `data_dir/tools`.
    pub store: ToolStore,
    /// Live settings, the source of `[tools]`: attempts, size and time limits (restart-only keys).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Event bus (a crashed forge run is an `actor.failed` event).
    pub hub: Arc<EventHub>,
}

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

/// Messages the ToolForge handles.
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

/// Forge state.
pub struct ForgeState {
    args: ForgeArgs,
    jobs: Jobs,
}

fn prompt(capability: &str, feedback: Option<&str>) -> String {
    let mut p = format!(
        "Write a Python tool for this capability: {capability}\n\n\
         Answer with JSON: `name` (lower-case identifier, also the function name), `description`, `parameters` \
         (a JSON schema object describing the keyword arguments), `source` (Python 3.11 standard library only: \
         one top-level function named like the tool, taking those keyword arguments and returning a \
         JSON-serialisable value; helper functions and imports are allowed, no other top-level code), and \
         `tests` (pytest-style `test_*` functions that call the function and assert on its results)."
    );
    if let Some(f) = feedback {
        p.push_str(&format!(
            "\n\nYour previous attempt failed:\n{f}\nFix it and answer again."
        ));
    }
    p
}

async fn sandbox(request: Value, s: &ToolsSettings) -> Result<Value, String> {
    let timeout = Duration::from_millis(s.timeout_ms);
    let out = pool::run(request, timeout * 2 + Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    if out.timed_out {
        return Err(format!("the sandbox run exceeded {} ms", s.timeout_ms));
    }
    if out.overflow {
        return Err("the sandbox run printed too much".into());
    }
    out.reply.ok_or_else(|| {
        format!(
            "the sandbox returned no result (exit {:?}){}: {}",
            out.exit,
            out.note.map(|n| format!(", {n}")).unwrap_or_default(),
            out.stderr_tail.trim()
        )
    })
}

/// One forge run with up to `max_attempts` attempts.
async fn forge(
    args: &ForgeArgs,
    capability: &str,
    task_id: Option<String>,
) -> Result<String, ForgeError> {
    let s = args.settings.load().tools.clone();
    let builtins: Vec<String> = args
        .registry
        .list()
        .into_iter()
        .filter(|t| t.origin == "builtin")
        .map(|t| t.name)
        .collect();
    let mut feedback: Option<String> = None;
    for attempt in 1..=s.max_attempts {
        let req = ThinkRequest {
            messages: vec![ChatMessage::new(
                Role::User,
                prompt(capability, feedback.as_deref()),
            )],
            tools: Vec::new(),
            format: Some(tool_schema()),
            tokens: None,
        };
        let answer = args.personas.think(Persona::Brick.as_str(), req).await?;
        let failure = async {
            let draft = parse_draft(&answer.response.content, &s, &builtins)?;
            let checked = sandbox(json!({"mode": "check", "source": draft.source, "function": draft.name}), &s).await?;
            if checked["ok"] != true {
                return Err(checked["error"].as_str().unwrap_or("the source did not pass the check").to_string());
            }
            let tested = sandbox(
                json!({"mode": "test", "source": draft.source, "function": draft.name, "tests": draft.tests}),
                &s,
            )
            .await?;
            if tested["ok"] != true {
                let mut why = tested["error"].as_str().map(str::to_string).unwrap_or_default();
                for f in tested["failures"].as_array().into_iter().flatten().take(2) {
                    why.push_str(&format!(
                        "\n{}: {}",
                        f["test"].as_str().unwrap_or("?"),
                        batos_protocol::truncate(f["error"].as_str().unwrap_or_default(), 1500)
                    ));
                }
                if why.trim().is_empty() {
                    why = "the tests did not pass".into();
                }
                return Err(format!("tests failed ({} passed, {} failed): {why}", tested["passed"], tested["failed"]));
            }
            Ok(draft)
        }
        .await;
        match failure {
            Ok(draft) => {
                let version = args
                    .store
                    .get(&draft.name)
                    .map(|r| r.version + 1)
                    .unwrap_or(1);
                let record = ToolRecord {
                    name: draft.name.clone(),
                    description: draft.description,
                    parameters: draft.parameters,
                    source: draft.source,
                    tests: draft.tests,
                    version,
                    provenance: Provenance {
                        task_id: task_id.clone(),
                        capability: capability.to_string(),
                        model: answer.model.clone(),
                        attempts: attempt,
                        created_at: crate::events::unix_now(),
                    },
                };
                args.store
                    .save(&record)
                    .map_err(|e| ForgeError::Store(e.to_string()))?;
                args.registry.register(Arc::new(PythonTool::new(
                    record,
                    Duration::from_millis(s.timeout_ms),
                    s.max_output_bytes,
                )));
                tracing::info!(event = "toolforge.created", tool = %draft.name, version, attempts = attempt, "tool forged");
                return Ok(draft.name);
            }
            Err(e) => {
                tracing::warn!(event = "toolforge.attempt_failed", attempt, error = %e, "tool attempt failed; feeding the error back");
                feedback = Some(e);
            }
        }
    }
    Err(ForgeError::GaveUp {
        attempts: s.max_attempts,
        last: feedback.unwrap_or_default(),
    })
}

impl Actor for ToolForge {
    type Msg = ForgeMsg;
    type State = ForgeState;
    type Arguments = ForgeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ForgeMsg>,
        args: ForgeArgs,
    ) -> Result<ForgeState, ActorProcessingErr> {
        let s = args.settings.load().tools.clone();
        let registered: Vec<String> = args.registry.list().into_iter().map(|t| t.name).collect();
        for record in args.store.load_all() {
            let known = registered.contains(&record.name)
                && args.registry.get(&record.name).map(|t| t.version()) == Some(record.version);
            if !known {
                args.registry.register(Arc::new(PythonTool::new(
                    record,
                    Duration::from_millis(s.timeout_ms),
                    s.max_output_bytes,
                )));
            }
        }
        let jobs = Jobs::new(format!("root/tools/{FORGE_NAME}"), args.hub.clone());
        Ok(ForgeState { args, jobs })
    }

    async fn handle(
        &self,
        myself: ActorRef<ForgeMsg>,
        msg: ForgeMsg,
        state: &mut ForgeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ForgeMsg::Forge {
                capability,
                task_id,
                reply,
            } => {
                // Each run is a supervised job: a panic in it is an `actor.failed` event, and the caller's
                // reply port dies with it (`Stopped`) instead of waiting out the forge timeout.
                let args = state.args.clone();
                state
                    .jobs
                    .spawn(&myself.get_cell(), "forge", async move {
                        let _ = reply.send(forge(&args, &capability, task_id).await);
                    })
                    .await?;
            }
            ForgeMsg::Crash => panic!("debug_crash requested for toolforge"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ForgeMsg>,
        event: SupervisionEvent,
        state: &mut ForgeState,
    ) -> Result<(), ActorProcessingErr> {
        state.jobs.supervise(&event);
        Ok(())
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
