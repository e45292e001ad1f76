//! How a command reaches the daemon: the `--config`, `--endpoint`, `--events` and `--token` flags every client
//! command takes, resolved against the settings file into a [`ClientConfig`].
//!
//! The client reads only the keys it needs (`data_dir`, `[gateway]`'s endpoints and heartbeat, `[client]`) and
//! ignores the rest of the file: the daemon validates the whole file when it starts, and a client must build
//! without the engine that knows every section (the point of this crate). The keys it reads are checked here
//! with the daemon's own rules, so a bad value fails the same way on both sides.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::client::ClientConfig;

/// How to reach the daemon.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Settings file (endpoints, timeouts, data_dir for the token), or `BATOS_CONFIG`, which scripts/batos
    /// sets to its checkout's file.
    #[arg(
        long,
        global = true,
        env = "BATOS_CONFIG",
        default_value = "config/settings.toml"
    )]
    pub config: PathBuf,
    /// Command endpoint (overrides settings).
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// Event endpoint (overrides settings).
    #[arg(long, global = true)]
    pub events: Option<String>,
    /// Gateway token (default: <data_dir>/gateway.token).
    #[arg(long, global = true, env = "BATOS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Conn {
    /// The client's settings from the settings file plus these flags. The token comes from `--token` (or
    /// `BATOS_TOKEN`), else `<data_dir>/gateway.token`. A settings file that cannot be read or holds a bad
    /// value is reported on stderr and answered with exit code 2, as the daemon does.
    pub fn resolve(&self) -> Result<ClientConfig, ExitCode> {
        let s = ClientSettings::load(&self.config).map_err(|e| {
            eprintln!("batos: {e}");
            ExitCode::from(2)
        })?;
        let token = self.token.clone().filter(|t| !t.is_empty()).or_else(|| {
            std::fs::read_to_string(s.data_dir.join("gateway.token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let endpoint = self.endpoint.clone().unwrap_or(s.gateway.command_endpoint);
        let events = self.events.clone().unwrap_or(s.gateway.event_endpoint);
        let mut tunnel = None;
        if s.gateway.curve != "off" {
            let config_dir = std::path::absolute(&self.config)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_default();
            let (t, _) =
                curve_tunnel(&config_dir, &s.data_dir, &[&endpoint, &events]).map_err(|e| {
                    eprintln!("batos: {e}");
                    ExitCode::from(2)
                })?;
            tunnel = Some(std::sync::Arc::new(t));
        }
        Ok(ClientConfig {
            endpoint,
            events,
            tunnel,
            token,
            timeout: Duration::from_millis(s.client.timeout_ms),
            retries: s.client.retries,
            poll: Duration::from_millis(s.client.poll_ms),
            heartbeat: Duration::from_millis(s.gateway.heartbeat_ms),
        })
    }
}

/// Starts the CURVE tunnel to `remotes`: the client's key pair from `config_dir/curve/client.key_secret`
/// (made there at the first use), the daemon's public key from `config_dir/curve/server.key` or else the local
/// daemon's `data_dir/curve/server.key`. When the local daemon's allowed-keys folder is there (same machine, and
/// this user can write it), the client's public key is put in it too, so a local CLI needs no setup.
fn curve_tunnel(
    config_dir: &Path,
    data_dir: &Path,
    remotes: &[&str],
) -> Result<(batos_curve::Tunnel, Vec<String>), String> {
    let keys_dir = config_dir.join("curve");
    let (keys, _) = batos_curve::KeyPair::load_or_create(&keys_dir, "client")
        .map_err(|e| format!("CURVE: the client's keys: {e}"))?;
    let server_file = [
        keys_dir.join("server.key"),
        data_dir.join("curve/server.key"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or_else(|| {
        format!(
            "CURVE is on (gateway.curve) but the daemon's public key is in neither {} nor {}",
            keys_dir.join("server.key").display(),
            data_dir.join("curve/server.key").display()
        )
    })?;
    let server = batos_curve::read_small(&server_file)
        .ok()
        .and_then(|t| batos_curve::field(&t, "public-key"))
        .ok_or_else(|| format!("{}: no valid public-key", server_file.display()))?;
    let allowed = data_dir.join("curve/clients");
    if allowed.is_dir() {
        let public = batos_curve::encode(keys.public.as_bytes());
        let name: String = keys.public.as_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mine = allowed.join(format!("batos-client-{name}.key"));
        if !mine.exists() {
            // Best effort: a daemon on another machine, or a folder this user cannot write, needs the key
            // copied by hand (the error at the handshake says so).
            let _ = std::fs::write(&mine, batos_curve::certificate(&public, None));
        }
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("CURVE: the tunnel needs a running tokio runtime".into());
    }
    batos_curve::Tunnel::start(remotes, std::sync::Arc::new(keys), server)
        .map_err(|e| e.to_string())
}

/// Why the settings file could not give a client its settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// The file tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not TOML, or a key the client needs is missing or of the wrong type.
    #[error("invalid settings file {path}: {message}")]
    Parse {
        /// The file tried.
        path: PathBuf,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A key the client needs holds a value the daemon would refuse too.
    #[error("invalid settings file {path}: {key}: {message}")]
    Invalid {
        /// The file tried.
        path: PathBuf,
        /// Dotted key, e.g. `client.timeout_ms`.
        key: &'static str,
        /// What is wrong.
        message: &'static str,
    },
}

/// The part of `settings.toml` a client reads (every other key is left to the daemon).
#[derive(Debug, Deserialize)]
pub struct ClientSettings {
    /// The daemon's data folder (the token is `data_dir/gateway.token`), relative to the file's folder.
    pub data_dir: PathBuf,
    /// `[gateway]`: where the daemon listens.
    pub gateway: GatewayKeys,
    /// `[client]`: how long and how often a client tries.
    pub client: ClientKeys,
}

/// The `[gateway]` keys a client reads.
#[derive(Debug, Deserialize)]
pub struct GatewayKeys {
    /// The ROUTER endpoint commands go to.
    pub command_endpoint: String,
    /// The PUB endpoint events come from.
    pub event_endpoint: String,
    /// The daemon's heartbeat period, ms; a watcher calls the daemon gone after three missed.
    pub heartbeat_ms: u64,
    /// `off`, `on` or `required`: anything but `off` and the client speaks CURVE (through its tunnel).
    #[serde(default = "curve_off")]
    pub curve: String,
}

fn curve_off() -> String {
    "off".into()
}

/// The `[client]` keys.
#[derive(Debug, Deserialize)]
pub struct ClientKeys {
    /// Reply timeout per attempt, ms.
    pub timeout_ms: u64,
    /// Resends of the same request id before giving up.
    pub retries: u32,
    /// `batos send`'s get_task polling period, ms.
    pub poll_ms: u64,
}

impl ClientSettings {
    /// Reads `path`, takes the client's keys, makes `data_dir` absolute against the file's folder and checks
    /// the values (each period positive).
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let read = |source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read)?;
        let abs = std::path::absolute(path).map_err(read)?;
        Self::parse(&text, &abs)
    }

    /// Parses settings text; `path` names the file in errors and anchors the relative `data_dir`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let mut s: Self = toml_edit::de::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if s.data_dir.is_relative() {
            s.data_dir = path.parent().unwrap_or(Path::new("/")).join(&s.data_dir);
        }
        for (key, value) in [
            ("gateway.heartbeat_ms", s.gateway.heartbeat_ms),
            ("client.timeout_ms", s.client.timeout_ms),
            ("client.poll_ms", s.client.poll_ms),
        ] {
            if value == 0 {
                return Err(SettingsError::Invalid {
                    path: path.to_path_buf(),
                    key,
                    message: "must be positive",
                });
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/settings.toml"
        ))
        .unwrap()
    }

    #[test]
    fn the_shipped_file_gives_the_client_its_keys() {
        let s = ClientSettings::parse(&shipped(), Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.data_dir, Path::new("/x/config/../data"));
        assert!(s.gateway.command_endpoint.starts_with("tcp://"));
        assert!(s.client.timeout_ms > 0 && s.gateway.heartbeat_ms > 0);
    }

    #[test]
    fn a_zero_period_is_refused_with_its_key() {
        let text = shipped().replace("timeout_ms = 2500", "timeout_ms = 0");
        let e = ClientSettings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("client.timeout_ms") && e.contains("positive"),
            "{e}"
        );
    }

    #[test]
    fn with_curve_on_and_no_server_key_the_client_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let e = curve_tunnel(
            &dir.path().join("config"),
            &dir.path().join("data"),
            &["tcp://127.0.0.1:1"],
        )
        .err()
        .unwrap();
        assert!(
            e.contains("gateway.curve") && e.contains("server.key"),
            "{e}"
        );
        // Its own key pair was made on the way, private.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("config/curve/client.key_secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_key_is_named() {
        let text = shipped().replace("poll_ms = 2000", "");
        let e = ClientSettings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("poll_ms"), "{e}");
    }
}
