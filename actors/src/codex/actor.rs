//! The codex governor: owns `config/codex.toml` (amendments, commit, hot reload) and keeps every live
//! tunable of `settings.toml` in force as the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::amend::{self, Amendment, AmendmentStatus, Proposal};
use super::reload;
use super::Codex;
use crate::events::{unix_now, Event, EventHub};
use crate::llm::Sampling;
use crate::orchestrator::{OrchestratorMsg, ORCHESTRATOR_NAME};
use crate::personas::Personas;
use crate::settings::{LoadedSettings, Settings};

/// Global name of the codex actor.
pub const CODEX_NAME: &str = "codex";

/// Applies a log level directive; returns whether it changed anything.
pub type LogLevelFn = Arc<dyn Fn(&str) -> Result<bool, String> + Send + Sync>;

/// The codex organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct CodexActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct CodexArgs {
    /// `config/codex.toml`.
    pub path: PathBuf,
    /// `config/settings.toml`, watched too (None: no settings reload).
    pub settings_path: Option<PathBuf>,
    /// Where pending amendments are kept (`data_dir/amendments.json`).
    pub store: PathBuf,
    /// Live settings.
    pub live: Arc<ArcSwap<Settings>>,
    /// The personas that receive codex and settings changes.
    pub personas: Option<Arc<Personas>>,
    /// Event bus.
    pub hub: Arc<EventHub>,
    /// Applies a new log level.
    pub log_level: Option<LogLevelFn>,
}

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
}

/// Messages the codex actor handles.
pub enum CodexMsg {
    /// The codex currently in force.
    Get(RpcReplyPort<Arc<Codex>>),
    /// Store a proposal as pending (never applied without approval).
    Propose {
        /// The proposal.
        proposal: Proposal,
        /// The paused task that raised it.
        task_id: Option<String>,
        /// Answer.
        reply: RpcReplyPort<Result<Amendment, CodexCmdError>>,
    },
    /// Every amendment, newest first.
    List(RpcReplyPort<Vec<Amendment>>),
    /// The Architect approves: commit it.
    Approve(String, RpcReplyPort<Result<Amendment, CodexCmdError>>),
    /// The Architect rejects.
    Reject(
        String,
        String,
        RpcReplyPort<Result<Amendment, CodexCmdError>>,
    ),
    /// From the file watcher.
    FilesChanged(Vec<PathBuf>),
    /// Fault injection: panic.
    Crash,
}

/// Codex state.
pub struct CodexState {
    args: CodexArgs,
    codex: Arc<Codex>,
    amendments: Vec<Amendment>,
    _watcher: Option<
        notify_debouncer_full::Debouncer<
            notify_debouncer_full::notify::RecommendedWatcher,
            notify_debouncer_full::RecommendedCache,
        >,
    >,
}

fn load_amendments(path: &Path) -> Vec<Amendment> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(event = "codex.amendments_corrupt", path = %path.display(), error = %e, "amendment store unreadable; set aside");
            let _ = std::fs::rename(path, path.with_extension("corrupt"));
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

impl CodexState {
    fn save(&self) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&self.amendments).map_err(|e| e.to_string())?;
        crate::fsutil::atomic_write(&self.args.store, &bytes).map_err(|e| e.to_string())
    }

    fn pending(&mut self, id: &str) -> Result<usize, CodexCmdError> {
        let i = self
            .amendments
            .iter()
            .position(|a| a.id == id)
            .ok_or_else(|| CodexCmdError::NotFound(id.to_string()))?;
        if self.amendments[i].status != AmendmentStatus::Pending {
            return Err(CodexCmdError::Conflict(format!(
                "amendment {id} is already {:?}",
                self.amendments[i].status
            )));
        }
        Ok(i)
    }

    fn install(&mut self, codex: Codex) {
        if let Some(p) = &self.args.personas {
            p.apply_codex(&codex);
        }
        self.codex = Arc::new(codex);
    }

    fn reload_codex(&mut self) {
        let next = match Codex::load(&self.args.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(event = "codex.reload_rejected", path = %self.args.path.display(), error = %e, "invalid codex edit refused; the last good codex stays in force");
                return;
            }
        };
        if next == *self.codex {
            return;
        }
        let mut changes = Vec::new();
        for (name, entry) in &next.personas {
            if self.codex.personas.get(name) != Some(entry) {
                changes.push(format!("personas.{name}"));
            }
        }
        tracing::info!(event = "codex.reloaded", changes = ?changes, "codex reloaded into the live personas");
        self.install(next);
        self.args.hub.publish(Event::ConfigReloaded {
            file: "codex".into(),
            changes,
        });
    }

    fn reload_settings(&mut self) {
        let Some(path) = self.args.settings_path.clone() else {
            return;
        };
        // Read, compare and store under the lock the daemon's own writes (model swaps) take, so the file and the
        // live settings are compared in one consistent state.
        let live = self.args.live.clone();
        let outcome = crate::settings::with_settings_lock(&path, || {
            let new = LoadedSettings::load(&path)
                .map_err(|e| e.to_string())?
                .settings;
            let r = reload::reconcile(&live.load_full(), &new)?;
            if !r.live.is_empty() {
                live.store(Arc::new(r.effective.clone()));
            }
            Ok::<_, String>(r)
        });
        let r = match outcome.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "settings.reload_rejected", error = %e, "invalid settings edit refused; the running settings stay in force");
                return;
            }
        };
        if !r.restart.is_empty() {
            tracing::warn!(event = "settings.restart_needed", keys = ?r.restart, "these settings take effect only after a restart");
        }
        if r.live.is_empty() {
            return;
        }
        if r.live.iter().any(|k| k == "log.level") {
            if let Some(f) = &self.args.log_level {
                if let Err(e) = f(&r.effective.log.level) {
                    tracing::error!(event = "settings.log_level_rejected", error = %e, "log level unchanged");
                }
            }
        }
        if let Some(p) = &self.args.personas {
            if r.live.iter().any(|k| k.starts_with("llm.")) {
                p.set_sampling(Sampling {
                    temperature: r.effective.llm.temperature,
                    top_p: r.effective.llm.top_p,
                    seed: r.effective.llm.seed,
                    max_tokens: r.effective.llm.max_tokens,
                });
            }
            for key in r
                .live
                .iter()
                .filter(|k| k.starts_with("personas.") && k.ends_with(".model"))
            {
                let persona = key
                    .trim_start_matches("personas.")
                    .trim_end_matches(".model")
                    .to_string();
                let Some(model) = r.effective.personas.get(&persona).map(|s| s.model.clone())
                else {
                    continue;
                };
                let p = p.clone();
                // A changed model name is a cognitive atomic swap, with all its guarantees.
                tokio::spawn(async move {
                    if p.current(&persona)
                        .map(|h| h.model == model)
                        .unwrap_or(false)
                    {
                        return;
                    }
                    if let Err(e) = p.swap_model(&persona, &model).await {
                        tracing::error!(event = "settings.swap_failed", persona = %persona, model = %model, error = %e, "model change from settings.toml not applied");
                    }
                });
            }
        }
        tracing::info!(event = "settings.reloaded", keys = ?r.live, "live settings updated");
        self.args.hub.publish(Event::ConfigReloaded {
            file: "settings".into(),
            changes: r.live,
        });
    }
}

