//! What BRICK proposes as a tool, checked before anything runs: the JSON schema it answers through, and
//! the checks that need no Python (name, description, argument schema, sizes).

use serde_json::{json, Value};

use super::MAX_NAME;
use crate::settings::ToolsSettings;

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
    /// Tool and Python function name: 1..=48 lower-case letters, digits or `_`, starting with a letter;
    /// never a built-in's name.
    pub name: String,
    /// What the tool does (trimmed, not empty); the model sees it when the tool is offered.
    pub description: String,
    /// JSON schema of its arguments; must have `"type": "object"`.
    pub parameters: Value,
    /// Python source defining the function `name` (and helpers): not blank, at most
    /// `tools.max_source_bytes` bytes.
    pub source: String,
    /// Python tests (`test*` functions or `Test*` classes) run in the sandbox before it is registered;
    /// same size limit as the source.
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
            batos_protocol::truncate(&name, 60)
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
    // Source and tests: both required, both bounded by `tools.max_source_bytes`.
    let code = |key: &str, missing: &str, what: &str| -> Result<String, String> {
        let text = v.get(key).and_then(Value::as_str).unwrap_or_default();
        if text.trim().is_empty() {
            return Err(missing.to_string());
        }
        if text.len() > s.max_source_bytes {
            return Err(format!(
                "the {what} {} longer than {} bytes",
                if what == "tests" { "are" } else { "is" },
                s.max_source_bytes
            ));
        }
        Ok(text.to_string())
    };
    let source = code("source", "there is no source code", "source")?;
    let tests = code("tests", "there are no tests", "tests")?;
    Ok(Draft {
        name,
        description,
        parameters,
        source,
        tests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

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
