//! The gateway's second door: HTTP, for the browser and for the clients the ecosystem already has.
//!
//! One authority, two doors. Everything that reaches an organ from here goes through the same
//! [`process`](super::process) the ZeroMQ door uses — the same protocol request (built here from the HTTP
//! request), the same token check, the same dedupe table, the same dispatch through the organs' handles and
//! the same reply — so a command means the same thing whichever door it came in by, and a fix to one is a fix
//! to both. What this module adds is only what HTTP needs:
//!
//! - **Commands** — `POST /api/v1/commands/{cmd}` with the arguments as a JSON object (or no body), an optional
//!   `Idempotency-Key` header as the request id (a retry with the same key gets the first reply, as a ZeroMQ
//!   retry with the same id does); the reply is the protocol's reply as JSON, with an HTTP status that says
//!   its error code ([`status_of`]).
//! - **Events** — `GET /api/v1/events` as Server-Sent Events. A stream opens with a `snapshot` (the view at
//!   `seq = N`, taken after subscribing, so no event falls between), then every event with `seq > N` in order
//!   (`id:` is the seq, `event:` the kind, `data:` the protocol's event body as JSON), heartbeats carrying the
//!   last seq sent, and — when the stream fell behind the hub — a `resync` followed by a fresh snapshot: the
//!   protocol's re-sync rule (§7) done by the daemon instead of the client. A browser's automatic reconnect
//!   starts again from a snapshot; `Last-Event-ID` is not needed.
//! - **The OpenAI face** ([`openai`]) — `POST /v1/chat/completions` (streaming and not): a chat turn becomes
//!   one task and ALFRED's synthesis streams back; `GET /v1/models` lists the household as one model.
//! - **The page** ([`page`]) — HTML, script and style embedded in the binary, served at `/`.
//!
//! **Who may.** A request is authorised by the gateway token as a bearer (`Authorization: Bearer <token>`: the
//! OpenAI clients' `api_key`), or by the login cookie a browser gets from the one-time link logged at start
//! (event `http.listening`) or from the page's login form with the token. The cookie's value is a hash of the
//! token, never the token: it survives daemon restarts, dies when the token changes, and cannot be replayed on
//! the ZeroMQ door. It is `HttpOnly` and `SameSite=Strict`, and a request that changes something on the
//! strength of the cookie alone must also carry `X-Batos-Csrf: 1` — a header no other site can make a browser
//! send here without a CORS preflight, which this door never answers. So no ambient authority: a page
//! elsewhere can make the browser ask, but never act.
//!
//! **What it sends.** Every response carries a strict content-security policy (scripts and styles only from
//! this origin, no inline script, no framing), `nosniff` and `no-referrer`; the page writes every text from a
//! model with `textContent`, never as markup.
//!
//! **Limits.** The same as the ZeroMQ door's: `gateway.max_connections` connections (one more is closed at
//! accept), `gateway.handshake_timeout_ms` to send a request's head (a client that connects and says nothing, or
//! trickles its headers, is dropped and its slot freed), `gateway.max_request_bytes` per body,
//! `max_inflight_commands` commands at once (a semaphore of its own), `http.max_event_streams` event streams. The door is a task
//! of the gateway actor: when the gateway restarts it closes — its listener, its streams and its waiting chat
//! completions end (clients reconnect) — and the new gateway opens it again.

mod api;
pub mod chat;
mod door;
pub mod openai;
mod page;

pub use door::{
    authorise, cookie, session_value, status_of, Door, Refusal, Via, COOKIE, CSRF_HEADER,
};

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::Organs;

/// The content-security policy of every response: nothing from anywhere but this origin, no inline script or
/// style, no plugins, not framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Keeps the door open while it lives: dropping it (the gateway going away) ends every stream and waiting
/// chat completion of this door.
pub struct Opened {
    _closer: watch::Sender<()>,
}

