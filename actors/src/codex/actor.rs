//! The codex governor: owns `config/codex.toml` (amendments, commit, hot reload) and keeps every live
//! tunable of `settings.toml` in force as the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::amend::{self, Amendment, AmendmentStatus};
use super::ledger::{ApproveError, Ledger};
use super::{Codex, CodexArgs, CodexMsg};
use crate::events::{unix_now, Event};

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

/// Resumes the paused task an amendment was raised for. In the background: the codex mailbox must not wait
/// on the orchestrator (which may itself be waiting on the codex). While the orchestrator is unreachable (at
/// start it comes up after the codex) it tries again, for up to `wait`.
fn resume(
    orchestrator: Arc<dyn TaskResumer>,
    task_id: String,
    decision: &str,
    guidance: String,
    wait: Duration,
) {
    let decision = decision.to_string();
    // A plain tokio task: it only relays one message, and a failure is logged with the way to recover.
    tokio::spawn(async move {
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
    });
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
        for a in recovered {
            args.hub.publish(Event::AmendmentCommitted {
                id: a.id.clone(),
                diff: a.diff.clone().unwrap_or_default(),
            });
            if let Some(t) = a.task_id.clone() {
                resume(
                    args.tasks.clone(),
                    t,
                    "approved",
                    format!(
                        "The Architect approved amendment {}: {}",
                        a.id, a.proposal.rationale
                    ),
                    Duration::from_millis(live.codex.resume_wait_ms),
                );
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
        let mut state = CodexState {
            args,
            codex: Arc::new(Codex {
                version: 1,
                personas: Default::default(),
            }),
            ledger,
            _watcher: Some(watcher),
        };
        state.codex = Arc::new(codex);
        // A restart must not miss an edit made while it was down.
        if let Some(p) = &state.args.personas {
            p.apply_codex(&state.codex);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CodexMsg>,
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
                    resume(
                        state.args.tasks.clone(),
                        t,
                        "approved",
                        format!(
                            "The Architect approved amendment {id}: {}",
                            a.proposal.rationale
                        ),
                        Duration::from_millis(state.args.live.load().codex.resume_wait_ms),
                    );
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
                    resume(
                        state.args.tasks.clone(),
                        t,
                        "rejected",
                        format!("The Architect rejected amendment {id}: {reason}"),
                        Duration::from_millis(state.args.live.load().codex.resume_wait_ms),
                    );
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
                    state.reload_settings();
                }
            }
            CodexMsg::Crash => panic!("debug_crash requested for codex"),
        }
        Ok(())
    }
}
