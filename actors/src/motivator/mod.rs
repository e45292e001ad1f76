//! The Motivator: goals of the system's own, from what it lives through, within a budget (the seeds'
//! Motivator; the architectural review's extra triggers).
//!
//! Anchors: Voyager's automatic curriculum (the next goal from the agent's state and its completed *and
//! failed* tasks, "not too hard"), BabyAGI (create → prioritise → execute, and its warning against running
//! unbounded), Generative Agents (reflect when the summed importance of recent events passes a threshold).
//! On a 2-core machine every goal competes with a person for the CPU, so the budget is the feature's spine:
//!
//! ```text
//!  EventHub ──forwarder job──▶ Motivator ── evidence.rs: per trigger, what the events add up to
//!                                 │            idle · dissonance · failures (tool / task) · tool_created ·
//!                                 │            knowledge_gap · reflection (importance) · success_streak ·
//!                                 │            curated_data                                   ─▶ Proposal
//!                                 ├─ limits.rs: paused · same evidence open · queue full · per-trigger and
//!                                 │             hourly rate · daily tokens       ─▶ `motivator.suppressed`
//!                                 ├─ phrase job: the persona phrases it from state, recent done and failed
//!                                 │              goals and the trigger (JSON) — waits while people's tasks run
//!                                 ├─ duplicate text of an open or recent goal    ─▶ `motivator.suppressed`
//!                                 ├─ queue (priority, then age), durable in data_dir/motivator/goals.json
//!  ticker job ──Tick──▶           └─ no person's task queued or running, a goal slot free, budget left:
//!                                    orchestrator.submit_goal (origin: motivator) ─▶ task ─▶ done / failed
//! ```
//!
//! People first: a goal is phrased and started only while no person's task is queued or running, and its
//! task waits for a goal slot of its own (`motivator.running_goals`), never a person's. Events of goal tasks
//! never feed the triggers (a goal's research gap does not set another research goal).
//!
//! Crash safety: the goal file is rewritten atomically at every change. A goal is marked `starting` before
//! its task is asked for and the orchestrator keys goal tasks by goal id, so a goal handed over again after a
//! kill -9 answers the task it created: no goal runs twice. At start, `phrasing` goals are phrased again and
//! `starting`/`running` ones are reconciled with the orchestrator's table.

mod actor;
pub mod evidence;
mod jobs;
pub mod limits;
mod messages;
pub mod phrase;
pub mod store;

use batos_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

pub use actor::{MotivatorActor, MOTIVATOR_NAME};
pub use messages::{MotivatorArgs, MotivatorMsg};

use crate::ask::{Handle, Organ, OrganError, WireError};

use crate::settings::TriggerPriorities;

/// What sets a goal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// No task queued or running for `idle_after_s`.
    Idle,
    /// A person's task ended with dissonance at or above `dissonance_threshold`.
    Dissonance,
    /// `failure_count` failures of one kind within `failure_window_s`.
    Failures,
    /// A tool was created: exercise and document it.
    ToolCreated,
    /// A question memory could not ground.
    KnowledgeGap,
    /// Summed importance of events since the last reflection reached `importance_threshold`.
    Reflection,
    /// `success_streak` people's tasks in a row ended in harmony.
    SuccessStreak,
    /// The Curator has enough new examples for a persona.
    CuratedData,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 8] = [
        Trigger::Idle,
        Trigger::Dissonance,
        Trigger::Failures,
        Trigger::ToolCreated,
        Trigger::KnowledgeGap,
        Trigger::Reflection,
        Trigger::SuccessStreak,
        Trigger::CuratedData,
    ];

    /// The snake_case name used in events, origins and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Idle => "idle",
            Trigger::Dissonance => "dissonance",
            Trigger::Failures => "failures",
            Trigger::ToolCreated => "tool_created",
            Trigger::KnowledgeGap => "knowledge_gap",
            Trigger::Reflection => "reflection",
            Trigger::SuccessStreak => "success_streak",
            Trigger::CuratedData => "curated_data",
        }
    }

    /// Its priority in `[motivator.priority]`.
    pub fn priority(self, p: &TriggerPriorities) -> u8 {
        match self {
            Trigger::Idle => p.idle,
            Trigger::Dissonance => p.dissonance,
            Trigger::Failures => p.failures,
            Trigger::ToolCreated => p.tool_created,
            Trigger::KnowledgeGap => p.knowledge_gap,
            Trigger::Reflection => p.reflection,
            Trigger::SuccessStreak => p.success_streak,
            Trigger::CuratedData => p.curated_data,
        }
    }
}

/// Where a goal stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GoalStatus {
    /// The persona is phrasing it.
    Phrasing,
    /// Waiting for the people's tasks to end and a goal slot.
    Queued,
    /// Its task is being asked for (a restart asks again; the orchestrator answers the same task).
    Starting,
    /// Its task runs.
    Running,
    /// Its task finished with an answer.
    Done,
    /// Its task failed, or it could not start.
    Failed,
    /// Its task was cancelled.
    Cancelled,
    /// Phrased as a duplicate of an open or recent goal: never run.
    Dropped,
}

