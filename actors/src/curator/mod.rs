//! The Curator: each persona's golden dataset, made from what the system lives through (alpha blueprint
//! §II, the CuratorService of Table 2).
//!
//! The judge is a small model judging itself — the worst case for self-preference and noise — so quality
//! comes from the pipeline around it, every stage of which records its decision and reason:
//!
//! ```text
//!  orchestrator ──curate(finished task)──▶ Curator ── inbox/<task>.json (durable hand-over)
//!                                            │ per exchange (a persona's prompt + answer, one per model call):
//!                                            ├─ filters: task done, length, markers, finished, tools ok,
//!                                            │           human rating, final dissonance        (screen.rs)
//!                                            ├─ dedupe: exact hash, MinHash/LSH near-duplicates,
//!                                            │          against train and held-out alike       (dedupe.rs)
//!                                            ├─ judge job: additive 5-point rubric, JSON schema,
//!                                            │             waits while any task runs            (judge.rs)
//!                                            ├─ threshold (`min_score`), split by content hash
//!                                            └─▶ <PERSONA>/train.jsonl | heldout.jsonl, decisions.jsonl (dataset.rs)
//!  gateway ──rate_task──▶ a human's rating overrides the judge, both ways, before or after curation
//!  every `min_new_examples` accepted training examples ──▶ trigger (`curator.trigger`, the trainer port)
//! ```
//!
//! Why these anchors: AlpaGasus (keep only high judge scores: 9k of 52k beat all 52k), LIMA (a thousand
//! curated examples suffice), Self-Rewarding LMs (the additive prompt), Lee et al. (dedupe, also against the
//! evaluation set — hence held-out examples are in the same index). The split is by content hash, so an
//! example never moves between train and held-out across restarts, and the held-out set is never trained on.
//!
//! Crash safety: the orchestrator marks a task `curated` only after the Curator wrote it to its inbox; the
//! inbox file goes once every exchange has a decision. A kept example is appended before its decision line,
//! and keys found in either count as decided at the next start, so nothing is accepted twice. Human ratings
//! are appended first and re-applied (idempotently) at every start.

mod actor;
pub mod dataset;
pub mod dedupe;
pub mod judge;
mod messages;
pub mod screen;

use std::collections::BTreeMap;

use async_trait::async_trait;
use batos_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

pub use actor::{CuratorActor, CURATOR_NAME};
pub use messages::{CuratorArgs, CuratorMsg};
pub use screen::Reason;

use crate::ask::{Handle, Organ, OrganError, WireError};
use crate::ports::{CuratorHook, PortError, TaskState};
use crate::ports::{Export, TrainerHook};

/// Why a Curator command failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CuratorError {
    /// Bad input (a score outside 1..=5, an unknown persona, an overlong comment).
    #[error("{0}")]
    Invalid(String),
    /// A dataset file could not be written or read.
    #[error("the curator's files failed: {0}")]
    Store(String),
}

impl WireError for CuratorError {
    fn code(&self) -> ErrorCode {
        match self {
            CuratorError::Invalid(_) => ErrorCode::BadRequest,
            CuratorError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// One persona's counts, as `curator_stats` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PersonaStats {
    /// Exchanges decided (each counted once, by its latest decision).
    pub seen: usize,
    /// Of those, kept.
    pub accepted: usize,
    /// Of those, refused, by reason code.
    pub rejected: BTreeMap<String, usize>,
    /// Examples in `train.jsonl`.
    pub train: usize,
    /// Examples in `heldout.jsonl`.
    pub heldout: usize,
    /// Training examples accepted since the last trigger.
    pub new_since_trigger: usize,
    /// Triggers so far.
    pub triggers: u64,
    /// Unix seconds of the last trigger.
    pub last_trigger: Option<f64>,
}

/// The answer to `curator_stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CuratorStats {
    /// Per persona.
    pub personas: BTreeMap<String, PersonaStats>,
    /// Exchanges waiting for a decision (the one being judged included).
    pub queued: usize,
    /// Whether the judge is working (or waiting for the running tasks to end).
    pub judging: bool,
    /// Kept exchanges over decided ones, every persona together (0..=1; absent before any decision).
    #[serde(default)]
    pub accept_rate: Option<f64>,
    /// How often the judge's verdict agreed with the exam's right/wrong on the same answers, in the latest
    /// exam run that asked it (absent before one did).
    #[serde(default)]
    pub judge_agreement: Option<JudgeAgreement>,
}

/// The judge against the exam: on the society's answers to an exam, would it have kept the right ones and
/// refused the wrong ones? Reported by the exam organ after each run that asks the judge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct JudgeAgreement {
    /// The exam run it comes from.
    pub exam: String,
    /// Unix seconds when it was recorded.
    pub at: f64,
    /// Answers the judge scored.
    pub judged: u32,
    /// Of those, verdicts that agreed with the exam (kept and right, or refused and wrong).
    pub agreed: u32,
    /// Right answers the judge would have refused.
    pub refused_right: u32,
    /// Wrong answers the judge would have kept.
    pub kept_wrong: u32,
}

/// What a rating did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateOutcome {
    /// The task.
    pub task: String,
    /// The rating in force.
    pub score: u8,
    /// Kept examples it removed.
    pub removed: usize,
    /// Refused examples it admitted.
    pub admitted: usize,
    /// Exchanges of the task still waiting for a decision (the rating applies when they get one).
    pub pending: usize,
}

/// The one way to reach the Curator. Timeouts come from `gateway.actor_call_timeout_ms`, read at each call.
pub type CuratorHandle = Handle<CuratorActor>;

impl Organ for CuratorActor {
    type Msg = CuratorMsg;
    type Error = CuratorError;
    const LABEL: &'static str = "curator";
    const NAME: &'static str = CURATOR_NAME;

    fn crash() -> CuratorMsg {
        CuratorMsg::Crash
    }
}

impl Handle<CuratorActor> {
    /// Hands over a finished task; answers once it is in the inbox (or has nothing left to decide).
    pub async fn curate(&self, task: TaskState) -> Result<(), OrganError<CuratorError>> {
        self.call(|r| CuratorMsg::Curate(Box::new(task), r)).await
    }

    /// A human's rating of a task: 1..=5, with an optional comment.
    pub async fn rate(
        &self,
        task: String,
        score: u8,
        comment: Option<String>,
    ) -> Result<RateOutcome, OrganError<CuratorError>> {
        self.call(|reply| CuratorMsg::Rate {
            task,
            score,
            comment,
            reply,
        })
        .await
    }

    /// Per-persona counts.
    pub async fn stats(&self) -> Result<CuratorStats, OrganError<CuratorError>> {
        Ok(self.ask(CuratorMsg::Stats).await?)
    }

    /// Where a persona's dataset is.
    pub async fn export(&self, persona: String) -> Result<Export, OrganError<CuratorError>> {
        self.call(|r| CuratorMsg::Export(persona, r)).await
    }

    /// Records the judge's agreement with an exam (kept in `data_dir/curator/agreement.json`, shown by
    /// `curator_stats`).
    pub async fn record_agreement(
        &self,
        a: JudgeAgreement,
    ) -> Result<(), OrganError<CuratorError>> {
        self.call(|r| CuratorMsg::Agreement(a, r)).await
    }
}

#[async_trait]
impl CuratorHook for CuratorHandle {
    async fn curate(&self, task: &TaskState) -> Result<(), PortError> {
        CuratorHandle::curate(self, task.clone())
            .await
            .map_err(PortError::from)
    }
}

#[cfg(test)]
mod tests;
