//! `config/settings.toml`: every tunable of the daemon, typed and validated.
//!
//! Every key is required (the shipped file is the single source of truth, so the code holds no second copy of
//! the defaults); unknown keys are refused so a typo cannot silently fall back to anything. Relative paths
//! resolve from the folder that holds the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why settings could not be loaded or changed.
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
    /// The file is not valid TOML or does not match the schema (the message names the key).
    #[error("invalid settings file {path}: {message}")]
    Parse {
        /// The file tried.
        path: PathBuf,
        /// The parser's message, naming line, column and key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting `{key}` in {path}: {message}")]
    Invalid {
        /// The file tried.
        path: PathBuf,
        /// Dotted key, e.g. `gateway.heartbeat_ms`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the file back failed.
    #[error("cannot write settings file {path}: {source}")]
    Write {
        /// The file tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The whole settings file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the daemon keeps its state.
    pub data_dir: PathBuf,
    /// The personas' codex file.
    pub codex_path: PathBuf,
    /// Logging.
    pub log: LogSettings,
    /// The ZeroMQ gateway.
    pub gateway: GatewaySettings,
    /// Client behaviour (CLI, TUI).
    pub client: ClientSettings,
    /// Supervision tree limits.
    pub supervision: SupervisionSettings,
    /// LLM backends.
    pub llm: LlmSettings,
    /// Per-persona model choice.
    pub personas: BTreeMap<String, PersonaSettings>,
    /// The task orchestrator and its Socratic Contrapunto graph.
    pub orchestrator: OrchestratorSettings,
    /// Long-term memory.
    pub memory: MemorySettings,
    /// Tools, the ToolForge and the sandbox.
    pub tools: ToolsSettings,
    /// The codex governor.
    pub codex: CodexSettings,
    /// Fault injection and other debugging switches.
    pub debug: DebugSettings,
}

/// `[tools] backend`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SandboxChoice {
    /// gVisor directly.
    Runsc,
    /// Docker with runtime=runsc.
    Docker,
}

/// `[tools]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolsSettings {
    /// Sandbox backend.
    pub backend: SandboxChoice,
    /// runsc binary.
    pub runsc_path: PathBuf,
    /// Sandbox root filesystem.
    pub rootfs: PathBuf,
    /// runsc state and bundles.
    pub state_dir: PathBuf,
    /// Docker image.
    pub docker_image: String,
    /// Allow Docker's runc when runsc is not registered.
    pub allow_runc: bool,
    /// Pre-started sandboxes.
    pub pool_size: usize,
    /// Pre-start failure backoff.
    pub pool_backoff_ms: u64,
    /// Memory limit (MiB).
    pub memory_mb: u64,
    /// CPU share.
    pub cpus: f64,
    /// Pids limit.
    pub pids_limit: u64,
    /// /tmp size (MiB).
    pub tmpfs_mb: u64,
    /// Open files.
    pub nofile: u64,
    /// Wall-clock limit per run.
    pub timeout_ms: u64,
    /// Largest result.
    pub max_output_bytes: usize,
    /// ToolForge attempts.
    pub max_attempts: u32,
    /// Largest source or tests.
    pub max_source_bytes: usize,
    /// Whole forge run limit.
    pub forge_timeout_ms: u64,
}

/// `[codex]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CodexSettings {
    /// Backups kept.
    pub keep_backups: usize,
    /// Watcher debounce.
    pub reload_debounce_ms: u64,
    /// Persona proposing amendments.
    pub proposer: String,
}

