//! Commands of protocol v1: each one's validated arguments and the parse from `(cmd, args)`.
//!
//! Arguments are deserialised with `deny_unknown_fields`, so a misspelt key is a clear `bad_request` naming
//! the field instead of being silently ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exam::ExamRunArgs;
use crate::life::LifeRunArgs;
use crate::types::IngestItem;
use crate::wire::{truncate, ErrorBody, ErrorCode};

/// Arguments of `submit_task`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskArgs {
    /// What the Architect asks.
    pub text: String,
}

/// Arguments of commands that name one thing by id (`get_task`, `cancel_task`, `approve_amendment`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// Id of the task or amendment, as the daemon issued it (32 lowercase hex chars); unknown is
    /// `not_found`.
    pub id: String,
}

/// Arguments of `resume_task`: the Architect's answer to a paused philosophical inquiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeTaskArgs {
    /// The paused task.
    pub id: String,
    /// Free-text guidance passed to the personas when the task continues.
    #[serde(default)]
    pub guidance: Option<String>,
}

/// Arguments of `reject_amendment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectArgs {
    /// The amendment.
    pub id: String,
    /// Why it is rejected; shown to the persona.
    pub reason: String,
}

/// Arguments of `update_persona` (cognitive surgery).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePersonaArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
    /// Which editable field (see docs/protocol.md).
    pub field: String,
    /// New value, typed and ranged by field (e.g. `temperature` a number in 0..=2); null clears the
    /// override.
    pub value: Value,
}

/// Arguments of commands that name a persona.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
}

/// Arguments of `swap_model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapModelArgs {
    /// The persona to move.
    pub persona: String,
    /// The model it moves to: trimmed, then 1..=256 characters without control characters.
    pub model: String,
}

/// Arguments of `memory_search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySearchArgs {
    /// What to look for (not blank); embedded, then matched by cosine similarity.
    pub query: String,
    /// How many details to return: `memory.k_details` when absent, clamped to 1..=`memory.max_k`.
    #[serde(default)]
    pub k: Option<usize>,
    /// Include the stage-2 query plan.
    #[serde(default)]
    pub explain: bool,
}

/// Arguments of `memory_ingest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryIngestArgs {
    /// Things to remember.
    pub items: Vec<IngestItem>,
}

/// Arguments of `forge_tool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeToolArgs {
    /// What the tool must do.
    pub capability: String,
}

/// Arguments of `call_tool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallToolArgs {
    /// Name of a registered tool, built-in or forged (as `list_tools` shows); unknown is `not_found`.
    pub name: String,
    /// Its arguments, an object checked against the tool's schema by the tool; absent means `{}`.
    #[serde(default)]
    pub args: Option<Value>,
}

/// Arguments of `rate_task`: a human's verdict on a task, which overrides the Curator's judge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTaskArgs {
    /// The task (32 lowercase hex chars); unknown is `not_found`.
    pub id: String,
    /// 1 (worst) to 5 (best).
    pub score: u8,
    /// Why, in the human's words (at most 2,000 bytes).
    #[serde(default)]
    pub comment: Option<String>,
}

/// Arguments of `curator_export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CuratorExportArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
}

/// Arguments of `image_export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageExportArgs {
    /// Absolute path, on the daemon's machine, of the file to write (an existing file is replaced atomically).
    pub path: String,
}

/// Arguments of `trainer_run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerRunArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
    /// Start without waiting for the running tasks to end (default false).
    #[serde(default)]
    pub force: bool,
}

/// Arguments of `trainer_cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerCancelArgs {
    /// The persona whose run or place in line to drop; absent: whatever runs.
    #[serde(default)]
    pub persona: Option<String>,
}

/// Arguments of `rollback_model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackModelArgs {
    /// ALFRED, BABS, BRICK or ROBIN.
    pub persona: String,
}

/// Arguments of `debug_crash`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugCrashArgs {
    /// The actor to crash: a persona name (e.g. `BRICK`) or an organ (`orchestrator`, `codex`, ...).
    pub actor: String,
}

