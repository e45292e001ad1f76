//! The OpenAI face: `POST /v1/chat/completions` and `GET /v1/models`, so the chat front ends and client
//! libraries that speak OpenAI's API (the official Python client, LangChain, Open WebUI…) talk to the
//! household with no code of ours.
//!
//! A chat turn becomes one task, submitted through the gateway's one call path like `submit_task`: its text
//! is the person's last message; the earlier turns come with it as a quoted note ([`task_text`]), so a
//! remembered instruction stays data (as memory's notes do). System messages are not passed: the household's
//! codex is its system prompt. The reply is ALFRED's synthesis: streamed as `chat.completion.chunk`s from
//! the task's `task.token` events when `stream` is true, whole otherwise. Sampling parameters a client sends
//! (`temperature`, `max_tokens`…) are accepted and not applied — each persona samples as its settings and
//! the codex say — and an unknown parameter is refused by name, as every untrusted input is.
//!
//! The streamed text is what ALFRED's model wrote, as it wrote it; when the task's final answer says more
//! (a number computed exactly by a tool replaces the model's words, for one) the rest follows in the last
//! chunk, so a client that joins the chunks has the answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use batos_actors::events::{Event, EventHub, Published};

use super::api;
use super::chat::{admissible, task_text, ChatRequest};
use super::door::{status_of, Door};

/// An OpenAI-style error response.
pub fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

/// `GET /v1/models`.
pub(super) async fn models(
    State(door): State<Arc<Door>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = door.check(&headers, &method) {
        return error(r.status, "invalid_request_error", r.message);
    }
    let created = door.organs.started.elapsed().as_secs();
    let created = batos_protocol::unix_now() as u64 - created;
    Json(json!({
        "object": "list",
        "data": [{"id": door.http.model_name, "object": "model", "created": created, "owned_by": "batos"}],
    }))
    .into_response()
}

/// How a chat's task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// With an answer.
    Done(String),
    /// Paused for the Architect (the philosophical-inquiry interrupt), with the reason.
    Paused(String),
    /// Failed, with why.
    Failed(String),
    /// Cancelled.
    Cancelled,
}

/// What one event means for the chat waiting on task `id`.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A fragment of ALFRED's streamed text.
    Token(String),
    /// A step ended, costing this many tokens.
    Step(u64),
    /// The task ended.
    End(Outcome),
}

/// Reads what `event` says about task `id`, if anything.
pub fn progress_of(event: &Event, id: &str) -> Option<Progress> {
    match event {
        Event::TaskToken {
            id: t,
            persona,
            text,
        } if t == id && persona == "ALFRED" => Some(Progress::Token(text.clone())),
        Event::TaskStep { id: t, tokens, .. } if t == id => Some(Progress::Step(*tokens)),
        Event::TaskDone { id: t, result } if t == id => {
            Some(Progress::End(Outcome::Done(result.clone())))
        }
        Event::TaskPaused { id: t, reason } if t == id => {
            Some(Progress::End(Outcome::Paused(reason.clone())))
        }
        Event::TaskFailed { id: t, error } if t == id => {
            Some(Progress::End(Outcome::Failed(error.clone())))
        }
        Event::TaskCancelled { id: t } if t == id => Some(Progress::End(Outcome::Cancelled)),
        _ => None,
    }
}

/// The outcome the hub's view holds for task `id`, when it has ended (after a lag, the events are gone).
fn ended_in_view(hub: &EventHub, id: &str) -> Option<Outcome> {
    use batos_protocol::TaskStatus as S;
    let (_, view) = hub.snapshot();
    let t = view.tasks.get(id)?;
    match t.status {
        S::Done => Some(Outcome::Done(t.result.clone().unwrap_or_default())),
        S::Failed => Some(Outcome::Failed(t.error.clone().unwrap_or_default())),
        S::Cancelled => Some(Outcome::Cancelled),
        _ => None,
    }
}

/// Why waiting for a task stopped short of its end.
enum Stop {
    TimedOut,
    Closed,
}

/// Waits for the next thing task `id` does.
async fn next(
    rx: &mut broadcast::Receiver<Arc<Published>>,
    hub: &EventHub,
    id: &str,
    until: Instant,
    closed: &mut tokio::sync::watch::Receiver<()>,
) -> Result<Progress, Stop> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = closed.changed() => return Err(Stop::Closed),
            _ = tokio::time::sleep(left) => return Err(Stop::TimedOut),
            r = rx.recv() => match r {
                Ok(p) => if let Some(x) = progress_of(&p.event, id) { return Ok(x) },
                Err(RecvError::Lagged(_)) => if let Some(o) = ended_in_view(hub, id) { return Ok(Progress::End(o)) },
                Err(RecvError::Closed) => return Err(Stop::Closed),
            },
        }
    }
}

/// The text a chat answers with when its task paused or did not answer.
fn paused_text(id: &str, reason: &str) -> String {
    format!(
        "The household paused this task to ask you first: {reason}\n(Answer with `batos resume {id} \"…\"`.)"
    )
}

/// A whole `chat.completion`.
pub fn completion(id: &str, created: u64, model: &str, content: &str, extra: Value) -> Value {
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": null}],
        "batos": extra,
    })
}