fn resume(task_id: String, decision: &str, guidance: String) {
    let decision = decision.to_string();
    tokio::spawn(async move {
        let Some(cell) = ractor::registry::where_is(ORCHESTRATOR_NAME) else {
            tracing::warn!(event = "codex.resume_failed", task = %task_id, "orchestrator unavailable; resume the task with resume_task");
            return;
        };
        let orch: ActorRef<OrchestratorMsg> = cell.into();
        let r = orch
            .call(
                |reply| OrchestratorMsg::Resume {
                    id: task_id.clone(),
                    decision,
                    guidance: Some(guidance),
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await;
        if !matches!(r, Ok(ractor::rpc::CallResult::Success(Ok(_)))) {
            tracing::warn!(event = "codex.resume_failed", task = %task_id, "the paused task could not be resumed");
        }
    });
}

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
        let amendments = load_amendments(&args.store);
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
            amendments,
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
                };
                state.amendments.push(a.clone());
                if let Err(e) = state.save() {
                    state.amendments.pop();
                    let _ = reply.send(Err(CodexCmdError::Conflict(format!(
                        "cannot store the amendment: {e}"
                    ))));
                    return Ok(());
                }
                tracing::info!(event = "amendment.proposed", id = %a.id, persona = %a.proposal.persona, fields = ?a.proposal.changes.fields(), "codex amendment awaits the Architect");
                state.args.hub.publish(Event::AmendmentProposed {
                    id: a.id.clone(),
                    persona: a.proposal.persona.clone(),
                    rationale: a.proposal.rationale.clone(),
                });
                let _ = reply.send(Ok(a));
            }
            CodexMsg::List(reply) => {
                let mut all = state.amendments.clone();
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
                let proposal = state.amendments[i].proposal.clone();
                let path = state.args.path.clone();
                let keep = state.args.live.load().codex.keep_backups;
                let r = tokio::task::spawn_blocking(move || amend::commit(&path, &proposal, keep))
                    .await
                    .map_err(|e| amend::CommitError(e.to_string()))
                    .and_then(|r| r);
                let committed = match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(event = "amendment.commit_failed", id = %id, error = %e, "commit failed; codex.toml unchanged");
                        let _ = reply.send(Err(CodexCmdError::Conflict(e.to_string())));
                        return Ok(());
                    }
                };
                let a = &mut state.amendments[i];
                a.status = AmendmentStatus::Committed;
                a.decided_at = Some(unix_now());
                a.diff = Some(committed.diff.clone());
                a.backup = Some(committed.backup.clone());
                let a = a.clone();
                if let Err(e) = state.save() {
                    tracing::error!(event = "codex.amendments_write_failed", error = %e, "amendment store not updated");
                }
                state.install(committed.codex);
                tracing::info!(event = "amendment.committed", id = %id, persona = %a.proposal.persona, backup = %committed.backup.display(), "codex amendment committed and live");
                state.args.hub.publish(Event::AmendmentCommitted {
                    id: id.clone(),
                    diff: committed.diff,
                });
                if let Some(t) = a.task_id.clone() {
                    resume(
                        t,
                        "approved",
                        format!(
                            "The Architect approved amendment {id}: {}",
                            a.proposal.rationale
                        ),
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
                let a = &mut state.amendments[i];
                a.status = AmendmentStatus::Rejected;
                a.decided_at = Some(unix_now());
                a.reason = Some(reason.clone());
                let a = a.clone();
                if let Err(e) = state.save() {
                    tracing::error!(event = "codex.amendments_write_failed", error = %e, "amendment store not updated");
                }
                tracing::info!(event = "amendment.rejected", id = %id, reason = %reason, "codex amendment rejected");
                state.args.hub.publish(Event::AmendmentRejected {
                    id: id.clone(),
                    reason: reason.clone(),
                });
                if let Some(t) = a.task_id.clone() {
                    resume(
                        t,
                        "rejected",
                        format!("The Architect rejected amendment {id}: {reason}"),
                    );
                }
                let _ = reply.send(Ok(a));
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
