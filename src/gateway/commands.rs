//! Request handling: decode, authenticate, dedupe, dispatch to the organ that owns the command.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use batos_actors::ask::{tell, WireError};
use batos_actors::tools::ToolOutput;
use batos_protocol::{decode_request, Command, ErrorBody, ErrorCode, Persona, Reply, TaskStatus};

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
        return Arc::new(reply_for(
            &req.id,
            run(organs, &req.id, &req.cmd, req.args).await,
        ));
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
            let bytes = Arc::new(reply_for(
                &req.id,
                run(organs, &req.id, &req.cmd, req.args).await,
            ));
            // Durable before it is sent: a reply the client saw is never forgotten by a crash (§6). Only for
            // commands that change something: re-running a read after a crash is harmless, and a read must not
            // pay an fsync.
            let durable = !batos_protocol::READ_ONLY_COMMANDS
                .contains(&batos_protocol::canonical_command(&req.cmd));
            organs.dedupe.finish(&req.id, bytes.clone(), durable).await;
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

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn run(organs: &Organs, request_id: &str, cmd: &str, args: Option<Value>) -> CmdResult {
    let canonical = batos_protocol::canonical_command(cmd);
    if canonical != cmd {
        tracing::warn!(event = "command.deprecated", old = %cmd, new = %canonical, request = %request_id, "a command was sent by its old name (accepted for one release)");
    }
    let command = Command::parse(cmd, args)?;
    dispatch(organs, request_id, command).await
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

/// An organ's typed error as the reply body it means: its own code, its own message.
fn wire<E: WireError>(e: E) -> ErrorBody {
    e.to_body()
}

fn call_timeout(organs: &Organs) -> Duration {
    Duration::from_millis(organs.settings.load().gateway.actor_call_timeout_ms)
}

fn to_value<T: serde::Serialize>(v: &T) -> CmdResult {
    serde_json::to_value(v).map_err(|e| err(ErrorCode::Internal, e.to_string()))
}

async fn dispatch(organs: &Organs, request_id: &str, command: Command) -> CmdResult {
    let h = &organs.handles;
    match command {
        Command::Ping => Ok(json!({
            "pong": true,
            "protocol": batos_protocol::PROTOCOL_VERSION,
            "version": env!("CARGO_PKG_VERSION"),
            "instance": organs.instance,
            "seq": organs.hub.current_seq(),
        })),
        Command::Status => status(organs).await,
        Command::Snapshot => {
            let (seq, state) = organs.hub.snapshot();
            Ok(json!({"seq": seq, "instance": organs.instance, "state": to_value(&state)?}))
        }
        Command::SubmitTask(a) => to_value(
            &h.orchestrator
                .submit(a.text, Some(request_id.to_string()))
                .await
                .map_err(wire)?,
        ),
        Command::GetTask(a) => to_value(&h.orchestrator.get(a.id).await.map_err(wire)?),
        Command::ListTasks => {
            let l = h.orchestrator.list().await.map_err(wire)?;
            Ok(json!({"tasks": to_value(&l)?}))
        }
        Command::CancelTask(a) => to_value(&h.orchestrator.cancel(a.id).await.map_err(wire)?),
        Command::ResumeTask(a) => to_value(
            &h.orchestrator
                .resume(a.id, "resumed".into(), a.guidance)
                .await
                .map_err(wire)?,
        ),
        Command::ListTools => Ok(json!({"tools": to_value(&organs.tools.list())?})),
        Command::ForgeTool(a) => {
            let name = h.forge.forge(&a.capability, None).await.map_err(wire)?;
            let tool = organs.tools.list().into_iter().find(|t| t.name == name);
            to_value(&tool)
        }
        Command::CallTool(a) => {
            let tool = organs.tools.get(&a.name).ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!("no tool named `{}`", batos_protocol::truncate(&a.name, 64)),
                )
            })?;
            match tool.call(a.args.unwrap_or_else(|| json!({}))).await {
                Ok(ToolOutput::Value(v)) => Ok(json!({"ok": true, "value": v})),
                Ok(ToolOutput::Command(c)) => Ok(json!({"ok": true, "command": to_value(&c)?})),
                // A tool that fails is an answer, not a gateway error: the sandbox contained it.
                Err(e) => {
                    let error = e.to_string();
                    organs.hub.publish(batos_actors::events::Event::ToolFailed {
                        task: None,
                        tool: a.name.clone(),
                        error: batos_protocol::truncate(&error, batos_protocol::EVENT_TEXT_BYTES)
                            .to_string(),
                    });
                    Ok(json!({"ok": false, "error": error}))
                }
            }
        }
        Command::UpdatePersona(a) => organs
            .personas
            .update(&a.persona, &a.field, &a.value)
            .await
            .map_err(wire),
        Command::GetPersona(a) => organs.personas.state(&a.persona).await.map_err(wire),
        Command::SwapModel(a) => to_value(
            &organs
                .personas
                .swap_model(&a.persona, &a.model)
                .await
                .map_err(wire)?,
        ),
        Command::ListAmendments => {
            let all = h.codex.list().await.map_err(wire)?;
            Ok(json!({"amendments": to_value(&all)?}))
        }
        Command::ApproveAmendment(a) => to_value(&h.codex.approve(a.id).await.map_err(wire)?),
        Command::RejectAmendment(a) => {
            if a.reason.trim().is_empty() {
                return Err(err(ErrorCode::BadRequest, "`reason` must not be empty"));
            }
            to_value(&h.codex.reject(a.id, a.reason).await.map_err(wire)?)
        }
        Command::MemorySearch(a) => to_value(
            &h.memory
                .search(a.query, a.k, a.explain)
                .await
                .map_err(wire)?,
        ),
        Command::MemoryIngest(a) => {
            if a.items.is_empty() {
                return Err(err(ErrorCode::BadRequest, "`items` must not be empty"));
            }
            let n = h.memory.ingest(a.items).await.map_err(wire)?;
            Ok(json!({"rows": n}))
        }
        Command::MemoryConsolidate => to_value(&h.memory.consolidate().await.map_err(wire)?),
        Command::MemoryStats => to_value(&h.memory.stats().await.map_err(wire)?),
        Command::RateTask(a) => {
            // The task must exist (a typo is `not_found`, not a rating of nothing); it need not be finished:
            // a rating given early applies when its exchanges are curated.
            h.orchestrator.get(a.id.clone()).await.map_err(wire)?;
            to_value(
                &h.curator
                    .rate(a.id, a.score, a.comment)
                    .await
                    .map_err(wire)?,
            )
        }
        Command::CuratorStats => to_value(&h.curator.stats().await.map_err(wire)?),
        Command::CuratorExport(a) => to_value(&h.curator.export(a.persona).await.map_err(wire)?),
        Command::TrainerRun(a) => {
            let place = h
                .trainer
                .train(a.persona.clone(), a.force)
                .await
                .map_err(wire)?;
            Ok(json!({"persona": a.persona, "queued": true, "place": place}))
        }
        Command::TrainerCancel(a) => {
            let cancelled = h.trainer.cancel(a.persona).await.map_err(wire)?;
            Ok(json!({"cancelled": cancelled}))
        }
        Command::TrainerStatus => to_value(&h.trainer.status().await.map_err(wire)?),
        Command::RollbackModel(a) => {
            let (from, to) = h.trainer.rollback(a.persona.clone()).await.map_err(wire)?;
            Ok(json!({"persona": a.persona, "from": from, "to": to}))
        }
        Command::DebugCrash(a) => debug_crash(organs, &a.actor).await,
        Command::ListGoals => to_value(&h.motivator.goals().await.map_err(wire)?),
        Command::MotivatorPause => to_value(&h.motivator.pause(true).await.map_err(wire)?),
        Command::MotivatorResume => to_value(&h.motivator.pause(false).await.map_err(wire)?),
        Command::ImageSave => to_value(&h.image.save().await.map_err(wire)?),
        Command::ImageExport(a) => to_value(
            &h.image
                .export(std::path::PathBuf::from(a.path))
                .await
                .map_err(wire)?,
        ),
        Command::ExamRun(a) => to_value(&h.exam.run(a).await.map_err(wire)?),
        Command::ExamGet(a) => to_value(&h.exam.get(a.id).await.map_err(wire)?),
        Command::ExamHistory => {
            Ok(json!({"exams": to_value(&h.exam.history().await.map_err(wire)?)?}))
        }
        Command::ExamCancel(a) => to_value(&h.exam.cancel(a.id).await.map_err(wire)?),
        Command::LifeRun(a) => to_value(&h.life.run(*a).await.map_err(wire)?),
        Command::LifeGet(a) => to_value(&h.life.get(a.id).await.map_err(wire)?),
        Command::LifeList => Ok(json!({"lives": to_value(&h.life.list().await.map_err(wire)?)?})),
        Command::LifeCancel(a) => to_value(&h.life.cancel(a.id).await.map_err(wire)?),
    }
}

