//! The orchestrator actor: the task table. Each task's run is a supervised child actor (a [`Job`] running a
//! [`Runner`]) that reports progress back here, so the mailbox is never blocked by thinking and a panic in a
//! step is seen: the run's failure arrives as a supervision event, is published as `actor.failed`, and the
//! task is resumed from its last checkpoint (up to `orchestrator.task_restarts` times) or failed with the
//! crash as its reason. No task stays `running` after its run is gone.
//!
//! [`Job`]: crate::job::Job

use std::collections::HashMap;
use std::sync::Arc;

use batos_protocol::ErrorCode;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::Semaphore;

use super::graph::Runner;
use super::{
    Cognition, Node, OrchestratorArgs, OrchestratorMsg, Origin, TaskState, TaskStatus, TaskSummary,
};
use crate::ask::WireError;
use crate::events::Event;
use crate::job::{JobEnd, Jobs, Run};
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
    /// The change could not be made durable (its checkpoint could not be written, e.g. a full disk), so it was
    /// not made; retry once the disk has room.
    #[error("{0}")]
    Storage(String),
}

impl WireError for OrchError {
    fn code(&self) -> ErrorCode {
        match self {
            OrchError::NotFound(_) => ErrorCode::NotFound,
            OrchError::Conflict(_) => ErrorCode::Conflict,
            OrchError::Invalid(_) => ErrorCode::BadRequest,
            OrchError::Storage(_) => ErrorCode::Unavailable,
        }
    }
}

/// The orchestrator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Orchestrator;

struct Entry {
    state: TaskState,
    /// The run in progress, if any: a job actor linked to the orchestrator.
    run: Option<ActorRef<Run>>,
    /// Which run of this task is current; progress from an older one is ignored.
    run_seq: u64,
    /// Crashed runs so far.
    crashes: u32,
}

impl Entry {
    fn new(state: TaskState) -> Self {
        Entry {
            state,
            run: None,
            run_seq: 0,
            crashes: 0,
        }
    }

    /// Stops the current run at once (its future is dropped where it waits).
    fn stop_run(&mut self) {
        if let Some(run) = self.run.take() {
            run.kill();
        }
    }
}

/// The orchestrator's jobs, named in the tree and in `actor.*` events as `root/orchestrator/<label>`: a task's
/// run, or the hand-over of a finished task to memory and the Curator.
#[derive(Debug, Clone, PartialEq)]
enum OrchJob {
    /// `task/<id>`: the run of one task through the graph.
    Task(String),
    /// `settle/<id>`: a finished task handed over, when its run ends or at the next start
    /// ([`super::graph::settle`]).
    Settle(String),
}

impl std::fmt::Display for OrchJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrchJob::Task(id) => write!(f, "task/{id}"),
            OrchJob::Settle(id) => write!(f, "settle/{id}"),
        }
    }
}

/// Orchestrator state.
pub struct OrchestratorState {
    cog: Arc<Cognition>,
    tasks: HashMap<String, Entry>,
    permits: Arc<Semaphore>,
    /// Slots for the Motivator's goals, apart from the users' so a goal never holds one a person waits for.
    goal_permits: Arc<Semaphore>,
    jobs: Jobs<OrchJob>,
    next_run: u64,
}

