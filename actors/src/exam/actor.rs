//! The exam organ's actor: takes runs (one at a time), answers results and history, cancels; each run's
//! work is a job (`run.rs`), so a panic in it is an `actor.failed` event and the run is ended as failed.

use std::sync::{Arc, Mutex};

use batos_protocol::exam::{parse_set, ExamResult, ExamRunArgs, ExamStatus, ExamSummary};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use sha2::{Digest, Sha256};

use super::check::Grader;
use super::run::{finish, run, InFlight, RunCtx};
use super::store::ResultStore;
use super::{fingerprint, ExamArgs, ExamError, ExamMsg};
use crate::events::unix_now;
use crate::job::{JobEnd, Jobs, Run};

/// Global name of the exam actor.
pub const EXAM_NAME: &str = "exam";

/// Longest run label, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// The exam organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExamActor;

/// The run in progress.
struct Running {
    id: String,
    job: ActorRef<Run>,
    in_flight: InFlight,
}

/// The organ's state.
pub struct ExamState {
    args: ExamArgs,
    store: ResultStore,
    running: Option<Running>,
    jobs: Jobs,
}

fn store_err(e: impl std::fmt::Display) -> ExamError {
    ExamError::Store(e.to_string())
}

/// SHA-256 of the questions as parsed: the same set gives the same digest whatever its comments or layout.
fn set_digest(questions: &[batos_protocol::exam::ExamQuestion]) -> String {
    let bytes = serde_json::to_vec(questions).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new run's result from validated arguments (the checks are compiled here, so a bad regex is refused
/// before anything runs).
pub(super) fn new_result(
    args: &ExamRunArgs,
    judge_default: bool,
    max_questions: usize,
) -> Result<(ExamResult, Vec<Grader>), ExamError> {
    let mut questions = parse_set(&args.set).map_err(ExamError::Invalid)?;
    if let Some(cats) = &args.categories {
        questions.retain(|q| cats.contains(&q.category));
        if questions.is_empty() {
            return Err(ExamError::Invalid(format!(
                "no question of the categories {cats:?} in the set"
            )));
        }
    }
    if questions.len() > max_questions {
        return Err(ExamError::Invalid(format!(
            "the set has {} questions; exam.max_questions allows {max_questions} (split it, or pick `categories`)",
            questions.len()
        )));
    }
    let graders = questions
        .iter()
        .map(Grader::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExamError::Invalid(e.to_string()))?;
    let baseline = match args.baseline.as_deref() {
        None | Some("none") => false,
        Some("bare") => true,
        Some(other) => {
            return Err(ExamError::Invalid(format!(
                "`baseline` must be \"bare\" or \"none\" (got {:?})",
                batos_protocol::truncate(other, 64)
            )))
        }
    };
    let name = args.name.clone().unwrap_or_else(|| "exam".into());
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(ExamError::Invalid(format!(
            "`name` must be 1..={MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    let summary = ExamSummary {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name,
        set_digest: set_digest(&questions),
        status: ExamStatus::Running.as_str().into(),
        started_at: unix_now(),
        total: questions.len() as u32,
        baseline,
        ..Default::default()
    };
    let mut r = ExamResult {
        summary,
        error: None,
        fingerprint: Default::default(),
        questions,
        taught: Vec::new(),
        results: Vec::new(),
        judge: args.judge.unwrap_or(judge_default),
    };
    r.rescore();
    Ok((r, graders))
}

impl ExamState {
    fn ctx(&self, graders: Vec<Grader>, in_flight: InFlight) -> RunCtx {
        RunCtx {
            args: self.args.clone(),
            store: self.store.clone(),
            graders,
            in_flight,
        }
    }

    /// Starts `result`'s job (new or resumed).
    async fn start(
        &mut self,
        myself: &ActorRef<ExamMsg>,
        result: ExamResult,
        graders: Vec<Grader>,
    ) -> Result<(), ExamError> {
        let id = result.summary.id.clone();
        let in_flight: InFlight = Arc::new(Mutex::new(None));
        let ctx = self.ctx(graders, in_flight.clone());
        let work = run(ctx, result, myself.clone());
        let job = self
            .jobs
            .spawn(&myself.get_cell(), format!("run/{id}"), work)
            .await
            .map_err(|e| ExamError::Store(format!("the run's job did not start: {e}")))?;
        self.running = Some(Running { id, job, in_flight });
        Ok(())
    }

    /// Ends the running exam from outside its job (a cancel, or its job's crash): the job is stopped, its
    /// task in flight cancelled, and the result as last saved is scored with `status` (or as failed).
    async fn end_running(
        &mut self,
        status: ExamStatus,
        error: Option<String>,
    ) -> Option<ExamSummary> {
        let running = self.running.take()?;
        running.job.kill();
        let task = running
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(e) = self.args.tasks.cancel(task.clone()).await {
                tracing::warn!(event = "exam.task_not_cancelled", task = %task, error = %e, "an ended exam's task was not cancelled");
            }
        }
        let mut result = match self.store.load(&running.id) {
            Ok(Some(r)) => r,
            other => {
                tracing::error!(event = "exam.result_lost", exam = %running.id, found = ?other.map(|r| r.is_some()), "an ended exam's result could not be read");
                return None;
            }
        };
        let ctx = self.ctx(Vec::new(), Arc::new(Mutex::new(None)));
        finish(&ctx, &mut result, error, status).await;
        Some(result.summary)
    }
}

impl Actor for ExamActor {
    type Msg = ExamMsg;
    type State = ExamState;
    type Arguments = ExamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ExamMsg>,
        args: ExamArgs,
    ) -> Result<ExamState, ActorProcessingErr> {
        let store = ResultStore::open(&args.dir)?;
        let jobs = Jobs::new(format!("root/{EXAM_NAME}"), args.hub.clone());
        // A run found running was interrupted (a crash or a stop): the newest resumes where it stood, any
        // older one (there should be none) is ended as failed.
        let mut unfinished: Vec<ExamResult> = store
            .all()
            .into_iter()
            .filter(|r| r.summary.status == ExamStatus::Running.as_str())
            .collect();
        let newest = unfinished.pop();
        for mut old in unfinished {
            old.summary.status = ExamStatus::Failed.as_str().into();
            old.error = Some("interrupted, and a newer run was resumed instead".into());
            old.summary.finished_at = Some(unix_now());
            store.save(&old)?;
        }
        if let Some(r) = newest {
            myself.cast(ExamMsg::Resume(Box::new(r)))?;
        }
        Ok(ExamState {
            args,
            store,
            running: None,
            jobs,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ExamMsg>,
        msg: ExamMsg,
        state: &mut ExamState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExamMsg::Run(args, reply) => {
                if let Some(r) = &state.running {
                    let _ = reply.send(Err(ExamError::Conflict(format!(
                        "exam {} is running; wait for it or exam_cancel it",
                        r.id
                    ))));
                    return Ok(());
                }
                let exam = state.args.settings.load().exam.clone();
                let (mut result, graders) =
                    match new_result(&args, exam.judge_agreement, exam.max_questions) {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return Ok(());
                        }
                    };
                result.fingerprint = fingerprint(&state.args).await;
                if let Err(e) = state.store.save(&result) {
                    let _ = reply.send(Err(store_err(e)));
                    return Ok(());
                }
                tracing::info!(event = "exam.started", exam = %result.summary.id, name = %result.summary.name, questions = result.summary.total, baseline = result.summary.baseline, judge = result.judge, "exam started");
                let summary = result.summary.clone();
                let r = state.start(&myself, result, graders).await;
                let _ = reply.send(r.map(|()| summary));
            }
            ExamMsg::Resume(result) => {
                let graders = result
                    .questions
                    .iter()
                    .map(Grader::new)
                    .collect::<Result<Vec<_>, _>>();
                match graders {
                    Ok(g) => {
                        tracing::info!(event = "exam.resumed", exam = %result.summary.id, answered = result.results.len(), total = result.summary.total, "interrupted exam resumed");
                        if let Err(e) = state.start(&myself, *result, g).await {
                            tracing::error!(event = "exam.resume_failed", error = %e, "exam not resumed");
                        }
                    }
                    Err(e) => {
                        let mut r = *result;
                        let ctx = state.ctx(Vec::new(), Arc::new(Mutex::new(None)));
                        finish(&ctx, &mut r, Some(e.to_string()), ExamStatus::Failed).await;
                    }
                }
            }
            ExamMsg::Get(id, reply) => {
                let r = match state.store.load(&id) {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => Err(ExamError::NotFound(id)),
                    Err(e) => Err(ExamError::Store(e)),
                };
                let _ = reply.send(r);
            }
            ExamMsg::History(reply) => {
                let _ = reply.send(Ok(state.store.summaries()));
            }
            ExamMsg::Cancel(id, reply) => {
                let r = match &state.running {
                    Some(r) if r.id == id => {
                        match state.end_running(ExamStatus::Cancelled, None).await {
                            Some(s) => Ok(s),
                            None => Err(ExamError::Store(format!(
                                "exam {id}'s result could not be read"
                            ))),
                        }
                    }
                    _ => match state.store.load(&id) {
                        Ok(Some(r)) => Err(ExamError::Conflict(format!(
                            "exam {id} is {}, not running",
                            r.summary.status
                        ))),
                        Ok(None) => Err(ExamError::NotFound(id)),
                        Err(e) => Err(ExamError::Store(e)),
                    },
                };
                let _ = reply.send(r);
            }
            ExamMsg::Ended(id) => {
                if state.running.as_ref().is_some_and(|r| r.id == id) {
                    state.running = None;
                }
            }
            ExamMsg::Crash => panic!("debug_crash requested for exam"),
        }
        Ok(())
    }

    /// A run whose job panicked is ended as failed with the panic's text (its answers so far are kept).
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ExamMsg>,
        event: SupervisionEvent,
        state: &mut ExamState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((label, JobEnd::Failed(reason))) = state.jobs.supervise(&event) {
            let run = label.strip_prefix("run/").map(str::to_string);
            if run.is_some() && run == state.running.as_ref().map(|r| r.id.clone()) {
                state
                    .end_running(
                        ExamStatus::Failed,
                        Some(format!("the run crashed: {reason}")),
                    )
                    .await;
            }
        }
        Ok(())
    }
}
