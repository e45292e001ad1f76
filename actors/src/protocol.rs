//! Wire protocol v1: the contract every client relies on (see `docs/protocol.md`).
//!
//! Bodies are MessagePack maps with string keys. Requests are validated here, at the boundary: unknown
//! fields, wrong types, missing fields and oversize values become [`ErrorCode::BadRequest`]; an unknown
//! command name becomes [`ErrorCode::UnknownCommand`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted request id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A request body as it arrives on the command channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Protocol version; must be 1.
    pub v: u32,
    /// Unique per logical request; a retry reuses it.
    pub id: String,
    /// The gateway secret; only `ping` works without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Command name.
    pub cmd: String,
    /// Command arguments (a map); absent means `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// Error codes of protocol v1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not a valid request (not msgpack, wrong types, missing or unknown fields, too large).
    BadRequest,
    /// Missing or wrong token.
    Unauthorized,
    /// No command of that name.
    UnknownCommand,
    /// The named task, persona, tool, amendment or actor does not exist.
    NotFound,
    /// The request conflicts with the current state (e.g. cancelling a finished task).
    Conflict,
    /// The organ that would answer is down or restarting; retry later.
    Unavailable,
    /// A bug or an unexpected failure inside the daemon.
    Internal,
}

/// The error part of a failed reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// A reply body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Protocol version (1).
    pub v: u32,
    /// The request's id ("" when the request was too broken to carry one).
    pub id: String,
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: impl Into<String>, result: Value) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: id.into(),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failed reply.
    pub fn err(id: impl Into<String>, error: ErrorBody) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: id.into(),
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// Encodes the reply as a msgpack map.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain types to a Vec cannot fail; fall back to a fixed internal error if it ever did.
        rmp_serde::to_vec_named(self).unwrap_or_else(|_| {
            rmp_serde::to_vec_named(&Reply::err(
                "",
                ErrorBody::new(ErrorCode::Internal, "reply could not be encoded"),
            ))
            .unwrap_or_default()
        })
    }

    /// Turns the reply into the result, or the error it carries.
    pub fn into_result(self) -> Result<Value, ErrorBody> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Null))
        } else {
            Err(self
                .error
                .unwrap_or_else(|| ErrorBody::new(ErrorCode::Internal, "reply without error")))
        }
    }
}

/// An event body on the event channel (frame 2; frame 1 is the topic, equal to `kind`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventBody {
    /// Protocol version (1).
    pub v: u32,
    /// Sequence number: +1 per event; heartbeats carry the current value without incrementing it.
    pub seq: u64,
    /// Unix time in seconds.
    pub ts: f64,
    /// Event kind, e.g. `task.step`.
    pub kind: String,
    /// Kind-specific payload.
    pub data: Value,
}

/// Arguments of `submit_task`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskArgs {
    /// What the Architect asks.
    pub text: String,
}

/// Arguments of commands that name one thing by id (`get_task`, `cancel_task`, `approve_amendment`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// The id.
    pub id: String,
}

/// Arguments of `resume_task`: the Architect's answer to a paused philosophical inquiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeTaskArgs {
    /// The paused task.
    pub id: String,
    /// Free-text guidance passed to the personas when the task continues.
    #[serde(default)]
    pub guidance: Option<String>,
}

/// Arguments of `reject_amendment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectArgs {
    /// The amendment.
    pub id: String,
    /// Why it is rejected; shown to the persona.
    pub reason: String,
}

/// Arguments of `update_persona` (cognitive surgery).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePersonaArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
    /// Which editable field (see docs/protocol.md).
    pub field: String,
    /// Its new value.
    pub value: Value,
}

/// Arguments of commands that name a persona.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
}

/// Arguments of `swap_model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapModelArgs {
    /// The persona to move.
    pub persona: String,
    /// The model it moves to.
    pub model: String,
}

/// Arguments of `memory_search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySearchArgs {
    /// Query text.
    pub query: String,
    /// How many details to return.
    #[serde(default)]
    pub k: Option<usize>,
    /// Include the stage-2 query plan.
    #[serde(default)]
    pub explain: bool,
}

/// Arguments of `memory_ingest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryIngestArgs {
    /// Things to remember.
    pub items: Vec<crate::memory::IngestItem>,
}

/// Arguments of `forge_tool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeToolArgs {
    /// What the tool must do.
    pub capability: String,
}

/// Arguments of `call_tool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallToolArgs {
    /// Tool name.
    pub name: String,
    /// Its arguments (an object).
    #[serde(default)]
    pub args: Option<Value>,
}

