//! Exact computation as built-in tools: `calculate` (arithmetic on exact integers and fractions),
//! `days_between` (calendar days between two dates) and `count_letters` (letters of a word, or one letter's
//! occurrences in it) — what a 135M model gets wrong and a few lines of Rust get right. They run in the
//! daemon, not in the sandbox: they read nothing, write nothing and call nothing, their input is bounded
//! (`MAX_EXPRESSION_BYTES`, exponents, digits) and they never panic, so there is nothing for a sandbox to
//! hold back and no 0.4 s sandbox start to pay for a multiplication.
//!
//! [`read_computation`] is the other half: it reads a request written in words ("What is 4821 multiplied by
//! 397?", "How many days are there between March 3, 2024 and June 10, 2024?", "How many times does the letter
//! r appear in strawberry?") as the tool call that answers it, so the household can call the tool without a
//! small model having to write the call.

mod exact;
#[cfg(test)]
mod tests;
mod words;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Tool, ToolError, ToolOutput};
use crate::llm::ToolSpec;
pub use exact::{evaluate, Exact, MAX_EXPRESSION_BYTES};
pub use words::{parse_date, read_computation};

/// Longest text `count_letters` counts in, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

fn parse<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|e| ToolError::InvalidArgs(e.to_string()))
}

/// `calculate`: exact arithmetic.
#[derive(Debug)]
pub struct Calculate(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalculateArgs {
    expression: String,
}

impl Default for Calculate {
    fn default() -> Self {
        Self::new()
    }
}

impl Calculate {
    /// The tool.
    pub fn new() -> Self {
        Self(ToolSpec {
            name: "calculate".into(),
            description:
                "Compute an arithmetic expression exactly, e.g. 4821 * 397 or (17 + 5) / 2.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "Numbers with + - * / ^ and parentheses."}},
                "required": ["expression"]
            }),
        })
    }
}

#[async_trait]
impl Tool for Calculate {
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
        let a: CalculateArgs = parse(args)?;
        let v = evaluate(&a.expression).map_err(ToolError::InvalidArgs)?;
        Ok(ToolOutput::Value(json!({
            "expression": a.expression.trim(),
            "result": v.to_json(),
            "text": v.to_text(),
            "exact": v.is_integer(),
        })))
    }
}

/// `days_between`: calendar days from one date to another.
#[derive(Debug)]
pub struct DaysBetween(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaysArgs {
    from: String,
    to: String,
}

impl Default for DaysBetween {
    fn default() -> Self {
        Self::new()
    }
}

impl DaysBetween {
    /// The tool.
    pub fn new() -> Self {
        Self(ToolSpec {
            name: "days_between".into(),
            description: "Count the days from one date to another (dates as YYYY-MM-DD).".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "from": {"type": "string", "description": "The first date, YYYY-MM-DD."},
                    "to": {"type": "string", "description": "The second date, YYYY-MM-DD."}
                },
                "required": ["from", "to"]
            }),
        })
    }
}

#[async_trait]
impl Tool for DaysBetween {
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
        let a: DaysArgs = parse(args)?;
        let date = |s: &str| {
            parse_date(s).ok_or_else(|| {
                ToolError::InvalidArgs(format!(
                    "{:?} is not a date (YYYY-MM-DD, or e.g. March 3, 2024)",
                    batos_protocol::truncate(s, 64)
                ))
            })
        };
        let (from, to) = (date(&a.from)?, date(&a.to)?);
        let days = (to - from).num_days();
        Ok(ToolOutput::Value(json!({
            "from": from.to_string(),
            "to": to.to_string(),
            "days": days.abs(),
            "signed_days": days,
        })))
    }
}

/// `count_letters`: letters in a text, or how often one letter occurs in it.
#[derive(Debug)]
pub struct CountLetters(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LettersArgs {
    text: String,
    #[serde(default)]
    letter: Option<String>,
}

impl Default for CountLetters {
    fn default() -> Self {
        Self::new()
    }
}

impl CountLetters {
    /// The tool.
    pub fn new() -> Self {
        Self(ToolSpec {
            name: "count_letters".into(),
            description:
                "Count the letters of a word or text, or how many times one letter occurs in it."
                    .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The word or text."},
                    "letter": {"type": "string", "description": "One letter to count (optional: all letters)."}
                },
                "required": ["text"]
            }),
        })
    }
}

/// How many letters `text` has (`letter` absent), or how many times `letter` occurs in it, ignoring case.
pub fn count_letters(text: &str, letter: Option<char>) -> usize {
    text.chars()
        .filter(|c| c.is_alphabetic())
        .filter(|c| letter.is_none_or(|l| c.to_lowercase().eq(l.to_lowercase())))
        .count()
}

#[async_trait]
impl Tool for CountLetters {
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
        let a: LettersArgs = parse(args)?;
        if a.text.len() > MAX_TEXT_BYTES {
            return Err(ToolError::InvalidArgs(format!(
                "`text` is longer than {MAX_TEXT_BYTES} bytes"
            )));
        }
        let letter = match a.letter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) => {
                let mut cs = l.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if c.is_alphabetic() => Some(c),
                    _ => return Err(ToolError::InvalidArgs("`letter` must be one letter".into())),
                }
            }
        };
        let count = count_letters(&a.text, letter);
        Ok(ToolOutput::Value(match letter {
            Some(l) => json!({"text": a.text, "letter": l.to_string(), "count": count}),
            None => json!({"text": a.text, "letters": count, "count": count}),
        }))
    }
}

// The names of the exact tools this file builds live on the ports floor, beside the `ToolUse` they are read
// from (the Curator's grounding and memory's exact rows check them without importing this organ).
pub use crate::ports::task::{is_compute, COMPUTE_TOOLS};
