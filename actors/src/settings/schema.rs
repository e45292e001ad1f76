//! The shape of `config/settings.toml`: [`Settings`] and one serde struct or enum per section. Every struct
//! refuses unknown keys, and no field has a default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::orchestrator::OrchestratorSettings;
use super::sampling::{Sampling, SamplingOverrides};
pub use super::trainer::TrainerSettings;

pub use super::goals::{ImageSettings, MotivatorSettings, TriggerPriorities};

/// The whole settings file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the daemon keeps its state.
    pub data_dir: PathBuf,
    /// The personas' codex file.
    pub codex_path: PathBuf,
    /// `[log]`: the level filter (live) and the line format (read at start).
    pub log: LogSettings,
    /// `[gateway]`: endpoints, heartbeats, request dedupe and size limits, organ call timeout.
    pub gateway: GatewaySettings,
    /// Client behaviour (CLI, TUI).
    pub client: ClientSettings,
    /// `[supervision]`: restart intensity and period, stop grace, restart backoff (all read at start).
    pub supervision: SupervisionSettings,
    /// `[llm]`: which backend, its timeouts, and the sampling defaults personas fall back to.
    pub llm: LlmSettings,
    /// Per-persona model choice.
    pub personas: BTreeMap<String, PersonaSettings>,
    /// The task orchestrator and its Socratic Contrapunto graph.
    pub orchestrator: OrchestratorSettings,
    /// `[memory]`: the LanceDB table, two-stage retrieval, index upkeep and consolidation.
    pub memory: MemorySettings,
    /// Tools, the ToolForge and the sandbox.
    pub tools: ToolsSettings,
    /// `[codex]`: codex.toml backups, reload debounce, and which persona proposes amendments.
    pub codex: CodexSettings,
    /// `[curator]`: the golden dataset: filters, dedupe, the judge, the split, the training trigger.
    pub curator: CuratorSettings,
    /// `[trainer]`: the trainer's LoRA training, its gate and its model history. Read from `[forge]` too, its
    /// name before issue 29, for one release (logged as deprecated at start: [`super::deprecations`]).
    #[serde(alias = "forge")]
    pub trainer: TrainerSettings,
    /// `[motivator]`: goals of the system's own, their triggers and their budget.
    pub motivator: MotivatorSettings,
    /// `[image]`: the living image: periodic saves, rolling generations, the event sequence's reservation.
    pub image: ImageSettings,
    /// `[exam]`: the machine-checked exam: timeouts, the judge's agreement, the results kept. Defaults to
    /// the shipped values when absent (a file written before it).
    #[serde(default)]
    pub exam: super::exam::ExamSettings,
    /// `[life]`: an unattended life's pace, checks, switches and rollback. Defaults to the shipped values
    /// when absent.
    #[serde(default)]
    pub life: super::life::LifeSettings,
    /// `[http]`: the gateway's HTTP door (commands, events, the OpenAI API, the page); off when absent.
    #[serde(default)]
    pub http: super::http::HttpSettings,
    /// `[cluster]`: worker nodes (home: listen for them; worker: where home is); one machine when absent.
    #[serde(default)]
    pub cluster: super::cluster::ClusterSettings,
    /// Fault injection and other debugging switches.
    pub debug: DebugSettings,
}

/// `[tools] backend`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SandboxChoice {
    /// gVisor's runsc driven directly with an OCI bundle; no daemon needed.
    Runsc,
    /// Docker Engine with runtime=runsc, through its API; plain runc only if `allow_runc`.
    Docker,
}

