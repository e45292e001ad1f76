//! The LLM trait every organ uses, and its backends.
//!
//! - [`ollama::OllamaBackend`]: a real Ollama server over HTTP through `ollama-rs` (production);
//! - [`embedded::EmbeddedBackend`]: llama.cpp in process through `llama-cpp-2` (offline default);
//! - [`select`]: `auto` picks Ollama when it answers, else the embedded model.

pub mod embedded;
pub mod ollama;
pub mod select;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::Settings;
pub use crate::settings::{Sampling, SamplingOverrides};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (persona system prompt and principles).
    System,
    /// The Architect, or the orchestrator speaking for the task.
    User,
    /// A model's answer.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Tool calls the assistant asked for (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl ChatMessage {
    /// A message with no tool calls.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
        }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of its arguments (an object schema).
    pub parameters: Value,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    /// Name of the tool to call, as the model wrote it; it may name no offered tool.
    pub name: String,
    /// Arguments (should match the tool's schema; the tool validates).
    pub arguments: Value,
}

/// Each persona's sampling defaults (before its editable overrides), as settings.toml says now.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingTable {
    default: Sampling,
    personas: std::collections::BTreeMap<String, Sampling>,
}

impl SamplingTable {
    /// The same sampling for every persona.
    pub fn uniform(s: Sampling) -> Self {
        Self {
            default: s,
            personas: Default::default(),
        }
    }

    /// `[llm]` with each persona's `[personas.<name>]` overrides.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            default: Sampling::for_persona(s, ""),
            personas: crate::PERSONAS
                .iter()
                .map(|p| (p.to_string(), Sampling::for_persona(s, p)))
                .collect(),
        }
    }

    /// The sampling of `persona` (the `[llm]` defaults for a name the table does not know).
    pub fn get(&self, persona: &str) -> Sampling {
        self.personas.get(persona).copied().unwrap_or(self.default)
    }
}

/// One chat request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatRequest {
    /// Model name or spec.
    pub model: String,
    /// The conversation, system message first.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// When set, the answer must be JSON matching this schema.
    pub format: Option<Value>,
    /// Sampling for this call: the `[llm]` defaults with the persona's editable overrides applied.
    pub sampling: Sampling,
}

/// A model's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChatResponse {
    /// The text (JSON text when a format was requested).
    pub content: String,
    /// Tools the model asked to call, in order; empty when it answered in text (the embedded backend
    /// asks for at most one per answer).
    pub tool_calls: Vec<ToolCall>,
    /// Prompt tokens evaluated, when the backend reports it.
    pub prompt_tokens: u64,
    /// Of `prompt_tokens`, how many were not evaluated again because their KV cache was reused from an
    /// earlier prompt (the embedded backend's prefix cache; 0 where a backend does not say).
    #[serde(default)]
    pub cached_tokens: u64,
    /// Tokens generated, when the backend reports it.
    pub completion_tokens: u64,
    /// Why the generation ended.
    #[serde(default)]
    pub finish: Finish,
    /// Where a worker node served the call: `<its backend>@<its node name>` (for example `ollama@gpu-1`);
    /// `None` when this machine's own backend did (README, "Beyond one machine").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its turn (end-of-generation token); also Ollama's `stop`.
    #[default]
    Stop,
    /// The token budget (`max_tokens`) or the context ran out.
    Length,
    /// The embedded loop guard ended a repeating answer (the repeat cut off).
    Loop,
}

/// Receives streamed text fragments as they are generated.
pub type TokenSink = tokio::sync::mpsc::UnboundedSender<String>;

/// Which kind of backend.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// An Ollama server over HTTP at `llm.ollama_url`; `"ollama"` on the wire.
    Ollama,
    /// llama.cpp in process (`[llm.embedded]`); `"embedded"` on the wire.
    Embedded,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Ollama => "ollama",
            BackendKind::Embedded => "embedded",
        })
    }
}

/// A model to create from a base and a LoRA adapter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSpec {
    /// Name of the new model.
    pub name: String,
    /// Model the new one derives from; on the embedded backend it must be `llm.embedded.model_name`.
    pub base: String,
    /// LoRA adapter file (GGUF).
    pub adapter: Option<PathBuf>,
}

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// The backend could not be reached.
    #[error("LLM backend unreachable at {url}: {detail}")]
    Unreachable {
        /// Where it was tried.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// The backend does not have the model.
    #[error("model `{model}` is not available: {detail}")]
    ModelNotFound {
        /// The model asked for.
        model: String,
        /// Backend message.
        detail: String,
    },
    /// The request took longer than allowed.
    #[error("LLM request timed out after {0} ms")]
    Timeout(u64),
    /// The backend answered something unusable.
    #[error("LLM backend answered badly: {0}")]
    BadResponse(String),
    /// The request itself is invalid (e.g. a schema that is not an object).
    #[error("invalid LLM request: {0}")]
    InvalidRequest(String),
    /// The backend's queue is full: try again later.
    #[error("LLM backend busy: {0}")]
    Busy(String),
    /// Any other backend failure.
    #[error("LLM backend error: {0}")]
    Backend(String),
}

/// The one interface to language models.
#[async_trait]
pub trait LlmBackend: Send + Sync + fmt::Debug {
    /// Which kind this is.
    fn kind(&self) -> BackendKind;
    /// Where it lives, for messages (URL or model path).
    fn location(&self) -> String;
    /// One chat completion; text fragments go to `tokens` as they are produced.
    async fn chat(
        &self,
        req: ChatRequest,
        tokens: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError>;
    /// Embeddings of `inputs`, one vector each, all of the model's dimension.
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError>;
    /// Makes `spec.name` usable as a model (base plus adapter).
    async fn create_model(&self, spec: &ModelSpec) -> Result<(), LlmError>;
    /// Whether the backend answers now.
    async fn health(&self) -> Result<(), LlmError>;
    /// Whether the backend can serve `model` now: `Err(ModelNotFound)` when it cannot, another error when it
    /// could not be asked. A swap checks this before anything changes, so a typo is refused, not persisted.
    async fn check_model(&self, model: &str) -> Result<(), LlmError>;
}