impl OrchestratorState {
    /// Runs a task as a job. `snapshot` is the persona registry the task was accepted under; a task resumed
    /// from a checkpoint, a pause or a crash takes the registry as it is when it starts running again.
    async fn spawn_runner(
        &mut self,
        myself: &ActorRef<OrchestratorMsg>,
        task: TaskState,
        snapshot: Option<Arc<PersonaMap>>,
    ) {
        let id = task.id.clone();
        // The run starts from the checkpoint as it is under its claim: a run of the orchestrator's previous
        // life may have finished the task since it was loaded (it published the end; nothing to do).
        let (claim, on_disk) = self.cog.store.claim(&id);
        let task = match on_disk {
            Some(t) if t.status.is_final() => {
                tracing::info!(event = "task.already_finished", task = %id, status = %t.status.as_str(), "a run of an earlier life finished the task; not run again");
                // The end was published, but this life's load may have announced an older status since.
                self.cog.hub.publish(Event::TaskStatus {
                    id: id.clone(),
                    status: t.status,
                });
                if let Some(e) = self.tasks.get_mut(&id) {
                    e.state = t;
                }
                return;
            }
            Some(t) => t,
            None => task,
        };
        self.next_run += 1;
        let run_seq = self.next_run;
        let cog = self.cog.clone();
        let permits = if task.goal().is_some() {
            self.goal_permits.clone()
        } else {
            self.permits.clone()
        };
        let me = myself.clone();
        let work = async move {
            // Queued until a slot frees up.
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            // The task's one registry snapshot, held for its whole life.
            let snapshot = snapshot.unwrap_or_else(|| cog.personas.snapshot());
            let mut runner = Runner::new(cog, snapshot, claim);
            let mut task = task;
            let progress = me.clone();
            runner
                .run(&mut task, |t| {
                    let _ = progress.cast(OrchestratorMsg::Progress(Box::new(t.clone()), run_seq));
                })
                .await;
            let _ = me.cast(OrchestratorMsg::Progress(Box::new(task), run_seq));
        };
        match self
            .jobs
            .spawn(&myself.get_cell(), OrchJob::Task(id.clone()), work)
            .await
        {
            Ok(run) => {
                if let Some(e) = self.tasks.get_mut(&id) {
                    e.run = Some(run);
                    e.run_seq = run_seq;
                }
            }
            Err(err) => self.fail(&id, format!("the task's run could not start: {err}")),
        }
    }

    /// Hands a finished task to memory (done tasks) and the Curator (done and failed) as a job of its own
    /// (`settle/<id>`): the outcome is already durable and published, neither organ may hold the task's slot,
    /// and a hand-over that panics is an `actor.failed` event like any job's. The checkpoint records what was
    /// handed over; whatever was not is handed over again at the next start ([`super::graph::settle`]).
    async fn settle(&mut self, myself: &ActorRef<OrchestratorMsg>, task: TaskState) {
        let hooks = super::graph::Settle::new(&self.cog);
        if !hooks.wanted(&task) {
            return;
        }
        let id = task.id.clone();
        let work = super::graph::settle(hooks, task);
        if let Err(e) = self
            .jobs
            .spawn(&myself.get_cell(), OrchJob::Settle(id.clone()), work)
            .await
        {
            tracing::warn!(event = "orchestrator.settle_not_started", task = %id, error = %e, "hand-over not started; repeated at the next start");
        }
    }

    /// The task a request id created, if it was created within the dedupe window (request ids are the
    /// clients' and may be reused after it).
    fn by_request(&self, request_id: &str) -> Option<TaskSummary> {
        let window = self.cog.settings.load().gateway.dedupe_window_ms as f64 / 1000.0;
        let now = crate::events::unix_now();
        self.tasks
            .values()
            .find(|e| {
                e.state.request_id.as_deref() == Some(request_id)
                    && now - e.state.created_at <= window
            })
            .map(|e| e.state.summary())
    }

    /// The task that runs goal `goal`, if one was created (the table keeps unfinished tasks and the last
    /// `keep_finished_tasks` finished ones, which outlast any goal the Motivator may hand over again).
    fn by_goal(&self, goal: &str) -> Option<TaskSummary> {
        self.tasks
            .values()
            .find(|e| e.state.goal().is_some_and(|o| o.goal == goal))
            .map(|e| e.state.summary())
    }

    /// The task an exam asked for: same run, same question, same kind (teach or ask). The table keeps it
    /// while the exam runs (unfinished tasks are never pruned, and an exam waits for each task to finish).
    fn by_exam(&self, exam: &super::ExamOrigin) -> Option<TaskSummary> {
        self.tasks
            .values()
            .find(|e| e.state.exam() == Some(exam))
            .map(|e| e.state.summary())
    }