/// `[tools]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolsSettings {
    /// Sandbox backend for LLM-written tools (like all of `[tools]`, read at start).
    pub backend: SandboxChoice,
    /// runsc binary.
    pub runsc_path: PathBuf,
    /// Sandbox root filesystem.
    pub rootfs: PathBuf,
    /// runsc state and bundles.
    pub state_dir: PathBuf,
    /// Image built from the same rootfs by `sandbox/build-docker-image.sh`; Docker backend only.
    pub docker_image: String,
    /// Allow Docker's runc when runsc is not registered.
    pub allow_runc: bool,
    /// Sandboxes kept pre-started (Python loaded); each serves one call, then is destroyed.
    pub pool_size: usize,
    /// Pause after a failed pre-start in ms, times the failures in a row (at most 10).
    pub pool_backoff_ms: u64,
    /// Sandboxes running tool calls at once, daemon-wide (pre-started idle ones not counted); a call beyond
    /// waits up to `timeout_ms` for one to free, then fails as busy.
    pub max_sandboxes: usize,
    /// Memory limit (MiB).
    pub memory_mb: u64,
    /// CPU share per sandbox, > 0 (1.0 = one core; a CFS quota per 100 ms period).
    pub cpus: f64,
    /// Most processes and threads in one sandbox (cgroup pids limit and RLIMIT_NPROC); > 0.
    pub pids_limit: u64,
    /// /tmp size (MiB).
    pub tmpfs_mb: u64,
    /// Most open file descriptors per sandbox process (RLIMIT_NOFILE); > 0.
    pub nofile: u64,
    /// Wall-clock limit of one run in ms, from the moment the request is written.
    pub timeout_ms: u64,
    /// Largest result a tool may print, in bytes; more fails the call as flooded output.
    pub max_output_bytes: usize,
    /// ToolForge attempts per capability, each fed the previous failure; > 0.
    pub max_attempts: u32,
    /// Largest tool source, and largest tests, the model may write, in bytes each.
    pub max_source_bytes: usize,
    /// Limit of a whole forge run (all attempts) in ms.
    pub forge_timeout_ms: u64,
    /// Whether the ToolForge makes new tools when a draft names a missing capability (live). Off, the gap
    /// is answered "switched off" and the task goes on with the tools it has (a life's `--ablate tools`).
    #[serde(default = "yes")]
    pub forge_active: bool,
}

/// `[codex]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CodexSettings {
    /// Timestamped backups (`codex.toml.bak.<µs>`) kept beside codex.toml; older ones are deleted.
    pub keep_backups: usize,
    /// File changes closer together than this many ms are one reload (editors write in steps).
    pub reload_debounce_ms: u64,
    /// Persona proposing amendments.
    pub proposer: String,
    /// Decided (committed or rejected) amendments remembered in `data_dir/amendments.json` and listed by
    /// `list_amendments`; the oldest decided go first. Pending ones are never dropped.
    pub keep_decided_amendments: usize,
    /// How long (ms) the codex keeps trying to resume the paused task of an approval that a stop interrupted
    /// and that start-up found committed, while the orchestrator is still starting.
    pub resume_wait_ms: u64,
}

/// `[memory]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemorySettings {
    /// LanceDB table under `data_dir/memory/` holding summary and detail rows (read at start).
    pub table: String,
    /// Chunk size in bytes.
    pub chunk_chars: usize,
    /// Summaries found in stage 1 (nearest to the query).
    pub k_summaries: usize,
    /// Default stage-2 details.
    pub k_details: usize,
    /// Largest `k` a client may ask for.
    pub max_k: usize,
    /// Unconsolidated details added to every search, nearest first, so nothing new is invisible.
    pub k_recent: usize,
    /// Cosine similarity below which a `memory_search` reports a knowledge gap (a task's retrieval has no
    /// floor: `k_retrieve`).
    pub min_relevance: f32,
    /// Details a task's retrieval takes from the vector search (nearest first); the research step keeps
    /// those that share the task's words.
    #[serde(default = "default_k_retrieve")]
    pub k_retrieve: usize,
    /// Whether tasks are remembered and recall what was remembered (live). Off, a finished task leaves no
    /// row and a task's retrieval finds nothing; `memory_search` still reads the table (a life's
    /// `--ablate memory`).
    #[serde(default = "yes")]
    pub active: bool,
    /// IVF partitions probed per query (live).
    pub nprobes: usize,
    /// Re-rank the k × refine_factor best PQ matches on their real vectors (0 = off), which keeps
    /// scores exact for `min_relevance` (live).
    pub refine_factor: u32,
    /// MiB of summary vectors held in memory so stage 1 of a search is an exact scan rather than an index
    /// query (0 = off; a table with more summaries than fit goes through the index with `nprobes` and
    /// `refine_factor`). Read when the table opens. Defaults to 0 so a settings file written before it loads
    /// and behaves as it did.
    #[serde(default)]
    pub summary_tier_mib: u64,
    /// MiB of detail row ids (8 bytes each) held in memory, grouped by parent, so stage 2 and the recent
    /// details are taken by row id rather than planned as filtered queries (0 = off; a table with more details
    /// than fit goes through LanceDB's planner until the table is reopened). Read when the table opens and at
    /// each write's refresh. Defaults to 0 so a settings file written before it loads and behaves as it did.
    #[serde(default)]
    pub family_map_mib: u64,
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
    /// Period of the timed consolidation pass, in ms (read at start).
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
    /// Attempts to store a finished task (at least 1), for when the memory actor is restarting.
    pub ingest_retries: u32,
    /// Pause after a failed ingest attempt in ms, times the attempt number (linear backoff).
    pub ingest_backoff_ms: u64,
    /// Timeout of calls to the memory actor.
    pub call_timeout_ms: u64,
    /// After the store fails (open or a LanceDB error), requests are answered `unavailable` for this many
    /// milliseconds before the table is opened again.
    pub reopen_backoff_ms: u64,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// EnvFilter directive, e.g. `info` or `batos=debug`.
    pub level: String,
    /// `json` or `pretty`.
    pub format: LogFormat,
    /// The longest text, in characters, an event's log line carries for one of its fields (a task's text, an
    /// answer); longer ones are cut and end in `…`; 0 never cuts. Read at start. A settings file written
    /// before it gets [`DEFAULT_LOG_FIELD_CHARS`].
    #[serde(default = "default_log_field_chars")]
    pub event_field_chars: usize,
}