/// Arguments of commands that take none.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A parsed, validated command.
#[derive(Debug, Clone)]
pub enum Command {
    /// Liveness; works without a token.
    Ping,
    /// The live tree, restart counts, models.
    Status,
    /// `{seq, state}` for late joiners.
    Snapshot,
    /// Start a task.
    SubmitTask(SubmitTaskArgs),
    /// One task with its step history.
    GetTask(IdArgs),
    /// All tracked tasks, newest first.
    ListTasks,
    /// Cancel a queued, running or paused task.
    CancelTask(IdArgs),
    /// Resume a task paused at the philosophical-inquiry interrupt.
    ResumeTask(ResumeTaskArgs),
    /// Registered tools.
    ListTools,
    /// Have the ToolForge create a tool for a capability.
    ForgeTool(ForgeToolArgs),
    /// Call a registered tool directly (in its sandbox).
    CallTool(CallToolArgs),
    /// Cognitive surgery on a persona's editable state.
    UpdatePersona(UpdatePersonaArgs),
    /// One persona's live state, answered by its actor.
    GetPersona(PersonaArgs),
    /// Cognitive atomic swap.
    SwapModel(SwapModelArgs),
    /// Pending and decided codex amendments.
    ListAmendments,
    /// Approve (commit) an amendment.
    ApproveAmendment(IdArgs),
    /// Reject an amendment.
    RejectAmendment(RejectArgs),
    /// Two-stage memory retrieval.
    MemorySearch(MemorySearchArgs),
    /// Store texts in memory directly (seeding facts).
    MemoryIngest(MemoryIngestArgs),
    /// Run one consolidation pass now.
    MemoryConsolidate,
    /// Memory table statistics.
    MemoryStats,
    /// A human's rating of a task (overrides the Curator's judge).
    RateTask(RateTaskArgs),
    /// Per-persona Curator counts: seen, accepted, rejected by reason, train and held-out sizes, triggers.
    CuratorStats,
    /// Where a persona's dataset files are.
    CuratorExport(CuratorExportArgs),
    /// Queue a persona for LoRA training on its golden set.
    TrainerRun(TrainerRunArgs),
    /// Stop a training run (its checkpoint is kept) or drop a queued one.
    TrainerCancel(TrainerCancelArgs),
    /// What the trainer runs, what waits, how the last runs ended.
    TrainerStatus,
    /// Return a persona to its model before the last tuned swap.
    RollbackModel(RollbackModelArgs),
    /// Make an actor panic (fault injection).
    DebugCrash(DebugCrashArgs),
    /// The Motivator's open and recent goals, and its state.
    ListGoals,
    /// Pause the Motivator durably: no goal is made or started.
    MotivatorPause,
    /// Resume it.
    MotivatorResume,
    /// Save a living image now (a new generation in `data_dir/image/`).
    ImageSave,
    /// Write one self-contained image (memory rows and adapters included) to a file.
    ImageExport(ImageExportArgs),
    /// Start an exam: every question through the society (and the bare model with `baseline: bare`).
    ExamRun(ExamRunArgs),
    /// One exam run in full: its summary, fingerprint and every answer.
    ExamGet(IdArgs),
    /// Every kept exam run's summary, oldest first.
    ExamHistory,
    /// Stop the running exam; what was answered is kept and scored.
    ExamCancel(IdArgs),
    /// Start a life: a curriculum fed at a steady pace, the exam at both ends and a held-out check every
    /// `every` tasks.
    LifeRun(Box<LifeRunArgs>),
    /// One life in full: its summary, curve, tasks, rollbacks, the loops' activity and cost.
    LifeGet(IdArgs),
    /// Every kept life's summary, oldest first.
    LifeList,
    /// Stop the running life: the task in flight is cancelled, the switches are put back, no end exam.
    LifeCancel(IdArgs),
}

