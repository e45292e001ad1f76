//! The Think port: one model call by a persona, as the organs that only need a persona to think see it (the
//! Curator's judge, the Motivator's phrasing, memory's summaries, the ToolForge's writer, the codex inquiry).
//! They hold an `Arc<dyn Think>`, which boot fills with the personas registry; so they do not import the
//! personas organ, and the call's request and answer types live here on the floor with it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PortError;
use crate::llm::{BackendKind, ChatMessage, ChatResponse, TokenSink, ToolSpec};

/// One model call by `persona`'s current generation (a swap between two calls is seen by the second).
#[async_trait]
pub trait Think: Send + Sync {
    /// Asks `persona` (`ALFRED`, `BABS`, `BRICK` or `ROBIN`); `Unreachable` while its actor restarts,
    /// `Refused` for an unknown persona or a failed model call.
    async fn think(&self, persona: &str, req: ThinkRequest) -> Result<Thought, PortError>;
}

/// A model call a task asks a persona to make.
#[derive(Debug, Clone)]
pub struct ThinkRequest {
    /// The conversation so far, without the system message (the persona adds its own).
    pub messages: Vec<ChatMessage>,
    /// Tools offered for this call.
    pub tools: Vec<ToolSpec>,
    /// JSON schema the answer must match.
    pub format: Option<Value>,
    /// Where streamed text goes.
    pub tokens: Option<TokenSink>,
    /// Which draw of this same request the call is: 0 samples with the configured seed, n with seed + n.
    /// A fixed seed makes one request sample alike every time (reproducible answers), so a caller that wants
    /// several different answers to one request (self-consistency) numbers its draws.
    pub sample: u32,
}

/// A persona's answer, with who produced it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Thought {
    /// The backend's answer: text (JSON when a format was asked), tool calls, token counts.
    pub response: ChatResponse,
    /// Persona that answered (`ALFRED`, `BABS`, `BRICK` or `ROBIN`).
    pub persona: String,
    /// Model of the answering actor (fixed for its life; a swap starts a new actor).
    pub model: String,
    /// The daemon's one backend, chosen at start (`ollama` or `embedded`).
    pub backend: BackendKind,
    /// Generation of the answering actor: one counter over all personas, +1 per start, restart or swap.
    pub generation: u64,
    /// Wall time of the model call in ms, queueing in the backend included.
    pub duration_ms: u64,
    /// The system message the persona put before the conversation (its codex principles and any surgery),
    /// so the exchange can be curated as exactly what the model saw.
    pub system: String,
}