/// `log.event_field_chars` of a settings file that does not say (the value the shipped file gives).
pub const DEFAULT_LOG_FIELD_CHARS: usize = 200;

fn default_log_field_chars() -> usize {
    DEFAULT_LOG_FIELD_CHARS
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
    /// Most bytes of remembered replies, in bytes (each counted with its id, as its record in
    /// `<data_dir>/dedupe.journal`); beyond it the oldest are forgotten first, in memory and in the journal.
    pub dedupe_max_bytes: u64,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Events buffered for the PUB socket before dropping.
    pub event_queue_capacity: usize,
    /// Commands executing concurrently.
    pub max_inflight_commands: usize,
    /// Timeout of a gateway → organ call.
    pub actor_call_timeout_ms: u64,
    /// The front door (restart-only): largest data frame a command peer may announce, in bytes. Bodies
    /// between `max_request_bytes` and this get a `bad_request` reply; a larger announcement drops the peer
    /// before a byte of it is read. Must be ≥ `max_request_bytes`.
    pub front_max_frame_bytes: u64,
    /// Largest ZMTP command frame (READY) and, on the event channel, any frame (a subscription), in bytes.
    pub front_max_control_bytes: u64,
    /// Most frames in one message (REQ sends 2, DEALER 1 or 2).
    pub front_max_frames: usize,
    /// From TCP accept to a complete handshake (greeting, READY; on the event channel also the auth
    /// subscription), in milliseconds; slower peers are dropped.
    pub handshake_timeout_ms: u64,
    /// Most peers past their handshake, per channel; more are dropped at their handshake.
    pub max_connections: usize,
    /// Most peers still in their handshake, per channel; a newcomer beyond this evicts the oldest.
    pub max_pending_connections: usize,
    /// Subscriptions an event peer may send before it authenticates (held, then forwarded).
    pub front_max_held_subscriptions: usize,
    /// Finished tasks the event view (`snapshot`, `status` counts) keeps; the oldest to finish leave first.
    pub view_keep_finished_tasks: usize,
    /// Two-way liveness (restart-only): a peer that has said nothing for this many milliseconds is sent a ZMTP
    /// PING, when its greeting says it speaks ZMTP 3.1 (libzmq, pyzmq); the PING's TTL asks it to drop the
    /// daemon after `peer_timeout_ms` of silence from our side. Also the TCP keepalive probe period for every
    /// peer. Must be below `peer_timeout_ms`.
    pub peer_ping_ms: u64,
    /// A ZMTP 3.1 peer silent this many milliseconds (no frame, no PONG) is dropped and its connection slot
    /// freed. ZMTP 3.0 peers (the `zeromq` crate, so `batos`'s own CLI and TUI) cannot be pinged: a subscriber
    /// is rightly silent for hours, so they are dropped only when TCP keepalive finds their host gone (after
    /// about `peer_timeout_ms` of silence plus three unanswered probes).
    pub peer_timeout_ms: u64,
    /// CurveZMQ (RFC 26) on both channels (restart-only): `off`, `on` (CURVE peers encrypted and checked
    /// against the allowed keys, NULL peers still served) or `required` (NULL peers refused). Anything but
    /// `required` is refused for an endpoint that does not bind a loopback address.
    #[serde(default)]
    pub curve: CurveMode,
}

