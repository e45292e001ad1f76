//! What the life organ is started with ([`LifeArgs`]) and the messages it handles ([`LifeMsg`]).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use batos_protocol::life::{LifeRecord, LifeRunArgs, LifeSummary};
use ractor::RpcReplyPort;

use super::LifeError;
use crate::codex::CodexHandle;
use crate::events::EventHub;
use crate::exam::ExamHandle;
use crate::ports::LifeTasks;
use crate::settings::Settings;
use crate::tools::store::ToolStore;
use crate::tools::ToolRegistry;
use crate::trainer::TrainerHandle;

/// Start-up arguments.
#[derive(Clone)]
pub struct LifeArgs {
    /// `data_dir/life`: `<id>.json` per life.
    pub dir: PathBuf,
    /// The settings file a life switches (and puts back).
    pub settings_path: PathBuf,
    /// Live settings (`[life]`, and to see a switch take effect).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Event bus (`life.*`; the loops' events are counted from it).
    pub hub: Arc<EventHub>,
    /// Where the curriculum's tasks go.
    pub tasks: Arc<dyn LifeTasks>,
    /// The exam organ.
    pub exam: ExamHandle,
    /// The trainer: a life waits for it to settle before an exam, and rolls a tuned model back through it.
    /// `None` when the forge is off.
    pub trainer: Option<TrainerHandle>,
    /// The codex: the amendment policy approves through it.
    pub codex: CodexHandle,
    /// The tool registry (forged tools may be retired) and their records on disk.
    pub tools: Arc<ToolRegistry>,
    /// See `tools`.
    pub tool_store: ToolStore,
}

/// Messages the life organ handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum LifeMsg {
    /// Start a life.
    Run(
        Box<LifeRunArgs>,
        RpcReplyPort<Result<LifeSummary, LifeError>>,
    ),
    /// One life in full.
    Get(String, RpcReplyPort<Result<LifeRecord, LifeError>>),
    /// Every life's summary.
    List(RpcReplyPort<Result<Vec<LifeSummary>, LifeError>>),
    /// Stop the running life.
    Cancel(String, RpcReplyPort<Result<LifeSummary, LifeError>>),
    /// Resume a life found `running` at start (sent to itself once the actor is up).
    Resume(Box<LifeRecord>),
    /// From a life's job: it ended (its record is final on disk).
    Ended(String),
    /// Fault injection: panic.
    Crash,
}
