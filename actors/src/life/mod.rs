//! A life: the household left to live, measured by the exam — the learning curve, and each loop's share of it.
//!
//! Every loop the seeds ask for (memory, the ToolForge, the Curator and its trigger, the trainer, the
//! Motivator) is tested on its own; a life shows whether running them together makes the mind better. It
//! feeds a curriculum — what a person might send over a few days: facts told, questions that need exact
//! computation, requests — at a steady pace, as a person's tasks, while every loop runs as shipped:
//!
//! ```text
//!  life_run {curriculum, exam, every, ablate?} ──▶ Life organ (one life at a time; a job per life)
//!     switches ─ settings.toml (toml_edit): trainer.steps, curator.min_new_examples, and the ablated loop's
//!                switch (memory.active | tools.forge_active | trainer.auto_train | motivator.paused); put back
//!                at the end
//!     start    ─ the full exam beside the bare floor                                  ─▶ life.exam
//!     task i   ─ a person's task (request id life-<id>-<i>: asked again after a kill, never twice)
//!                → wait → pace_ms of quiet (the judge, the Motivator, the trainer take their turn) ─▶ life.progress
//!     every N  ─ wait for the trainer to settle; the held-out subset                 ─▶ life.exam
//!                fell > rollback_points? undo what changed since the last check:     ─▶ life.rolled_back
//!                a tuned model (rollback_model), a forged tool (retired)
//!                a forged tool whose calls went with more wrong answers than right: retired (tool.retired)
//!     end      ─ the full exam; switches put back                                     ─▶ life.ended
//! ```
//!
//! The curve is the held-out subset's share right at every point — the start and end exams are scored on it
//! too — so every point of every life compares. An ablation is the same life (same curriculum, order, seeds
//! and settings) with one loop switched off; `report` in the protocol crate sets lives side by side and gives
//! each loop's share of the full life's gain, with the spread of repeated full lives as the noise.
//!
//! Crash safety: the record (`data_dir/life/<id>.json`) is written atomically after every task and exam;
//! a life found `running` at start resumes where it stood: its switches are already in the file, the task
//! in flight is found again by its request id, the exam in flight by its run id.
//!
//! Files: `run.rs` is a life's work, `task.rs` one curriculum task of it, `ctx.rs` what both carry (the job's
//! context, the meter); `switches.rs` the settings it switches; `store.rs` keeps records;
//! `actor.rs` the organ.

mod actor;
mod ctx;
mod messages;
mod run;
mod store;
pub mod switches;
mod task;

use batos_protocol::life::{LifeRecord, LifeRunArgs, LifeSummary};
use batos_protocol::ErrorCode;

pub use actor::{LifeActor, LIFE_NAME};
pub use messages::{LifeArgs, LifeMsg};

use crate::ask::{Handle, Organ, OrganError, WireError};

/// Why a life command failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LifeError {
    /// The curriculum, the exam set or the arguments are wrong.
    #[error("{0}")]
    Invalid(String),
    /// No life with that id.
    #[error("no life with id `{0}`")]
    NotFound(String),
    /// A life is running already, or the life named is not running.
    #[error("{0}")]
    Conflict(String),
    /// A record or the settings file could not be written or read.
    #[error("the life's files failed: {0}")]
    Store(String),
}

impl WireError for LifeError {
    fn code(&self) -> ErrorCode {
        match self {
            LifeError::Invalid(_) => ErrorCode::BadRequest,
            LifeError::NotFound(_) => ErrorCode::NotFound,
            LifeError::Conflict(_) => ErrorCode::Conflict,
            LifeError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// The one way to reach the life organ. Timeouts come from `gateway.actor_call_timeout_ms`.
pub type LifeHandle = Handle<LifeActor>;

impl Organ for LifeActor {
    type Msg = LifeMsg;
    type Error = LifeError;
    const LABEL: &'static str = "life";
    const NAME: &'static str = LIFE_NAME;

    fn crash() -> LifeMsg {
        LifeMsg::Crash
    }
}

impl Handle<LifeActor> {
    /// Starts a life; answers its summary once its record exists.
    pub async fn run(&self, args: LifeRunArgs) -> Result<LifeSummary, OrganError<LifeError>> {
        self.call(|r| LifeMsg::Run(Box::new(args), r)).await
    }

    /// One life in full.
    pub async fn get(&self, id: String) -> Result<LifeRecord, OrganError<LifeError>> {
        self.call(|r| LifeMsg::Get(id, r)).await
    }

    /// Every kept life's summary, oldest first.
    pub async fn list(&self) -> Result<Vec<LifeSummary>, OrganError<LifeError>> {
        self.call(LifeMsg::List).await
    }

    /// Stops the running life `id`.
    pub async fn cancel(&self, id: String) -> Result<LifeSummary, OrganError<LifeError>> {
        self.call(|r| LifeMsg::Cancel(id, r)).await
    }
}

#[cfg(test)]
mod tests;
