//! JSON schema → llama.cpp grammar, and the fix-ups around grammar-constrained answers: the tool-or-answer
//! choice schema, string bounding (so an answer closes within its budget), number clamping (so it validates).

use serde_json::{json, Value};

use crate::llm::{LlmError, ToolSpec};

/// JSON schema of the tool-or-answer choice offered to the model when tools are bound.
pub fn tool_choice_schema(tools: &[ToolSpec]) -> Value {
    let mut options = vec![json!({
        "type": "object",
        "properties": {"type": {"const": "answer"}, "content": {"type": "string"}},
        "required": ["type", "content"]
    })];
    for t in tools {
        let args = if t.parameters.is_object() {
            t.parameters.clone()
        } else {
            json!({"type": "object"})
        };
        options.push(json!({
            "type": "object",
            "properties": {"type": {"const": "call"}, "tool": {"const": t.name}, "arguments": args},
            "required": ["type", "tool", "arguments"]
        }));
    }
    json!({"oneOf": options})
}

/// An answer (not a tool call) as the tool-choice grammar lets the model write it, in the preamble's form.
pub(super) fn answer_json(content: &str) -> String {
    json!({"type": "answer", "content": content}).to_string()
}

/// The instructions appended to the system prompt when tools are bound (see [`tool_choice_schema`]).
pub(super) fn tool_preamble(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "You can call tools. Reply with exactly one JSON object: {\"type\":\"answer\",\"content\":\"...\"} to answer, \
         or {\"type\":\"call\",\"tool\":\"<name>\",\"arguments\":{...}} to call a tool. Tools:",
    );
    for t in tools {
        s.push_str(&format!(
            "\n- {}: {} Arguments schema: {}",
            t.name, t.description, t.parameters
        ));
    }
    s
}

/// Caps every unbounded string in a schema at `max` characters, so a grammar-constrained answer always
/// closes within its token budget (a token covers at least one character).
pub fn bound_strings(schema: &mut Value, max: u32) {
    match schema {
        Value::Object(m) => {
            let is_string = m.get("type").and_then(Value::as_str) == Some("string");
            if is_string
                && !m.contains_key("maxLength")
                && !m.contains_key("enum")
                && !m.contains_key("const")
            {
                m.insert("maxLength".into(), json!(max));
            }
            for v in m.values_mut() {
                bound_strings(v, max);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| bound_strings(v, max)),
        _ => {}
    }
}

/// llama.cpp's schema-to-grammar honours `minimum`/`maximum` for integers only; numbers are clamped into
/// their declared range afterwards so the answer validates against the schema it was asked for.
pub fn clamp_numbers(schema: &Value, value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                let lo = schema
                    .get("minimum")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NEG_INFINITY);
                let hi = schema
                    .get("maximum")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::INFINITY);
                let c = x.clamp(lo, hi);
                if c != x {
                    if let Some(n) = serde_json::Number::from_f64(c) {
                        *value = Value::Number(n);
                    }
                }
            }
        }
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(k)) {
                    clamp_numbers(sub, v);
                }
            }
            // Tool-choice answers: find the branch whose const fields match.
            if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
                for b in branches {
                    let matches = b["properties"].as_object().is_some_and(|props| {
                        props
                            .iter()
                            .all(|(k, p)| p.get("const").is_none_or(|c| m.get(k) == Some(c)))
                    });
                    if matches {
                        let mut whole = Value::Object(std::mem::take(m));
                        clamp_numbers(b, &mut whole);
                        if let Value::Object(back) = whole {
                            *m = back;
                        }
                        break;
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                a.iter_mut().for_each(|v| clamp_numbers(items, v));
            }
        }
        _ => {}
    }
}

/// Pieces of llama.cpp's primitive JSON rules that let a model write valid-looking JSON that no JSON parser
/// accepts, each with its replacement:
/// - an exponent of up to 16 digits (`1E8203938408348342`, written by SmolLM2 in a critique score) overflows
///   an f64; two digits keep every number finite (16 integral digits × 10^99 < f64::MAX);
/// - `\uD800`–`\uDFFF` are UTF-16 surrogate halves, which a JSON string may not hold alone.
const HARDENED_RULES: [(&str, &str); 2] = [
    ("([eE] [-+]? integral-part)?", "([eE] [-+]? [0-9]{1,2})?"),
    (
        "\"u\" [0-9a-fA-F]{4}",
        "\"u\" ([0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2})",
    ),
];

/// Compiles a JSON schema to a llama.cpp grammar whose root rule only accepts text that matches it and that
/// `serde_json` parses (see [`HARDENED_RULES`]).
pub(super) fn compile_grammar(schema: &Value) -> Result<String, LlmError> {
    let grammar = llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        LlmError::InvalidRequest(format!(
            "the JSON schema cannot be compiled to a grammar: {e}"
        ))
    })?;
    Ok(HARDENED_RULES
        .iter()
        .fold(grammar, |g, (from, to)| g.replace(from, to)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_get_bounded_unless_already_constrained() {
        let mut s = json!({"type":"object","properties":{
            "a":{"type":"string"},"b":{"type":"string","maxLength":5},"c":{"type":"string","enum":["x"]},
            "d":{"type":"array","items":{"type":"string"}}}});
        bound_strings(&mut s, 100);
        assert_eq!(s["properties"]["a"]["maxLength"], 100);
        assert_eq!(s["properties"]["b"]["maxLength"], 5);
        assert!(s["properties"]["c"].get("maxLength").is_none());
        assert_eq!(s["properties"]["d"]["items"]["maxLength"], 100);
    }

    #[test]
    fn numbers_are_clamped_into_their_range_including_tool_branches() {
        let schema =
            json!({"type":"object","properties":{"d":{"type":"number","minimum":0,"maximum":1}}});
        let mut v = json!({"d": 2018.5});
        clamp_numbers(&schema, &mut v);
        assert_eq!(v["d"], json!(1.0));
        let tools = vec![ToolSpec {
            name: "t".into(),
            description: String::new(),
            parameters: json!({"type":"object","properties":{"x":{"type":"number","minimum":-1,"maximum":0}}}),
        }];
        let schema = tool_choice_schema(&tools);
        let mut v = json!({"type":"call","tool":"t","arguments":{"x": 5}});
        clamp_numbers(&schema, &mut v);
        assert_eq!(v["arguments"]["x"], json!(0.0));
        assert_eq!(v["tool"], "t");
    }

    #[test]
    fn compiled_numbers_and_escapes_stay_within_what_json_parsers_accept() {
        let schema = json!({"type":"object","properties":{
            "d":{"type":"number","minimum":0,"maximum":1},"s":{"type":"string"},"o":{"type":"object"}},
            "required":["d","s","o"]});
        let g = compile_grammar(&schema).unwrap();
        for (from, to) in HARDENED_RULES {
            assert!(!g.contains(from), "`{from}` survived in:\n{g}");
            assert!(g.contains(to), "`{to}` missing from:\n{g}");
        }
        // The widest number and the highest escape the hardened rules allow still parse.
        let widest = format!("-{}.{}e99", "9".repeat(16), "9".repeat(16));
        assert!(serde_json::from_str::<Value>(&widest)
            .unwrap()
            .as_f64()
            .unwrap()
            .is_finite());
        assert!(serde_json::from_str::<Value>("\"\\ud7ff\\uefff\"").is_ok());
        // What the old exponent rule let through, and what the old escape rule let through, do not.
        assert!(serde_json::from_str::<Value>("103629874572868E8203938408348342").is_err());
        assert!(serde_json::from_str::<Value>("\"\\ud800\"").is_err());
    }
}
