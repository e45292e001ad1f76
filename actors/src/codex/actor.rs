//! The codex governor: owns `config/codex.toml` (amendments, commit, hot reload) and keeps every live
//! tunable of `settings.toml` in force as the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::amend::{self, Amendment, AmendmentStatus};
use super::ledger::{ApproveError, Ledger};
use super::{Codex, CodexArgs, CodexMsg};
use crate::events::{unix_now, Event};
use crate::job::Jobs;

use crate::ports::{PortError, TaskResumer};
use crate::settings::Settings;

/// Global name of the codex actor.
pub const CODEX_NAME: &str = "codex";

/// The codex organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct CodexActor;

/// Why a codex command was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CodexCmdError {
    /// No such amendment.
    #[error("no amendment with id `{0}`")]
    NotFound(String),
    /// Not pending, or the commit failed.
    #[error("{0}")]
    Conflict(String),
    /// The proposal is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A file the organ owns could not be written.
    #[error("cannot write settings.toml: {0}")]
    Write(String),
}

/// Codex state.
pub struct CodexState {
    pub(super) args: CodexArgs,
    pub(super) codex: Arc<Codex>,
    ledger: Ledger,
    /// Work the codex hands to other organs without waiting in its mailbox: resumes of paused tasks and model
    /// swaps asked for by a settings edit.
    pub(super) jobs: Jobs,
    _watcher: Option<
        notify_debouncer_full::Debouncer<
            notify_debouncer_full::notify::RecommendedWatcher,
            notify_debouncer_full::RecommendedCache,
        >,
    >,
}

impl CodexState {
    fn save(&mut self) -> Result<(), String> {
        let keep = self.args.live.load().codex.keep_decided_amendments;
        self.ledger.save(keep)
    }

    fn pending(&mut self, id: &str) -> Result<usize, CodexCmdError> {
        let i = self
            .ledger
            .amendments
            .iter()
            .position(|a| a.id == id)
            .ok_or_else(|| CodexCmdError::NotFound(id.to_string()))?;
        if self.ledger.amendments[i].status != AmendmentStatus::Pending {
            return Err(CodexCmdError::Conflict(format!(
                "amendment {id} is already {:?}",
                self.ledger.amendments[i].status
            )));
        }
        Ok(i)
    }

    pub(super) fn install(&mut self, codex: Codex) {
        if let Some(p) = &self.args.personas {
            p.apply_codex(&codex);
        }
        self.codex = Arc::new(codex);
    }
}

/// Puts `model` in the live settings of `persona`.
pub(super) fn set_model(live: &ArcSwap<Settings>, persona: &str, model: &str) {
    live.rcu(|s| {
        let mut s = (**s).clone();
        if let Some(ps) = s.personas.get_mut(persona) {
            ps.model = model.to_string();
        }
        s
    });
}

/// Resumes the paused task an amendment was raised for, as a supervised job of the codex
/// (`root/codex/resume/<task>`): the codex mailbox must not wait on the orchestrator (which may itself be
/// waiting on the codex). While the orchestrator is unreachable (at start it comes up after the codex) it
/// tries again, for up to `wait`; a failure is logged with the way to recover.
fn resume_work(
    orchestrator: Arc<dyn TaskResumer>,
    task_id: String,
    decision: &str,
    guidance: String,
    wait: Duration,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let decision = decision.to_string();
    async move {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let r = orchestrator
                .resume(task_id.clone(), decision.clone(), Some(guidance.clone()))
                .await;
            match r {
                Err(PortError::Unreachable(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait / RESUME_TRIES).await;
                }
                Err(e) => {
                    tracing::warn!(event = "codex.resume_failed", task = %task_id, error = %e, "the paused task could not be resumed; resume it with resume_task");
                    return;
                }
                Ok(_) => return,
            }
        }
    }
}