    /// Ends a task as failed (checkpointed, then published).
    fn fail(&mut self, id: &str, error: String) {
        let Some(e) = self.tasks.get_mut(id) else {
            return;
        };
        e.stop_run();
        e.state.status = TaskStatus::Failed;
        e.state.next = Node::Done;
        e.state.error = Some(error.clone());
        if let Err(err) = self.cog.store.end(&e.state) {
            tracing::error!(event = "checkpoint.write_failed", task = %id, error = %err, "failure not recorded");
        }
        self.cog.hub.publish(Event::TaskFailed {
            id: id.to_string(),
            error,
        });
    }

    /// A task's run failed (panicked or errored): resume it from its last checkpoint, or fail it once it
    /// has crashed more than `orchestrator.task_restarts` times.
    async fn run_crashed(&mut self, myself: &ActorRef<OrchestratorMsg>, id: &str, reason: String) {
        let limit = self.cog.settings.load().orchestrator.task_restarts;
        let Some(e) = self.tasks.get_mut(id) else {
            return;
        };
        e.run = None;
        if e.state.status.is_final() || e.state.status == TaskStatus::Paused {
            return;
        }
        e.crashes += 1;
        if e.crashes > limit {
            let crashes = e.crashes;
            self.fail(
                id,
                format!("the task's run crashed {crashes} time(s); last: {reason}"),
            );
            return;
        }
        // The checkpoint is the truth: progress reports may trail it by one step.
        let task = self
            .cog
            .store
            .load(id)
            .filter(|t| !t.status.is_final())
            .unwrap_or_else(|| e.state.clone());
        tracing::warn!(event = "task.run_restarted", task = %id, crashes = e.crashes, limit, next = %task.next, "resuming a crashed task from its last checkpoint");
        e.state = task.clone();
        self.spawn_runner(myself, task, None).await;
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
        let goal_permits = Arc::new(Semaphore::new(
            args.cog.settings.load().motivator.running_goals,
        ));
        let hub = args.cog.hub.clone();
        let mut state = OrchestratorState {
            cog: args.cog,
            tasks: HashMap::new(),
            permits,
            goal_permits,
            jobs: Jobs::new(format!("root/{ORCHESTRATOR_NAME}"), hub),
            next_run: 0,
        };
        let mut resume = Vec::new();
        for task in state.cog.store.load_all() {
            let id = task.id.clone();
            state.cog.hub.publish(Event::TaskStatus {
                id: id.clone(),
                status: task.status,
            });
            if matches!(task.status, TaskStatus::Queued | TaskStatus::Running) {
                resume.push(id.clone());
            }
            state.tasks.insert(id, Entry::new(task));
        }
        state.prune();
        tracing::info!(
            event = "orchestrator.loaded",
            tasks = state.tasks.len(),
            resumed = resume.len(),
            "task table loaded"
        );
        // Runs start once the actor is up: a supervisor waits for pre_start, and starting many runs is work.
        myself.cast(OrchestratorMsg::ResumeLoaded(resume))?;
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        event: SupervisionEvent,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((OrchJob::Task(id), JobEnd::Failed(reason))) = state.jobs.supervise(&event) {
            state.run_crashed(&myself, &id, reason).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        msg: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrchestratorMsg::Submit(text, request_id, origin, reply) => {
                let earlier = match origin.as_deref() {
                    Some(Origin::Motivator(o)) => state.by_goal(&o.goal),
                    Some(Origin::Exam(e)) => state.by_exam(e),
                    None => request_id.as_deref().and_then(|r| state.by_request(r)),
                };
                if let Some(existing) = earlier {
                    let _ = reply.send(Ok(existing));
                    return Ok(());
                }
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
                let mut task =
                    TaskState::new(uuid::Uuid::new_v4().simple().to_string(), text.clone());
                task.request_id = request_id;
                task.origin = origin.map(|o| *o);
                if let Err(e) = state.cog.store.save(&task) {
                    let _ = reply.send(Err(OrchError::Storage(format!(
                        "cannot record the task durably: {e}"
                    ))));
                    return Ok(());
                }
                state.cog.hub.publish(Event::TaskSubmitted {
                    id: task.id.clone(),
                    text,
                    goal: task.goal().map(|o| o.goal.clone()),
                    exam: task.exam().map(|e| e.exam.clone()),
                });
                let summary = task.summary();
                state
                    .tasks
                    .insert(task.id.clone(), Entry::new(task.clone()));
                let snapshot = state.cog.personas.snapshot();
                state.spawn_runner(&myself, task, Some(snapshot)).await;
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
                e.stop_run();
                e.state.status = TaskStatus::Cancelled;
                e.state.next = Node::Done;
                // `end`, not `save`: a run still finishing its step can no longer write after this.
                if let Err(err) = state.cog.store.end(&e.state) {
                    tracing::error!(event = "checkpoint.write_failed", task = %id, error = %err, "cancel not recorded");
                }
                state
                    .cog
                    .hub
                    .publish(Event::TaskCancelled { id: id.clone() });
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
                    let _ = reply.send(Err(OrchError::Storage(format!(
                        "cannot record the decision: {err}"
                    ))));
                    return Ok(());
                }
                state.cog.hub.publish(Event::TaskStatus {
                    id: id.clone(),
                    status: TaskStatus::Queued,
                });
                tracing::info!(event = "task.resumed", task = %id, "paused task resumed by the Architect");
                let summary = e.state.summary();
                let task = e.state.clone();
                state.spawn_runner(&myself, task, None).await;
                let _ = reply.send(Ok(summary));
            }
            OrchestratorMsg::Progress(task, run_seq) => {
                let mut finished = None;
                if let Some(e) = state.tasks.get_mut(&task.id) {
                    // A report from a run that was cancelled, crashed or replaced must not resurrect the task.
                    if e.run_seq == run_seq && e.state.status != TaskStatus::Cancelled {
                        let was_final = e.state.status.is_final();
                        // A settle may have reported before the run's last progress: keep what it said.
                        let (remembered, curated) = (e.state.remembered, e.state.curated);
                        e.state = *task;
                        e.state.remembered |= remembered;
                        e.state.curated |= curated;
                        if e.state.status.is_final() {
                            e.run = None;
                            if !was_final {
                                finished = Some(e.state.clone());
                            }
                        }
                    }
                }
                if let Some(task) = finished {
                    state.settle(&myself, task).await;
                }
                state.prune();
            }
            OrchestratorMsg::ResumeLoaded(ids) => {
                // Finished tasks whose memory write or Curator hand-over did not happen (a crash right after
                // the end): do it now.
                let hooks = super::graph::Settle::new(&state.cog);
                let unsettled: Vec<TaskState> = state
                    .tasks
                    .values()
                    .filter(|e| hooks.wanted(&e.state))
                    .map(|e| e.state.clone())
                    .collect();
                for task in unsettled {
                    state.settle(&myself, task).await;
                }
                for id in ids {
                    let Some(task) = state.tasks.get(&id).map(|e| e.state.clone()) else {
                        continue;
                    };
                    tracing::info!(event = "task.resumed", task = %id, next = %task.next, steps = task.steps.len(), "resuming task from its checkpoint");
                    state.spawn_runner(&myself, task, None).await;
                }
            }
            OrchestratorMsg::Settled {
                id,
                remembered,
                curated,
            } => {
                if let Some(e) = state.tasks.get_mut(&id) {
                    e.state.remembered |= remembered;
                    e.state.curated |= curated;
                }
            }
            OrchestratorMsg::Crash => panic!("debug_crash requested for orchestrator"),
        }
        Ok(())
    }
}
