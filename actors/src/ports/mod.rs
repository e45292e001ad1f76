//! The ports floor: what organs say to each other, below every organ.
//!
//! An organ that needs another organ's work does not import that organ: it names a **port** here — a trait
//! with the few calls it makes — and boot plugs the other organ's typed handle in. The words those calls
//! carry live here too: the task model ([`task`]) that the orchestrator checkpoints and the memory, the
//! Curator, the codex, the exam and a life read; the text rules they share ([`words`], [`grounding`]); and
//! [`PortError`], the one way a port call fails. So an organ's imports point down to this floor and to the
//! layers below it (`ask`, `events`, `llm`, `settings`), and the organs above stay free to change.
//!
//! Who plugs in where:
//!
//! | port | asked by | implemented by |
//! |---|---|---|
//! | [`ForgeHook`] | orchestrator (the `toolforge` node) | the ToolForge's `ForgeHandle` |
//! | [`MemoryHook`] | orchestrator (research, hand-over) | `MemoryHandle` |
//! | [`InquiryHook`] | orchestrator (the `inquiry` node) | the codex governor |
//! | [`CuratorHook`] | orchestrator (hand-over of a finished task) | `CuratorHandle` |
//! | [`TrainerHook`] | the Curator (its trigger) | `TrainerHandle` |
//! | [`GoalRunner`] | the Motivator | `OrchestratorHandle` |
//! | [`ExamTasks`] | the exam | `OrchestratorHandle` |
//! | [`LifeTasks`] | a life | `OrchestratorHandle` |
//! | [`TaskResumer`] | the codex (a decided amendment) | `OrchestratorHandle` |
//! | [`ExamGate`] | the trainer's gate | `ExamHandle` |
//! | [`ModelRecorder`] | personas (a swap) | the codex (the one writer of settings.toml) |
//! | [`Think`] | the Curator's judge, the Motivator, memory, the ToolForge, the codex inquiry | the personas registry |
//!
//! Layers, lowest first: `fsutil, settings, ask, events, job, supervisor, principles, llm` ← `ports` ← the
//! organs. `tests/module_graph.rs` checks that nothing here imports an organ.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ask::{AskError, OrganError};

pub mod grounding;
pub mod task;
pub mod think;
pub mod words;

pub use task::{
    ExamOrigin, Exchange, GoalOrigin, Inquiry, Node, Origin, StepRecord, TaskState, TaskStatus,
    TaskSummary, ToolUse,
};
pub use think::{Think, ThinkRequest, Thought};

/// Why a port call failed: the organ behind it did not answer (worth trying later), or it answered with a
/// refusal or failure of its own (its message says why). The graph records either in the step's outcome.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PortError {
    /// The organ behind the port did not answer.
    #[error(transparent)]
    Unreachable(#[from] AskError),
    /// The organ answered with an error of its own.
    #[error("{0}")]
    Refused(String),
}

impl<E: std::fmt::Display> From<OrganError<E>> for PortError {
    /// A handle's failure as a port's: no answer stays no answer; a refusal keeps its message.
    fn from(e: OrganError<E>) -> Self {
        match e {
            OrganError::Unreachable(a) => PortError::Unreachable(a),
            OrganError::Refused(r) => PortError::Refused(r.to_string()),
        }
    }
}

/// The ToolForge, as the graph sees it (the tools organ plugs in here).
#[async_trait]
pub trait ForgeHook: Send + Sync {
    /// Creates a tool for `capability`; returns the registered tool's name.
    async fn forge(&self, task_id: &str, capability: &str) -> Result<String, PortError>;
}

/// Long-term memory, as the graph sees it (the memory organ plugs in here).
#[async_trait]
pub trait MemoryHook: Send + Sync {
    /// Context relevant to `query`, as short notes with their sources.
    async fn retrieve(&self, query: &str) -> Result<Vec<String>, PortError>;
    /// Stores a finished task's exchange.
    async fn ingest(&self, task: &TaskState) -> Result<(), PortError>;
}

/// The codex side of a philosophical inquiry (the codex governor plugs in here).
#[async_trait]
pub trait InquiryHook: Send + Sync {
    /// Opens an inquiry for a task with persistently high dissonance: asks a persona for a structured
    /// amendment and stores it as pending. Returns the amendment id.
    async fn open(&self, task: &TaskState) -> Result<String, PortError>;
}

/// The Curator, as the orchestrator sees it (the curator organ plugs in here).
#[async_trait]
pub trait CuratorHook: Send + Sync {
    /// Hands over a finished (done or failed) task; answers once the Curator holds it durably.
    async fn curate(&self, task: &TaskState) -> Result<(), PortError>;
}

