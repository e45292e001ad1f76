//! Tools written by the ToolForge: Python source run in a fresh sandbox per call.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sandbox::{pool, Output, SandboxError};
use super::{TaskCommand, Tool, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// Where a tool came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// The task that needed it.
    pub task_id: Option<String>,
    /// The capability asked for.
    pub capability: String,
    /// The model that wrote it.
    pub model: String,
    /// Attempts the forge needed, the passing one included (1..=`tools.max_attempts`).
    pub attempts: u32,
    /// Unix seconds (microsecond precision) when it was registered.
    pub created_at: f64,
}

/// A tool as stored under `data_dir/tools/<name>/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolRecord {
    /// Name (also the Python function name).
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its arguments.
    pub parameters: Value,
    /// Python source of the function (and helpers).
    pub source: String,
    /// Python tests it passed in the sandbox before it was registered.
    pub tests: String,
    /// Version (+1 per replacement).
    pub version: u32,
    /// Where it came from.
    pub provenance: Provenance,
}

/// A registered Python tool.
#[derive(Debug)]
pub struct PythonTool {
    record: ToolRecord,
    spec: ToolSpec,
    call_timeout: Duration,
    max_output_bytes: usize,
}

impl PythonTool {
    /// Wraps a stored record.
    pub fn new(record: ToolRecord, call_timeout: Duration, max_output_bytes: usize) -> Self {
        let spec = ToolSpec {
            name: record.name.clone(),
            description: record.description.clone(),
            parameters: record.parameters.clone(),
        };
        Self {
            record,
            spec,
            call_timeout,
            max_output_bytes,
        }
    }

    /// The record it runs from, as stored under `data_dir/tools/<name>/` (source, tests, provenance).
    pub fn record(&self) -> &ToolRecord {
        &self.record
    }
}

/// Turns a sandbox run of mode `call` into a tool result or a clear tool error.
pub fn interpret_call(
    out: Result<Output, SandboxError>,
    timeout_ms: u64,
    cap: usize,
) -> Result<ToolOutput, ToolError> {
    let out = out.map_err(|e| match e {
        SandboxError::Unavailable(m) => ToolError::Unavailable(m),
        SandboxError::Failed(m) => ToolError::Failed(m),
        e @ SandboxError::Unreachable(_) => ToolError::Unavailable(e.to_string()),
    })?;
    if out.timed_out {
        return Err(ToolError::Timeout(timeout_ms));
    }
    if out.overflow {
        return Err(ToolError::BadOutput(format!(
            "the tool printed more than {cap} bytes and was stopped"
        )));
    }
    let Some(reply) = out.reply else {
        if let Some(g) = out.garbage {
            return Err(ToolError::BadOutput(format!(
                "the tool corrupted its result (last line: {g})"
            )));
        }
        let why = match (out.note, out.exit) {
            (Some(n), _) => n,
            (None, Some(137)) => "the sandbox was killed: memory limit exceeded".into(),
            (None, Some(c)) => format!("the tool died (exit {c}) without a result"),
            (None, None) => "the tool died without a result".into(),
        };
        let detail = out.stderr_tail.trim();
        return Err(ToolError::Failed(if detail.is_empty() {
            why
        } else {
            format!("{why}: {}", batos_protocol::truncate(detail, 500))
        }));
    };
    if let Some(e) = reply.get("error").and_then(Value::as_str) {
        return Err(ToolError::Failed(e.to_string()));
    }
    if let Some(c) = reply.get("command") {
        let cmd: TaskCommand = serde_json::from_value(c.clone())
            .map_err(|e| ToolError::BadOutput(format!("malformed command: {e}")))?;
        return Ok(ToolOutput::Command(cmd));
    }
    match reply.get("value") {
        Some(v) => Ok(ToolOutput::Value(v.clone())),
        None => Err(ToolError::BadOutput(format!(
            "unexpected runner reply: {}",
            batos_protocol::truncate(&reply.to_string(), 200)
        ))),
    }
}

#[async_trait]
impl Tool for PythonTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> u32 {
        self.record.version
    }

    fn origin(&self) -> &str {
        "toolforge"
    }

    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        if !args.is_object() {
            return Err(ToolError::InvalidArgs(
                "arguments must be a JSON object".into(),
            ));
        }
        let request = json!({
            "mode": "call",
            "source": self.record.source,
            "function": self.record.name,
            "args": args,
            "max_output_bytes": self.max_output_bytes,
        });
        let timeout_ms = self.call_timeout.as_millis() as u64;
        // The pool's own deadline is the tool's; this outer one only guards against a stuck pool.
        let out = pool::SandboxHandle
            .run(request, self.call_timeout * 2 + Duration::from_secs(5))
            .await;
        interpret_call(out, timeout_ms, self.max_output_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(reply: Option<Value>) -> Output {
        Output {
            reply,
            garbage: None,
            exit: Some(0),
            stderr_tail: String::new(),
            timed_out: false,
            overflow: false,
            note: None,
        }
    }

    #[test]
    fn runner_replies_map_to_tool_results() {
        assert_eq!(
            interpret_call(Ok(out(Some(json!({"value": 3})))), 1, 1).unwrap(),
            ToolOutput::Value(json!(3))
        );
        assert!(matches!(
            interpret_call(
                Ok(out(Some(
                    json!({"command": {"update": {"dissonance": 0.4}}})
                ))),
                1,
                1
            )
            .unwrap(),
            ToolOutput::Command(_)
        ));
        assert!(matches!(
            interpret_call(Ok(out(Some(json!({"command": {"bogus": 1}})))), 1, 1),
            Err(ToolError::BadOutput(_))
        ));
        assert_eq!(
            interpret_call(
                Ok(out(Some(json!({"error": "ZeroDivisionError: x"})))),
                1,
                1
            )
            .unwrap_err(),
            ToolError::Failed("ZeroDivisionError: x".into())
        );
        let mut t = out(None);
        t.timed_out = true;
        assert_eq!(
            interpret_call(Ok(t), 5000, 1).unwrap_err(),
            ToolError::Timeout(5000)
        );
        let mut oom = out(None);
        oom.exit = Some(137);
        assert!(interpret_call(Ok(oom), 1, 1)
            .unwrap_err()
            .to_string()
            .contains("memory limit"));
        let mut g = out(None);
        g.garbage = Some("xx".into());
        assert!(interpret_call(Ok(g), 1, 1)
            .unwrap_err()
            .to_string()
            .contains("corrupted"));
        assert!(matches!(
            interpret_call(Err(SandboxError::Unavailable("install runsc".into())), 1, 1),
            Err(ToolError::Unavailable(_))
        ));
    }
}