/// `[memory]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemorySettings {
    /// Table name.
    pub table: String,
    /// Chunk size in bytes.
    pub chunk_chars: usize,
    /// Stage-1 summaries.
    pub k_summaries: usize,
    /// Default stage-2 details.
    pub k_details: usize,
    /// Largest `k` a client may ask for.
    pub max_k: usize,
    /// Recent unparented details.
    pub k_recent: usize,
    /// Relevance cut-off.
    pub min_relevance: f32,
    /// IVF probes.
    pub nprobes: usize,
    /// Refine factor.
    pub refine_factor: u32,
    /// Rows before the first index build.
    pub index_min_rows: u64,
    /// Growth factor that triggers a rebuild.
    pub reindex_growth: f64,
    /// Unindexed rows that trigger an index optimize.
    pub optimize_min_unindexed: u64,
    /// Data fragments (one per write) that trigger a compaction into larger files.
    pub compact_min_fragments: usize,
    /// IVF partitions (0 = derive).
    pub index_partitions: u32,
    /// PQ sub-vectors (0 = derive).
    pub index_sub_vectors: u32,
    /// Consolidation period.
    pub consolidate_interval_ms: u64,
    /// Unparented details needed for a timed pass.
    pub consolidate_min_details: usize,
    /// Details per pass.
    pub consolidate_batch: usize,
    /// Details per summary.
    pub group_max: usize,
    /// Centroid similarity to merge groups.
    pub merge_similarity: f32,
    /// Persona writing summaries.
    pub summary_persona: String,
    /// Ingest attempts.
    pub ingest_retries: u32,
    /// Pause between ingest attempts.
    pub ingest_backoff_ms: u64,
    /// Timeout of calls to the memory actor.
    pub call_timeout_ms: u64,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// EnvFilter directive, e.g. `info` or `batos=debug`.
    pub level: String,
    /// `json` or `pretty`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured when a terminal.
    Pretty,
}

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// ROUTER socket endpoint for commands.
    pub command_endpoint: String,
    /// PUB socket endpoint for events.
    pub event_endpoint: String,
    /// Heartbeat period on the event channel.
    pub heartbeat_ms: u64,
    /// Window within which a repeated request id returns the first reply.
    pub dedupe_window_ms: u64,
    /// Most remembered replies.
    pub dedupe_capacity: usize,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Events buffered for the PUB socket before dropping.
    pub event_queue_capacity: usize,
    /// Commands executing concurrently.
    pub max_inflight_commands: usize,
    /// Timeout of a gateway → organ call.
    pub actor_call_timeout_ms: u64,
}

/// `[client]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Reply timeout per attempt.
    pub timeout_ms: u64,
    /// Resends of the same request id before giving up.
    pub retries: u32,
    /// `batos send` polling period for get_task.
    pub poll_ms: u64,
}

/// `[supervision]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    /// Most restarts within `period_ms` before a supervisor escalates.
    pub intensity: u32,
    /// The intensity window.
    pub period_ms: u64,
    /// Grace period for a child to stop before it is killed.
    pub shutdown_timeout_ms: u64,
    /// Pause before retrying a failed restart.
    pub restart_backoff_ms: u64,
}

/// `[llm]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// Which backend serves the personas.
    pub backend: BackendChoice,
    /// Base URL of the Ollama server.
    pub ollama_url: String,
    /// Start-up probe timeout for `auto`.
    pub probe_timeout_ms: u64,
    /// Timeout of one model request.
    pub request_timeout_ms: u64,
    /// Embedding model name (Ollama).
    pub embed_model: String,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Sampling seed.
    pub seed: i32,
    /// Longest answer in tokens.
    pub max_tokens: u32,
    /// The embedded llama.cpp backend.
    pub embedded: EmbeddedSettings,
}

/// `[llm] backend`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Ollama if reachable at start, else embedded.
    Auto,
    /// Always Ollama.
    Ollama,
    /// Always the in-process llama.cpp model.
    Embedded,
}

/// `[llm.embedded]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    /// Model name meaning the base model.
    pub model_name: String,
    /// GGUF file.
    pub model_path: PathBuf,
    /// Expected SHA-256 (hex) of the GGUF file.
    pub model_sha256: String,
    /// Context length per request.
    pub n_ctx: u32,
    /// Prompt batch size.
    pub n_batch: u32,
    /// Inference threads (0 = all cores).
    pub threads: u32,
    /// Concurrent contexts.
    pub max_contexts: usize,
    /// Forward llama.cpp logs.
    pub native_logs: bool,
}

/// `[personas.<NAME>]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersonaSettings {
    /// The model tag (Ollama) or model spec (embedded) this persona thinks with.
    pub model: String,
}