/// Every command name of protocol v1, for `unknown_command` messages and docs.
pub const COMMANDS: &[&str] = &[
    "ping",
    "status",
    "snapshot",
    "submit_task",
    "get_task",
    "list_tasks",
    "cancel_task",
    "resume_task",
    "list_tools",
    "forge_tool",
    "call_tool",
    "update_persona",
    "get_persona",
    "swap_model",
    "list_amendments",
    "approve_amendment",
    "reject_amendment",
    "memory_search",
    "memory_ingest",
    "memory_consolidate",
    "memory_stats",
    "rate_task",
    "curator_stats",
    "curator_export",
    "trainer_run",
    "trainer_cancel",
    "trainer_status",
    "rollback_model",
    "debug_crash",
    "list_goals",
    "motivator_pause",
    "motivator_resume",
    "image_save",
    "image_export",
    "exam_run",
    "exam_get",
    "exam_history",
    "exam_cancel",
    "life_run",
    "life_get",
    "life_list",
    "life_cancel",
];

/// Commands renamed, `(old, new)`: the old name is accepted for one release and means exactly the new one (the
/// gateway logs each use as `command.deprecated`). The trainer's commands were `forge_*` before issue 29, when
/// "forge" named both the ToolForge and the trainer.
pub const RENAMED_COMMANDS: &[(&str, &str)] = &[
    ("forge_train", "trainer_run"),
    ("forge_cancel", "trainer_cancel"),
    ("forge_status", "trainer_status"),
];

/// The command `cmd` names: itself, or the new name of a renamed one ([`RENAMED_COMMANDS`]).
pub fn canonical_command(cmd: &str) -> &str {
    RENAMED_COMMANDS
        .iter()
        .find(|(old, _)| *old == cmd)
        .map_or(cmd, |(_, new)| new)
}

/// The commands that change nothing: their replies need not survive a daemon crash (a retry simply reads
/// again), so the gateway remembers them in memory only.
pub const READ_ONLY_COMMANDS: &[&str] = &[
    "ping",
    "status",
    "snapshot",
    "get_task",
    "list_tasks",
    "list_tools",
    "get_persona",
    "list_amendments",
    "memory_search",
    "memory_stats",
    "curator_stats",
    "curator_export",
    "trainer_status",
    "list_goals",
    "exam_get",
    "exam_history",
    "life_get",
    "life_list",
];

