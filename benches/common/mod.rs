//! What the daemon-level benchmarks share: starting the real `batos` binary on free loopback ports.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use batos::client::{Client, ClientConfig};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running daemon, killed on drop.
pub struct Daemon {
    child: Child,
    /// How to reach it.
    pub cfg: ClientConfig,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon on the shipped settings with `edit` applied (log level warn, Ollama at a closed port
/// unless `edit` says otherwise) and waits until it answers `ping`.
pub fn start_daemon(
    rt: &tokio::runtime::Runtime,
    edit: impl FnOnce(&mut toml_edit::DocumentMut),
) -> Daemon {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let cfg_dir = dir.path().join("config");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::copy(repo.join("config/codex.toml"), cfg_dir.join("codex.toml")).unwrap();
    let mut doc: toml_edit::DocumentMut =
        std::fs::read_to_string(repo.join("config/settings.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let (cmd, ev) = (free_port(), free_port());
    doc["data_dir"] = toml_edit::value("../data");
    doc["gateway"]["command_endpoint"] = toml_edit::value(format!("tcp://127.0.0.1:{cmd}"));
    doc["gateway"]["event_endpoint"] = toml_edit::value(format!("tcp://127.0.0.1:{ev}"));
    doc["log"]["level"] = toml_edit::value("warn");
    doc["llm"]["backend"] = toml_edit::value("ollama");
    doc["llm"]["ollama_url"] = toml_edit::value(format!("http://127.0.0.1:{}", free_port()));
    edit(&mut doc);
    let config = cfg_dir.join("settings.toml");
    std::fs::write(&config, doc.to_string()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_batos"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut cfg = ClientConfig {
        endpoint: format!("tcp://127.0.0.1:{cmd}"),
        events: format!("tcp://127.0.0.1:{ev}"),
        token: None,
        timeout: Duration::from_millis(2000),
        retries: 0,
        poll: Duration::from_millis(500),
        heartbeat: Duration::from_millis(1000),
    };
    let started = Instant::now();
    rt.block_on(async {
        loop {
            cfg.token = std::fs::read_to_string(dir.path().join("data/gateway.token")).ok();
            if cfg.token.is_some()
                && Client::new(cfg.clone())
                    .request("ping", json!({}))
                    .await
                    .is_ok()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "daemon did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Daemon {
        child,
        cfg,
        _dir: dir,
    }
}