/// One `chat.completion.chunk`.
pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// What to send after the stream when the task's answer is `result` and `sent` has been streamed: the rest of
/// the answer when the stream is its beginning, the whole answer when nothing was streamed, nothing when the
/// stream went its own way (a retried step streamed twice).
pub fn remainder<'a>(sent: &str, result: &'a str) -> &'a str {
    if sent.is_empty() {
        result
    } else {
        result.strip_prefix(sent).unwrap_or("")
    }
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(
    State(door): State<Arc<Door>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = door.check(&headers, &method) {
        return error(r.status, "invalid_request_error", r.message);
    }
    let body = match door.body(body).await {
        Ok(b) => b,
        Err((status, why)) => return error(status, "invalid_request_error", why),
    };
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.to_string(),
            )
        }
    };
    if let Err((status, why)) = admissible(&req, &door.http.model_name) {
        return error(status, "invalid_request_error", why);
    }
    let text = match task_text(&req.messages) {
        Ok(t) => t,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", why),
    };
    // Subscribed before the task exists: none of its events can be missed.
    let mut rx = door.organs.hub.subscribe();
    let request = uuid::Uuid::new_v4().simple().to_string();
    let reply = match api::run(&door, request, "submit_task", Some(json!({"text": text}))).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e),
    };
    let task = match (&reply.result, &reply.error) {
        (Some(r), _) => r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        (None, Some(e)) => {
            return error(
                status_of(e.code),
                "invalid_request_error",
                e.message.clone(),
            )
        }
        (None, None) => String::new(),
    };
    if task.is_empty() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "submit_task named no task",
        );
    }
    let created = batos_protocol::unix_now() as u64;
    let until = Instant::now() + Duration::from_millis(door.http.chat_timeout_ms);
    let model = door.http.model_name.clone();
    if req.stream != Some(true) {
        let mut closed = door.closed.clone();
        let mut tokens = 0u64;
        let mut steps = 0u32;
        loop {
            match next(&mut rx, &door.organs.hub, &task, until, &mut closed).await {
                Ok(Progress::Token(_)) => {}
                Ok(Progress::Step(t)) => {
                    tokens += t;
                    steps += 1;
                }
                Ok(Progress::End(o)) => {
                    let extra = json!({"task": task, "steps": steps, "tokens": tokens});
                    return match o {
                        Outcome::Done(r) => {
                            Json(completion(&task, created, &model, &r, extra)).into_response()
                        }
                        Outcome::Paused(why) => Json(completion(
                            &task,
                            created,
                            &model,
                            &paused_text(&task, &why),
                            extra,
                        ))
                        .into_response(),
                        Outcome::Failed(why) => error(
                            StatusCode::BAD_GATEWAY,
                            "server_error",
                            format!("task {task} failed: {why}"),
                        ),
                        Outcome::Cancelled => error(
                            StatusCode::CONFLICT,
                            "server_error",
                            format!("task {task} was cancelled"),
                        ),
                    };
                }
                Err(Stop::TimedOut) => return timed_out(&task),
                Err(Stop::Closed) => return closing(&task),
            }
        }
    }
    let (tx, out) = mpsc::channel::<Sse>(door.organs.settings.load().gateway.event_queue_capacity);
    let producer = door.clone();
    tokio::spawn(async move {
        stream_task(&producer, rx, &task, created, &model, until, tx).await;
    });
    let stream = futures::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|e| (Ok::<_, Infallible>(e), out))
    });
    axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn timed_out(task: &str) -> Response {
    error(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "task {task} did not end within http.chat_timeout_ms; it goes on (batos task {task})"
        ),
    )
}

fn closing(task: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        format!("the gateway restarted while task {task} ran; it goes on (batos task {task})"),
    )
}

fn data(v: &Value) -> Sse {
    Sse::default().data(v.to_string())
}

/// Streams one chat's task as chunks, ending with `[DONE]` (after an `error` object when it did not answer).
async fn stream_task(
    door: &Door,
    mut rx: broadcast::Receiver<Arc<Published>>,
    task: &str,
    created: u64,
    model: &str,
    until: Instant,
    tx: mpsc::Sender<Sse>,
) {
    let mut closed = door.closed.clone();
    let send = |v: Value| {
        let tx = tx.clone();
        async move { tx.send(data(&v)).await.is_ok() }
    };
    if !send(chunk(
        task,
        created,
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ))
    .await
    {
        return;
    }
    let mut sent = String::new();
    let end = loop {
        match next(&mut rx, &door.organs.hub, task, until, &mut closed).await {
            Ok(Progress::Token(t)) => {
                sent.push_str(&t);
                if !send(chunk(task, created, model, json!({"content": t}), None)).await {
                    return;
                }
            }
            Ok(Progress::Step(_)) => {}
            Ok(Progress::End(o)) => break Ok(o),
            Err(s) => break Err(s),
        }
    };
    let fail = |message: String, kind: &str| json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    let last = match end {
        Ok(Outcome::Done(result)) => Ok(remainder(&sent, &result).to_string()),
        Ok(Outcome::Paused(why)) => Ok(remainder(&sent, &paused_text(task, &why)).to_string()),
        Ok(Outcome::Failed(why)) => Err(fail(format!("task {task} failed: {why}"), "server_error")),
        Ok(Outcome::Cancelled) => Err(fail(format!("task {task} was cancelled"), "server_error")),
        Err(Stop::TimedOut) => Err(fail(
            format!("task {task} did not end within http.chat_timeout_ms; it goes on"),
            "timeout",
        )),
        Err(Stop::Closed) => Err(fail(
            format!("the gateway restarted while task {task} ran; it goes on"),
            "server_error",
        )),
    };
    match last {
        Ok(rest) => {
            let delta = if rest.is_empty() {
                json!({})
            } else {
                json!({"content": rest})
            };
            if !send(chunk(task, created, model, delta, Some("stop"))).await {
                return;
            }
        }
        Err(e) => {
            if !send(e).await {
                return;
            }
        }
    }
    let _ = tx.send(Sse::default().data("[DONE]")).await;
}
