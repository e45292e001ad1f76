//! The ToolForge's actor: one forge run at a time per request, as a supervised job — BRICK drafts a tool and
//! its tests, the sandbox checks the source and runs the tests, failures go back as feedback, and a passing
//! tool is stored, registered and announced.

use std::sync::Arc;
use std::time::Duration;

use batos_protocol::Persona;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::{json, Value};

use super::{parse_draft, tool_schema, ForgeArgs, ForgeError, ForgeMsg, FORGE_NAME};
use crate::job::Jobs;
use crate::llm::{ChatMessage, Role};
use crate::ports::ThinkRequest;
use crate::settings::ToolsSettings;
use crate::tools::python::{Provenance, PythonTool, ToolRecord};
use crate::tools::sandbox::pool;

/// The ToolForge.
#[derive(Debug, Default, Clone, Copy)]
pub struct ToolForge;

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
    let out = pool::SandboxHandle
        .run(request, timeout * 2 + Duration::from_secs(5))
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
            sample: 0,
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
