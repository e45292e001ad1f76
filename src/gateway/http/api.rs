//! `POST /api/v1/commands/{cmd}` and `GET /api/v1/events`: the protocol's two channels over HTTP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use batos_protocol::{ErrorBody, ErrorCode, Reply, Request, MAX_ID_LEN, PROTOCOL_VERSION};

use super::door::{status_of, Door, Refusal};

/// A refusal as the protocol's reply (id `""`: nothing was read).
pub(super) fn refused(r: Refusal) -> Response {
    let body = ErrorBody::new(ErrorCode::Unauthorized, r.message);
    (r.status, Json(Reply::err("", body))).into_response()
}

fn bad(id: &str, message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(Reply::err(
            id,
            ErrorBody::new(ErrorCode::BadRequest, message),
        )),
    )
        .into_response()
}

/// Runs one protocol command through the gateway's one call path and returns its reply, decoded.
pub(super) async fn run(
    door: &Door,
    id: String,
    cmd: &str,
    args: Option<Value>,
) -> Result<Reply, String> {
    let req = Request {
        v: PROTOCOL_VERSION,
        id,
        token: Some(door.organs.token.clone()),
        cmd: cmd.to_string(),
        args,
    };
    let body = rmp_serde::to_vec_named(&req).map_err(|e| e.to_string())?;
    let Ok(_permit) = door.commands.clone().acquire_owned().await else {
        return Err("the door is closing".into());
    };
    let bytes = crate::gateway::process(&door.organs, &body).await;
    rmp_serde::from_slice::<Reply>(&bytes).map_err(|e| e.to_string())
}

/// `POST /api/v1/commands/{cmd}`: the body is the command's arguments (a JSON object; empty for none); the
/// optional `Idempotency-Key` header is the request id.
pub(super) async fn command(
    State(door): State<Arc<Door>>,
    Path(cmd): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = door.check(&headers, &method) {
        return refused(r);
    }
    let body = match door.body(body).await {
        Ok(b) => b,
        Err((status, why)) => {
            let e = ErrorBody::new(ErrorCode::BadRequest, why);
            return (status, Json(Reply::err("", e))).into_response();
        }
    };
    let id = match headers.get("idempotency-key") {
        None => uuid::Uuid::new_v4().simple().to_string(),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_ID_LEN => k.to_string(),
            _ => {
                return bad(
                    "",
                    format!("Idempotency-Key must be 1 to {MAX_ID_LEN} bytes of visible ASCII"),
                )
            }
        },
    };
    let args = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => Some(v),
            Ok(_) => {
                return bad(
                    &id,
                    "the body must be a JSON object of the command's arguments",
                )
            }
            Err(e) => return bad(&id, format!("the body is not JSON: {e}")),
        }
    };
    match run(&door, id.clone(), &cmd, args).await {
        Ok(reply) => {
            let status = reply
                .error
                .as_ref()
                .map_or(StatusCode::OK, |e| status_of(e.code));
            (status, Json(reply)).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Reply::err(id, ErrorBody::new(ErrorCode::Internal, e))),
        )
            .into_response(),
    }
}

/// An SSE event carrying `data` as JSON.
fn sse(kind: &str, seq: Option<u64>, data: &Value) -> Sse {
    let e = Sse::default().event(kind).data(data.to_string());
    match seq {
        Some(s) => e.id(s.to_string()),
        None => e,
    }
}

/// The opening (or re-sync) snapshot: `{seq, instance, view}`.
fn snapshot(door: &Door) -> (u64, Sse) {
    let (seq, view) = door.organs.hub.snapshot();
    let data = json!({"seq": seq, "instance": door.organs.instance, "view": view});
    (seq, sse("snapshot", Some(seq), &data))
}

/// `GET /api/v1/events`: see the module essay of [`super`] for the order of what a stream carries.
pub(super) async fn events(
    State(door): State<Arc<Door>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = door.check(&headers, &method) {
        return refused(r);
    }
    let Ok(permit) = door.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Reply::err(
                "",
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    "too many event streams open (http.max_event_streams); retry later",
                ),
            )),
        )
            .into_response();
    };
    // Bounded like the hub: a reader that stops reading fills it, and the producer then waits (the hub's
    // own lag rule takes over and the stream re-syncs).
    let capacity = door.organs.settings.load().gateway.event_queue_capacity;
    let (tx, rx) = mpsc::channel::<Sse>(capacity);
    let producer = door.clone();
    tokio::spawn(async move {
        let _permit = permit;
        produce(&producer, tx).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Feeds one stream until its reader goes or the door closes.
async fn produce(door: &Door, tx: mpsc::Sender<Sse>) {
    let mut rx = door.organs.hub.subscribe();
    let mut closed = door.closed.clone();
    let (mut floor, first) = snapshot(door);
    if tx.send(first).await.is_err() {
        return;
    }
    let period = Duration::from_millis(door.organs.settings.load().gateway.heartbeat_ms);
    let mut beat = tokio::time::interval(period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent = floor;
    loop {
        let out = tokio::select! {
            _ = closed.changed() => return,
            r = rx.recv() => match r {
                Ok(p) if p.seq <= floor => continue,
                Ok(p) => match rmp_serde::from_slice::<batos_protocol::EventBody>(&p.body) {
                    Ok(body) => {
                        last_sent = p.seq;
                        let data = serde_json::to_value(&body).unwrap_or(Value::Null);
                        sse(&body.kind, Some(p.seq), &data)
                    }
                    Err(_) => continue,
                },
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(event = "http.events_dropped", count = n, "an event stream fell behind; it re-syncs from a snapshot");
                    if tx.send(sse("resync", None, &json!({"dropped": n}))).await.is_err() {
                        return;
                    }
                    let (seq, snap) = snapshot(door);
                    floor = seq;
                    last_sent = seq;
                    snap
                }
                Err(RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                let data = json!({
                    "v": PROTOCOL_VERSION,
                    "seq": last_sent,
                    "ts": batos_protocol::unix_now(),
                    "kind": "heartbeat",
                    "data": {"instance": door.organs.instance, "uptime_s": door.organs.started.elapsed().as_secs()},
                });
                sse("heartbeat", None, &data)
            }
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}
