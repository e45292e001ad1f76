//! The `[http]` table: the gateway's second door (HTTP: commands as JSON, events as Server-Sent Events, the
//! OpenAI chat-completions API and the page), off unless asked for.

use serde::{Deserialize, Serialize};

/// `[http]` (restart-only: read when the gateway starts). A settings file written before it loads with these
/// defaults, which are the shipped values: the door stays shut.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Whether the gateway opens its HTTP door beside the ZeroMQ one.
    pub enabled: bool,
    /// `IP:PORT` the door listens on (`localhost:` means `127.0.0.1:`). A non-loopback address is refused
    /// unless `allow_non_loopback` says otherwise: this build serves plain HTTP, no TLS.
    pub bind: String,
    /// Lets `bind` name a non-loopback address although the door speaks plain HTTP (the token, every task and
    /// answer cross the network readable). Meant for a TLS-terminating proxy on the same host network.
    pub allow_non_loopback: bool,
    /// Milliseconds the one-time login link printed at start stays usable (it works once).
    pub login_link_ttl_ms: u64,
    /// Seconds a browser keeps its login cookie. The cookie is derived from the gateway token, so it survives
    /// daemon restarts and dies with the token.
    pub session_max_age_s: u64,
    /// Milliseconds a chat completion waits for its task to end before it answers `504` (the task goes on;
    /// its id is in the reply).
    pub chat_timeout_ms: u64,
    /// The model name `GET /v1/models` lists and `POST /v1/chat/completions` expects (the whole household
    /// answers as one model).
    pub model_name: String,
    /// Most event streams (`GET /api/v1/events`) open at once; one more is answered `503`.
    pub max_event_streams: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            bind: "127.0.0.1:5580".into(),
            allow_non_loopback: false,
            login_link_ttl_ms: 600_000,
            session_max_age_s: 2_592_000,
            chat_timeout_ms: 600_000,
            model_name: "batos".into(),
            max_event_streams: 64,
        }
    }
}

impl HttpSettings {
    /// `bind` as a socket address (`localhost:` read as `127.0.0.1:`).
    pub fn addr(&self) -> Result<std::net::SocketAddr, String> {
        let text = self.bind.replacen("localhost:", "127.0.0.1:", 1);
        text.parse().map_err(|_| {
            format!(
                "`{}` is not IP:PORT (for example 127.0.0.1:5580)",
                self.bind
            )
        })
    }
}