impl GoalStatus {
    /// The snake_case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            GoalStatus::Phrasing => "phrasing",
            GoalStatus::Queued => "queued",
            GoalStatus::Starting => "starting",
            GoalStatus::Running => "running",
            GoalStatus::Done => "done",
            GoalStatus::Failed => "failed",
            GoalStatus::Cancelled => "cancelled",
            GoalStatus::Dropped => "dropped",
        }
    }

    /// Whether the goal is over (kept as history only).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            GoalStatus::Done | GoalStatus::Failed | GoalStatus::Cancelled | GoalStatus::Dropped
        )
    }
}

/// One goal, as `list_goals` shows it and `goals.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// 32 lowercase hex chars (UUID v4 simple); also the request id of its task.
    pub id: String,
    /// What set it.
    pub trigger: Trigger,
    /// The evidence's identity (`tool:<name>`, `gap:<question>`, ...): while a goal with this key is open,
    /// the same evidence sets no other.
    pub key: String,
    /// Why, in words, from the evidence.
    pub reason: String,
    /// The events it rests on (`kind#seq id`).
    pub evidence: Vec<String>,
    /// The persona it is for.
    pub persona: String,
    /// The goal as phrased (empty while phrasing).
    pub text: String,
    /// Who phrased it: a persona's name, or `template` when the persona's answer was unusable.
    pub phrased_by: String,
    /// Higher runs first.
    pub priority: u8,
    /// Where it stands.
    pub status: GoalStatus,
    /// Its task, once started.
    pub task: Option<String>,
    /// Unix seconds when the trigger fired.
    pub created_at: f64,
    /// Unix seconds when its task was asked for.
    pub started_at: Option<f64>,
    /// Unix seconds when it ended.
    pub ended_at: Option<f64>,
    /// The task's answer or error (shortened), or why it was dropped.
    pub outcome: Option<String>,
    /// Tokens spent on it: its phrasing and its task's steps.
    pub tokens: u64,
}

/// The Motivator's state, as `status` and `list_goals` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MotivatorState {
    /// Whether goals are paused, and by what (`command`, `settings`), else `None`.
    pub paused: Option<String>,
    /// Goals phrasing or queued.
    pub queued: usize,
    /// Goals starting or running.
    pub running: usize,
    /// Goals made in the last hour.
    pub goals_last_hour: usize,
    /// Tokens used today (UTC) of `daily_tokens`.
    pub tokens_today: u64,
    /// `motivator.daily_tokens`.
    pub daily_tokens: u64,
    /// Importance summed since the last reflection, of `importance_threshold`.
    pub importance: f64,
    /// People's tasks in harmony in a row.
    pub streak: u32,
    /// Seconds since the last task was queued, ran or ended.
    pub idle_s: f64,
}

/// The answer to `list_goals`: open goals first (by priority, then age), then finished ones, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GoalList {
    /// Where the Motivator stands.
    pub state: MotivatorState,
    /// The goals.
    pub goals: Vec<Goal>,
}

/// Why a Motivator command failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum MotivatorError {
    /// The command conflicts with the settings (resume while `motivator.paused = true`).
    #[error("{0}")]
    Conflict(String),
    /// The goal file could not be written: nothing changed.
    #[error("the motivator's goal file cannot be written: {0}")]
    Store(String),
}

impl WireError for MotivatorError {
    fn code(&self) -> ErrorCode {
        match self {
            MotivatorError::Conflict(_) => ErrorCode::Conflict,
            MotivatorError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// The one way to reach the Motivator. Timeouts come from `gateway.actor_call_timeout_ms`, read at each call.
pub type MotivatorHandle = Handle<MotivatorActor>;

impl Organ for MotivatorActor {
    type Msg = MotivatorMsg;
    type Error = MotivatorError;
    const LABEL: &'static str = "motivator";
    const NAME: &'static str = MOTIVATOR_NAME;

    fn crash() -> MotivatorMsg {
        MotivatorMsg::Crash
    }
}

impl Handle<MotivatorActor> {
    /// Where the Motivator stands.
    pub async fn state(&self) -> Result<MotivatorState, OrganError<MotivatorError>> {
        Ok(self.ask(MotivatorMsg::State).await?)
    }

    /// Open and recent goals.
    pub async fn goals(&self) -> Result<GoalList, OrganError<MotivatorError>> {
        Ok(self.ask(MotivatorMsg::Goals).await?)
    }

    /// Pauses (`true`) or resumes (`false`) durably: no goal is made or started while paused.
    pub async fn pause(&self, paused: bool) -> Result<MotivatorState, OrganError<MotivatorError>> {
        self.call(|r| MotivatorMsg::Pause(paused, r)).await
    }
}

#[cfg(test)]
mod tests;
