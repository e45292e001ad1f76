//! The judge: an additive 5-point rubric (after Self-Rewarding Language Models, Yuan et al. 2024) asked of a
//! persona with a JSON schema, and a strict reading of its answer.
//!
//! Additive points suit a small judge: each point is one yes/no question about the answer, easier to get
//! right than a holistic grade. The score comes first in the schema so that a reason cut off by the token
//! budget still leaves a complete score to read; an answer with no readable score in 0..=5 is a
//! `judge_unparseable` rejection, never an accept.

use batos_protocol::truncate;
use serde_json::{json, Value};

/// The JSON schema of the judge's answer.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 0, "maximum": 5},
            "reason": {"type": "string"}
        },
        "required": ["score", "reason"]
    })
}

/// The prompt: the rubric, then the request and the answer, each cut to `max_bytes`.
pub fn prompt(persona: &str, node: &str, request: &str, answer: &str, max_bytes: usize) -> String {
    format!(
        "Judge one answer that {persona} gave in the `{node}` step of a task. Score it with this additive \
         rubric, starting from 0:\n\
         - add 1 point if the answer is relevant to the request, even if incomplete;\n\
         - add 1 point if it addresses a substantial part of the request;\n\
         - add 1 point if it settles the basic elements of the request usefully;\n\
         - add 1 point if it is clear, well organised and in the role the request asks for;\n\
         - add 1 point if it is excellent: accurate, focused, nothing superfluous, nothing repeated.\n\
         Answer with JSON only: {{\"score\": <0 to 5>, \"reason\": \"<one sentence>\"}}.\n\n\
         [Request]\n{}\n\n[Answer]\n{}\n",
        truncate(request.trim(), max_bytes),
        truncate(answer.trim(), max_bytes),
    )
}

/// A parsed judge answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// 0..=5.
    pub score: u8,
    /// The judge's reason ("" when its answer was cut before one).
    pub reason: String,
}

/// Reads the judge's answer: the JSON object asked for, or — when the token budget cut it off — a complete
/// leading `{"score": N` with N in 0..=5. Anything else is `Err` with what was wrong.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        let score = v
            .get("score")
            .and_then(Value::as_u64)
            .ok_or_else(|| "no integer `score` in the judge's JSON".to_string())?;
        if score > 5 {
            return Err(format!("score {score} is outside 0..=5"));
        }
        let reason = v.get("reason").and_then(Value::as_str).unwrap_or_default();
        return Ok(Parsed {
            score: score as u8,
            reason: truncate(reason.trim(), 500).to_string(),
        });
    }
    // A cut-off object: accept only a score that is complete (followed by a delimiter).
    let rest = t
        .strip_prefix('{')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("\"score\""))
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix(':'))
        .map(str::trim_start);
    if let Some(rest) = rest {
        let mut chars = rest.chars();
        if let (Some(d), Some(next)) = (chars.next(), chars.next()) {
            if let (Some(n), true) = (d.to_digit(10), matches!(next, ',' | '}' | ' ' | '\n')) {
                if n <= 5 {
                    return Ok(Parsed {
                        score: n as u8,
                        reason: String::new(),
                    });
                }
            }
        }
    }
    Err(format!(
        "the judge's answer is not the JSON asked for: {:?}",
        truncate(t, 120)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            parse(r#"{"score": 4, "reason": "Clear."}"#).unwrap(),
            Parsed {
                score: 4,
                reason: "Clear.".into()
            }
        );
        assert_eq!(
            parse(r#"{"score": 5, "reason": "Very good and"#)
                .unwrap()
                .score,
            5
        );
        for bad in [
            "",
            "Great answer! 5/5",
            r#"{"score": 9, "reason": "x"}"#,
            r#"{"score": "five"}"#,
            r#"{"reason": "no score"}"#,
            r#"{"score": 4"#,
            r#"{"score": 45, "reason": "#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_prompt_cuts_long_text() {
        let p = prompt("BRICK", "draft", &"q".repeat(5000), &"a".repeat(5000), 100);
        assert!(p.len() < 1200, "{}", p.len());
        assert!(p.contains("additive"));
    }
}