impl Command {
    /// Validates `args` for command `cmd`.
    pub fn parse(cmd: &str, args: Option<Value>) -> Result<Command, ErrorBody> {
        let cmd = canonical_command(cmd);
        let args = args.unwrap_or_else(|| Value::Object(Default::default()));
        fn typed<T: serde::de::DeserializeOwned>(cmd: &str, args: Value) -> Result<T, ErrorBody> {
            serde_json::from_value(args).map_err(|e| {
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("invalid args for `{cmd}`: {e}"),
                )
            })
        }
        let none = |args: Value| typed::<NoArgs>(cmd, args).map(|_| ());
        Ok(match cmd {
            "ping" => none(args).map(|_| Command::Ping)?,
            "status" => none(args).map(|_| Command::Status)?,
            "snapshot" => none(args).map(|_| Command::Snapshot)?,
            "submit_task" => Command::SubmitTask(typed(cmd, args)?),
            "get_task" => Command::GetTask(typed(cmd, args)?),
            "list_tasks" => none(args).map(|_| Command::ListTasks)?,
            "cancel_task" => Command::CancelTask(typed(cmd, args)?),
            "resume_task" => Command::ResumeTask(typed(cmd, args)?),
            "list_tools" => none(args).map(|_| Command::ListTools)?,
            "forge_tool" => Command::ForgeTool(typed(cmd, args)?),
            "call_tool" => Command::CallTool(typed(cmd, args)?),
            "update_persona" => Command::UpdatePersona(typed(cmd, args)?),
            "get_persona" => Command::GetPersona(typed(cmd, args)?),
            "swap_model" => Command::SwapModel(typed(cmd, args)?),
            "list_amendments" => none(args).map(|_| Command::ListAmendments)?,
            "approve_amendment" => Command::ApproveAmendment(typed(cmd, args)?),
            "reject_amendment" => Command::RejectAmendment(typed(cmd, args)?),
            "memory_search" => Command::MemorySearch(typed(cmd, args)?),
            "memory_ingest" => Command::MemoryIngest(typed(cmd, args)?),
            "memory_consolidate" => none(args).map(|_| Command::MemoryConsolidate)?,
            "memory_stats" => none(args).map(|_| Command::MemoryStats)?,
            "list_goals" => none(args).map(|_| Command::ListGoals)?,
            "motivator_pause" => none(args).map(|_| Command::MotivatorPause)?,
            "motivator_resume" => none(args).map(|_| Command::MotivatorResume)?,
            "image_save" => none(args).map(|_| Command::ImageSave)?,
            "image_export" => Command::ImageExport(typed(cmd, args)?),
            "exam_run" => Command::ExamRun(typed(cmd, args)?),
            "exam_get" => Command::ExamGet(typed(cmd, args)?),
            "exam_history" => none(args).map(|_| Command::ExamHistory)?,
            "exam_cancel" => Command::ExamCancel(typed(cmd, args)?),
            "life_run" => Command::LifeRun(Box::new(typed(cmd, args)?)),
            "life_get" => Command::LifeGet(typed(cmd, args)?),
            "life_list" => none(args).map(|_| Command::LifeList)?,
            "life_cancel" => Command::LifeCancel(typed(cmd, args)?),
            "rate_task" => Command::RateTask(typed(cmd, args)?),
            "curator_stats" => none(args).map(|_| Command::CuratorStats)?,
            "curator_export" => Command::CuratorExport(typed(cmd, args)?),
            "trainer_run" => Command::TrainerRun(typed(cmd, args)?),
            "trainer_cancel" => Command::TrainerCancel(typed(cmd, args)?),
            "trainer_status" => none(args).map(|_| Command::TrainerStatus)?,
            "rollback_model" => Command::RollbackModel(typed(cmd, args)?),
            "debug_crash" => Command::DebugCrash(typed(cmd, args)?),
            other => {
                return Err(ErrorBody::new(
                    ErrorCode::UnknownCommand,
                    format!(
                        "unknown command `{}`; known: {}",
                        truncate(other, 64),
                        COMMANDS.join(", ")
                    ),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_are_validated_per_command() {
        assert_eq!(
            Command::parse("nope", None).unwrap_err().code,
            ErrorCode::UnknownCommand
        );
        assert_eq!(
            Command::parse("submit_task", Some(json!({"txt":"x"})))
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            Command::parse("ping", Some(json!({"x":1})))
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        assert!(matches!(
            Command::parse("submit_task", Some(json!({"text":"x"}))).unwrap(),
            Command::SubmitTask(_)
        ));
        assert!(matches!(
            Command::parse("trainer_run", Some(json!({"persona":"BRICK"}))).unwrap(),
            Command::TrainerRun(TrainerRunArgs { force: false, .. })
        ));
        // The trainer's commands before issue 29 still parse, as the new ones.
        assert!(matches!(
            Command::parse("forge_train", Some(json!({"persona":"BRICK"}))).unwrap(),
            Command::TrainerRun(TrainerRunArgs { force: false, .. })
        ));
        assert!(matches!(
            Command::parse("forge_status", None).unwrap(),
            Command::TrainerStatus
        ));
        assert_eq!(canonical_command("forge_cancel"), "trainer_cancel");
        assert_eq!(canonical_command("forge_tool"), "forge_tool");
        for (old, new) in RENAMED_COMMANDS {
            assert!(COMMANDS.contains(new) && !COMMANDS.contains(old));
        }
        assert_eq!(
            Command::parse("trainer_run", Some(json!({"persona":"BRICK","steps":3})))
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
    }
}
