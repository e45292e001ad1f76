//! The orchestrator actor: the task table. Each task runs in its own tokio task (a [`Runner`]) that reports
//! progress back here; the actor's mailbox is never blocked by thinking.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;

use super::graph::Runner;
use super::{Cognition, Node, TaskState, TaskStatus, TaskSummary};
use crate::events::Event;
use crate::personas::PersonaMap;

/// Global name of the orchestrator actor.
pub const ORCHESTRATOR_NAME: &str = "orchestrator";

/// Why a task command was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum OrchError {
    /// No such task.
    #[error("no task with id `{0}`")]
    NotFound(String),
    /// The task is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

/// The orchestrator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Orchestrator;

/// Start-up arguments.
pub struct OrchestratorArgs {
    /// Shared cognition machinery.
    pub cog: Arc<Cognition>,
}

/// Messages the orchestrator handles.
pub enum OrchestratorMsg {
    /// Accept a new task.
    Submit(String, RpcReplyPort<Result<TaskSummary, OrchError>>),
    /// One task in full.
    Get(String, RpcReplyPort<Result<Box<TaskState>, OrchError>>),
    /// Every tracked task, newest first.
    List(RpcReplyPort<Vec<TaskSummary>>),
    /// Cancel a task that has not finished.
    Cancel(String, RpcReplyPort<Result<TaskSummary, OrchError>>),
    /// Resume a paused task with the Architect's decision and guidance.
    Resume {
        /// Task id.
        id: String,
        /// `approved`, `rejected` or `resumed`.
        decision: String,
        /// Free-text guidance.
        guidance: Option<String>,
        /// Answer.
        reply: RpcReplyPort<Result<TaskSummary, OrchError>>,
    },
    /// From a runner: the task's state after a step, or at its end.
    Progress(Box<TaskState>),
    /// Fault injection: panic.
    Crash,
}

/// Aborts a runner when its entry goes away (cancel, or the orchestrator itself dying).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Entry {
    state: TaskState,
    run: Option<AbortOnDrop>,
}

/// Orchestrator state.
pub struct OrchestratorState {
    cog: Arc<Cognition>,
    tasks: HashMap<String, Entry>,
    permits: Arc<Semaphore>,
}

impl OrchestratorState {
    /// Runs a task. `snapshot` is the persona registry the task was accepted under; a task resumed from a
    /// checkpoint or a pause takes the registry as it is when it starts running again.
    fn spawn_runner(
        &mut self,
        myself: &ActorRef<OrchestratorMsg>,
        task: TaskState,
        snapshot: Option<Arc<PersonaMap>>,
    ) {
        let id = task.id.clone();
        let cog = self.cog.clone();
        let permits = self.permits.clone();
        let me = myself.clone();
        let handle = tokio::spawn(async move {
            // Queued until a slot frees up.
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            // The task's one registry snapshot, held for its whole life.
            let snapshot = snapshot.unwrap_or_else(|| cog.personas.snapshot());
            let mut runner = Runner::new(cog, snapshot);
            let mut task = task;
            let progress = me.clone();
            runner
                .run(&mut task, |t| {
                    let _ = progress.cast(OrchestratorMsg::Progress(Box::new(t.clone())));
                })
                .await;
            let _ = me.cast(OrchestratorMsg::Progress(Box::new(task)));
        });
        if let Some(e) = self.tasks.get_mut(&id) {
            e.run = Some(AbortOnDrop(handle.abort_handle()));
        }
    }

    /// Forgets the oldest finished tasks beyond `keep_finished_tasks`.
    fn prune(&mut self) {
        let keep = self.cog.settings.load().orchestrator.keep_finished_tasks;
        let mut finished: Vec<(f64, String)> = self
            .tasks
            .values()
            .filter(|e| e.state.status.is_final())
            .map(|e| (e.state.created_at, e.state.id.clone()))
            .collect();
        if finished.len() <= keep {
            return;
        }
        finished.sort_by(|a, b| a.0.total_cmp(&b.0));
        let excess = finished.len() - keep;
        for (_, id) in finished.into_iter().take(excess) {
            self.tasks.remove(&id);
            if let Err(e) = self.cog.store.remove(&id) {
                tracing::warn!(event = "checkpoint.remove_failed", task = %id, error = %e, "old checkpoint not removed");
            }
        }
    }
}

