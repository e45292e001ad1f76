//! What crosses the node link: one remote message type, and the envelopes its bytes carry.
//!
//! `ractor_cluster` moves a message as the bytes its `BytesConvertable` fields make. Ours are plain `Vec<u8>`
//! (whose conversion is the identity and cannot panic on a peer's bytes); the envelopes inside are MessagePack
//! read with serde (`deny_unknown_fields`) after a size check, so nothing a worker sends is trusted beyond a
//! well-formed, bounded reply to the call that was asked.

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::{ChatRequest, ChatResponse, LlmError};
use crate::tools::sandbox::Output;
use crate::trainer::{Progress, TrainJob, Trained};

/// Longest node name a reply may carry (settings allow 64).
const MAX_NODE_NAME: usize = 64;

/// A role a worker node serves (`[cluster] roles`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Persona model calls, on the worker's own backend.
    Think,
    /// Sandboxed tool runs (a forged tool's call, the ToolForge's test run), in the worker's own sandbox pool.
    Tools,
    /// The training part of a trainer run, on the worker's CPU.
    Train,
}

impl Role {
    /// Every role, in the order `status` lists them.
    pub const ALL: [Role; 3] = [Role::Think, Role::Tools, Role::Train];

    /// Its name in settings and in `status`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Think => "think",
            Role::Tools => "tools",
            Role::Train => "train",
        }
    }

    /// The role named `s`, if this build has it.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The process group its servers join on their node; the home finds them there.
    pub fn group(self) -> String {
        format!("batos.role.{}", self.name())
    }
}

/// The messages a role server takes, local or from the home over the node link.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RoleMsg {
    /// One call: a [`RoleCall`]'s bytes in, a [`RoleReply`]'s bytes out.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A call this server ran has ended: its id, and the reply's bytes for every caller waiting on it (sent by
    /// the server to itself, so its record of calls changes in one place).
    Done(String, Vec<u8>),
    /// From the home: this node is refused (its name is in use); the text says why. The worker stops.
    Refused(Vec<u8>),
    /// From the home: how far is the running call of this id (its bytes)? A [`Progress`] or nil, MessagePack.
    #[rpc]
    Progress(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// From the home: stop the running call of this id (its bytes) — a training run stops at its next step,
    /// checkpoint written, and answers as cancelled.
    Cancel(Vec<u8>),
    /// A call this server ran has ended and must not be remembered: a cancelled training run, which the next
    /// call of its id resumes from its checkpoint rather than be answered "cancelled" again.
    Forget(String, Vec<u8>),
}

/// A call as the home sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleCall {
    /// The call's id: the same on every retry of one request, so a node runs it at most once.
    pub call_id: String,
    /// What to do.
    pub work: Work,
}

/// The work of one call, one kind per role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Work {
    /// `think`: a model call, as the persona built it.
    Think(ChatRequest),
    /// `tools`: one sandbox run — the runner's request (mode, source, arguments) as the home built it; the
    /// worker's own `[tools]` limits apply.
    Sandbox(Value),
    /// `train`: the training part of a trainer run.
    Train(Box<TrainJob>),
}

impl Work {
    /// The role that serves it.
    pub fn role(&self) -> Role {
        match self {
            Work::Think(_) => Role::Think,
            Work::Sandbox(_) => Role::Tools,
            Work::Train(_) => Role::Train,
        }
    }
}

/// What a worker answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleReply {
    /// The id of the call this answers.
    pub call_id: String,
    /// The worker's node name.
    pub node: String,
    /// What ran it: the worker's model backend (`ollama`, `embedded`) or sandbox backend (`runsc`, `docker`).
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
    /// The sandbox ran (the tool may still have failed inside it: the output says).
    Ran(Output),
    /// The training run ended (or was cancelled, checkpoint kept).
    Trained(Trained),
    /// The worker could not do the work: its error as text, and whether it was a timeout.
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
pub fn decode_call(bytes: &[u8], max: u64) -> Result<RoleCall, String> {
    if bytes.len() as u64 > max {
        return Err(format!(
            "a call of {} bytes is over the {max}-byte bound",
            bytes.len()
        ));
    }
    rmp_serde::from_slice(bytes).map_err(|e| format!("not a role call: {e}"))
}

/// Reads a worker's reply on the home: at most `max` bytes, the right shape, for the call `call_id`.
pub fn decode_reply(bytes: &[u8], max: u64, call_id: &str) -> Result<RoleReply, LlmError> {
    if bytes.len() as u64 > max {
        return Err(LlmError::BadResponse(format!(
            "a worker's reply of {} bytes is over cluster.max_frame_bytes ({max})",
            bytes.len()
        )));
    }
    let reply: RoleReply = rmp_serde::from_slice(bytes)
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

impl RoleReply {
    /// The reply to a `think` call as the persona's call result; an answer says where it ran (`ollama@w1`).
    pub fn into_chat(self) -> Result<ChatResponse, LlmError> {
        match self.outcome {
            Outcome::Answer(mut r) => {
                r.host = Some(format!("{}@{}", self.backend, self.node));
                Ok(r)
            }
            Outcome::Ran(_) | Outcome::Trained(_) => Err(mismatch(&self.node, "a model call")),
            Outcome::Failed { message, timeout } => Err(failed(&self.node, message, timeout)),
        }
    }

    /// The reply to a `tools` call as the sandbox run's output; `Err` says why the worker ran nothing.
    pub fn into_run(self) -> Result<Output, LlmError> {
        match self.outcome {
            Outcome::Ran(out) => Ok(out),
            Outcome::Answer(_) | Outcome::Trained(_) => Err(mismatch(&self.node, "a sandbox run")),
            Outcome::Failed { message, timeout } => Err(failed(&self.node, message, timeout)),
        }
    }

    /// The reply to a `train` call as the run's training result.
    pub fn into_trained(self) -> Result<Trained, LlmError> {
        match self.outcome {
            Outcome::Trained(t) => Ok(t),
            Outcome::Answer(_) | Outcome::Ran(_) => Err(mismatch(&self.node, "a training run")),
            Outcome::Failed { message, timeout } => Err(failed(&self.node, message, timeout)),
        }
    }
}

fn mismatch(node: &str, asked: &str) -> LlmError {
    LlmError::BadResponse(format!(
        "node {node} answered {asked} with the result of another role"
    ))
}

/// Reads a worker's answer to a progress question: a training run's last step, or nothing yet.
pub fn decode_progress(bytes: &[u8]) -> Option<Progress> {
    // A progress report is a few numbers: anything larger is not one.
    if bytes.len() > 1024 {
        return None;
    }
    rmp_serde::from_slice::<Option<Progress>>(bytes)
        .ok()
        .flatten()
}

fn failed(node: &str, message: String, timeout: bool) -> LlmError {
    if timeout {
        LlmError::Backend(format!("node {node} timed out: {message}"))
    } else {
        LlmError::Backend(format!("node {node}: {message}"))
    }
}

/// A worker's outcome for its backend's result.
pub fn outcome(result: Result<Outcome, LlmError>) -> Outcome {
    match result {
        Ok(r) => r,
        Err(e) => Outcome::Failed {
            timeout: matches!(e, LlmError::Timeout(_)),
            message: e.to_string(),
        },
    }
}
