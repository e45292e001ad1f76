//! The Curator's start-up arguments and messages: what its handle sends and its judge job sends back.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::RpcReplyPort;

use super::{CuratorError, CuratorStats, Export, JudgeAgreement, RateOutcome, TrainerHook};
use crate::events::EventHub;
use crate::ports::TaskState;
use crate::ports::Think;
use crate::settings::Settings;

/// Start-up arguments.
#[derive(Clone)]
pub struct CuratorArgs {
    /// `data_dir/curator`.
    pub dir: PathBuf,
    /// Live settings (`[curator]` is read for every exchange).
    pub settings: Arc<ArcSwap<Settings>>,
    /// The judge persona is called through here.
    pub personas: Arc<dyn Think>,
    /// Event bus (`curator.*` events; the count of running tasks the judge waits on).
    pub hub: Arc<EventHub>,
    /// The trainer told at each trigger; `None` until a trainer organ runs.
    pub trainer: Option<Arc<dyn TrainerHook>>,
}

/// What the judge job brings back: `(persona, model, generation, answer text)` or why it could not ask.
pub type JudgeReply = Result<(String, String, u64, String), String>;

/// Messages the Curator handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum CuratorMsg {
    /// A finished task; answered once it is durably in the inbox.
    Curate(Box<TaskState>, RpcReplyPort<Result<(), CuratorError>>),
    /// A human's rating.
    Rate {
        /// Task id.
        task: String,
        /// 1..=5.
        score: u8,
        /// Optional comment.
        comment: Option<String>,
        /// Answer.
        reply: RpcReplyPort<Result<RateOutcome, CuratorError>>,
    },
    /// Counts.
    Stats(RpcReplyPort<CuratorStats>),
    /// A persona's files.
    Export(String, RpcReplyPort<Result<Export, CuratorError>>),
    /// Decide queued exchanges until one needs the judge (sent to itself).
    Pump,
    /// From the judge job: its answer for the exchange with this key.
    Judged(String, JudgeReply),
    /// The judge's agreement with an exam, to keep and show.
    Agreement(JudgeAgreement, RpcReplyPort<Result<(), CuratorError>>),
    /// Fault injection: panic.
    Crash,
}