/// Opens the door on `listener` and serves until the returned future is dropped. Logs `http.listening` with
/// the one-time login link.
pub fn open(
    listener: TcpListener,
    organs: Arc<Organs>,
) -> (Opened, impl std::future::Future<Output = ()> + Send) {
    let s = organs.settings.load_full();
    let (closer, closed) = watch::channel(());
    let once = random_hex();
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| s.http.bind.clone());
    tracing::info!(
        event = "http.listening",
        url = %format!("http://{addr}/"),
        login = %format!("http://{addr}/login?once={once}"),
        "the HTTP door is open (the login link works once, within http.login_link_ttl_ms)"
    );
    let door = Arc::new(Door {
        session: session_value(&organs.token),
        login_once: Mutex::new(Some((
            once,
            Instant::now() + Duration::from_millis(s.http.login_link_ttl_ms),
        ))),
        commands: Arc::new(Semaphore::new(s.gateway.max_inflight_commands)),
        streams: Arc::new(Semaphore::new(s.http.max_event_streams)),
        http: s.http.clone(),
        closed,
        max_body: s.gateway.max_request_bytes,
        body_timeout: Duration::from_millis(s.gateway.handshake_timeout_ms),
        organs,
    });
    let app = router(door, s.gateway.max_request_bytes);
    let limits = ConnLimits {
        max: s.gateway.max_connections,
        head_timeout: Duration::from_millis(s.gateway.handshake_timeout_ms),
    };
    (Opened { _closer: closer }, serve(listener, app, limits))
}

/// The ZeroMQ door's connection limits, applied to this one.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    /// `gateway.max_connections`: connections open at once; one more is closed at accept.
    max: usize,
    /// `gateway.handshake_timeout_ms`: from accept (or from the end of the previous request) to a request's
    /// whole head; a slower client is dropped, so idle or trickling connections cannot hold the slots.
    head_timeout: Duration,
}

/// Accepts and serves connections, HTTP/1.1, each in its own task, within `limits`.
async fn serve(listener: TcpListener, app: Router, limits: ConnLimits) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(Semaphore::new(limits.max));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!(event = "http.accept_failed", error = %e, "the HTTP door could not accept");
                tokio::time::sleep(limits.head_timeout / 10).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(event = "http.refused", peer = %peer, reason = "gateway.max_connections", "an HTTP connection over the limit was closed");
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            // One request per connection: an idle keep-alive connection would hold its slot with no timer on
            // it (the head timeout runs only while a head is awaited). An event stream is one long request.
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .keep_alive(false);
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(event = "http.connection_ended", peer = %peer, error = %e, "an HTTP connection ended with an error");
            }
        });
    }
}

fn router(door: Arc<Door>, max_body: usize) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style))
        .route("/login", get(login_link).post(login_form))
        .route("/logout", post(logout))
        .route("/api/v1/session", get(session))
        .route("/api/v1/commands/{cmd}", post(api::command))
        .route("/api/v1/events", get(api::events))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(guard_headers))
        .with_state(door)
}

/// The headers every response carries (see the module's essay).
async fn guard_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such page\n").into_response()
}

/// `GET /login?once=…`: the link logged at start, good once within its time.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OnceQuery {
    once: String,
}

async fn login_link(
    State(door): State<Arc<Door>>,
    q: Result<Query<OnceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return Redirect::to("/").into_response();
    };
    let taken = {
        let mut slot = door.login_once.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some((secret, until))
                if Instant::now() < *until
                    && super::commands::constant_time_eq(secret.as_bytes(), q.once.as_bytes()) =>
            {
                *slot = None;
                true
            }
            _ => false,
        }
    };
    if taken {
        tracing::info!(
            event = "http.login",
            via = "link",
            "a browser logged in with the one-time link"
        );
        door.logged_in()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "this login link is used, expired or wrong: log in at / with the token \
             (<data_dir>/gateway.token)\n",
        )
            .into_response()
    }
}

/// `POST /login` (the page's form): the token.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
}

async fn login_form(State(door): State<Arc<Door>>, body: axum::body::Body) -> Response {
    let bytes = match door.body(body).await {
        Ok(b) => b,
        Err((status, why)) => return (status, why).into_response(),
    };
    let f: LoginForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the login form is malformed: {e}\n"),
            )
                .into_response()
        }
    };
    if super::commands::constant_time_eq(f.token.trim().as_bytes(), door.organs.token.as_bytes()) {
        tracing::info!(
            event = "http.login",
            via = "token",
            "a browser logged in with the token"
        );
        door.logged_in()
    } else {
        tracing::warn!(
            event = "http.login_refused",
            "a login with a wrong token was refused"
        );
        (
            StatusCode::UNAUTHORIZED,
            "wrong token: it is in <data_dir>/gateway.token\n",
        )
            .into_response()
    }
}

/// `GET /api/v1/session`: whether this request is logged in (always 200, so the page asks without an error).
async fn session(State(door): State<Arc<Door>>, method: Method, headers: HeaderMap) -> Response {
    let logged_in = door.check(&headers, &method).is_ok();
    axum::Json(serde_json::json!({"logged_in": logged_in})).into_response()
}

async fn logout() -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("batos_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// 32 random bytes as hex, from the OS source.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
