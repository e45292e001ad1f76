//! The memory organ's start-up arguments and messages: what its handle sends and its jobs send back.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::RpcReplyPort;

use super::{ConsolidateReport, IngestItem, MemError, MemStats, MemorySnapshot, SearchResult};
use crate::events::EventHub;
use crate::llm::LlmBackend;
use crate::ports::Think;
use crate::settings::Settings;

/// Start-up arguments.
#[derive(Clone)]
pub struct MemoryArgs {
    /// `data_dir/memory`: the LanceDB database holding the `memory.table` table.
    pub dir: PathBuf,
    /// Live settings, read per operation (retrieval knobs, consolidation, index thresholds).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Embeddings come from here.
    pub backend: Arc<dyn LlmBackend>,
    /// Summaries are written by a persona.
    pub personas: Arc<dyn Think>,
    /// Event bus.
    pub hub: Arc<EventHub>,
}

/// Messages the memory actor handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum MemoryMsg {
    /// Store items; answers the number of rows written, once they are committed.
    Ingest(Vec<IngestItem>, RpcReplyPort<Result<usize, MemError>>),
    /// Two-stage retrieval.
    Search {
        /// What to look for (not blank); embedded with the same model as the rows.
        query: String,
        /// Details wanted: `memory.k_details` when `None`, clamped to 1..=`memory.max_k`.
        k: Option<usize>,
        /// Include the stage-2 query plan.
        explain: bool,
        /// Publish `knowledge.gap` when nothing reaches `memory.min_relevance` (a person's search; a task's
        /// retrieval is judged by its research step instead).
        report_gap: bool,
        /// Answer.
        reply: RpcReplyPort<Result<SearchResult, MemError>>,
    },
    /// The lexical half of a task's retrieval: details whose text holds any of `words`, up to `limit`.
    Lexical {
        /// Lower-case words of letters and digits, at least three long (others are dropped: they reach SQL).
        words: Vec<String>,
        /// Most rows.
        limit: usize,
        /// Answer.
        reply: RpcReplyPort<Result<Vec<super::Hit>, MemError>>,
    },
    /// Run one consolidation pass (also sent by the actor's own timer, without a reply port).
    Consolidate(Option<RpcReplyPort<Result<ConsolidateReport, MemError>>>),
    /// Table statistics.
    Stats(RpcReplyPort<Result<MemStats, MemError>>),
    /// Whether rows of this task are stored already (makes a replayed task ingest idempotent).
    Remembers(String, RpcReplyPort<Result<bool, MemError>>),
    /// From a job after a write: look at the index (build, rebuild or fold in new rows).
    Upkeep,
    /// From a job: the store failed; drop it and answer `unavailable` until it reopens after a backoff.
    StoreFailed(String),
    /// Open the table (sent to itself once the actor is up).
    Open,
    /// The table's version and size for a living image, with every row when `rows` (an export).
    Snapshot {
        /// Include the rows (Arrow IPC), not just the version.
        rows: bool,
        /// Answer.
        reply: RpcReplyPort<Result<MemorySnapshot, MemError>>,
    },
    /// Fault injection: panic.
    Crash,
}
