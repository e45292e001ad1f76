//! The door's state and its one rule of who may: the bearer token, or the login cookie with the CSRF header for
//! a change (see the essay of [`super`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use tokio::sync::{watch, Semaphore};

use batos_actors::settings::HttpSettings;
use batos_protocol::ErrorCode;

use crate::gateway::Organs;

/// Name of the login cookie.
pub const COOKIE: &str = "batos_session";
/// The header a cookie-authorised request that changes something must carry (value `1`).
pub const CSRF_HEADER: &str = "x-batos-csrf";

/// Everything the door's handlers share.
pub struct Door {
    pub(super) organs: Arc<Organs>,
    /// `[http]` as it was when the gateway started (restart-only).
    pub(super) http: HttpSettings,
    /// The cookie value that authorises: [`session_value`] of the token.
    pub(super) session: String,
    /// The one-time login link's secret and when it stops working; `None` once used.
    pub(super) login_once: Mutex<Option<(String, Instant)>>,
    /// Commands executing at once (`gateway.max_inflight_commands`).
    pub(super) commands: Arc<Semaphore>,
    /// Event streams open at once (`http.max_event_streams`).
    pub(super) streams: Arc<Semaphore>,
    /// Changes (closes) when the gateway goes away: streams and waiting chat completions end.
    pub(super) closed: watch::Receiver<()>,
    /// `gateway.max_request_bytes`: the largest body read.
    pub(super) max_body: usize,
    /// `gateway.handshake_timeout_ms`: the time a body may take to arrive whole.
    pub(super) body_timeout: std::time::Duration,
}

/// How a request was authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The token as a bearer.
    Token,
    /// The login cookie.
    Cookie,
}

/// Why a request is not authorised: the status and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401 (no or wrong credentials) or 403 (a cookie write without the CSRF header).
    pub status: StatusCode,
    /// What to do about it.
    pub message: String,
}

/// The cookie value for `token`: SHA-256 of a domain-separated token, hex. Not the token, so the cookie cannot
/// be used on the ZeroMQ door, and it changes when the token does.
pub fn session_value(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"batos-http-session\0")
        .chain_update(token.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in a `Cookie` header, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Decides whether a request may proceed: the bearer token (any method), or the login cookie (reads; writes
/// only with [`CSRF_HEADER`]). Comparisons take the same time whatever the guess.
pub fn authorise(
    headers: &HeaderMap,
    method: &Method,
    token: &str,
    session: &str,
) -> Result<Via, Refusal> {
    let eq =
        |a: &str, b: &str| crate::gateway::commands::constant_time_eq(a.as_bytes(), b.as_bytes());
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let given = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "));
        return match given {
            Some(t) if eq(t.trim(), token) => Ok(Via::Token),
            _ => Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: "wrong token: send `Authorization: Bearer <token>` with the token from \
                          <data_dir>/gateway.token"
                    .into(),
            }),
        };
    }
    match cookie(headers, COOKIE) {
        Some(c) if eq(c, session) => {
            let reads = matches!(*method, Method::GET | Method::HEAD);
            let marked = headers
                .get(CSRF_HEADER)
                .is_some_and(|v| v.as_bytes() == b"1");
            if reads || marked {
                Ok(Via::Cookie)
            } else {
                Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    message: format!(
                        "a change authorised by the login cookie must carry `{CSRF_HEADER}: 1` (the page \
                         sends it; other sites cannot)"
                    ),
                })
            }
        }
        Some(_) => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: "the login cookie is stale (the token changed): log in again".into(),
        }),
        None => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: "missing token: send `Authorization: Bearer <token>` (the token is in \
                      <data_dir>/gateway.token), or log in at / with it"
                .into(),
        }),
    }
}

/// The HTTP status that says a protocol error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::UnknownCommand | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Failed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Door {
    /// Reads a request's body whole, within the door's limits: over `max_body` bytes is `413`, not all there
    /// within `body_timeout` is `408` (a client trickling its body cannot hold a connection and a task).
    pub(super) async fn body(
        &self,
        body: axum::body::Body,
    ) -> Result<axum::body::Bytes, (StatusCode, String)> {
        match tokio::time::timeout(self.body_timeout, axum::body::to_bytes(body, self.max_body))
            .await
        {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over gateway.max_request_bytes ({} bytes) or broke off: {e}",
                    self.max_body
                ),
            )),
            Err(_) => Err((
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive within gateway.handshake_timeout_ms".to_string(),
            )),
        }
    }

    /// Authorises a request or answers why not (as the protocol's reply shape, so every client of the door
    /// reads one error format; the OpenAI routes wrap it in theirs).
    pub(super) fn check(&self, headers: &HeaderMap, method: &Method) -> Result<Via, Refusal> {
        authorise(headers, method, &self.organs.token, &self.session)
    }

    /// The `Set-Cookie` value that logs a browser in.
    pub(super) fn login_cookie(&self) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.session, self.http.session_max_age_s
        )
    }

    /// A login answered: the cookie set, back to the page.
    pub(super) fn logged_in(&self) -> Response {
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&self.login_cookie()) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }
}
