//! The life organ's actor: takes lives (one at a time), answers records and the list, cancels; each life's
//! work is a job (`run.rs`), so a panic in it is an `actor.failed` event and the life is ended as failed.

use std::sync::{Arc, Mutex};

use batos_protocol::exam::parse_set;
use batos_protocol::life::{LifeCost, LifeRecord, LifeRunArgs, LifeStatus, LifeSummary};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::ctx::{InFlight, RunCtx};
use super::run::{check_ids, finish, run};
use super::store::LifeStore;
use super::{LifeArgs, LifeError, LifeMsg};
use crate::events::unix_now;
use crate::job::{JobEnd, Jobs, Run};
use crate::settings::LifeSettings;

/// Global name of the life actor.
pub const LIFE_NAME: &str = "life";

/// Longest life label, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// The life organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct LifeActor;

/// The life in progress.
struct Running {
    id: String,
    job: ActorRef<Run>,
    in_flight: InFlight,
}

/// The organ's state.
pub struct LifeState {
    args: LifeArgs,
    store: LifeStore,
    running: Option<Running>,
    jobs: Jobs,
}

/// A new life's record from validated arguments (the curriculum, the loop and the exam set are checked
/// here, so a bad file is refused before anything runs).
pub(super) fn new_record(args: LifeRunArgs, life: &LifeSettings) -> Result<LifeRecord, LifeError> {
    let check = life.check_questions;
    let tasks = args.validate().map_err(LifeError::Invalid)?;
    if tasks.len() > life.max_tasks {
        return Err(LifeError::Invalid(format!(
            "the curriculum has {} tasks; life.max_tasks allows {} (`limit` takes the first N)",
            tasks.len(),
            life.max_tasks
        )));
    }
    if let Some(s) = args.for_s.filter(|s| *s > life.max_run_s) {
        return Err(LifeError::Invalid(format!(
            "`for_s` {s} is beyond life.max_run_s ({} s)",
            life.max_run_s
        )));
    }
    let questions =
        parse_set(&args.exam).map_err(|e| LifeError::Invalid(format!("the exam set: {e}")))?;
    let name = args.name.clone().unwrap_or_else(|| "life".into());
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(LifeError::Invalid(format!(
            "`name` must be 1..={MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(LifeRecord {
        summary: LifeSummary {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name,
            ablate: args.ablate.clone(),
            status: LifeStatus::Running.as_str().into(),
            started_at: unix_now(),
            total: tasks.len() as u32,
            ..Default::default()
        },
        check_ids: check_ids(&questions, check),
        args,
        switched: Vec::new(),
        tasks: Vec::new(),
        exams: Vec::new(),
        exam_in_flight: None,
        rollbacks: Vec::new(),
        activity: Default::default(),
        cost: LifeCost::default(),
    })
}

impl LifeState {
    fn ctx(&self, in_flight: InFlight) -> RunCtx {
        RunCtx {
            args: self.args.clone(),
            store: self.store.clone(),
            in_flight,
        }
    }

    async fn start(
        &mut self,
        myself: &ActorRef<LifeMsg>,
        rec: LifeRecord,
    ) -> Result<(), LifeError> {
        let id = rec.summary.id.clone();
        let in_flight: InFlight = Arc::new(Mutex::new(None));
        let work = run(self.ctx(in_flight.clone()), rec, myself.clone());
        let job = self
            .jobs
            .spawn(&myself.get_cell(), format!("life/{id}"), work)
            .await
            .map_err(|e| LifeError::Store(format!("the life's job did not start: {e}")))?;
        self.running = Some(Running { id, job, in_flight });
        Ok(())
    }

    /// Ends the running life from outside its job (a cancel, or its job's crash): the job is stopped, its
    /// task and exam in flight cancelled, its switches put back.
    async fn end_running(
        &mut self,
        status: LifeStatus,
        error: Option<String>,
    ) -> Option<LifeSummary> {
        let running = self.running.take()?;
        running.job.kill();
        let task = running
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = self.args.tasks.cancel(task).await;
        }
        let mut rec = match self.store.load(&running.id) {
            Ok(Some(r)) => r,
            other => {
                tracing::error!(event = "life.record_lost", life = %running.id, found = ?other.map(|r| r.is_some()), "an ended life's record could not be read");
                return None;
            }
        };
        if let Some((_, exam)) = rec.exam_in_flight.clone() {
            let _ = self.args.exam.cancel(exam).await;
        }
        let ctx = self.ctx(Arc::new(Mutex::new(None)));
        finish(&ctx, &mut rec, status, error);
        Some(rec.summary)
    }
}

