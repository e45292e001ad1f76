//! What crosses the node link: one remote message type, and the envelopes its bytes carry.
//!
//! `ractor_cluster` moves a message as the bytes its `BytesConvertable` fields make. Ours are plain `Vec<u8>`
//! (whose conversion is the identity and cannot panic on a peer's bytes); the envelopes inside are MessagePack
//! read with serde (`deny_unknown_fields`) after a size check, so nothing a worker sends is trusted beyond a
//! well-formed, bounded reply to the call that was asked.

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use crate::llm::{ChatRequest, ChatResponse, LlmError};

/// The process group a `think` server joins on its node; the home finds the servers there.
pub const THINK_GROUP: &str = "batos.role.think";

/// Longest node name a reply may carry (settings allow 64).
const MAX_NODE_NAME: usize = 64;

/// The messages a role server takes, local or from the home over the node link.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RoleMsg {
    /// One model call: a [`ThinkCall`]'s bytes in, a [`ThinkReply`]'s bytes out.
    #[rpc]
    Think(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A call this server ran has ended: its id, and the reply's bytes for every caller waiting on it (sent by
    /// the server to itself, so its record of calls changes in one place).
    Done(String, Vec<u8>),
}

/// A model call as the home sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThinkCall {
    /// The call's id: the same on every retry of one request, so a node runs it at most once.
    pub call_id: String,
    /// The request, as the persona built it.
    pub request: ChatRequest,
}

/// What a worker answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThinkReply {
    /// The id of the call this answers.
    pub call_id: String,
    /// The worker's node name.
    pub node: String,
    /// The worker's backend (`ollama` or `embedded`).
    pub backend: String,
    /// The answer or why there is none.
    pub outcome: Outcome,
}

/// A remote call's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Outcome {
    /// The model answered.
    Answer(ChatResponse),
    /// The worker's backend failed: its error as text, and whether it was a timeout.
    Failed {
        /// The error's message.
        message: String,
        /// The worker's backend timed out (a retry elsewhere may help); otherwise the request itself failed.
        timeout: bool,
    },
}

/// Encodes any envelope (field names as strings, like the gateway's wire).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, LlmError> {
    rmp_serde::to_vec_named(v).map_err(|e| LlmError::InvalidRequest(format!("cannot encode: {e}")))
}

/// Reads a call on the worker; `max` bytes at most.
pub fn decode_call(bytes: &[u8], max: u64) -> Result<ThinkCall, String> {
    if bytes.len() as u64 > max {
        return Err(format!(
            "a call of {} bytes is over the {max}-byte bound",
            bytes.len()
        ));
    }
    rmp_serde::from_slice(bytes).map_err(|e| format!("not a think call: {e}"))
}

/// Reads a worker's reply on the home: at most `max` bytes, the right shape, for the call `call_id`.
pub fn decode_reply(bytes: &[u8], max: u64, call_id: &str) -> Result<ThinkReply, LlmError> {
    if bytes.len() as u64 > max {
        return Err(LlmError::BadResponse(format!(
            "a worker's reply of {} bytes is over cluster.max_frame_bytes ({max})",
            bytes.len()
        )));
    }
    let reply: ThinkReply = rmp_serde::from_slice(bytes)
        .map_err(|e| LlmError::BadResponse(format!("a worker's reply is malformed: {e}")))?;
    if reply.call_id != call_id {
        return Err(LlmError::BadResponse(format!(
            "a worker answered call `{}` to call `{call_id}`",
            reply.call_id
        )));
    }
    if reply.node.is_empty()
        || reply.node.len() > MAX_NODE_NAME
        || reply.backend.len() > MAX_NODE_NAME
    {
        return Err(LlmError::BadResponse(
            "a worker's reply names no node, or a name over 64 bytes".into(),
        ));
    }
    Ok(reply)
}

impl ThinkReply {
    /// The reply as the persona's call result; an answer says where it ran (`ollama@w1`).
    pub fn into_result(self) -> Result<ChatResponse, LlmError> {
        match self.outcome {
            Outcome::Answer(mut r) => {
                r.host = Some(format!("{}@{}", self.backend, self.node));
                Ok(r)
            }
            Outcome::Failed { message, timeout } => Err(if timeout {
                LlmError::Backend(format!("node {} timed out: {message}", self.node))
            } else {
                LlmError::Backend(format!("node {}: {message}", self.node))
            }),
        }
    }
}

/// A worker's outcome for its backend's result.
pub fn outcome(result: Result<ChatResponse, LlmError>) -> Outcome {
    match result {
        Ok(r) => Outcome::Answer(r),
        Err(e) => Outcome::Failed {
            timeout: matches!(e, LlmError::Timeout(_)),
            message: e.to_string(),
        },
    }
}