/// Arguments of `debug_crash`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugCrashArgs {
    /// The actor to crash: a persona name (e.g. `BRICK`) or an organ (`orchestrator`, `codex`, ...).
    pub actor: String,
}

/// Arguments of commands that take none.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A parsed, validated command.
#[derive(Debug, Clone)]
pub enum Command {
    /// Liveness; works without a token.
    Ping,
    /// The live tree, restart counts, models.
    Status,
    /// `{seq, state}` for late joiners.
    Snapshot,
    /// Start a task.
    SubmitTask(SubmitTaskArgs),
    /// One task with its step history.
    GetTask(IdArgs),
    /// All tracked tasks, newest first.
    ListTasks,
    /// Cancel a queued, running or paused task.
    CancelTask(IdArgs),
    /// Resume a task paused at the philosophical-inquiry interrupt.
    ResumeTask(ResumeTaskArgs),
    /// Registered tools.
    ListTools,
    /// Have the ToolForge create a tool for a capability.
    ForgeTool(ForgeToolArgs),
    /// Call a registered tool directly (in its sandbox).
    CallTool(CallToolArgs),
    /// Cognitive surgery on a persona's editable state.
    UpdatePersona(UpdatePersonaArgs),
    /// One persona's live state, answered by its actor.
    GetPersona(PersonaArgs),
    /// Cognitive atomic swap.
    SwapModel(SwapModelArgs),
    /// Pending and decided codex amendments.
    ListAmendments,
    /// Approve (commit) an amendment.
    ApproveAmendment(IdArgs),
    /// Reject an amendment.
    RejectAmendment(RejectArgs),
    /// Two-stage memory retrieval.
    MemorySearch(MemorySearchArgs),
    /// Store texts in memory directly (seeding facts).
    MemoryIngest(MemoryIngestArgs),
    /// Run one consolidation pass now.
    MemoryConsolidate,
    /// Memory table statistics.
    MemoryStats,
    /// Make an actor panic (fault injection).
    DebugCrash(DebugCrashArgs),
}

/// Every command name of protocol v1, for `unknown_command` messages and docs.
pub const COMMANDS: &[&str] = &[
    "ping",
    "status",
    "snapshot",
    "submit_task",
    "get_task",
    "list_tasks",
    "cancel_task",
    "resume_task",
    "list_tools",
    "forge_tool",
    "call_tool",
    "update_persona",
    "get_persona",
    "swap_model",
    "list_amendments",
    "approve_amendment",
    "reject_amendment",
    "memory_search",
    "memory_ingest",
    "memory_consolidate",
    "memory_stats",
    "debug_crash",
];

impl Command {
    /// Validates `args` for command `cmd`.
    pub fn parse(cmd: &str, args: Option<Value>) -> Result<Command, ErrorBody> {
        let args = args.unwrap_or_else(|| Value::Object(Default::default()));
        fn typed<T: serde::de::DeserializeOwned>(cmd: &str, args: Value) -> Result<T, ErrorBody> {
            serde_json::from_value(args).map_err(|e| {
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("invalid args for `{cmd}`: {e}"),
                )
            })
        }
        let none = |args: Value| typed::<NoArgs>(cmd, args).map(|_| ());
        Ok(match cmd {
            "ping" => none(args).map(|_| Command::Ping)?,
            "status" => none(args).map(|_| Command::Status)?,
            "snapshot" => none(args).map(|_| Command::Snapshot)?,
            "submit_task" => Command::SubmitTask(typed(cmd, args)?),
            "get_task" => Command::GetTask(typed(cmd, args)?),
            "list_tasks" => none(args).map(|_| Command::ListTasks)?,
            "cancel_task" => Command::CancelTask(typed(cmd, args)?),
            "resume_task" => Command::ResumeTask(typed(cmd, args)?),
            "list_tools" => none(args).map(|_| Command::ListTools)?,
            "forge_tool" => Command::ForgeTool(typed(cmd, args)?),
            "call_tool" => Command::CallTool(typed(cmd, args)?),
            "update_persona" => Command::UpdatePersona(typed(cmd, args)?),
            "get_persona" => Command::GetPersona(typed(cmd, args)?),
            "swap_model" => Command::SwapModel(typed(cmd, args)?),
            "list_amendments" => none(args).map(|_| Command::ListAmendments)?,
            "approve_amendment" => Command::ApproveAmendment(typed(cmd, args)?),
            "reject_amendment" => Command::RejectAmendment(typed(cmd, args)?),
            "memory_search" => Command::MemorySearch(typed(cmd, args)?),
            "memory_ingest" => Command::MemoryIngest(typed(cmd, args)?),
            "memory_consolidate" => none(args).map(|_| Command::MemoryConsolidate)?,
            "memory_stats" => none(args).map(|_| Command::MemoryStats)?,
            "debug_crash" => Command::DebugCrash(typed(cmd, args)?),
            other => {
                return Err(ErrorBody::new(
                    ErrorCode::UnknownCommand,
                    format!(
                        "unknown command `{}`; known: {}",
                        truncate(other, 64),
                        COMMANDS.join(", ")
                    ),
                ))
            }
        })
    }
}

