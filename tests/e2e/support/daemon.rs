//! Starts the real `batos` binary on free ports with a temp data dir, exactly as a user would. Shared by the
//! end-to-end tests and the daemon-level benches (`benches/*.rs` include this file with `#[path]`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use batos_client::client::{Client, ClientConfig};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1.
/// The Python of the tests' venv (made by scripts/setup.sh): `BATOS_PYTHON`, else `~/.cache/batos/venv`.
pub fn python() -> String {
    std::env::var("BATOS_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/batos/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The embedded model file: `BATOS_MODEL`, else the one scripts/setup.sh installs.
pub fn model_path() -> String {
    std::env::var("BATOS_MODEL").unwrap_or_else(|_| {
        repo()
            .join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
            .display()
            .to_string()
    })
}

/// A daemon under test.
pub struct Daemon {
    /// Temp dir holding config/ and data/.
    pub dir: tempfile::TempDir,
    /// The settings file.
    pub config: PathBuf,
    child: Option<Child>,
    /// Appended stderr of every run (JSON log lines).
    pub log: PathBuf,
    /// Environment variables the daemon is started with, besides the test's own.
    pub env: Vec<(&'static str, String)>,
    /// Length of the log when the current process was started: what it wrote comes after.
    spawned_at: u64,
}

/// Settings edits applied on top of the shipped settings.toml.
pub type Edit = Box<dyn Fn(&mut toml_edit::DocumentMut)>;

/// Edit: the daemon's log level (benches use "warn" to keep logging out of the measurement).
pub fn log_level(level: &str) -> Edit {
    let level = level.to_string();
    Box::new(move |doc| doc["log"]["level"] = toml_edit::value(level.as_str()))
}

/// Edit: puts back the shipped value of `[table] key`, undoing the harness's test override of it.
pub fn shipped(table: &'static str, key: &'static str) -> Edit {
    Box::new(move |doc| {
        let text = fs::read_to_string(repo().join("config/settings.toml")).unwrap();
        let shipped: toml_edit::DocumentMut = text.parse().unwrap();
        doc[table][key] = shipped[table][key].clone();
    })
}

impl Daemon {
    /// Writes config (shipped files + test overrides) and starts the daemon, waiting until it answers.
    pub async fn start(ollama_url: &str, edits: Vec<Edit>) -> Self {
        let d = Self::prepare(ollama_url, edits);
        d.spawn_and_wait().await
    }

    /// Writes config without starting.
    pub fn prepare(ollama_url: &str, edits: Vec<Edit>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg_dir = dir.path().join("config");
        fs::create_dir_all(&cfg_dir).unwrap();
        fs::copy(repo().join("config/codex.toml"), cfg_dir.join("codex.toml")).unwrap();
        fs::copy(
            repo().join("config/forge-general.jsonl"),
            cfg_dir.join("forge-general.jsonl"),
        )
        .unwrap();
        // The forge's exam gate set (trainer.exam_gate), where the shipped settings name it.
        fs::create_dir_all(cfg_dir.join("exam")).unwrap();
        fs::copy(
            repo().join("config/exam/gate.jsonl"),
            cfg_dir.join("exam/gate.jsonl"),
        )
        .unwrap();
        let text = fs::read_to_string(repo().join("config/settings.toml")).unwrap();
        let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
        doc["data_dir"] = toml_edit::value("../data");
        doc["gateway"]["command_endpoint"] =
            toml_edit::value(format!("tcp://127.0.0.1:{}", free_port()));
        doc["gateway"]["event_endpoint"] =
            toml_edit::value(format!("tcp://127.0.0.1:{}", free_port()));
        doc["gateway"]["heartbeat_ms"] = toml_edit::value(200);
        doc["client"]["timeout_ms"] = toml_edit::value(1500);
        doc["client"]["retries"] = toml_edit::value(2);
        doc["client"]["poll_ms"] = toml_edit::value(500);
        doc["llm"]["backend"] = toml_edit::value("ollama");
        doc["llm"]["ollama_url"] = toml_edit::value(ollama_url);
        doc["llm"]["request_timeout_ms"] = toml_edit::value(20000);
        doc["debug"]["fault_injection"] = toml_edit::value(true);
        // The sandbox root filesystem built by scripts/setup.sh; no pre-started sandboxes unless a test asks.
        doc["tools"]["rootfs"] =
            toml_edit::value(repo().join("data/sandbox/rootfs").display().to_string());
        doc["tools"]["pool_size"] = toml_edit::value(0);
        doc["tools"]["timeout_ms"] = toml_edit::value(4000);
        // Scripted critiques are short and often the same words: judge the graph's edges on scores alone
        // (the critique rule has its own tests: nodes::tests and first_hour.rs on the real model).
        doc["orchestrator"]["min_critique_words"] = toml_edit::value(0);
        // The scripted model answers the Contrapunto's steps in order; the direct path (route = "auto") is
        // tested where the shipped settings run (first_hour.rs, exam.rs).
        doc["orchestrator"]["route"] = toml_edit::value("full");
        doc["orchestrator"]["critique_repeat_similarity"] = toml_edit::value(1.0);
        // The Curator's judge would take scripted answers meant for the tasks: it is on in curator.rs and in
        // first_hour.rs (shipped settings), off elsewhere.
        doc["curator"]["enabled"] = toml_edit::value(false);
        // Goals of its own would add tasks and model calls to every test: on in motivator.rs only.
        doc["motivator"]["enabled"] = toml_edit::value(false);
        for e in edits {
            e(&mut doc);
        }
        let config = cfg_dir.join("settings.toml");
        fs::write(&config, doc.to_string()).unwrap();
        Daemon::at(dir, config)
    }

    /// A daemon for a settings file written elsewhere (an imported mind), logging into `dir`.
    pub fn at(dir: tempfile::TempDir, config: PathBuf) -> Self {
        let log = dir.path().join("daemon.log");
        Daemon {
            dir,
            config,
            child: None,
            log,
            env: Vec::new(),
            spawned_at: 0,
        }
    }

    /// Starts the process and waits for `ping`.
    pub async fn spawn_and_wait(mut self) -> Self {
        self.spawn();
        self.wait_ready().await;
        self
    }

    /// Starts the process (again).
    pub fn spawn(&mut self) {
        self.spawned_at = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(batos_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the daemon answers ping (panics with the log after 30 s). A daemon started again on its
    /// ports may find one taken meanwhile by another test's process (free ports are found by binding port 0
    /// and letting go, so a released port can be handed out again): then it is moved to fresh ports and
    /// started again, up to three times — the tests read its endpoints from the settings file each time.
    pub async fn wait_ready(&mut self) {
        for _ in 0..3 {
            self.wait_answer().await;
            if self.alive() || !self.lost_a_port() {
                return;
            }
            self.move_ports();
            self.spawn();
        }
        self.wait_answer().await;
        assert!(
            self.alive(),
            "daemon lost its ports four times; log:\n{}",
            self.log_text()
        );
    }

    /// Whether the current process ended because a port it binds was in use.
    fn lost_a_port(&self) -> bool {
        let text = self.log_text();
        text.get(self.spawned_at as usize..)
            .is_some_and(|t| t.contains("Address already in use"))
    }

    /// Rewrites the settings file with fresh command and event ports.
    fn move_ports(&self) {
        let mut doc: toml_edit::DocumentMut =
            fs::read_to_string(&self.config).unwrap().parse().unwrap();
        for key in ["command_endpoint", "event_endpoint"] {
            doc["gateway"][key] = toml_edit::value(format!("tcp://127.0.0.1:{}", free_port()));
        }
        if doc.get("http").is_some() {
            doc["http"]["bind"] = toml_edit::value(format!("127.0.0.1:{}", free_port()));
        }
        fs::write(&self.config, doc.to_string()).unwrap();
    }

    /// Waits until the daemon answers ping, or its process has ended; panics with the log after 30 s.
    async fn wait_answer(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if !self.alive() && self.lost_a_port() {
                return;
            }
            let mut c = Client::new(ClientConfig {
                timeout: Duration::from_millis(300),
                retries: 0,
                ..self.client_config()
            });
            if c.request("ping", json!({})).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("daemon did not come up; log:\n{}", self.log_text());
    }

    /// The settings as written.
    pub fn settings(&self) -> batos_actors::settings::Settings {
        batos_actors::settings::LoadedSettings::load(&self.config)
            .unwrap()
            .settings
    }

    /// A client config for this daemon (token from the data dir once it exists).
    pub fn client_config(&self) -> ClientConfig {
        let s = self.settings();
        ClientConfig {
            endpoint: s.gateway.command_endpoint,
            events: s.gateway.event_endpoint,
            token: fs::read_to_string(s.data_dir.join("gateway.token"))
                .ok()
                .map(|t| t.trim().to_string()),
            timeout: Duration::from_millis(s.client.timeout_ms),
            retries: s.client.retries,
            poll: Duration::from_millis(s.client.poll_ms),
            heartbeat: Duration::from_millis(s.gateway.heartbeat_ms),
            tunnel: None,
        }
    }

    /// A command client.
    pub fn client(&self) -> Client {
        Client::new(self.client_config())
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.settings().data_dir
    }

    /// Runs `batos run` on this config in the foreground until it exits (for start-up refusals).
    pub fn run_once(&self) -> std::process::Output {
        Command::new(batos_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the process with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Waits up to `secs` for the process to exit by itself and returns its status.
    pub fn terminate_when_exited(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines so far.
    pub fn log_json(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Path of a file under the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // A failed test's daemon log dies with its temp folder: its warnings and errors are the evidence.
        if std::thread::panicking() {
            let text = self.log_text();
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
                .collect();
            let tail = &bad[bad.len().saturating_sub(DROP_LOG_LINES)..];
            eprintln!(
                "daemon log ({} lines): its last {} warnings and errors:\n{}",
                text.lines().count(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Warnings and errors of the daemon's log printed when a test fails with it running.
const DROP_LOG_LINES: usize = 60;

/// Polls `f` until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if started.elapsed() > Duration::from_secs(secs) {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a task to reach a final (or paused) status and returns it.
pub async fn wait_task(c: &mut Client, id: &str, secs: u64) -> Value {
    let started = Instant::now();
    loop {
        if let Ok(t) = c.request("get_task", json!({"id": id})).await {
            if matches!(
                t["status"].as_str(),
                Some("done" | "failed" | "cancelled" | "paused")
            ) {
                return t;
            }
        }
        if started.elapsed() > Duration::from_secs(secs) {
            panic!("task {id} did not finish in {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Path helper.
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The daemon binary under test: the one cargo built with this test, unless `BATOS_BIN` names another (the
/// build-profile comparison in BENCHMARKS.md drives daemons built other ways with the same client code).
pub fn batos_bin() -> std::ffi::OsString {
    std::env::var_os("BATOS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_batos").into())
}

/// The `batos-client` binary (the client crate's, built without the engine), beside the daemon's binary:
/// `cargo test --workspace --all-targets` (scripts/test.sh) builds both before it runs a test.
pub fn batos_client_cmd() -> Command {
    let bin = PathBuf::from(batos_bin()).with_file_name("batos-client");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p batos-client` (scripts/test.sh does)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env_remove("BATOS_TOKEN");
    cmd
}

/// The `batos` CLI, without a token from the environment (it reads the daemon's token file).
pub fn batos_cmd(d: &Daemon) -> Command {
    let mut cmd = Command::new(batos_bin());
    cmd.env_remove("BATOS_TOKEN");
    let _ = d;
    cmd
}
