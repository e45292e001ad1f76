//! Built-in tools. `word_count` and the exact computations of `compute.rs` (`calculate`, `days_between`,
//! `count_letters`) return plain values; `escalate_to_architect` and `request_capability` return Commands that
//! change the task's state and route.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{TaskCommand, Tool, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// The built-in tools (version 1, origin `builtin`): `word_count`, `calculate`, `days_between`,
/// `count_letters`, `escalate_to_architect`, `request_capability`.
pub fn all() -> Vec<Arc<dyn Tool>> {
    use super::compute::{Calculate, CountLetters, DaysBetween};
    vec![
        Arc::new(WordCount::new()),
        Arc::new(Calculate::new()),
        Arc::new(DaysBetween::new()),
        Arc::new(CountLetters::new()),
        Arc::new(EscalateToArchitect::new()),
        Arc::new(RequestCapability::new()),
    ]
}

fn parse<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|e| ToolError::InvalidArgs(e.to_string()))
}

/// Counts words and characters of a text (plain value).
#[derive(Debug)]
pub struct WordCount(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WordCountArgs {
    text: String,
}

impl WordCount {
    fn new() -> Self {
        Self(ToolSpec {
            name: "word_count".into(),
            description: "Count the words and characters in a text.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"text": {"type": "string", "description": "The text to count."}},
                "required": ["text"]
            }),
        })
    }
}

#[async_trait]
impl Tool for WordCount {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn origin(&self) -> &str {
        "builtin"
    }
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        let a: WordCountArgs = parse(args)?;
        Ok(ToolOutput::Value(json!({
            "words": a.text.split_whitespace().count(),
            "characters": a.text.chars().count(),
        })))
    }
}

/// Raises the task's dissonance and routes it to the philosophical inquiry (a Command).
#[derive(Debug)]
pub struct EscalateToArchitect(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateArgs {
    score: Value,
    reason: String,
}

impl EscalateToArchitect {
    fn new() -> Self {
        Self(ToolSpec {
            name: "escalate_to_architect".into(),
            description: "Use when the task conflicts with your principles: raises the task's dissonance to `score` \
                          (0..1) and pauses it for the Architect's judgement."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "reason": {"type": "string"}
                },
                "required": ["score", "reason"]
            }),
        })
    }
}

#[async_trait]
impl Tool for EscalateToArchitect {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn origin(&self) -> &str {
        "builtin"
    }
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        let a: EscalateArgs = parse(args)?;
        // The score is passed through unchecked: the Command is validated where it is applied, like any
        // tool's Command, so a bad score is reported as a tool error by the node.
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), a.score);
        update.insert(
            "note".into(),
            json!(format!("escalated to the Architect: {}", a.reason)),
        );
        Ok(ToolOutput::Command(TaskCommand {
            update,
            goto: Some("inquiry".into()),
        }))
    }
}

/// Declares a missing capability and routes the task to the ToolForge (a Command).
#[derive(Debug)]
pub struct RequestCapability(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilityArgs {
    capability: String,
}

impl RequestCapability {
    fn new() -> Self {
        Self(ToolSpec {
            name: "request_capability".into(),
            description: "Use when no offered tool can do what the task needs: describe the missing capability \
                          precisely and the ToolForge will write a tool for it."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {"capability": {"type": "string", "description": "What the tool must do."}},
                "required": ["capability"]
            }),
        })
    }
}

#[async_trait]
impl Tool for RequestCapability {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn origin(&self) -> &str {
        "builtin"
    }
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        let a: CapabilityArgs = parse(args)?;
        if a.capability.trim().is_empty() {
            return Err(ToolError::InvalidArgs(
                "`capability` must not be empty".into(),
            ));
        }
        let mut update = serde_json::Map::new();
        update.insert("capability_gap".into(), json!(a.capability));
        Ok(ToolOutput::Command(TaskCommand {
            update,
            goto: Some("toolforge".into()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builtins_answer_and_validate() {
        let wc = WordCount::new();
        assert_eq!(
            wc.call(json!({"text": "a b  c"})).await.unwrap(),
            ToolOutput::Value(json!({"words": 3, "characters": 6}))
        );
        assert!(matches!(
            wc.call(json!({"txt": 1})).await,
            Err(ToolError::InvalidArgs(_))
        ));
        let e = EscalateToArchitect::new();
        match e.call(json!({"score": 0.95, "reason": "r"})).await.unwrap() {
            ToolOutput::Command(c) => {
                assert_eq!(c.goto.as_deref(), Some("inquiry"));
                assert_eq!(c.update["dissonance"], json!(0.95));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tool_output_wire_form() {
        let v: ToolOutput = serde_json::from_value(
            json!({"command": {"update": {"dissonance": 0.2}, "goto": "draft"}}),
        )
        .unwrap();
        assert!(matches!(v, ToolOutput::Command(_)));
        let v: ToolOutput = serde_json::from_value(json!({"value": [1, 2]})).unwrap();
        assert_eq!(v, ToolOutput::Value(json!([1, 2])));
        assert!(serde_json::from_value::<ToolOutput>(json!({"command": {"updat": {}}})).is_err());
    }
}
