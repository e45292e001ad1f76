//! Request handling: decode, authenticate, dedupe, dispatch to the organ that owns the command.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use serde_json::{json, Value};

use batos_actors::codex::{CodexCmdError, CodexMsg, CODEX_NAME};
use batos_actors::memory::{self, MemError, MemoryMsg};
use batos_actors::orchestrator::ForgeHook;
use batos_actors::orchestrator::{OrchError, OrchestratorMsg, ORCHESTRATOR_NAME};
use batos_actors::personas::{PersonaError, ProtoMsg};
use batos_actors::protocol::{decode_request, Command, ErrorBody, ErrorCode, Reply};
use batos_actors::tools::forge::ForgeLink;
use batos_actors::tools::ToolOutput;

use super::dedupe::Begin;
use super::{GatewayMsg, Organs, GATEWAY_NAME};

type CmdResult = Result<Value, ErrorBody>;

/// Handles one request body and returns the encoded reply.
pub async fn process(organs: &Organs, body: &[u8]) -> Arc<Vec<u8>> {
    let max = organs.settings.load().gateway.max_request_bytes;
    let req = match decode_request(body, max) {
        Ok(r) => r,
        Err((id, e)) => return Arc::new(Reply::err(id, e).encode()),
    };
    let authorised = match &req.token {
        Some(t) => constant_time_eq(t.as_bytes(), organs.token.as_bytes()),
        None => false,
    };
    if !authorised && req.cmd != "ping" {
        let why = if req.token.is_none() {
            "missing token"
        } else {
            "wrong token"
        };
        return Arc::new(
            Reply::err(
                req.id,
                ErrorBody::new(
                    ErrorCode::Unauthorized,
                    format!("{why}: read it from <data_dir>/gateway.token, or pass --token / BATOS_TOKEN"),
                ),
            )
            .encode(),
        );
    }
    // Unauthenticated requests are never remembered: a stranger must not be able to poison someone's id.
    if !authorised {
        return Arc::new(reply_for(&req.id, run(organs, &req.cmd, req.args).await));
    }
    match organs.dedupe.begin(&req.id) {
        Begin::Replay(bytes) => bytes,
        Begin::Wait(rx) => match rx.await {
            Ok(bytes) => bytes,
            Err(_) => Arc::new(
                Reply::err(
                    req.id,
                    ErrorBody::new(
                        ErrorCode::Internal,
                        "the first attempt of this request was lost",
                    ),
                )
                .encode(),
            ),
        },
        Begin::Execute => {
            let bytes = Arc::new(reply_for(&req.id, run(organs, &req.cmd, req.args).await));
            organs.dedupe.finish(&req.id, bytes.clone());
            bytes
        }
    }
}