impl CodexState {
    /// Starts [`resume_work`] as a job of the codex.
    async fn resume(
        &mut self,
        myself: &ActorCell,
        task_id: String,
        decision: &str,
        guidance: String,
    ) {
        let wait = Duration::from_millis(self.args.live.load().codex.resume_wait_ms);
        let work = resume_work(
            self.args.tasks.clone(),
            task_id.clone(),
            decision,
            guidance,
            wait,
        );
        if let Err(e) = self
            .jobs
            .spawn(myself, format!("resume/{task_id}"), work)
            .await
        {
            tracing::warn!(event = "codex.resume_failed", task = %task_id, error = %e, "the paused task could not be resumed; resume it with resume_task");
        }
    }
}

/// How many times, spread over `codex.resume_wait_ms`, a resume is tried while the orchestrator is away.
const RESUME_TRIES: u32 = 20;

impl Actor for CodexActor {
    type Msg = CodexMsg;
    type State = CodexState;
    type Arguments = CodexArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CodexMsg>,
        args: CodexArgs,
    ) -> Result<CodexState, ActorProcessingErr> {
        let codex = Codex::load(&args.path)?;
        let mut ledger = Ledger::load(&args.store);
        let live = args.live.load();
        let recovered = ledger.recover(&codex, live.codex.keep_decided_amendments);
        let mut resumes = Vec::new();
        for a in recovered {
            args.hub.publish(Event::AmendmentCommitted {
                id: a.id.clone(),
                diff: a.diff.clone().unwrap_or_default(),
            });
            if let Some(t) = a.task_id.clone() {
                let why = format!(
                    "The Architect approved amendment {}: {}",
                    a.id, a.proposal.rationale
                );
                resumes.push((t, why));
            }
        }
        let debounce = Duration::from_millis(args.live.load().codex.reload_debounce_ms);
        let me = myself.clone();
        let mut watcher = notify_debouncer_full::new_debouncer(
            debounce,
            None,
            move |r: notify_debouncer_full::DebounceEventResult| {
                if let Ok(events) = r {
                    let paths: Vec<PathBuf> = events.iter().flat_map(|e| e.paths.clone()).collect();
                    if !paths.is_empty() {
                        let _ = me.cast(CodexMsg::FilesChanged(paths));
                    }
                }
            },
        )?;
        // Watch the directories: editors and atomic writes replace the file, which a file watch would lose.
        let mut dirs: Vec<PathBuf> = vec![args
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()];
        if let Some(s) = args.settings_path.as_ref().and_then(|p| p.parent()) {
            if !dirs.iter().any(|d| d == s) {
                dirs.push(s.to_path_buf());
            }
        }
        for d in &dirs {
            watcher.watch(d, RecursiveMode::NonRecursive)?;
        }
        let jobs = Jobs::new(format!("root/{CODEX_NAME}"), args.hub.clone());
        let mut state = CodexState {
            args,
            codex: Arc::new(Codex {
                version: 1,
                personas: Default::default(),
            }),
            ledger,
            jobs,
            _watcher: Some(watcher),
        };
        state.codex = Arc::new(codex);
        // A restart must not miss an edit made while it was down.
        if let Some(p) = &state.args.personas {
            p.apply_codex(&state.codex);
        }
        for (task, why) in resumes {
            state
                .resume(&myself.get_cell(), task, "approved", why)
                .await;
        }
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<CodexMsg>,
        event: SupervisionEvent,
        state: &mut CodexState,
    ) -> Result<(), ActorProcessingErr> {
        // A job that failed is published as `actor.failed` here; each logs its own outcome, and nothing
        // waits on it, so the codex carries on.
        let _ = state.jobs.supervise(&event);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<CodexMsg>,
        msg: CodexMsg,
        state: &mut CodexState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CodexMsg::Get(reply) => {
                let _ = reply.send(state.codex.clone());
            }
            CodexMsg::Propose {
                proposal,
                task_id,
                reply,
            } => {
                if let Err(e) = amend::validate(&state.codex, &proposal) {
                    let _ = reply.send(Err(CodexCmdError::Invalid(e.to_string())));
                    return Ok(());
                }
                let a = Amendment {
                    id: uuid::Uuid::new_v4().simple().to_string(),
                    proposal,
                    status: AmendmentStatus::Pending,
                    task_id,
                    created_at: unix_now(),
                    decided_at: None,
                    reason: None,
                    diff: None,
                    backup: None,
                    approving: None,
                };
                state.ledger.amendments.push(a.clone());
                if let Err(e) = state.save() {
                    state.ledger.amendments.pop();
                    let _ = reply.send(Err(CodexCmdError::Conflict(format!(
                        "cannot store the amendment: {e}"
                    ))));
                    return Ok(());
                }
                state.args.hub.publish(Event::AmendmentProposed {
                    id: a.id.clone(),
                    persona: a.proposal.persona.clone(),
                    rationale: a.proposal.rationale.clone(),
                });
                let _ = reply.send(Ok(a));
            }
            CodexMsg::List(reply) => {
                let mut all = state.ledger.amendments.clone();
                all.reverse();
                let _ = reply.send(all);
            }
            CodexMsg::Approve(id, reply) => {
                let i = match state.pending(&id) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let path = state.args.path.clone();
                let live = state.args.live.load();
                let (keep_backups, keep_decided) =
                    (live.codex.keep_backups, live.codex.keep_decided_amendments);
                // The ledger travels into the blocking task and back: the approval writes two files under a lock.
                let mut ledger = std::mem::take(&mut state.ledger);
                let store = state.args.store.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let r = ledger.approve(i, &path, keep_backups, keep_decided);
                    (ledger, r)
                })
                .await;
                let committed = match r {
                    Ok((ledger, r)) => {
                        state.ledger = ledger;
                        r
                    }
                    Err(e) => {
                        // The blocking task died: the files are the truth, settled as at a start.
                        state.ledger = Ledger::load(&store);
                        if let Ok(codex) = Codex::load(&state.args.path) {
                            state.ledger.recover(&codex, keep_decided);
                            state.install(codex);
                        }
                        Err(ApproveError::Ledger(e.to_string()))
                    }
                };
                let (a, committed) = match committed {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(event = "amendment.commit_failed", id = %id, error = %e, "commit failed; codex.toml unchanged");
                        let _ = reply.send(Err(CodexCmdError::Conflict(e.to_string())));
                        return Ok(());
                    }
                };
                state.install(committed.codex);
                state.args.hub.publish(Event::AmendmentCommitted {
                    id: id.clone(),
                    diff: committed.diff,
                });
                if let Some(t) = a.task_id.clone() {
                    let why = format!(
                        "The Architect approved amendment {id}: {}",
                        a.proposal.rationale
                    );
                    state.resume(&myself.get_cell(), t, "approved", why).await;
                }
                let _ = reply.send(Ok(a));
            }
            CodexMsg::Reject(id, reason, reply) => {
                let i = match state.pending(&id) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let a = &mut state.ledger.amendments[i];
                a.status = AmendmentStatus::Rejected;
                a.decided_at = Some(unix_now());
                a.reason = Some(reason.clone());
                let a = a.clone();
                if let Err(e) = state.save() {
                    tracing::error!(event = "codex.amendments_write_failed", error = %e, "amendment store not updated");
                }
                state.args.hub.publish(Event::AmendmentRejected {
                    id: id.clone(),
                    reason: reason.clone(),
                });
                if let Some(t) = a.task_id.clone() {
                    let why = format!("The Architect rejected amendment {id}: {reason}");
                    state.resume(&myself.get_cell(), t, "rejected", why).await;
                }
                let _ = reply.send(Ok(a));
            }
            CodexMsg::RecordModel {
                persona,
                model,
                reply,
            } => {
                let _ = reply.send(state.record_model(persona, model).await);
            }
            CodexMsg::FilesChanged(paths) => {
                let name_of = |p: &Path| p.file_name().map(|n| n.to_os_string());
                let codex_name = name_of(&state.args.path);
                let settings_name = state.args.settings_path.as_deref().and_then(name_of);
                if paths.iter().any(|p| name_of(p) == codex_name) {
                    state.reload_codex();
                }
                if settings_name.is_some() && paths.iter().any(|p| name_of(p) == settings_name) {
                    state.reload_settings(&myself.get_cell()).await;
                }
            }
            CodexMsg::Crash => panic!("debug_crash requested for codex"),
        }
        Ok(())
    }
}
