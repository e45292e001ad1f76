//! The ToolForge: when a persona lacks a capability, BRICK writes a Python tool and its tests; the source is
//! checked with Python's own `ast` and the tests are run, both inside the sandbox; failures are fed back for
//! another attempt; a passing tool is stored, registered live, and announced with `tool.created`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{json, Value};

use super::python::{Provenance, PythonTool, ToolRecord};
use super::sandbox::pool;
use super::store::ToolStore;
use super::ToolRegistry;
use crate::llm::{ChatMessage, Role};
use crate::orchestrator::ForgeHook;
use crate::personas::{Personas, ProtoMsg, ThinkRequest};
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
    /// Live settings.
    pub settings: Arc<ArcSwap<Settings>>,
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
        reply: RpcReplyPort<Result<String, String>>,
    },
    /// Fault injection: panic.
    Crash,
}

/// Forge state.
pub struct ForgeState {
    args: ForgeArgs,
}

/// The structured answer BRICK writes a tool through.
pub fn tool_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "parameters": {"type": "object"},
            "source": {"type": "string"},
            "tests": {"type": "string"}
        },
        "required": ["name", "description", "parameters", "source", "tests"]
    })
}

/// A tool as BRICK proposed it, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Argument schema.
    pub parameters: Value,
    /// Source.
    pub source: String,
    /// Tests.
    pub tests: String,
}

/// Whether a name is acceptable: a Python identifier of lower-case letters, digits and underscores.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses and checks BRICK's answer (everything that can be checked without running Python).
pub fn parse_draft(text: &str, s: &ToolsSettings, builtins: &[String]) -> Result<Draft, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not a JSON object ({e})"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let name = field("name");
    if !valid_name(&name) {
        return Err(format!(
            "invalid tool name `{}`: use 1..={MAX_NAME} lower-case letters, digits and underscores, starting with a letter",
            crate::protocol::truncate(&name, 60)
        ));
    }
    if builtins.iter().any(|b| b == &name) {
        return Err(format!("`{name}` is a built-in tool; choose another name"));
    }
    let description = field("description");
    if description.is_empty() {
        return Err("the description is empty".into());
    }
    let parameters = v.get("parameters").cloned().unwrap_or(Value::Null);
    if parameters.get("type").and_then(Value::as_str) != Some("object") {
        return Err("`parameters` must be a JSON schema with \"type\": \"object\"".into());
    }
    let source = v
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if source.trim().is_empty() {
        return Err("there is no source code".into());
    }
    if source.len() > s.max_source_bytes {
        return Err(format!(
            "the source is longer than {} bytes",
            s.max_source_bytes
        ));
    }
    let tests = v
        .get("tests")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if tests.trim().is_empty() {
        return Err("there are no tests".into());
    }
    if tests.len() > s.max_source_bytes {
        return Err(format!(
            "the tests are longer than {} bytes",
            s.max_source_bytes
        ));
    }
    Ok(Draft {
        name,
        description,
        parameters,
        source,
        tests,
    })
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
) -> Result<String, String> {
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
        let brick = args.personas.current("BRICK").map_err(|e| e.to_string())?;
        let req = ThinkRequest {
            messages: vec![ChatMessage::new(
                Role::User,
                prompt(capability, feedback.as_deref()),
            )],
            tools: Vec::new(),
            format: Some(tool_schema()),
            tokens: None,
        };
        let answer = match brick
            .actor
            .call(
                |r| ProtoMsg::Think(Box::new(req), r),
                Some(args.personas.call_timeout()),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(Ok(t))) => t,
            Ok(ractor::rpc::CallResult::Success(Err(e))) => {
                return Err(format!("BRICK could not write the tool: {e}"))
            }
            _ => return Err("BRICK did not answer".into()),
        };
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
                        crate::protocol::truncate(f["error"].as_str().unwrap_or_default(), 1500)
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
                    .map_err(|e| format!("cannot store the tool: {e}"))?;
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
    Err(format!(
        "the ToolForge gave up after {} attempts; last error: {}",
        s.max_attempts,
        feedback.unwrap_or_default()
    ))
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
        Ok(ForgeState { args })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ForgeMsg>,
        msg: ForgeMsg,
        state: &mut ForgeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ForgeMsg::Forge {
                capability,
                task_id,
                reply,
            } => {
                let args = state.args.clone();
                tokio::spawn(async move {
                    let _ = reply.send(forge(&args, &capability, task_id).await);
                });
            }
            ForgeMsg::Crash => panic!("debug_crash requested for toolforge"),
        }
        Ok(())
    }
}

/// The ToolForge as the cognition graph sees it.
pub struct ForgeLink {
    /// How long a whole forge run may take.
    pub timeout: Duration,
}

#[async_trait]
impl ForgeHook for ForgeLink {
    async fn forge(&self, task_id: &str, capability: &str) -> Result<String, String> {
        let cell = ractor::registry::where_is(FORGE_NAME).ok_or("the ToolForge is restarting")?;
        let forge: ActorRef<ForgeMsg> = cell.into();
        // An empty task id means a tool asked for directly by an operator.
        let (capability, task_id) = (
            capability.to_string(),
            (!task_id.is_empty()).then(|| task_id.to_string()),
        );
        match forge
            .call(
                |reply| ForgeMsg::Forge {
                    capability,
                    task_id,
                    reply,
                },
                Some(self.timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => Err("the ToolForge took too long".into()),
            _ => Err("the ToolForge stopped while working".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ToolsSettings {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/settings.toml"
        ))
        .unwrap();
        Settings::parse(&text, std::path::Path::new("/x/config/settings.toml"))
            .unwrap()
            .tools
    }

    #[test]
    fn names_are_identifiers() {
        assert!(valid_name("fib_2"));
        for bad in ["", "../etc", "Fib", "2x", "a-b", "a b", &"x".repeat(49)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn drafts_are_checked_before_any_sandbox() {
        let s = settings();
        let ok = json!({"name":"fib","description":"d","parameters":{"type":"object"},"source":"def fib(n):\n  return n","tests":"def test_a():\n  assert fib(1) == 1"});
        assert!(parse_draft(&ok.to_string(), &s, &[]).is_ok());
        let mut bad = ok.clone();
        bad["name"] = json!("../evil");
        assert!(parse_draft(&bad.to_string(), &s, &[])
            .unwrap_err()
            .contains("invalid tool name"));
        let mut bad = ok.clone();
        bad["source"] = json!("");
        assert!(parse_draft(&bad.to_string(), &s, &[])
            .unwrap_err()
            .contains("no source"));
        let mut bad = ok.clone();
        bad["parameters"] = json!({"type": "string"});
        assert!(parse_draft(&bad.to_string(), &s, &[]).is_err());
        assert!(parse_draft("not json", &s, &[]).is_err());
        assert!(parse_draft(&ok.to_string(), &s, &["fib".into()])
            .unwrap_err()
            .contains("built-in"));
    }
}