impl Actor for Orchestrator {
    type Msg = OrchestratorMsg;
    type State = OrchestratorState;
    type Arguments = OrchestratorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        args: OrchestratorArgs,
    ) -> Result<OrchestratorState, ActorProcessingErr> {
        let permits = Arc::new(Semaphore::new(
            args.cog.settings.load().orchestrator.max_concurrent_tasks,
        ));
        let mut state = OrchestratorState {
            cog: args.cog,
            tasks: HashMap::new(),
            permits,
        };
        let mut resumed = 0usize;
        for task in state.cog.store.load_all() {
            let id = task.id.clone();
            state.cog.hub.publish(Event::TaskStatus {
                id: id.clone(),
                status: task.status.as_str().into(),
            });
            let resume = matches!(task.status, TaskStatus::Queued | TaskStatus::Running);
            state.tasks.insert(
                id,
                Entry {
                    state: task.clone(),
                    run: None,
                },
            );
            if resume {
                resumed += 1;
                tracing::info!(event = "task.resumed", task = %task.id, next = %task.next, steps = task.steps.len(), "resuming task from its checkpoint");
                state.spawn_runner(&myself, task, None);
            }
        }
        state.prune();
        tracing::info!(
            event = "orchestrator.loaded",
            tasks = state.tasks.len(),
            resumed,
            "task table loaded"
        );
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        msg: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrchestratorMsg::Submit(text, reply) => {
                let max = state.cog.settings.load().orchestrator.max_task_bytes;
                if text.trim().is_empty() {
                    let _ = reply.send(Err(OrchError::Invalid("`text` must not be empty".into())));
                    return Ok(());
                }
                if text.len() > max {
                    let _ = reply.send(Err(OrchError::Invalid(format!(
                        "`text` is longer than {max} bytes"
                    ))));
                    return Ok(());
                }
                let task = TaskState::new(uuid::Uuid::new_v4().simple().to_string(), text.clone());
                if let Err(e) = state.cog.store.save(&task) {
                    let _ = reply.send(Err(OrchError::Conflict(format!(
                        "cannot record the task durably: {e}"
                    ))));
                    return Ok(());
                }
                state.cog.hub.publish(Event::TaskSubmitted {
                    id: task.id.clone(),
                    text,
                });
                tracing::info!(event = "task.submitted", task = %task.id, "task accepted");
                let summary = task.summary();
                state.tasks.insert(
                    task.id.clone(),
                    Entry {
                        state: task.clone(),
                        run: None,
                    },
                );
                let snapshot = state.cog.personas.snapshot();
                state.spawn_runner(&myself, task, Some(snapshot));
                let _ = reply.send(Ok(summary));
            }
            OrchestratorMsg::Get(id, reply) => {
                let r = state
                    .tasks
                    .get(&id)
                    .map(|e| Box::new(e.state.clone()))
                    .ok_or(OrchError::NotFound(id));
                let _ = reply.send(r);
            }
            OrchestratorMsg::List(reply) => {
                let mut list: Vec<TaskSummary> =
                    state.tasks.values().map(|e| e.state.summary()).collect();
                list.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
                let _ = reply.send(list);
            }
            OrchestratorMsg::Cancel(id, reply) => {
                let Some(e) = state.tasks.get_mut(&id) else {
                    let _ = reply.send(Err(OrchError::NotFound(id)));
                    return Ok(());
                };
                if e.state.status.is_final() {
                    let _ = reply.send(Err(OrchError::Conflict(format!(
                        "task {id} is already {}",
                        e.state.status.as_str()
                    ))));
                    return Ok(());
                }
                e.run = None;
                e.state.status = TaskStatus::Cancelled;
                e.state.next = Node::Done;
                if let Err(err) = state.cog.store.save(&e.state) {
                    tracing::error!(event = "checkpoint.write_failed", task = %id, error = %err, "cancel not recorded");
                }
                state
                    .cog
                    .hub
                    .publish(Event::TaskCancelled { id: id.clone() });
                tracing::info!(event = "task.cancelled", task = %id, "task cancelled");
                let _ = reply.send(Ok(e.state.summary()));
                state.prune();
            }
            OrchestratorMsg::Resume {
                id,
                decision,
                guidance,
                reply,
            } => {
                let Some(e) = state.tasks.get_mut(&id) else {
                    let _ = reply.send(Err(OrchError::NotFound(id)));
                    return Ok(());
                };
                if e.state.status != TaskStatus::Paused {
                    let _ = reply.send(Err(OrchError::Conflict(format!(
                        "task {id} is {}, not paused",
                        e.state.status.as_str()
                    ))));
                    return Ok(());
                }
                let inquiry = e.state.inquiry.get_or_insert_with(Default::default);
                inquiry.decision = Some(decision);
                inquiry.guidance = guidance;
                e.state.status = TaskStatus::Queued;
                e.state.next = Node::Synthesize;
                if let Err(err) = state.cog.store.save(&e.state) {
                    let _ = reply.send(Err(OrchError::Conflict(format!(
                        "cannot record the decision: {err}"
                    ))));
                    return Ok(());
                }
                state.cog.hub.publish(Event::TaskStatus {
                    id: id.clone(),
                    status: "queued".into(),
                });
                tracing::info!(event = "task.resumed", task = %id, "paused task resumed by the Architect");
                let summary = e.state.summary();
                let task = e.state.clone();
                state.spawn_runner(&myself, task, None);
                let _ = reply.send(Ok(summary));
            }
            OrchestratorMsg::Progress(task) => {
                if let Some(e) = state.tasks.get_mut(&task.id) {
                    // A report that raced a cancel must not resurrect the task.
                    if e.state.status != TaskStatus::Cancelled {
                        let finished = task.status.is_final() || task.status == TaskStatus::Paused;
                        e.state = *task;
                        if finished && e.state.status.is_final() {
                            e.run = None;
                        }
                    }
                }
                state.prune();
            }
            OrchestratorMsg::Crash => panic!("debug_crash requested for orchestrator"),
        }
        Ok(())
    }
}
