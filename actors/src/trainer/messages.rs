//! The trainer's start-up arguments and messages: what its handle sends and its run job sends back.

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use super::ctx::{RunReport, TrainerCtx};
use super::TrainerError;

/// Start-up arguments.
#[derive(Clone)]
pub struct TrainerArgs {
    /// What a run needs.
    pub ctx: TrainerCtx,
}

/// The answer to `trainer_status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerStatus {
    /// The persona being trained, if any.
    pub running: Option<String>,
    /// Seconds since that run began (waiting for idle included).
    pub running_for_s: Option<f64>,
    /// Personas waiting, first next.
    pub queued: Vec<String>,
    /// Reports of the runs that ended since the daemon started, newest last (at most 8).
    pub last: Vec<RunReport>,
}

/// Messages the trainer handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum TrainerMsg {
    /// Queue `persona` for training; answers its place in line (1 = next or running).
    Train {
        /// The persona.
        persona: String,
        /// Start without waiting for the running tasks to end.
        force: bool,
        /// Answer.
        reply: RpcReplyPort<Result<usize, TrainerError>>,
    },
    /// Stop the running run (its checkpoint is kept) and drop a queued one; `None` stops whatever runs.
    Cancel {
        /// The persona, or any.
        persona: Option<String>,
        /// Whether anything was stopped or dropped.
        reply: RpcReplyPort<bool>,
    },
    /// What runs and what waits.
    Status(RpcReplyPort<TrainerStatus>),
    /// Return a persona to its model before the last tuned swap; answers `(from, to)`.
    Rollback {
        /// The persona.
        persona: String,
        /// Answer.
        reply: RpcReplyPort<Result<(String, String), TrainerError>>,
    },
    /// From the run job: how it ended.
    Ended(String, Result<RunReport, TrainerError>),
    /// Start the next queued run if none runs (sent to itself).
    Pump,
    /// Fault injection: panic.
    Crash,
}
