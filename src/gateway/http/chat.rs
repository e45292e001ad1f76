//! What a chat request says: OpenAI's chat-completions body, read strictly ([`ChatRequest`]), and the task it
//! asks for ([`task_text`]). The OpenAI routes (`openai.rs`) run the task and answer.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// One message of a chat request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `user`, `assistant`, `system`, `developer` or `tool`.
    pub role: String,
    /// A string, or a list of parts of which only `{"type": "text", "text": …}` is understood.
    #[serde(default)]
    pub content: Option<Value>,
    /// Accepted and not used.
    #[serde(default)]
    pub name: Option<String>,
    /// Accepted and not used (the household calls its own tools).
    #[serde(default)]
    pub tool_calls: Option<Value>,
    /// Accepted and not used.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Accepted and not used.
    #[serde(default)]
    pub refusal: Option<Value>,
    /// Accepted and not used.
    #[serde(default)]
    pub function_call: Option<Value>,
}

/// The body of `POST /v1/chat/completions`: OpenAI's parameters as of 2026, every one named so that a
/// misspelt one is refused by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the accepted-and-ignored parameters are read by nobody, on purpose
pub struct ChatRequest {
    /// Must be `http.model_name`.
    pub model: String,
    /// The conversation; the last one must be the person's.
    pub messages: Vec<ChatMessage>,
    /// Stream chunks as Server-Sent Events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// At most 1: the household gives one answer.
    #[serde(default)]
    pub n: Option<u32>,
    /// Must be empty: the household forges and calls its own tools; a client's functions are not offered.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// Likewise, the older name.
    #[serde(default)]
    pub functions: Option<Vec<Value>>,
    // Accepted and not applied (see the module's essay): named so that a misspelt parameter is refused.
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    temperature: Option<Value>,
    #[serde(default)]
    top_p: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    user: Option<Value>,
    #[serde(default)]
    seed: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<Value>,
    #[serde(default)]
    frequency_penalty: Option<Value>,
    #[serde(default)]
    logit_bias: Option<Value>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    top_logprobs: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    store: Option<Value>,
    #[serde(default)]
    service_tier: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    modalities: Option<Value>,
    #[serde(default)]
    prediction: Option<Value>,
    #[serde(default)]
    audio: Option<Value>,
    #[serde(default)]
    web_search_options: Option<Value>,
    #[serde(default)]
    verbosity: Option<Value>,
    #[serde(default)]
    prompt_cache_key: Option<Value>,
    #[serde(default)]
    safety_identifier: Option<Value>,
}

/// The text of a message's content, or why it has none the household can read.
fn text_of(content: &Option<Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => out.push_str(t),
                    (kind, _) => {
                        return Err(format!(
                            "a content part of type {} is not understood (only text)",
                            kind.unwrap_or("(none)")
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err("content must be a string or a list of text parts".into()),
    }
}

/// The task a chat request asks for: the person's last message, after the earlier turns quoted as a note
/// (every line behind `> `, so nothing in them reads as an instruction to the household).
pub fn task_text(messages: &[ChatMessage]) -> Result<String, String> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err("messages is empty".into());
    };
    if last.role != "user" {
        return Err(format!(
            "the last message must be the person's (role \"user\"), not \"{}\"",
            last.role
        ));
    }
    let ask = text_of(&last.content)?;
    if ask.trim().is_empty() {
        return Err("the last message has no text".into());
    }
    let mut note = String::new();
    for m in earlier {
        let who = match m.role.as_str() {
            "user" => "Person",
            "assistant" => "You",
            "system" | "developer" | "tool" => continue,
            other => return Err(format!("unknown role \"{other}\"")),
        };
        let text = text_of(&m.content)?;
        if text.trim().is_empty() {
            continue;
        }
        for (i, line) in text.trim().lines().enumerate() {
            let head = if i == 0 {
                format!("{who}: ")
            } else {
                String::new()
            };
            note.push_str(&format!("> {head}{line}\n"));
        }
    }
    if note.is_empty() {
        Ok(ask.trim().to_string())
    } else {
        Ok(format!(
            "Earlier in this conversation (quoted):\n{note}\n{}",
            ask.trim()
        ))
    }
}

/// Checks a parsed request against what the household offers.
pub fn admissible(req: &ChatRequest, model_name: &str) -> Result<(), (StatusCode, String)> {
    if req.model != model_name {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no model \"{}\": this household answers as \"{model_name}\"",
                req.model
            ),
        ));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err((StatusCode::BAD_REQUEST, "n must be 1".into()));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty())
        || req.functions.as_ref().is_some_and(|t| !t.is_empty())
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "tools are not offered: the household forges and calls its own".into(),
        ));
    }
    Ok(())
}
