//! Tool calls during the draft step, and the validation of the Commands tools return.

use batos_protocol::truncate;
use serde_json::Value;

use super::Runner;
use crate::events::Event;
use crate::llm::ToolCall;
use crate::orchestrator::{Node, TaskState, ToolUse};
use crate::tools::{TaskCommand, ToolOutput};

/// Longest text a tool Command may set.
pub const MAX_COMMAND_TEXT: usize = 16 * 1024;

impl Runner {
    /// Executes one tool call; returns the tool message for the model and a route change from a Command.
    pub(super) async fn run_tool(
        &mut self,
        task: &mut TaskState,
        call: &ToolCall,
    ) -> (String, Option<Node>) {
        let Some(tool) = self.cog.tools.get(&call.name) else {
            let msg = format!("tool error: no tool named `{}`", call.name);
            self.tool_failed(task, &call.name, &msg);
            task.tools_used.push(ToolUse {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                result: msg.clone(),
                ok: false,
            });
            return (msg, None);
        };
        // Some models send arguments as a JSON string; accept both.
        let args = match &call.arguments {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            v => v.clone(),
        };
        let (msg, ok, jump) = match tool.call(args).await {
            Ok(ToolOutput::Value(v)) => (v.to_string(), true, None),
            Ok(ToolOutput::Command(cmd)) => match apply_command(task, &cmd) {
                Ok(jump) => (
                    format!(
                        "command applied: {}",
                        serde_json::to_string(&cmd).unwrap_or_default()
                    ),
                    true,
                    jump,
                ),
                Err(e) => (format!("tool error: invalid command: {e}"), false, None),
            },
            Err(e) => (format!("tool error: {e}"), false, None),
        };
        tracing::info!(event = "tool.called", task = %task.id, tool = %call.name, ok, "tool call");
        if !ok {
            self.tool_failed(task, &call.name, &msg);
        }
        task.tools_used.push(ToolUse {
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            result: truncate(&msg, MAX_COMMAND_TEXT).to_string(),
            ok,
        });
        (msg, jump)
    }
}

impl Runner {
    /// Publishes a failed call (the Motivator counts recurring failures of one tool).
    fn tool_failed(&self, task: &TaskState, tool: &str, msg: &str) {
        self.cog.hub.publish(Event::ToolFailed {
            task: Some(task.id.clone()),
            tool: truncate(tool, batos_protocol::EVENT_TEXT_BYTES).to_string(),
            error: truncate(msg, batos_protocol::EVENT_TEXT_BYTES).to_string(),
        });
    }
}

/// Validates a tool's Command and applies it to the task, all or nothing.
pub fn apply_command(task: &mut TaskState, cmd: &TaskCommand) -> Result<Option<Node>, String> {
    let goto = match &cmd.goto {
        None => None,
        Some(name) => Some(Node::goto_target(name).ok_or_else(|| {
            format!(
                "`goto` must be one of draft, critique, toolforge, inquiry, synthesize (got `{}`)",
                truncate(name, 64)
            )
        })?),
    };
    for (k, v) in &cmd.update {
        match k.as_str() {
            "dissonance" => match v.as_f64() {
                Some(d) if (0.0..=1.0).contains(&d) => {}
                _ => {
                    return Err(format!(
                        "`dissonance` must be a number in 0..=1 (got {})",
                        truncate(&v.to_string(), 64)
                    ))
                }
            },
            "plan" | "context" | "capability_gap" | "note" => match v.as_str() {
                Some(s) if s.len() <= MAX_COMMAND_TEXT => {}
                _ => {
                    return Err(format!(
                        "`{k}` must be a string of at most {MAX_COMMAND_TEXT} bytes"
                    ))
                }
            },
            other => {
                return Err(format!(
                "cannot update `{}`; updatable: dissonance, plan, context, capability_gap, note",
                truncate(other, 64)
            ))
            }
        }
    }
    for (k, v) in &cmd.update {
        match k.as_str() {
            "dissonance" => task.dissonance = v.as_f64(),
            "plan" => task.plan = v.as_str().map(str::to_string),
            "context" => task.context = v.as_str().map(str::to_string),
            "capability_gap" => task.capability_gap = v.as_str().map(str::to_string),
            "note" => task.notes.extend(v.as_str().map(str::to_string)),
            _ => {}
        }
    }
    Ok(goto)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn commands_are_all_or_nothing() {
        let mut t = TaskState::new("t".into(), "x".into());
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), json!(0.7));
        update.insert("bogus".into(), json!(1));
        let bad = TaskCommand { update, goto: None };
        assert!(apply_command(&mut t, &bad).unwrap_err().contains("bogus"));
        assert_eq!(t.dissonance, None);
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), json!(7));
        assert!(apply_command(&mut t, &TaskCommand { update, goto: None }).is_err());
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), json!(0.7));
        let ok = TaskCommand {
            update,
            goto: Some("inquiry".into()),
        };
        assert_eq!(apply_command(&mut t, &ok).unwrap(), Some(Node::Inquiry));
        assert_eq!(t.dissonance, Some(0.7));
        let jump = TaskCommand {
            update: Default::default(),
            goto: Some("../etc".into()),
        };
        assert!(apply_command(&mut t, &jump).is_err());
    }
}