impl Actor for LifeActor {
    type Msg = LifeMsg;
    type State = LifeState;
    type Arguments = LifeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LifeMsg>,
        args: LifeArgs,
    ) -> Result<LifeState, ActorProcessingErr> {
        let store = LifeStore::open(&args.dir)?;
        let jobs = Jobs::new(format!("root/{LIFE_NAME}"), args.hub.clone());
        // A life found running was interrupted: the newest resumes where it stood; an older one (there should
        // be none) is ended as failed, its switches put back.
        let mut unfinished: Vec<LifeRecord> = store
            .all()
            .into_iter()
            .filter(|r| r.summary.status == LifeStatus::Running.as_str())
            .collect();
        let newest = unfinished.pop();
        let state = LifeState {
            args,
            store,
            running: None,
            jobs,
        };
        for mut old in unfinished {
            let ctx = state.ctx(Arc::new(Mutex::new(None)));
            finish(
                &ctx,
                &mut old,
                LifeStatus::Failed,
                Some("interrupted, and a newer life was resumed instead".into()),
            );
        }
        if let Some(r) = newest {
            myself.cast(LifeMsg::Resume(Box::new(r)))?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<LifeMsg>,
        msg: LifeMsg,
        state: &mut LifeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LifeMsg::Run(args, reply) => {
                if let Some(r) = &state.running {
                    let _ = reply.send(Err(LifeError::Conflict(format!(
                        "life {} is running; wait for it or life_cancel it",
                        r.id
                    ))));
                    return Ok(());
                }
                let life = state.args.settings.load().life.clone();
                let rec = match new_record(*args, &life) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                if let Err(e) = state.store.save(&rec) {
                    let _ = reply.send(Err(LifeError::Store(e.to_string())));
                    return Ok(());
                }
                tracing::info!(event = "life.started", life = %rec.summary.id, name = %rec.summary.name, tasks = rec.summary.total, ablate = ?rec.summary.ablate, every = rec.args.every, checks = rec.check_ids.len(), "life started");
                let summary = rec.summary.clone();
                let r = state.start(&myself, rec).await;
                let _ = reply.send(r.map(|()| summary));
            }
            LifeMsg::Resume(rec) => {
                tracing::info!(event = "life.resumed", life = %rec.summary.id, done = rec.tasks.len(), total = rec.summary.total, "interrupted life resumed");
                if let Err(e) = state.start(&myself, *rec).await {
                    tracing::error!(event = "life.resume_failed", error = %e, "life not resumed");
                }
            }
            LifeMsg::Get(id, reply) => {
                let r = match state.store.load(&id) {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => Err(LifeError::NotFound(id)),
                    Err(e) => Err(LifeError::Store(e)),
                };
                let _ = reply.send(r);
            }
            LifeMsg::List(reply) => {
                let _ = reply.send(Ok(state
                    .store
                    .all()
                    .into_iter()
                    .map(|r| r.summary)
                    .collect()));
            }
            LifeMsg::Cancel(id, reply) => {
                let r = match &state.running {
                    Some(r) if r.id == id => {
                        match state.end_running(LifeStatus::Cancelled, None).await {
                            Some(s) => Ok(s),
                            None => Err(LifeError::Store(format!(
                                "life {id}'s record could not be read"
                            ))),
                        }
                    }
                    _ => match state.store.load(&id) {
                        Ok(Some(r)) => Err(LifeError::Conflict(format!(
                            "life {id} is {}, not running",
                            r.summary.status
                        ))),
                        Ok(None) => Err(LifeError::NotFound(id)),
                        Err(e) => Err(LifeError::Store(e)),
                    },
                };
                let _ = reply.send(r);
            }
            LifeMsg::Ended(id) => {
                if state.running.as_ref().is_some_and(|r| r.id == id) {
                    state.running = None;
                }
            }
            LifeMsg::Crash => panic!("debug_crash requested for life"),
        }
        Ok(())
    }

    /// A life whose job panicked is ended as failed with the panic's text (its switches put back).
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<LifeMsg>,
        event: SupervisionEvent,
        state: &mut LifeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((label, JobEnd::Failed(reason))) = state.jobs.supervise(&event) {
            let life = label.strip_prefix("life/").map(str::to_string);
            if life.is_some() && life == state.running.as_ref().map(|r| r.id.clone()) {
                state
                    .end_running(
                        LifeStatus::Failed,
                        Some(format!("the life crashed: {reason}")),
                    )
                    .await;
            }
        }
        Ok(())
    }
}
