//! The Motivator's start-up arguments and messages: what its handle sends, and what its jobs send back.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::RpcReplyPort;

use super::{GoalList, MotivatorError, MotivatorState};
use crate::events::{EventHub, Published};
use crate::ports::Think;
use crate::ports::{GoalRunner, PortError};
use crate::settings::Settings;

/// Start-up arguments.
#[derive(Clone)]
pub struct MotivatorArgs {
    /// `data_dir/motivator` (holds `goals.json`).
    pub dir: PathBuf,
    /// Live settings (`[motivator]` is read at every event and tick).
    pub settings: Arc<ArcSwap<Settings>>,
    /// The events it reads, and publishes its decisions on.
    pub hub: Arc<EventHub>,
    /// The phrasing persona is called through here.
    pub personas: Arc<dyn Think>,
    /// Where goal tasks are started (the orchestrator).
    pub runner: Arc<dyn GoalRunner>,
}

/// What a phrase job brings back: `(persona, answer text, tokens used)` or why it could not ask.
pub type PhraseReply = Result<(String, String, u64), String>;

/// Messages the Motivator handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum MotivatorMsg {
    /// An event from the hub (sent by the forwarder job).
    Event(Arc<Published>),
    /// Look at the clock: pause changes, idleness, the queue (sent by the ticker job).
    Tick,
    /// From a phrase job: the persona's answer for a goal.
    Phrased(String, PhraseReply),
    /// From a start job: the goal's task id and status, or why it did not start.
    Started(
        String,
        Result<(String, batos_protocol::TaskStatus), PortError>,
    ),
    /// From a reconcile job (at start): the status of a running goal's task (`None`: unknown to the
    /// orchestrator).
    Reconciled(
        String,
        Result<Option<batos_protocol::TaskStatus>, PortError>,
    ),
    /// Where the Motivator stands.
    State(RpcReplyPort<MotivatorState>),
    /// Open and recent goals.
    Goals(RpcReplyPort<GoalList>),
    /// Pause (`true`) or resume, durably.
    Pause(bool, RpcReplyPort<Result<MotivatorState, MotivatorError>>),
    /// Fault injection: panic.
    Crash,
}

/// The Motivator's jobs, as its supervision reads them when they end.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum MotivatorJob {
    /// `forward`: hub → mailbox. Without it the Motivator is blind.
    Forward,
    /// `tick`: the clock. Without it the Motivator never looks up.
    Tick,
    /// `phrase/<goal>`: a persona phrases a goal.
    Phrase(String),
    /// `start/<goal>`: a goal's task is asked of the orchestrator.
    Start(String),
    /// `reconcile/<goal>`: a started goal's task is looked up again.
    Reconcile(String),
}

impl std::fmt::Display for MotivatorJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MotivatorJob::Forward => f.write_str("forward"),
            MotivatorJob::Tick => f.write_str("tick"),
            MotivatorJob::Phrase(id) => write!(f, "phrase/{id}"),
            MotivatorJob::Start(id) => write!(f, "start/{id}"),
            MotivatorJob::Reconcile(id) => write!(f, "reconcile/{id}"),
        }
    }
}