/// `[orchestrator]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    /// Tasks running at once.
    pub max_concurrent_tasks: usize,
    /// Dissonance above which a draft goes back to BRICK.
    pub dissonance_threshold: f64,
    /// Most BRICK/ROBIN rounds.
    pub max_iterations: u32,
    /// Dissonance above which, after `max_iterations`, the task pauses for an inquiry.
    pub inquiry_threshold: f64,
    /// Most tool calls in one drafting step.
    pub max_tool_calls_per_step: u32,
    /// Finished tasks kept.
    pub keep_finished_tasks: usize,
    /// Longest task text.
    pub max_task_bytes: usize,
    /// Most steps per task.
    pub max_steps: u32,
    /// Stream draft/synthesis output as `task.token` events.
    pub stream_tokens: bool,
}

/// `[debug]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebugSettings {
    /// Allow `debug_crash`.
    pub fault_injection: bool,
}

/// Settings plus where they came from.
#[derive(Debug, Clone)]
pub struct LoadedSettings {
    /// The parsed settings, with every path made absolute.
    pub settings: Settings,
    /// The file they were read from (absolute).
    pub path: PathBuf,
}

impl LoadedSettings {
    /// Reads, parses, resolves and validates the settings file.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let path = std::path::absolute(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let settings = Settings::parse(&text, &path)?;
        Ok(Self { settings, path })
    }

    /// The folder holding the settings file; relative paths resolve from here.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

