//! Where and how a client reaches the daemon ([`ClientConfig`]) and why a request failed ([`ClientError`]):
//! what the REQ client (`crate::client`) and the TUI's session (`crate::session`) share.

use std::time::Duration;

use serde_json::Value;

use batos_protocol::{ErrorBody, Request, PROTOCOL_VERSION};

/// Where and how to reach the daemon.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Command (ROUTER) endpoint, `tcp://` or `ipc://`: `--endpoint`, else `gateway.command_endpoint`.
    pub endpoint: String,
    /// Event (PUB) endpoint: `--events`, else `gateway.event_endpoint`; only the event watcher uses it.
    pub events: String,
    /// Gateway secret sent with every request: `--token`/`BATOS_TOKEN`, else `<data_dir>/gateway.token`;
    /// `None` leaves only `ping` working.
    pub token: Option<String>,
    /// How long one attempt waits for its reply (connecting included) before the socket is dropped and
    /// the request resent (`client.timeout_ms`).
    pub timeout: Duration,
    /// Resends of the same request id after the first attempt, so `retries + 1` attempts in all.
    pub retries: u32,
    /// `send`'s get_task polling period.
    pub poll: Duration,
    /// Heartbeat period (liveness: 3 missed = disconnected).
    pub heartbeat: Duration,
    /// With `gateway.curve` on: the CURVE tunnel `endpoint` and `events` lead through (local `ipc://`
    /// endpoints), kept alive as long as any clone of this configuration is.
    pub tunnel: Option<std::sync::Arc<batos_curve::Tunnel>>,
}

impl ClientConfig {
    /// A wire v1 request body (MessagePack) for `cmd` with `args`, id `id` and this configuration's token.
    pub fn encode(&self, id: &str, cmd: &str, args: Value) -> Result<Vec<u8>, ClientError> {
        let req = Request {
            v: PROTOCOL_VERSION,
            id: id.to_string(),
            token: self.token.clone(),
            cmd: cmd.to_string(),
            args: Some(args),
        };
        rmp_serde::to_vec_named(&req).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Where a command socket connects: `endpoint`, or the local end of its CURVE tunnel.
    pub fn command_route(&self) -> &str {
        self.tunnel
            .as_ref()
            .and_then(|t| t.local(0))
            .unwrap_or(&self.endpoint)
    }

    /// Where an event subscriber connects: `events`, or the local end of its CURVE tunnel.
    pub fn event_route(&self) -> &str {
        self.tunnel
            .as_ref()
            .and_then(|t| t.local(1))
            .unwrap_or(&self.events)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply after every retry.
    #[error("no reply from {endpoint} after {attempts} attempts ({timeout_ms} ms each); is the daemon running?")]
    NoReply {
        /// The command endpoint every attempt went to.
        endpoint: String,
        /// Attempts made: `retries + 1`, all with the same request id.
        attempts: u32,
        /// Timeout per attempt.
        timeout_ms: u64,
    },
    /// The daemon answered with an error.
    #[error("{}: {}", serde_json::to_value(.0.code).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(), .0.message)]
    Server(ErrorBody),
    /// The reply could not be understood.
    #[error("protocol error: {0}")]
    Protocol(String),
}