/// Whether the gateway speaks CurveZMQ: see [`GatewaySettings::curve`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CurveMode {
    /// Clear text only (ZMTP's NULL mechanism).
    #[default]
    Off,
    /// CURVE for the peers that ask for it, clear text for the rest (loopback binds only).
    On,
    /// CURVE for every peer.
    Required,
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
    /// Time in ms the start-up probe of the Ollama server may take (`auto` only).
    pub probe_timeout_ms: u64,
    /// Time in ms one model request may take, connect to full answer.
    pub request_timeout_ms: u64,
    /// Embedding model name (Ollama).
    pub embed_model: String,
    /// The sampling of every model call (its keys sit in `[llm]` itself): a persona's
    /// `[personas.<name>]` table and its live edits override some of them.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// The embedded llama.cpp backend.
    pub embedded: EmbeddedSettings,
}

/// `[llm] backend`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Ollama if reachable at start, else embedded.
    Auto,
    /// Always Ollama at `ollama_url`, unprobed; no fallback to the embedded model.
    Ollama,
    /// Always the in-process llama.cpp model.
    Embedded,
}

/// The weights the embedded backend hands llama.cpp (`llm.embedded.serve_weights`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ServeWeights {
    /// The model file as it is.
    #[default]
    AsIs,
    #[serde(rename = "q8_0")]
    /// An 8-bit copy of a model with `Q4_1` weights, made once beside it (`llm::embedded::requant`):
    /// llama.cpp's CPU backend has tiled kernels for `Q8_0` and none for `Q4_1`, so prompts and batched
    /// steps run ~2× and ~1.4× faster. A model without `Q4_1` weights is served as it is.
    Q8_0,
}

/// `[llm.embedded]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    /// Model name meaning the base model.
    pub model_name: String,
    /// GGUF model file; a relative path resolves from the settings file's folder.
    pub model_path: PathBuf,
    /// Expected SHA-256 (hex) of the GGUF file.
    pub model_sha256: String,
    /// Context length per request.
    pub n_ctx: u32,
    /// Prompt batch size.
    pub n_batch: u32,
    /// Inference threads (0 = all cores).
    pub threads: u32,
    /// Requests the batched decoder serves at once (one llama.cpp sequence each, one decode per step across
    /// them); further requests wait in the queue. 1 decodes one request at a time.
    #[serde(alias = "max_contexts")]
    pub parallel: usize,
    /// Keep the KV cache of recent prompts and copy the longest shared prefix into a new request instead of
    /// prefilling it again. The five settings below default to off/0 so a settings file written before
    /// them (an older image, an amended copy) loads and behaves as it did.
    #[serde(default)]
    pub prefix_cache: bool,
    /// KV cells (tokens) the prefix cache holds at most, beyond `n_ctx` × `parallel`.
    #[serde(default)]
    pub prefix_cache_tokens: u32,
    /// Prompts the prefix cache holds at most (one llama.cpp sequence each); the least recently used goes.
    #[serde(default)]
    pub prefix_cache_entries: u32,
    /// A shared prefix shorter than this many tokens is prefilled rather than copied.
    #[serde(default)]
    pub prefix_min_tokens: u32,
    /// Reproducible answers: a request's tokens do not depend on what else is decoded beside it or on
    /// prefix reuse. Costs a lone request about a third of its speed (an 8-bit KV cache, so one attention
    /// kernel serves every batch shape, and a throwaway token padding every decode to two outputs, so one
    /// matmul kernel does).
    #[serde(default)]
    pub batch_invariant: bool,
    /// The weights llama.cpp serves; `as_is` (the default for a settings file written before it) serves
    /// the model file itself.
    #[serde(default)]
    pub serve_weights: ServeWeights,
    /// Model calls that may wait for an inference thread; one more is refused as busy.
    pub max_queued: usize,
    /// Forward llama.cpp logs.
    pub native_logs: bool,
}