fn reply_for(id: &str, r: CmdResult) -> Vec<u8> {
    match r {
        Ok(v) => Reply::ok(id, v).encode(),
        Err(e) => Reply::err(id, e).encode(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn run(organs: &Organs, cmd: &str, args: Option<Value>) -> CmdResult {
    let command = Command::parse(cmd, args)?;
    dispatch(organs, command).await
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

fn call_timeout(organs: &Organs) -> Duration {
    Duration::from_millis(organs.settings.load().gateway.actor_call_timeout_ms)
}

/// Calls a named organ actor and maps messaging failures to `unavailable`.
async fn ask<M, T, F>(organs: &Organs, name: &str, build: F) -> Result<T, ErrorBody>
where
    M: ractor::Message,
    T: Send + 'static,
    F: FnOnce(RpcReplyPort<T>) -> M,
{
    let cell = ractor::registry::where_is(name).ok_or_else(|| {
        err(
            ErrorCode::Unavailable,
            format!("{name} is restarting; retry shortly"),
        )
    })?;
    let actor: ActorRef<M> = cell.into();
    match actor.call(build, Some(call_timeout(organs))).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => Err(err(
            ErrorCode::Unavailable,
            format!("{name} did not answer in time"),
        )),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(err(
            ErrorCode::Unavailable,
            format!("{name} stopped while answering; retry shortly"),
        )),
    }
}

fn mem_timeout(organs: &Organs) -> Duration {
    Duration::from_millis(organs.settings.load().memory.call_timeout_ms)
}

fn mem_err(e: MemError) -> ErrorBody {
    match e {
        MemError::Invalid(_) => err(ErrorCode::BadRequest, e.to_string()),
        MemError::Unavailable(_) | MemError::Embed(_) => err(ErrorCode::Unavailable, e.to_string()),
        MemError::Store(_) => err(ErrorCode::Internal, e.to_string()),
    }
}

fn codex_err(e: CodexCmdError) -> ErrorBody {
    match e {
        CodexCmdError::NotFound(_) => err(ErrorCode::NotFound, e.to_string()),
        CodexCmdError::Conflict(_) => err(ErrorCode::Conflict, e.to_string()),
        CodexCmdError::Invalid(_) => err(ErrorCode::BadRequest, e.to_string()),
    }
}

fn orch_err(e: OrchError) -> ErrorBody {
    match e {
        OrchError::NotFound(_) => err(ErrorCode::NotFound, e.to_string()),
        OrchError::Conflict(_) => err(ErrorCode::Conflict, e.to_string()),
        OrchError::Invalid(_) => err(ErrorCode::BadRequest, e.to_string()),
    }
}

fn persona_err(e: PersonaError) -> ErrorBody {
    match e {
        PersonaError::Unknown(_) => err(ErrorCode::NotFound, e.to_string()),
        PersonaError::Unavailable(..) => err(ErrorCode::Unavailable, e.to_string()),
        PersonaError::Invalid(_) => err(ErrorCode::BadRequest, e.to_string()),
        PersonaError::Swap(_) => err(ErrorCode::Internal, e.to_string()),
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> CmdResult {
    serde_json::to_value(v).map_err(|e| err(ErrorCode::Internal, e.to_string()))
}

async fn dispatch(organs: &Organs, command: Command) -> CmdResult {
    match command {
        Command::Ping => Ok(json!({
            "pong": true,
            "protocol": batos_actors::protocol::PROTOCOL_VERSION,
            "version": env!("CARGO_PKG_VERSION"),
            "instance": organs.instance,
            "seq": organs.hub.current_seq(),
        })),
        Command::Status => status(organs).await,
        Command::Snapshot => {
            let (seq, state) = organs.hub.snapshot();
            Ok(json!({"seq": seq, "instance": organs.instance, "state": to_value(&state)?}))
        }
        Command::SubmitTask(a) => {
            let s = ask(organs, ORCHESTRATOR_NAME, |r| {
                OrchestratorMsg::Submit(a.text, r)
            })
            .await?
            .map_err(orch_err)?;
            to_value(&s)
        }
        Command::GetTask(a) => {
            let t = ask(organs, ORCHESTRATOR_NAME, |r| OrchestratorMsg::Get(a.id, r))
                .await?
                .map_err(orch_err)?;
            to_value(&t)
        }
        Command::ListTasks => {
            let l = ask(organs, ORCHESTRATOR_NAME, OrchestratorMsg::List).await?;
            Ok(json!({"tasks": to_value(&l)?}))
        }
        Command::CancelTask(a) => {
            let s = ask(organs, ORCHESTRATOR_NAME, |r| {
                OrchestratorMsg::Cancel(a.id, r)
            })
            .await?
            .map_err(orch_err)?;
            to_value(&s)
        }
        Command::ResumeTask(a) => {
            let s = ask(organs, ORCHESTRATOR_NAME, |reply| OrchestratorMsg::Resume {
                id: a.id,
                decision: "resumed".into(),
                guidance: a.guidance,
                reply,
            })
            .await?
            .map_err(orch_err)?;
            to_value(&s)
        }
        Command::ListTools => Ok(json!({"tools": to_value(&organs.tools.list())?})),
        Command::ForgeTool(a) => {
            if a.capability.trim().is_empty() {
                return Err(err(ErrorCode::BadRequest, "`capability` must not be empty"));
            }
            let timeout = Duration::from_millis(organs.settings.load().tools.forge_timeout_ms);
            let link = ForgeLink { timeout };
            let name = link
                .forge("", &a.capability)
                .await
                .map_err(|e| err(ErrorCode::Conflict, e))?;
            let tool = organs.tools.list().into_iter().find(|t| t.name == name);
            to_value(&tool)
        }
        Command::CallTool(a) => {
            let tool = organs.tools.get(&a.name).ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!(
                        "no tool named `{}`",
                        batos_actors::protocol::truncate(&a.name, 64)
                    ),
                )
            })?;
            match tool.call(a.args.unwrap_or_else(|| json!({}))).await {
                Ok(ToolOutput::Value(v)) => Ok(json!({"ok": true, "value": v})),
                Ok(ToolOutput::Command(c)) => Ok(json!({"ok": true, "command": to_value(&c)?})),
                // A tool that fails is an answer, not a gateway error: the sandbox contained it.
                Err(e) => Ok(json!({"ok": false, "error": e.to_string()})),
            }
        }
        Command::UpdatePersona(a) => organs
            .personas
            .update(&a.persona, &a.field, &a.value)
            .await
            .map_err(persona_err),
        Command::GetPersona(a) => organs.personas.state(&a.persona).await.map_err(persona_err),
        Command::SwapModel(a) => {
            let out = organs
                .personas
                .swap_model(&a.persona, &a.model)
                .await
                .map_err(persona_err)?;
            to_value(&out)
        }
        Command::ListAmendments => {
            let all = ask(organs, CODEX_NAME, CodexMsg::List).await?;
            Ok(json!({"amendments": to_value(&all)?}))
        }
        Command::ApproveAmendment(a) => {
            let r = ask(organs, CODEX_NAME, |r| CodexMsg::Approve(a.id, r))
                .await?
                .map_err(codex_err)?;
            to_value(&r)
        }
        Command::RejectAmendment(a) => {
            if a.reason.trim().is_empty() {
                return Err(err(ErrorCode::BadRequest, "`reason` must not be empty"));
            }
            let r = ask(organs, CODEX_NAME, |r| CodexMsg::Reject(a.id, a.reason, r))
                .await?
                .map_err(codex_err)?;
            to_value(&r)
        }
        Command::MemorySearch(a) => {
            let r = memory::call(
                |reply| MemoryMsg::Search {
                    query: a.query,
                    k: a.k,
                    explain: a.explain,
                    reply,
                },
                mem_timeout(organs),
            )
            .await
            .map_err(mem_err)?;
            to_value(&r)
        }
        Command::MemoryIngest(a) => {
            if a.items.is_empty() {
                return Err(err(ErrorCode::BadRequest, "`items` must not be empty"));
            }
            let n = memory::call(
                |reply| MemoryMsg::Ingest(a.items, reply),
                mem_timeout(organs),
            )
            .await
            .map_err(mem_err)?;
            Ok(json!({"rows": n}))
        }
        Command::MemoryConsolidate => {
            let r = memory::call(
                |reply| MemoryMsg::Consolidate(Some(reply)),
                mem_timeout(organs),
            )
            .await
            .map_err(mem_err)?;
            to_value(&r)
        }
        Command::MemoryStats => {
            let r = memory::call(MemoryMsg::Stats, mem_timeout(organs))
                .await
                .map_err(mem_err)?;
            to_value(&r)
        }
        Command::DebugCrash(a) => debug_crash(organs, &a.actor).await,
    }
}

async fn status(organs: &Organs) -> CmdResult {
    let tree = match ractor::registry::where_is(crate::boot::ROOT_NAME) {
        Some(root) => {
            to_value(&batos_actors::supervisor::tree(&root, "root", call_timeout(organs)).await)?
        }
        None => Value::Null,
    };
    let (seq, view) = organs.hub.snapshot();
    Ok(json!({
        "instance": organs.instance,
        "uptime_s": organs.started.elapsed().as_secs_f64(),
        "seq": seq,
        "tree": tree,
        "escalations": view.escalations,
        "personas": organs.personas.models(),
        "backend": organs.backend,
        "tasks": {
            "total": view.tasks.len(),
            "running": view.tasks.values().filter(|t| t.status == "running").count(),
            "queued": view.tasks.values().filter(|t| t.status == "queued").count(),
            "paused": view.tasks.values().filter(|t| t.status == "paused").count(),
        },
        "tools": organs.tools.list().len(),
    }))
}

async fn debug_crash(organs: &Organs, actor: &str) -> CmdResult {
    if !organs.settings.load().debug.fault_injection {
        return Err(err(
            ErrorCode::Conflict,
            "debug_crash is disabled: set [debug] fault_injection = true in settings.toml",
        ));
    }
    let sent = if batos_actors::PERSONAS.contains(&actor) {
        let h = organs.personas.current(actor).map_err(persona_err)?;
        h.actor.cast(ProtoMsg::Crash).is_ok()
    } else {
        let Some(cell) = ractor::registry::where_is(actor) else {
            return Err(err(
                ErrorCode::NotFound,
                format!("no crashable actor `{actor}`; try ALFRED, BABS, BRICK, ROBIN, orchestrator, codex, memory or gateway"),
            ));
        };
        match actor {
            ORCHESTRATOR_NAME => ActorRef::<OrchestratorMsg>::from(cell)
                .cast(OrchestratorMsg::Crash)
                .is_ok(),
            "codex" => ActorRef::<CodexMsg>::from(cell)
                .cast(CodexMsg::Crash)
                .is_ok(),
            memory::MEMORY_NAME => ActorRef::<MemoryMsg>::from(cell)
                .cast(MemoryMsg::Crash)
                .is_ok(),
            GATEWAY_NAME => {
                // Let this reply leave before the gateway dies.
                let gw = ActorRef::<GatewayMsg>::from(cell);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = gw.cast(GatewayMsg::Crash);
                });
                true
            }
            other => {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("`{other}` cannot be crashed on request"),
                ))
            }
        }
    };
    if !sent {
        return Err(err(
            ErrorCode::Unavailable,
            format!("{actor} is not running"),
        ));
    }
    tracing::warn!(
        event = "debug.crash_requested",
        actor,
        "fault injection: crash requested"
    );
    Ok(json!({"crashed": actor}))
}
