//! The trainer actor: a queue of personas to train, one run at a time as a supervised job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::ctx::RunReport;
use super::messages::{TrainerArgs, TrainerMsg, TrainerStatus};
use super::pipeline;
use super::TrainerError;
use crate::events::Event;
use crate::job::{JobEnd, Jobs};

/// Registered name of the actor.
pub const TRAINER_NAME: &str = "trainer";

/// The actor (state lives in [`TrainerState`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct TrainerActor;

/// The run in progress.
struct Running {
    persona: String,
    cancel: Arc<AtomicBool>,
    since: Instant,
}

/// The actor's state.
pub struct TrainerState {
    args: TrainerArgs,
    jobs: Jobs,
    running: Option<Running>,
    /// Personas waiting, with whether their request skips the wait for idle.
    queue: VecDeque<(String, bool)>,
    /// The last report of each run that ended this life, newest last (bounded).
    last: VecDeque<RunReport>,
}

/// Reports kept for `trainer_status`.
const KEEP_REPORTS: usize = 8;

impl TrainerState {
    /// Starts the next queued run if none is running.
    async fn pump(&mut self, myself: &ActorRef<TrainerMsg>) {
        if self.running.is_some() {
            return;
        }
        let Some((persona, force)) = self.queue.pop_front() else {
            return;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let ctx = self.args.ctx.clone();
        let me = myself.clone();
        let (p, c) = (persona.clone(), cancel.clone());
        let work = async move {
            let r = pipeline::run(ctx, p.clone(), force, c).await;
            let _ = me.cast(TrainerMsg::Ended(p, r));
        };
        match self
            .jobs
            .spawn(&myself.get_cell(), format!("run/{persona}"), work)
            .await
        {
            Ok(_) => {
                self.running = Some(Running {
                    persona,
                    cancel,
                    since: Instant::now(),
                })
            }
            Err(e) => self.ended(
                &persona,
                Err(TrainerError::Model(format!("the run could not start: {e}"))),
            ),
        }
    }

    fn ended(&mut self, persona: &str, r: Result<RunReport, TrainerError>) {
        self.running = None;
        match r {
            Ok(report) => {
                tracing::info!(event = "trainer.ended", persona, outcome = %report.outcome, steps = report.steps, "training run ended");
                self.last.push_back(report);
                while self.last.len() > KEEP_REPORTS {
                    self.last.pop_front();
                }
            }
            Err(e) => {
                self.args.ctx.hub.publish(Event::TrainerFailed {
                    persona: persona.to_string(),
                    error: e.to_string(),
                });
            }
        }
    }
}

impl Actor for TrainerActor {
    type Msg = TrainerMsg;
    type State = TrainerState;
    type Arguments = TrainerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TrainerMsg>,
        args: TrainerArgs,
    ) -> Result<TrainerState, ActorProcessingErr> {
        let hub = args.ctx.hub.clone();
        let mut state = TrainerState {
            jobs: Jobs::new(format!("root/{TRAINER_NAME}"), hub),
            args,
            running: None,
            queue: VecDeque::new(),
            last: VecDeque::new(),
        };
        // A run killed mid-training left its checkpoint: take it up again (it resumes when its settings and
        // training set are unchanged).
        if let Ok(entries) = std::fs::read_dir(&state.args.ctx.dir) {
            for e in entries.flatten() {
                let persona = e.file_name().to_string_lossy().into_owned();
                if pipeline::checkpoint_path(&state.args.ctx.dir, &persona).is_file() {
                    tracing::info!(event = "trainer.resuming", persona = %persona, "an interrupted run is taken up again");
                    state.queue.push_back((persona, false));
                }
            }
        }
        // An exam-gate trial a stop interrupted left the candidate in place: swap it back once the personas'
        // recorder answers (the codex organ may still be starting). A job (`root/trainer/undo-trials`), not in
        // the mailbox: the swap back waits on the codex, which may be starting after the trainer.
        let ctx = state.args.ctx.clone();
        let undo = async move {
            for _ in 0..20 {
                let marker_left = std::fs::read_dir(&ctx.dir)
                    .ok()
                    .is_some_and(|rd| rd.flatten().any(|e| e.path().join("trial.json").is_file()));
                if !marker_left {
                    return;
                }
                super::exam_gate::recover_trials(&ctx).await;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        };
        if let Err(e) = state
            .jobs
            .spawn(&myself.get_cell(), "undo-trials", undo)
            .await
        {
            tracing::warn!(event = "trainer.trial_undo_failed", error = %e, "an interrupted exam-gate trial could not be undone now; it is tried again at the next start");
        }
        let _ = myself.cast(TrainerMsg::Pump);
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TrainerMsg>,
        event: SupervisionEvent,
        state: &mut TrainerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((label, JobEnd::Failed(reason))) = state.jobs.supervise(&event) {
            if let Some(persona) = label.strip_prefix("run/") {
                state.ended(
                    persona,
                    Err(TrainerError::Model(format!("the run crashed: {reason}"))),
                );
                state.pump(&myself).await;
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TrainerMsg>,
        msg: TrainerMsg,
        state: &mut TrainerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TrainerMsg::Train {
                persona,
                force,
                reply,
            } => {
                let r = if state.args.ctx.personas.current(&persona).is_err() {
                    Err(TrainerError::Invalid(format!("no persona named {persona}")))
                } else if state.running.as_ref().is_some_and(|r| r.persona == persona)
                    || state.queue.iter().any(|(p, _)| p == &persona)
                {
                    Err(TrainerError::Busy(format!(
                        "{persona} is already being trained or queued"
                    )))
                } else {
                    state.queue.push_back((persona, force));
                    Ok(state.queue.len() + usize::from(state.running.is_some()))
                };
                let _ = reply.send(r);
                state.pump(&myself).await;
            }
            TrainerMsg::Cancel { persona, reply } => {
                let mut cancelled = false;
                if let Some(p) = &persona {
                    let before = state.queue.len();
                    state.queue.retain(|(q, _)| q != p);
                    cancelled |= state.queue.len() != before;
                }
                if let Some(r) = &state.running {
                    if persona.as_ref().is_none_or(|p| p == &r.persona) {
                        r.cancel.store(true, Ordering::SeqCst);
                        cancelled = true;
                    }
                }
                let _ = reply.send(cancelled);
            }
            TrainerMsg::Status(reply) => {
                let _ = reply.send(TrainerStatus {
                    running: state.running.as_ref().map(|r| r.persona.clone()),
                    running_for_s: state
                        .running
                        .as_ref()
                        .map(|r| r.since.elapsed().as_secs_f64()),
                    queued: state.queue.iter().map(|(p, _)| p.clone()).collect(),
                    last: state.last.iter().cloned().collect(),
                });
            }
            TrainerMsg::Rollback { persona, reply } => {
                let _ = reply.send(pipeline::rollback(&state.args.ctx, &persona).await);
            }
            TrainerMsg::Ended(persona, r) => {
                state.ended(&persona, r);
                state.pump(&myself).await;
            }
            TrainerMsg::Pump => state.pump(&myself).await,
            TrainerMsg::Crash => panic!("debug_crash requested for trainer"),
        }
        Ok(())
    }
}