/// `[personas.<NAME>]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersonaSettings {
    /// The model tag (Ollama) or model spec (embedded) this persona thinks with.
    pub model: String,
    /// This persona's own Ollama host (a GPU box), when it is not the daemon's backend: its model calls go
    /// there, `model` naming a tag on that host (read at start). Absent: the daemon's backend. A persona routed
    /// to worker nodes (`[cluster] remote_personas`) thinks on the worker instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_url: Option<String>,
    /// This persona's sampling where it differs from `[llm]` (`temperature`, `top_p`, `top_k`, `min_p`,
    /// `repeat_penalty`, `max_tokens`, each optional, in this same table).
    #[serde(flatten)]
    pub sampling: SamplingOverrides,
}

/// `[curator]` (live: read for every exchange, except `enabled`, read at start).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CuratorSettings {
    /// Whether finished tasks are curated at all (read at start).
    pub enabled: bool,
    /// Nodes whose persona steps are curated (`route`, `research`, `draft`, `critique`, `synthesize`).
    pub nodes: Vec<String>,
    /// Persona that judges exchanges (it may judge its own: the pipeline around it is what keeps quality).
    pub judge: String,
    /// Lowest judge score (0..=5, additive rubric) accepted.
    pub min_score: u8,
    /// Highest final task dissonance (0..=1) whose exchanges are curated.
    pub max_dissonance: f64,
    /// Admit without the judge a direct task's final answer that holds its grounding: it states the exact
    /// result a built-in tool computed, or takes a word from the note a person gave (live). The judge is the
    /// same small model and scores almost every answer 0 (BENCHMARKS.md, "Learning curve").
    #[serde(default = "yes")]
    pub admit_grounded: bool,
    /// Content words a grounded answer may add to its question and grounding (live). More is an invented
    /// detail the grounding does not confirm, and the answer goes to the judge instead. Absent from a settings
    /// file written before it: 3.
    #[serde(default = "default_grounded_max_new_words")]
    pub grounded_max_new_words: usize,
    /// Bounds on an answer's length in characters, both inclusive.
    pub min_answer_chars: usize,
    /// See `min_answer_chars`.
    pub max_answer_chars: usize,
    /// Case-insensitive phrases that mark an answer as an error or a refusal.
    pub reject_markers: Vec<String>,
    /// Estimated Jaccard similarity (0..=1) of word shingles at or above which an exchange is a near
    /// duplicate of one already kept.
    pub near_duplicate: f64,
    /// Words per shingle for the near-duplicate check.
    pub shingle_words: usize,
    /// MinHash signature length; must be a multiple of `lsh_bands`.
    pub minhash_hashes: usize,
    /// LSH bands over the signature (more bands: more candidates, better recall, slower).
    pub lsh_bands: usize,
    /// Share of accepted examples (0..=100, by content hash) kept out of training as the held-out set.
    pub heldout_percent: u8,
    /// Accepted training examples since the last trigger at which the Forge is told to train the persona.
    pub min_new_examples: usize,
    /// Bytes of the request and of the answer shown to the judge (each; longer text is cut).
    pub judge_max_bytes: usize,
    /// Human ratings at or below this (1..=5) remove a task's exchanges, whatever the judge said.
    pub human_reject_at_most: u8,
    /// Human ratings at or above this admit a task's exchanges that only the judge or the dissonance refused.
    pub human_accept_at_least: u8,
    /// While a task is running the judge waits, polling this often (ms): curation never slows an answer.
    pub idle_poll_ms: u64,
    /// After a dataset file could not be written, curation pauses this long (ms) before trying again.
    pub write_retry_ms: u64,
}

pub(super) fn yes() -> bool {
    true
}

fn default_grounded_max_new_words() -> usize {
    3
}

/// `[debug]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebugSettings {
    /// Allow `debug_crash` (it makes an actor panic); when false it answers `conflict`. Never in
    /// production.
    pub fault_injection: bool,
}

fn default_k_retrieve() -> usize {
    20
}
