//! The orchestrator organ: accepts tasks, runs each through the Socratic Contrapunto graph, checkpoints every
//! step, and resumes unfinished tasks after a restart.

mod actor;
pub mod checkpoint;
pub mod graph;
mod messages;
mod ports;
pub mod reading;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use actor::{OrchError, Orchestrator, ORCHESTRATOR_NAME};
pub use checkpoint::{CheckpointStore, Claim, SaveError};
pub use messages::{OrchestratorArgs, OrchestratorMsg};

// The task model and the ports live on the floor below the organs; named here (privately) so the graph's
// files read them as their parent's words.
use crate::ask::{Handle, Organ, OrganError};
use crate::events::EventHub;
use crate::personas::Personas;
use crate::ports::task::{
    ExamOrigin, Exchange, GoalOrigin, Inquiry, Node, Origin, StepRecord, TaskState, TaskStatus,
    TaskSummary, ToolUse,
};
use crate::ports::{CuratorHook, ForgeHook, InquiryHook, MemoryHook, PortError};
use crate::settings::Settings;
use crate::tools::ToolRegistry;

/// The one way to reach the orchestrator. Timeouts come from `gateway.actor_call_timeout_ms` in the live
/// settings, read at each call.
pub type OrchestratorHandle = Handle<Orchestrator>;

impl Organ for Orchestrator {
    type Msg = OrchestratorMsg;
    type Error = OrchError;
    const LABEL: &'static str = "orchestrator";
    const NAME: &'static str = ORCHESTRATOR_NAME;

    fn crash() -> OrchestratorMsg {
        OrchestratorMsg::Crash
    }
}

impl Handle<Orchestrator> {
    /// Accepts a new task; answers once it is recorded durably. The gateway passes the request id: a retry
    /// of the same request answers the task it created, even across a daemon crash.
    pub async fn submit(
        &self,
        text: String,
        request_id: Option<String>,
    ) -> Result<TaskSummary, OrganError<OrchError>> {
        self.call(|r| OrchestratorMsg::Submit(text, request_id, None, r))
            .await
    }

    /// Accepts a task that runs one of the Motivator's goals: it waits for a goal slot
    /// (`motivator.running_goals`), never for a user's. `request_id` is the goal's, so a goal handed over
    /// again after a crash answers the task it created.
    pub async fn submit_goal(
        &self,
        text: String,
        request_id: String,
        origin: GoalOrigin,
    ) -> Result<TaskSummary, OrganError<OrchError>> {
        let origin = Box::new(Origin::Motivator(origin));
        self.call(|r| OrchestratorMsg::Submit(text, Some(request_id), Some(origin), r))
            .await
    }

    /// Accepts an exam's task (a question, or the fact a question needs taught first). It runs like a
    /// person's task, in a person's slot; asking again for the same exam, question and `teach` answers the
    /// task already created (an exam resumed after a crash never asks twice).
    pub async fn submit_exam(
        &self,
        text: String,
        origin: ExamOrigin,
    ) -> Result<TaskSummary, OrganError<OrchError>> {
        let origin = Box::new(Origin::Exam(origin));
        self.call(|r| OrchestratorMsg::Submit(text, None, Some(origin), r))
            .await
    }

    /// One task with its step history.
    pub async fn get(&self, id: String) -> Result<Box<TaskState>, OrganError<OrchError>> {
        self.call(|r| OrchestratorMsg::Get(id, r)).await
    }

    /// Every tracked task, newest first.
    pub async fn list(&self) -> Result<Vec<TaskSummary>, OrganError<OrchError>> {
        Ok(self.ask(OrchestratorMsg::List).await?)
    }

    /// Cancels a task that has not finished.
    pub async fn cancel(&self, id: String) -> Result<TaskSummary, OrganError<OrchError>> {
        self.call(|r| OrchestratorMsg::Cancel(id, r)).await
    }

    /// Resumes a paused task with the Architect's decision (`approved`, `rejected`, `resumed`) and guidance.
    pub async fn resume(
        &self,
        id: String,
        decision: String,
        guidance: Option<String>,
    ) -> Result<TaskSummary, OrganError<OrchError>> {
        self.call(|reply| OrchestratorMsg::Resume {
            id,
            decision,
            guidance,
            reply,
        })
        .await
    }
}

/// Everything the graph needs, shared by all tasks.
pub struct Cognition {
    /// Persona registry; a task thinks through one snapshot of it, taken when it is accepted (or when it
    /// runs again after a pause or crash), so a swap never changes models mid-task.
    pub personas: Arc<Personas>,
    /// Tool registry.
    pub tools: Arc<ToolRegistry>,
    /// Event hub every step, token and status change is published on.
    pub hub: Arc<EventHub>,
    /// Live settings; the graph reloads `orchestrator.*` before every step, so a settings.toml edit
    /// applies to running tasks.
    pub settings: Arc<ArcSwap<Settings>>,
    /// Checkpoints: one JSON file per task, rewritten after every step.
    pub store: CheckpointStore,
    /// Long-term memory; `None` (tests only) means no memories for BABS and finished tasks are not
    /// stored.
    pub memory: Option<Arc<dyn MemoryHook>>,
    /// ToolForge; `None` (tests only) makes the `toolforge` node note the gap as unfilled and return to
    /// `draft`.
    pub forge: Option<Arc<dyn ForgeHook>>,
    /// Codex governor; `None` (tests only) pauses an inquiry without proposing an amendment.
    pub inquiry: Option<Arc<dyn InquiryHook>>,
    /// The Curator; `None` when `curator.enabled` is false (and in unit tests).
    pub curator: Option<Arc<dyn CuratorHook>>,
}

/// Models currently used per persona (for tests and status).
pub type ModelMap = BTreeMap<String, String>;

#[cfg(test)]
mod tests;
