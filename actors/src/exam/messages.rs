//! What the exam organ is started with ([`ExamArgs`]) and the messages it handles ([`ExamMsg`]).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use batos_protocol::exam::{ExamResult, ExamRunArgs, ExamSummary};
use ractor::RpcReplyPort;

use super::ExamError;
use crate::curator::CuratorHandle;
use crate::events::EventHub;
use crate::llm::LlmBackend;
use crate::memory::MemoryHandle;
use crate::personas::Personas;
use crate::ports::ExamTasks;
use crate::settings::Settings;
use crate::tools::ToolRegistry;

/// Start-up arguments.
#[derive(Clone)]
pub struct ExamArgs {
    /// `data_dir/exam`: `results/<id>.json`.
    pub dir: PathBuf,
    /// Live settings (`[exam]`, the bare persona's sampling, `curator.judge` and `min_score`).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Event bus (`exam.progress`, `exam.scored`).
    pub hub: Arc<EventHub>,
    /// The personas: the judge thinks through them, and the fingerprint reads their models and codex.
    pub personas: Arc<Personas>,
    /// The tool registry, for the fingerprint.
    pub tools: Arc<ToolRegistry>,
    /// The backend the bare model answers through (the daemon's one backend).
    pub backend: Arc<dyn LlmBackend>,
    /// Where the society's tasks go.
    pub tasks: Arc<dyn ExamTasks>,
    /// The memory table's version for the fingerprint; `None` in tests without memory.
    pub memory: Option<MemoryHandle>,
    /// Where the judge's agreement is reported; `None` without a Curator.
    pub curator: Option<CuratorHandle>,
}

/// Messages the exam organ handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum ExamMsg {
    /// Start a run.
    Run(
        Box<ExamRunArgs>,
        RpcReplyPort<Result<ExamSummary, ExamError>>,
    ),
    /// One run in full.
    Get(String, RpcReplyPort<Result<ExamResult, ExamError>>),
    /// Every run's summary.
    History(RpcReplyPort<Result<Vec<ExamSummary>, ExamError>>),
    /// Stop the running exam.
    Cancel(String, RpcReplyPort<Result<ExamSummary, ExamError>>),
    /// Resume a run found `running` at start (sent to itself once the actor is up).
    Resume(Box<ExamResult>),
    /// From a run's job: it ended (its result is final on disk).
    Ended(String),
    /// Fault injection: panic.
    Crash,
}