/// The orchestrator, as the exam sees it (its handle plugs in here; the orchestrator knows nothing of
/// exams beyond the origin its tasks carry).
#[async_trait]
pub trait ExamTasks: Send + Sync {
    /// Asks for the task of `origin` (again after a restart: the same task is answered); its id.
    async fn submit(&self, text: String, origin: ExamOrigin) -> Result<String, PortError>;
    /// A task as it stands; `None` when the orchestrator does not know it.
    async fn get(&self, id: String) -> Result<Option<TaskState>, PortError>;
    /// Cancels a task that has not finished (one that has is left as it is).
    async fn cancel(&self, id: String) -> Result<(), PortError>;
}

/// The orchestrator, as a life sees it: a person's tasks, keyed by request id.
#[async_trait]
pub trait LifeTasks: Send + Sync {
    /// Sends a person's task; asking again with the same `request_id` answers the task already created.
    async fn submit(&self, text: String, request_id: String) -> Result<String, PortError>;
    /// A task as it stands; `None` when the orchestrator does not know it.
    async fn get(&self, id: String) -> Result<Option<TaskState>, PortError>;
    /// Cancels a task that has not finished.
    async fn cancel(&self, id: String) -> Result<(), PortError>;
}

/// The orchestrator, as the Motivator sees it (the orchestrator's handle plugs in here; the orchestrator
/// knows nothing of the Motivator).
#[async_trait]
pub trait GoalRunner: Send + Sync {
    /// Asks for the task that runs goal `origin.goal`; answers its id and status. Asking again for the same
    /// goal answers the same task (perhaps finished by now).
    async fn start(
        &self,
        text: String,
        origin: GoalOrigin,
    ) -> Result<(String, TaskStatus), PortError>;
    /// A task's status; `None` when the orchestrator does not know it.
    async fn status(&self, task: String) -> Result<Option<TaskStatus>, PortError>;
}

/// The orchestrator, as the codex sees it: a task paused for an inquiry, resumed once its amendment is
/// decided (the orchestrator's handle plugs in here).
#[async_trait]
pub trait TaskResumer: Send + Sync {
    /// Resumes paused task `task` with the Architect's `decision` (`approved`, `rejected`, `resumed`) and
    /// guidance. `Unreachable` while the orchestrator is not running (worth trying again); `Refused` when it
    /// answered no (the task is not paused, or unknown).
    async fn resume(
        &self,
        task: String,
        decision: String,
        guidance: Option<String>,
    ) -> Result<(), PortError>;
}

/// The exam, as the forge's gate sees it (the exam organ's handle plugs in here; the forge knows nothing of
/// exams beyond this).
#[async_trait]
pub trait ExamGate: Send + Sync {
    /// Asks the question set `set` (its text) through the household as it stands now, waiting at most `wait`
    /// for another exam to end and again for this one; answers the share right in percent. `name` labels
    /// the run in the exam history.
    async fn score(
        &self,
        name: String,
        set: String,
        wait: std::time::Duration,
    ) -> Result<f64, String>;
}

/// The answer to `curator_export`: where a persona's dataset is. The files are JSON lines in the chat
/// format (`{"messages": [{"role", "content"}...], "lineage": {...}}`), appended atomically.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Export {
    /// The persona.
    pub persona: String,
    /// Training set file.
    pub train: PathBuf,
    /// Held-out set file (never trained on).
    pub heldout: PathBuf,
    /// Every decision with its reason.
    pub decisions: PathBuf,
    /// Examples in the training set.
    pub train_examples: usize,
    /// Examples in the held-out set.
    pub heldout_examples: usize,
}

/// The trainer, as the Curator sees it (the trainer plugs in here).
#[async_trait]
pub trait TrainerHook: Send + Sync {
    /// Asks for `persona` to be trained on its dataset. `Ok(note)` when the request was taken; `Err(why)`
    /// when declined (busy, not idle) — the next threshold crossing asks again.
    async fn train(&self, persona: &str, export: &Export) -> Result<String, String>;
}

/// Why a swap could not be recorded (the swap itself happened; it will not survive a restart).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct RecordFailed(pub String);

/// Where a swap records its new model so it survives a restart: the port the owner of settings.toml (the
/// codex organ) plugs in at boot. Personas never write that file themselves.
#[async_trait]
pub trait ModelRecorder: Send + Sync {
    /// Records that `persona` now thinks with `model`.
    async fn record_model(&self, persona: &str, model: &str) -> Result<(), RecordFailed>;
}
