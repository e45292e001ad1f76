//! The shape of `config/settings.toml`: [`Settings`] and one serde struct or enum per section. Every struct
//! refuses unknown keys, and no field has a default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// How often a task whose run crashed (a panic in a step) is resumed from its last checkpoint before it
    /// is failed with the crash as its reason. 0: fail at the first crash.
    pub task_restarts: u32,
}

/// `[debug]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebugSettings {
    /// Allow `debug_crash`.
    pub fault_injection: bool,
}
