//! What the orchestrator is started with ([`OrchestratorArgs`]) and the messages it handles
//! ([`OrchestratorMsg`]).

use std::sync::Arc;

use ractor::RpcReplyPort;

use super::{Cognition, OrchError, Origin, TaskState, TaskSummary};

/// Start-up arguments.
pub struct OrchestratorArgs {
    /// Registries, hub, settings, checkpoints and ports that every task's run shares (boot builds it once;
    /// a restarted orchestrator reuses it).
    pub cog: Arc<Cognition>,
}

/// Messages the orchestrator handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum OrchestratorMsg {
    /// Accept a new task.
    /// `(text, request id)`: a request id already recorded on a task (within the dedupe window) answers that
    /// task instead of creating another, so a retry after a crash cannot create a task twice.
    /// With an origin, the task runs a Motivator goal or is an exam's: a goal (or exam question) already
    /// handed over answers its task, however long ago (the goal id, or the exam and question, is the key,
    /// not the dedupe window).
    Submit(
        String,
        Option<String>,
        Option<Box<Origin>>,
        RpcReplyPort<Result<TaskSummary, OrchError>>,
    ),
    /// One task in full.
    Get(String, RpcReplyPort<Result<Box<TaskState>, OrchError>>),
    /// Every tracked task, newest first.
    List(RpcReplyPort<Vec<TaskSummary>>),
    /// Cancel a task that has not finished.
    Cancel(String, RpcReplyPort<Result<TaskSummary, OrchError>>),
    /// Resume a paused task with the Architect's decision and guidance.
    Resume {
        /// Id of a task that must be `paused` (else `Conflict`).
        id: String,
        /// `approved`, `rejected` or `resumed`.
        decision: String,
        /// Free text for the personas, stored in `TaskState::inquiry` and quoted in every later prompt.
        guidance: Option<String>,
        /// The task's summary, now `queued` to continue at `synthesize`, or why not.
        reply: RpcReplyPort<Result<TaskSummary, OrchError>>,
    },
    /// From a run: the task's state after a step, or at its end, with the run's sequence number.
    Progress(Box<TaskState>, u64),
    /// Start the runs of the tasks found unfinished at start-up (sent to itself once the actor is up).
    ResumeLoaded(Vec<String>),
    /// From a settle (graph::settle): a finished task was stored in memory and/or handed to the Curator, as
    /// its checkpoint now says; the task table follows, so `get_task` shows it.
    Settled {
        /// Task id.
        id: String,
        /// Stored in memory.
        remembered: bool,
        /// Handed to the Curator.
        curated: bool,
    },
    /// Fault injection: panic.
    Crash,
}