impl Settings {
    /// Parses settings text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let mut s: Settings = toml_edit::de::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        s.data_dir = resolve(dir, &s.data_dir);
        s.codex_path = resolve(dir, &s.codex_path);
        s.llm.embedded.model_path = resolve(dir, &s.llm.embedded.model_path);
        s.tools.rootfs = resolve(dir, &s.tools.rootfs);
        s.tools.state_dir = resolve(dir, &s.tools.state_dir);
        s.validate(path)?;
        Ok(s)
    }

    fn validate(&self, path: &Path) -> Result<(), SettingsError> {
        let bad = |key: &str, message: &str| SettingsError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        };
        for (key, ep) in [
            ("gateway.command_endpoint", &self.gateway.command_endpoint),
            ("gateway.event_endpoint", &self.gateway.event_endpoint),
        ] {
            if !(ep.starts_with("tcp://") || ep.starts_with("ipc://")) {
                return Err(bad(key, "must start with tcp:// or ipc://"));
            }
        }
        let positive = [
            ("gateway.heartbeat_ms", self.gateway.heartbeat_ms),
            ("gateway.dedupe_window_ms", self.gateway.dedupe_window_ms),
            (
                "gateway.dedupe_capacity",
                self.gateway.dedupe_capacity as u64,
            ),
            (
                "gateway.max_request_bytes",
                self.gateway.max_request_bytes as u64,
            ),
            (
                "gateway.event_queue_capacity",
                self.gateway.event_queue_capacity as u64,
            ),
            (
                "gateway.max_inflight_commands",
                self.gateway.max_inflight_commands as u64,
            ),
            (
                "gateway.actor_call_timeout_ms",
                self.gateway.actor_call_timeout_ms,
            ),
            ("client.timeout_ms", self.client.timeout_ms),
            ("client.poll_ms", self.client.poll_ms),
            ("supervision.period_ms", self.supervision.period_ms),
            (
                "supervision.shutdown_timeout_ms",
                self.supervision.shutdown_timeout_ms,
            ),
            ("llm.probe_timeout_ms", self.llm.probe_timeout_ms),
            ("llm.request_timeout_ms", self.llm.request_timeout_ms),
            ("llm.max_tokens", u64::from(self.llm.max_tokens)),
            ("llm.embedded.n_ctx", u64::from(self.llm.embedded.n_ctx)),
            ("llm.embedded.n_batch", u64::from(self.llm.embedded.n_batch)),
            (
                "llm.embedded.max_contexts",
                self.llm.embedded.max_contexts as u64,
            ),
            (
                "orchestrator.max_concurrent_tasks",
                self.orchestrator.max_concurrent_tasks as u64,
            ),
            (
                "orchestrator.max_iterations",
                u64::from(self.orchestrator.max_iterations),
            ),
            (
                "orchestrator.keep_finished_tasks",
                self.orchestrator.keep_finished_tasks as u64,
            ),
            (
                "orchestrator.max_steps",
                u64::from(self.orchestrator.max_steps),
            ),
            (
                "orchestrator.max_task_bytes",
                self.orchestrator.max_task_bytes as u64,
            ),
            ("memory.chunk_chars", self.memory.chunk_chars as u64),
            ("memory.k_summaries", self.memory.k_summaries as u64),
            ("memory.k_details", self.memory.k_details as u64),
            ("memory.max_k", self.memory.max_k as u64),
            ("memory.nprobes", self.memory.nprobes as u64),
            ("memory.index_min_rows", self.memory.index_min_rows),
            (
                "memory.consolidate_interval_ms",
                self.memory.consolidate_interval_ms,
            ),
            (
                "memory.consolidate_batch",
                self.memory.consolidate_batch as u64,
            ),
            ("memory.group_max", self.memory.group_max as u64),
            ("memory.call_timeout_ms", self.memory.call_timeout_ms),
            ("codex.keep_backups", self.codex.keep_backups as u64),
            ("tools.memory_mb", self.tools.memory_mb),
            ("tools.pids_limit", self.tools.pids_limit),
            ("tools.tmpfs_mb", self.tools.tmpfs_mb),
            ("tools.nofile", self.tools.nofile),
            ("tools.timeout_ms", self.tools.timeout_ms),
            ("tools.max_output_bytes", self.tools.max_output_bytes as u64),
            ("tools.max_attempts", u64::from(self.tools.max_attempts)),
            ("tools.max_source_bytes", self.tools.max_source_bytes as u64),
            ("tools.forge_timeout_ms", self.tools.forge_timeout_ms),
            ("codex.reload_debounce_ms", self.codex.reload_debounce_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        for (key, v) in [
            (
                "orchestrator.dissonance_threshold",
                self.orchestrator.dissonance_threshold,
            ),
            (
                "orchestrator.inquiry_threshold",
                self.orchestrator.inquiry_threshold,
            ),
            ("llm.top_p", f64::from(self.llm.top_p)),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, "must be between 0 and 1"));
            }
        }
        if self.tools.cpus.is_nan() || self.tools.cpus <= 0.0 {
            return Err(bad("tools.cpus", "must be greater than 0"));
        }
        if !crate::PERSONAS.contains(&self.codex.proposer.as_str()) {
            return Err(bad(
                "codex.proposer",
                "must be ALFRED, BABS, BRICK or ROBIN",
            ));
        }
        if !crate::PERSONAS.contains(&self.memory.summary_persona.as_str()) {
            return Err(bad(
                "memory.summary_persona",
                "must be ALFRED, BABS, BRICK or ROBIN",
            ));
        }
        if self.memory.reindex_growth.is_nan() || self.memory.reindex_growth < 1.0 {
            return Err(bad("memory.reindex_growth", "must be at least 1.0"));
        }
        if self.orchestrator.inquiry_threshold < self.orchestrator.dissonance_threshold {
            return Err(bad(
                "orchestrator.inquiry_threshold",
                "must be at least orchestrator.dissonance_threshold",
            ));
        }
        if self.llm.temperature.is_nan() || self.llm.temperature < 0.0 {
            return Err(bad("llm.temperature", "must be 0 or more"));
        }
        if !(self.llm.ollama_url.starts_with("http://")
            || self.llm.ollama_url.starts_with("https://"))
        {
            return Err(bad("llm.ollama_url", "must be an http:// or https:// URL"));
        }
        for name in crate::PERSONAS {
            match self.personas.get(*name) {
                Some(p) if !p.model.trim().is_empty() => {}
                Some(_) => return Err(bad(&format!("personas.{name}.model"), "must not be empty")),
                None => return Err(bad(&format!("personas.{name}"), "is missing")),
            }
        }
        if let Some(extra) = self
            .personas
            .keys()
            .find(|k| !crate::PERSONAS.contains(&k.as_str()))
        {
            return Err(bad(
                &format!("personas.{extra}"),
                "is not a persona (ALFRED, BABS, BRICK, ROBIN)",
            ));
        }
        if self.supervision.intensity == 0 {
            return Err(bad("supervision.intensity", "must be at least 1"));
        }
        Ok(())
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Sets one string value in a settings file in place, keeping comments and layout (`toml_edit`), under an
/// exclusive file lock and with an atomic write. `keys` is the path, e.g. `["personas", "BRICK", "model"]`.
pub fn set_string_value(path: &Path, keys: &[&str], value: &str) -> Result<(), SettingsError> {
    set_string_value_then(path, keys, value, || ())
}