async fn status(organs: &Organs) -> CmdResult {
    let root = &organs.handles.root;
    let tree = match root.tree(root.name(), call_timeout(organs)).await {
        Some(t) => to_value(&t)?,
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
            "running": view.tasks.values().filter(|t| t.status == TaskStatus::Running).count(),
            "queued": view.tasks.values().filter(|t| t.status == TaskStatus::Queued).count(),
            "paused": view.tasks.values().filter(|t| t.status == TaskStatus::Paused).count(),
        },
        "tools": organs.tools.list().len(),
        // `null` when the Motivator is off (`motivator.enabled = false`) or restarting.
        "motivator": match organs.handles.motivator.state().await {
            Ok(m) => to_value(&m)?,
            Err(_) => Value::Null,
        },
        // Worker nodes up now; `null` on a single machine (`[cluster] enabled = false`) or while restarting.
        "cluster": match &organs.handles.cluster {
            Some(c) => match c.nodes().await {
                Ok(n) => json!({"nodes": n}),
                Err(_) => Value::Null,
            },
            None => Value::Null,
        },
        // `null` while the image organ restarts.
        "image": match organs.handles.image.status().await {
            Ok(i) => to_value(&i)?,
            Err(_) => Value::Null,
        },
    }))
}

async fn debug_crash(organs: &Organs, actor: &str) -> CmdResult {
    if !organs.settings.load().debug.fault_injection {
        return Err(err(
            ErrorCode::Conflict,
            "debug_crash is disabled: set [debug] fault_injection = true in settings.toml",
        ));
    }
    let h = &organs.handles;
    let sent = if let Ok(persona) = actor.parse::<Persona>() {
        let handle = organs.personas.current(persona.as_str()).map_err(wire)?;
        handle.crash().map_err(wire)
    } else {
        match actor {
            "orchestrator" => h.orchestrator.crash().map_err(wire),
            "codex" => h.codex.crash().map_err(wire),
            "memory" => h.memory.crash().map_err(wire),
            "toolforge" => h.forge.crash().map_err(wire),
            "curator" => h.curator.crash().map_err(wire),
            "trainer" => h.trainer.crash().map_err(wire),
            "unsloth" => {
                tracing::warn!(event = "command.deprecated", old = "debug_crash unsloth", new = "debug_crash trainer", "the trainer was named by its old name (accepted for one release)");
                h.trainer.crash().map_err(wire)
            }
            "motivator" => h.motivator.crash().map_err(wire),
            "image" => h.image.crash().map_err(wire),
            "exam" => h.exam.crash().map_err(wire),
            "life" => h.life.crash().map_err(wire),
            "cluster" => match &h.cluster {
                Some(c) => c.crash().map_err(wire),
                None => Err(err(
                    ErrorCode::NotFound,
                    "no cluster organ runs: this daemon is not a home node ([cluster] enabled = false)",
                )),
            },
            GATEWAY_NAME => {
                // Let this reply leave before the gateway dies.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tell(GATEWAY_NAME, GATEWAY_NAME, GatewayMsg::Crash);
                });
                Ok(())
            }
            other => {
                return Err(err(
                    ErrorCode::NotFound,
                    format!(
                        "no crashable actor `{}`; try ALFRED, BABS, BRICK, ROBIN, orchestrator, codex, memory, toolforge, curator, trainer, motivator, image, exam, life, cluster or gateway",
                        batos_protocol::truncate(other, 64)
                    ),
                ))
            }
        }
    };
    sent?;
    tracing::warn!(
        event = "debug.crash_requested",
        actor,
        "fault injection: crash requested"
    );
    Ok(json!({"crashed": actor}))
}
