//! The envelope of every message: request and reply bodies, error codes, and the checks a body passes at
//! the boundary before any organ sees it.
//!
//! Bodies are MessagePack maps with string keys. Unknown fields, wrong types, missing fields and oversize
//! values become [`ErrorCode::BadRequest`]; the request id is salvaged when it can be read, so a client can
//! match even a refusal to what it sent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The event channel's authentication: a subscriber's first business is to subscribe to this prefix
/// followed by the gateway token (see [`events_auth_topic`]); until then the daemon forwards none of its
/// subscriptions, and a subscriber that does not authenticate within the handshake time is disconnected.
pub const EVENTS_AUTH_PREFIX: &str = "batos-auth:";

/// The subscription that authenticates a subscriber holding `token`. No event is published under it.
pub fn events_auth_topic(token: &str) -> String {
    format!("{EVENTS_AUTH_PREFIX}{token}")
}

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
    /// The command ran to its end and did not achieve its aim (for example: the model could not write a tool
    /// that passes its tests); the message says why. Nothing was changed.
    Failed,
    /// A bug or an unexpected failure inside the daemon.
    Internal,
}

/// The error part of a failed reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong, as one of the eight v1 codes (snake_case on the wire); clients branch on this,
    /// never on `message`.
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
    /// Protocol version: always [`PROTOCOL_VERSION`] (1), whatever the request carried.
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
    // Decoding recurses once per level: a body nested thousands deep would overflow the stack before any
    // check could run, so the nesting is measured first, without recursion.
    if let Err(depth) = within_depth(body, MAX_DEPTH) {
        return Err((
            String::new(),
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("request nested deeper than {MAX_DEPTH} levels (at least {depth})"),
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

/// Deepest nesting of maps and arrays a request may have (the envelope counts as 1).
pub const MAX_DEPTH: usize = 32;

/// Walks a MessagePack value without recursion and fails with the depth reached as soon as maps and arrays
/// nest deeper than `limit`. Malformed or truncated input is not judged here (decoding reports it).
pub fn within_depth(body: &[u8], limit: usize) -> Result<(), usize> {
    // Each entry: values still to read in an open map or array.
    let mut open: Vec<u64> = Vec::new();
    let mut at = 0usize;
    let mut pending: u64 = 1;
    loop {
        // Close finished containers.
        while pending == 0 {
            match open.pop() {
                Some(p) => pending = p,
                None => return Ok(()),
            }
        }
        let Some(&m) = body.get(at) else {
            return Ok(());
        };
        at += 1;
        pending -= 1;
        let be = |n: usize, at: usize| -> Option<u64> {
            let b = body.get(at..at + n)?;
            Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
        };
        // (bytes to skip, children to open)
        let (skip, children): (u64, Option<u64>) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, None),
            0x80..=0x8f => (0, Some(2 * u64::from(m & 0x0f))),
            0x90..=0x9f => (0, Some(u64::from(m & 0x0f))),
            0xa0..=0xbf => (u64::from(m & 0x1f), None),
            0xcc | 0xd0 => (1, None),
            0xcd | 0xd1 => (2, None),
            0xca | 0xce | 0xd2 => (4, None),
            0xcb | 0xcf | 0xd3 => (8, None),
            0xd4 => (2, None),
            0xd5 => (3, None),
            0xd6 => (5, None),
            0xd7 => (9, None),
            0xd8 => (17, None),
            0xc4 | 0xd9 => match be(1, at) {
                Some(n) => (1 + n, None),
                None => return Ok(()),
            },
            0xc5 | 0xda => match be(2, at) {
                Some(n) => (2 + n, None),
                None => return Ok(()),
            },
            0xc6 | 0xdb => match be(4, at) {
                Some(n) => (4 + n, None),
                None => return Ok(()),
            },
            0xc7 => match be(1, at) {
                Some(n) => (2 + n, None),
                None => return Ok(()),
            },
            0xc8 => match be(2, at) {
                Some(n) => (3 + n, None),
                None => return Ok(()),
            },
            0xc9 => match be(4, at) {
                Some(n) => (5 + n, None),
                None => return Ok(()),
            },
            0xdc => match be(2, at) {
                Some(n) => (2, Some(n)),
                None => return Ok(()),
            },
            0xdd => match be(4, at) {
                Some(n) => (4, Some(n)),
                None => return Ok(()),
            },
            0xde => match be(2, at) {
                Some(n) => (2, Some(2 * n)),
                None => return Ok(()),
            },
            0xdf => match be(4, at) {
                Some(n) => (4, Some(2 * n)),
                None => return Ok(()),
            },
            // 0xc1 is never used: the decoder reports it.
            0xc1 => return Ok(()),
        };
        at = match usize::try_from(skip).ok().and_then(|s| at.checked_add(s)) {
            Some(a) if a <= body.len() => a,
            _ => return Ok(()),
        };
        if let Some(n) = children {
            // `open` now holds one entry per container entered: the depth of this one.
            open.push(pending);
            if open.len() > limit {
                return Err(open.len());
            }
            pending = n;
        }
    }
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
    use crate::Command;
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
    fn deep_nesting_is_refused_before_decoding() {
        // 100,000 nested one-element arrays inside the args: decoding this recursively would overflow.
        let mut b = enc(&json!({"v":1,"id":"deep","cmd":"ping"}));
        b[0] += 1; // one more key in the top map
        b.extend(enc(&json!("args")));
        b.extend(std::iter::repeat_n(0x91u8, 100_000));
        b.push(0xc0);
        let (_, e) = decode_request(&b, 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("nested deeper"), "{}", e.message);
        // Exactly at the limit is fine (it then fails or passes on its merits).
        let ok = (0..MAX_DEPTH - 1).fold(json!(1), |v, _| json!([v]));
        assert_eq!(within_depth(&enc(&json!({ "a": ok })), MAX_DEPTH), Ok(()));
        let deep = (0..MAX_DEPTH).fold(json!(1), |v, _| json!([v]));
        assert!(within_depth(&enc(&json!({ "a": deep })), MAX_DEPTH).is_err());
        // Every kind of scalar and long container is walked, not mistaken for nesting.
        let flat = json!({"s": "x".repeat(70_000), "n": [1, -1, 300, -300, 70000, 1.5, u64::MAX, i64::MIN, null, true],
            "m": (0..20).map(|i| (i.to_string(), json!(i))).collect::<serde_json::Map<_, _>>()});
        assert_eq!(within_depth(&enc(&flat), 3), Ok(()));
        // Truncated or garbage input is left to the decoder.
        assert_eq!(within_depth(&[0xdc, 0xff], 3), Ok(()));
        assert_eq!(within_depth(&[0xc1, 0x91], 1), Ok(()));
    }

    #[test]
    fn oversize_is_refused_unread() {
        let (_, e) = decode_request(&vec![0u8; 2048], 1024).unwrap_err();
        assert!(e.message.contains("exceeds"));
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