/// [`set_string_value`], then `then` while the file lock is still held, so that a reader taking the same lock
/// ([`with_settings_lock`]) sees the file and whatever `then` updates in one consistent state.
pub fn set_string_value_then(
    path: &Path,
    keys: &[&str],
    value: &str,
    then: impl FnOnce(),
) -> Result<(), SettingsError> {
    let write_err = |source| SettingsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let lock = crate::fsutil::lock_file_for(path).map_err(write_err)?;
    // std's advisory flock (stable since Rust 1.89) replaces fs4 here.
    lock.lock().map_err(write_err)?;
    let result = (|| {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut doc: toml_edit::DocumentMut =
            text.parse()
                .map_err(|e: toml_edit::TomlError| SettingsError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        let (last, parents) = keys.split_last().ok_or_else(|| SettingsError::Invalid {
            path: path.to_path_buf(),
            key: String::new(),
            message: "empty key path".into(),
        })?;
        let mut item = doc.as_item_mut();
        for k in parents {
            item = &mut item[*k];
        }
        // Keep the existing value's decoration (trailing comment) when replacing it.
        let decor = item
            .get(*last)
            .and_then(|i| i.as_value())
            .map(|v| v.decor().clone());
        let mut new_value = toml_edit::Value::from(value);
        if let Some(decor) = decor {
            *new_value.decor_mut() = decor;
        }
        item[*last] = toml_edit::Item::Value(new_value);
        let out = doc.to_string();
        if out != text {
            // Never write a file the daemon could not read back.
            Settings::parse(&out, path)?;
            crate::fsutil::atomic_write(path, out.as_bytes()).map_err(write_err)?;
        }
        then();
        Ok(())
    })();
    let _ = lock.unlock();
    result
}

/// Runs `f` holding the settings file's exclusive lock (the one [`set_string_value`] takes).
pub fn with_settings_lock<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, SettingsError> {
    let write_err = |source| SettingsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let lock = crate::fsutil::lock_file_for(path).map_err(write_err)?;
    lock.lock().map_err(write_err)?;
    let out = f();
    let _ = lock.unlock();
    Ok(out)
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
    fn shipped_settings_parse() {
        let s = Settings::parse(&shipped(), Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.gateway.heartbeat_ms, 1000);
        assert_eq!(s.data_dir, Path::new("/x/config/../data"));
        assert_eq!(s.personas.len(), 4);
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let text = shipped().replace(
            "heartbeat_ms = 1000",
            "heartbeat_ms = 1000\nheartbeat_msec = 3",
        );
        let e = Settings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat_msec"), "{e}");
    }

    #[test]
    fn zero_heartbeat_is_refused() {
        let text = shipped().replace("heartbeat_ms = 1000", "heartbeat_ms = 0");
        let e = Settings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gateway.heartbeat_ms"), "{e}");
    }

    #[test]
    fn set_string_value_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.toml");
        std::fs::write(&p, shipped()).unwrap();
        set_string_value(&p, &["personas", "BRICK", "model"], "brick:v2").unwrap();
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(after.contains("# The model each persona thinks with."));
        let s = Settings::parse(&after, &p).unwrap();
        assert_eq!(s.personas["BRICK"].model, "brick:v2");
        assert_eq!(s.personas["ALFRED"].model, "smollm2:135m");
    }
}