/// Decodes and checks a request body. Errors carry the request id when one could be read.
pub fn decode_request(body: &[u8], max_bytes: usize) -> Result<Request, (String, ErrorBody)> {
    if body.len() > max_bytes {
        return Err((
            String::new(),
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "request of {} bytes exceeds the limit of {max_bytes}",
                    body.len()
                ),
            ),
        ));
    }
    // rmp-serde would also accept a struct encoded as an array; the protocol says maps, so hold clients to it.
    let is_map = matches!(body.first(), Some(0x80..=0x8f | 0xde | 0xdf));
    if !is_map {
        return Err((
            String::new(),
            ErrorBody::new(
                ErrorCode::BadRequest,
                "request body must be a MessagePack map",
            ),
        ));
    }
    let req: Request = rmp_serde::from_slice(body).map_err(|e| {
        (
            salvage_id(body),
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("not a valid v1 request: {}", truncate(&e.to_string(), 200)),
            ),
        )
    })?;
    if req.id.is_empty() || req.id.len() > MAX_ID_LEN {
        return Err((
            String::new(),
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("`id` must be 1..={MAX_ID_LEN} bytes"),
            ),
        ));
    }
    if req.v != PROTOCOL_VERSION {
        return Err((
            req.id,
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "unsupported protocol version {}; this daemon speaks 1",
                    req.v
                ),
            ),
        ));
    }
    Ok(req)
}

/// Best effort: the `id` of a request that failed validation, so the client can match the error to it.
fn salvage_id(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    match rmp_serde::from_slice::<IdOnly>(body) {
        Ok(x) if !x.id.is_empty() && x.id.len() <= MAX_ID_LEN => x.id,
        _ => String::new(),
    }
}

/// Cuts a string to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: &Value) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn valid_request_decodes() {
        let b = enc(&json!({"v":1,"id":"a","token":"t","cmd":"ping","args":{}}));
        let r = decode_request(&b, 1024).unwrap();
        assert_eq!(r.cmd, "ping");
        assert!(matches!(
            Command::parse(&r.cmd, r.args).unwrap(),
            Command::Ping
        ));
    }

    #[test]
    fn unknown_field_is_bad_request_with_id() {
        let b = enc(&json!({"v":1,"id":"a","cmd":"ping","extra":1}));
        let (id, e) = decode_request(&b, 1024).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(id, "a");
    }

    #[test]
    fn wrong_types_and_garbage_are_bad_request() {
        for b in [
            enc(&json!({"v":"1","id":"a","cmd":"ping"})),
            enc(&json!({"v":1,"id":7,"cmd":"ping"})),
            enc(&json!([1, 2, 3])),
            vec![0xc1],
            vec![],
            enc(&json!({"v":2,"id":"a","cmd":"ping"})),
            enc(&json!({"v":1,"id":"","cmd":"ping"})),
        ] {
            let (_, e) = decode_request(&b, 1024).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{b:?}");
        }
    }

    #[test]
    fn oversize_is_refused_unread() {
        let (_, e) = decode_request(&vec![0u8; 2048], 1024).unwrap_err();
        assert!(e.message.contains("exceeds"));
    }

    #[test]
    fn args_are_validated_per_command() {
        assert_eq!(
            Command::parse("nope", None).unwrap_err().code,
            ErrorCode::UnknownCommand
        );
        assert_eq!(
            Command::parse("submit_task", Some(json!({"txt":"x"})))
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            Command::parse("ping", Some(json!({"x":1})))
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        assert!(matches!(
            Command::parse("submit_task", Some(json!({"text":"x"}))).unwrap(),
            Command::SubmitTask(_)
        ));
    }

    #[test]
    fn reply_roundtrip() {
        let r = Reply::err("x", ErrorBody::new(ErrorCode::NotFound, "no"));
        let back: Reply = rmp_serde::from_slice(&r.encode()).unwrap();
        assert_eq!(back, r);
        let v: Value = rmp_serde::from_slice(&Reply::ok("y", json!({"a":1})).encode()).unwrap();
        assert_eq!(v, json!({"v":1,"id":"y","ok":true,"result":{"a":1}}));
    }
}
