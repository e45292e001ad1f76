//! The exam: how the household knows better from worse.
//!
//! A small model's society can answer worse than the model it runs on — each step of a dialogue can amplify
//! the last step's noise, and the loops that learn from lived answers learn that noise too. So every change
//! to prompts, memory, tools, models and loops is judged by one instrument: a machine-checked question set
//! asked through the real system, beside the bare model as its floor.
//!
//! ```text
//!  exam_run {set, baseline: bare} ──▶ Exam organ ── parse + compile the checks (bad set: bad_request)
//!                                        │ run job (one at a time), result file rewritten after every step:
//!                                        ├─ teach: each `teach` text as a task (origin exam, teach) → wait
//!                                        │         until it is done and remembered (a person's words)
//!                                        ├─ per question, one at a time:
//!                                        │    society: a task (origin exam) through the Contrapunto ─┐
//!                                        │    bare:    the same model, same backend, its own chat     ├─ check.rs:
//!                                        │             template, no system prompt, ALFRED's sampling ─┤  right/wrong,
//!                                        │    judge:   the Curator's rubric on the society's answer   │  word limit,
//!                                        │                                                             │  inner words
//!                                        │    ─▶ exam.progress                                         ┘
//!                                        └─ scored: per category, both side by side ─▶ exam.scored,
//!                                           data_dir/exam/results/<id>.json, the judge's agreement to the Curator
//! ```
//!
//! Exam tasks are ordinary tasks with `origin: exam`, so they run the real graph with the real personas,
//! tools and memory; but they are measured, never lived: a question is never remembered or curated and feeds
//! no Motivator trigger (while an exam runs, goals wait as they do for a person). Taught facts are what a
//! person would tell the household, so they are remembered as a person's words.
//!
//! A result is kept with a [`Fingerprint`] of what was examined (each persona's model and adapter digest,
//! the tool registry, the codex, the memory table's version, the settings), so two results can be told apart
//! and the history plotted; results live under the data folder, so the living image carries them.
//!
//! Crash safety: the result file is written atomically after every taught fact and every question. A run
//! found `running` at start is resumed where it stood; a question's task created before a kill is found
//! again by its exam and question (the orchestrator keys exam tasks by them), never asked twice.
//!
//! Files: `check.rs` judges one answer; `store.rs` keeps results; `fingerprint.rs`; `run.rs` is a run's work;
//! `gate.rs` runs a set to its end as one number (the forge's exam gate, a life's checks); `actor.rs` the organ.

mod actor;
pub mod check;
mod fingerprint;
mod gate;
mod messages;
mod run;
pub mod store;

use batos_protocol::exam::{ExamResult, ExamRunArgs, ExamSummary};
use batos_protocol::ErrorCode;

pub use actor::{ExamActor, EXAM_NAME};
pub use fingerprint::fingerprint;
pub use messages::{ExamArgs, ExamMsg};

use crate::ask::{Handle, Organ, OrganError, WireError};

/// Why an exam command failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ExamError {
    /// The set or the arguments are wrong (a parse error names the line; a bad regex the question).
    #[error("{0}")]
    Invalid(String),
    /// No run with that id.
    #[error("no exam run with id `{0}`")]
    NotFound(String),
    /// An exam is running already, or the run named is not running.
    #[error("{0}")]
    Conflict(String),
    /// The result file could not be written or read.
    #[error("the exam's files failed: {0}")]
    Store(String),
}

impl WireError for ExamError {
    fn code(&self) -> ErrorCode {
        match self {
            ExamError::Invalid(_) => ErrorCode::BadRequest,
            ExamError::NotFound(_) => ErrorCode::NotFound,
            ExamError::Conflict(_) => ErrorCode::Conflict,
            ExamError::Store(_) => ErrorCode::Internal,
        }
    }
}

impl Organ for ExamActor {
    type Msg = ExamMsg;
    type Error = ExamError;
    const LABEL: &'static str = "exam";
    const NAME: &'static str = EXAM_NAME;

    fn crash() -> ExamMsg {
        ExamMsg::Crash
    }
}

/// The one way to reach the exam organ. Timeouts come from `gateway.actor_call_timeout_ms`, read at each
/// call.
pub type ExamHandle = Handle<ExamActor>;

impl Handle<ExamActor> {
    /// Starts a run; answers its summary (status `running`) once its result file exists.
    pub async fn run(&self, args: ExamRunArgs) -> Result<ExamSummary, OrganError<ExamError>> {
        self.call(|r| ExamMsg::Run(Box::new(args), r)).await
    }

    /// One run in full.
    pub async fn get(&self, id: String) -> Result<ExamResult, OrganError<ExamError>> {
        self.call(|r| ExamMsg::Get(id, r)).await
    }

    /// Every kept run's summary, oldest first.
    pub async fn history(&self) -> Result<Vec<ExamSummary>, OrganError<ExamError>> {
        self.call(ExamMsg::History).await
    }

    /// Stops the running exam `id`; answers its summary, scored on what was answered.
    pub async fn cancel(&self, id: String) -> Result<ExamSummary, OrganError<ExamError>> {
        self.call(|r| ExamMsg::Cancel(id, r)).await
    }
}
