//! The Socratic Contrapunto: nodes and conditional edges as code over a [`TaskState`].
//!
//! ```text
//! route (ALFRED) ──needs research──▶ research (BABS) ──▶ draft (BRICK, tools) ──▶ critique (ROBIN)
//!        └───────────────────────────────────────────────▲   │  ▲ capability gap        │
//!                                                        │   ▼  │                       │ dissonance > threshold
//!                                                        │ toolforge                    │ and iterations left
//!                                                        └──────────────────────────────┘
//! critique ──persistently ≥ inquiry threshold──▶ inquiry ──(pause: a human decides)──▶ synthesize (ALFRED)
//! critique ──otherwise──▶ synthesize ──▶ done
//! ```
//!
//! Files: this one runs the loop; `nodes.rs` holds the nodes and edges; `tool_calls.rs` tools and Commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use batos_protocol::truncate;
use serde_json::Value;

use super::{
    CheckpointStore, Claim, Cognition, CuratorHook, Exchange, MemoryHook, Node, PortError,
    SaveError, StepRecord, TaskState, TaskStatus,
};
use crate::ask::AskError;
use crate::events::Event;
use crate::llm::{ChatMessage, Role};
use crate::personas::{PersonaError, PersonaHandle, PersonaMap, ThinkRequest, Thought};

mod direct;
mod nodes;
mod tool_calls;

pub use nodes::{after_critique, critique_schema, route_schema};
pub use tool_calls::{apply_command, MAX_COMMAND_TEXT};

/// Longest step summary kept in events and the step history.
const SUMMARY_BYTES: usize = 240;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Done or failed.
    Finished,
    /// Waiting for a human.
    Paused,
}

/// What one node did.
struct StepOut {
    persona: String,
    model: String,
    backend: String,
    dissonance: Option<f64>,
    summary: String,
    next: Node,
    finish: Option<crate::llm::Finish>,
}

impl StepOut {
    fn from_thought(t: &Thought, summary: &str, next: Node) -> Self {
        StepOut {
            persona: t.persona.clone(),
            model: t.model.clone(),
            // A worker node's call says where it ran (`ollama@gpu-1`), so the step record shows it.
            backend: t
                .response
                .host
                .clone()
                .unwrap_or_else(|| t.backend.to_string()),
            dissonance: None,
            summary: truncate(summary.trim(), SUMMARY_BYTES).to_string(),
            next,
            finish: Some(t.response.finish),
        }
    }
}

/// Runs one task through the graph with one persona snapshot.
pub struct Runner {
    cog: Arc<Cognition>,
    personas: Arc<PersonaMap>,
    /// This run's right to write the task's checkpoints; once revoked, the run stops without publishing.
    claim: Claim,
    /// The current step's model calls, moved into `TaskState::exchanges` once the step is recorded.
    pending: Vec<Exchange>,
    /// Tokens the current step's model calls used (prompt + completion).
    step_tokens: u64,
}

impl Runner {
    /// A runner over `personas`, the registry snapshot this task holds for its whole life, writing under
    /// `claim` (from [`CheckpointStore::claim`]).
    pub fn new(cog: Arc<Cognition>, personas: Arc<PersonaMap>, claim: Claim) -> Self {
        Self {
            cog,
            personas,
            claim,
            pending: Vec::new(),
            step_tokens: 0,
        }
    }

    /// Runs from `task.next` until the task finishes or pauses. After every step the state is checkpointed
    /// and handed to `on_step`.
    pub async fn run(
        &mut self,
        task: &mut TaskState,
        mut on_step: impl FnMut(&TaskState),
    ) -> RunEnd {
        task.status = TaskStatus::Running;
        if let Some(end) = self.checkpoint_or_end(task) {
            return end;
        }
        self.cog.hub.publish(Event::TaskStatus {
            id: task.id.clone(),
            status: TaskStatus::Running,
        });
        loop {
            let settings = self.cog.settings.load().orchestrator.clone();
            let node = task.next;
            match node {
                Node::Done => return self.finish(task, Ok(())),
                Node::AwaitDecision => {
                    task.status = TaskStatus::Paused;
                    if let Some(end) = self.checkpoint_or_end(task) {
                        return end;
                    }
                    return RunEnd::Paused;
                }
                _ => {}
            }
            if task.steps.len() as u32 >= settings.max_steps {
                let e = format!(
                    "the task exceeded orchestrator.max_steps ({})",
                    settings.max_steps
                );
                return self.finish(task, Err(e));
            }
            let started = Instant::now();
            self.pending.clear();
            self.step_tokens = 0;
            let out = match node {
                Node::Route => self.route(task).await,
                Node::Research => self.research(task).await,
                Node::Draft => self.draft(task, &settings).await,
                Node::Critique => self.critique(task, &settings).await,
                Node::ToolForge => self.toolforge(task).await,
                Node::Inquiry => self.inquiry(task).await,
                Node::Synthesize => self.synthesize(task).await,
                Node::AwaitDecision | Node::Done => unreachable!("handled above"),
            };
            let out = match out {
                Ok(o) => o,
                Err(e) => return self.finish(task, Err(format!("{node} step failed: {e}"))),
            };
            let record = StepRecord {
                step: task.steps.len() as u32 + 1,
                node,
                persona: out.persona.clone(),
                model: out.model.clone(),
                backend: out.backend.clone(),
                dissonance: out.dissonance,
                duration_ms: started.elapsed().as_millis() as u64,
                summary: out.summary.clone(),
                finish: out.finish,
                tokens: self.step_tokens,
            };
            task.steps.push(record.clone());
            for mut x in self.pending.drain(..) {
                x.step = record.step;
                x.node = node;
                task.exchanges.push(x);
            }
            task.next = out.next;
            // Durable before visible: a client that saw task.step can rely on it surviving a crash. A step that
            // cannot be recorded is not published: the task stops as failed, with the reason.
            if let Some(end) = self.checkpoint_or_end(task) {
                return end;
            }
            self.cog.hub.publish(Event::TaskStep {
                id: task.id.clone(),
                step: record.step,
                node: node.to_string(),
                persona: record.persona,
                model: record.model,
                backend: record.backend,
                dissonance: record.dissonance,
                duration_ms: record.duration_ms,
                summary: record.summary,
                tokens: record.tokens,
            });
            if node == Node::Inquiry {
                self.cog.hub.publish(Event::TaskPaused {
                    id: task.id.clone(),
                    reason: task
                        .inquiry
                        .as_ref()
                        .map(|i| i.reason.clone())
                        .unwrap_or_default(),
                });
            }
            on_step(task);
        }
    }

    /// Checkpoints `task`. `None` when it is durable and the run goes on; otherwise how the run ends: quietly
    /// if the task was ended from outside (a cancel won the race), or failed with the write error.
    fn checkpoint_or_end(&self, task: &mut TaskState) -> Option<RunEnd> {
        match self.cog.store.save_claimed(task, self.claim) {
            Ok(()) => None,
            Err(SaveError::Ended) => Some(RunEnd::Finished),
            Err(SaveError::Io(e)) => Some(self.finish(
                task,
                Err(format!("the task's checkpoint cannot be written: {e}")),
            )),
        }
    }

    /// Ends the run: done (checkpointed, then published, then stored in memory) or failed. A done task whose
    /// final checkpoint cannot be written is failed instead: nothing is announced that a restart would undo.
    fn finish(&self, task: &mut TaskState, result: Result<(), String>) -> RunEnd {
        let result = match result {
            Ok(()) => {
                task.status = TaskStatus::Done;
                task.next = Node::Done;
                match self.cog.store.save_claimed(task, self.claim) {
                    Ok(()) => Ok(()),
                    Err(SaveError::Ended) => return RunEnd::Finished,
                    Err(SaveError::Io(e)) => Err(format!(
                        "the task's final checkpoint cannot be written: {e}"
                    )),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.cog.hub.publish(Event::TaskDone {
                    id: task.id.clone(),
                    result: task.result.clone().unwrap_or_default(),
                });
            }
            Err(e) => {
                task.status = TaskStatus::Failed;
                task.error = Some(e.clone());
                match self.cog.store.save_claimed(task, self.claim) {
                    Err(SaveError::Ended) => return RunEnd::Finished,
                    // Failing anyway: the reason says why; a restart resumes from the last durable step.
                    Err(SaveError::Io(w)) => {
                        tracing::error!(event = "checkpoint.write_failed", task = %task.id, error = %w, "failure not recorded on disk")
                    }
                    Ok(()) => {}
                }
                self.cog.hub.publish(Event::TaskFailed {
                    id: task.id.clone(),
                    error: e,
                });
            }
        }
        RunEnd::Finished
    }

    /// One model call by `persona`, through the task's registry snapshot. If that actor died (crash and
    /// restart) the current actor is used instead, but only when it thinks with the same model, so a task
    /// never mixes models.
    async fn think(
        &mut self,
        task_id: &str,
        persona: &str,
        req: ThinkRequest,
    ) -> Result<Thought, String> {
        let handle = self
            .personas
            .get(persona)
            .cloned()
            .ok_or_else(|| format!("no persona {persona} in the registry"))?;
        let timeout = self.cog.personas.call_timeout();
        let stream = req.tokens.is_some();
        let mut req = req;
        if stream {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            req.tokens = Some(tx);
            let hub = self.cog.hub.clone();
            let (id, p) = (task_id.to_string(), persona.to_string());
            // A plain tokio task: it only relays streamed text to the bus and ends when the sender drops.
            tokio::spawn(async move {
                while let Some(text) = rx.recv().await {
                    hub.publish(Event::TaskToken {
                        id: id.clone(),
                        persona: p.clone(),
                        text,
                    });
                }
            });
        }
        let s = self.cog.settings.load().orchestrator.clone();
        let outwait = Duration::from_millis(s.persona_outwait_ms);
        let mut backoff = Duration::from_millis(s.persona_retry_backoff_ms);
        let mut handle = handle;
        let mut retries = 0u32;
        let mut lost_since: Option<Instant> = None;
        loop {
            match handle.think(req.clone(), timeout).await {
                // The call died with the persona (or with its model-call job): retry on the generation that
                // replaces it, again after each further loss, until the outwait from the first loss has passed
                // (a crash storm is outwaited, not counted), but only on the same model, so a task never mixes
                // models.
                Err(PersonaError::Unreachable {
                    source: AskError::Stopped { .. },
                    ..
                }) => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    let out = || {
                        format!(
                            "{persona} crashed under this call {} time(s) and did not answer within \
                             orchestrator.persona_outwait_ms ({} ms)",
                            retries + 1,
                            s.persona_outwait_ms
                        )
                    };
                    if outwait.saturating_sub(since.elapsed()).is_zero() {
                        return Err(out());
                    }
                    if retries > 0 {
                        let left = outwait.saturating_sub(since.elapsed());
                        tokio::time::sleep(backoff.min(left)).await;
                        backoff = (backoff * 2)
                            .min(Duration::from_millis(s.persona_retry_backoff_max_ms));
                    }
                    let left = outwait.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(out());
                    }
                    retries += 1;
                    let current = self.successor(persona, &handle, left).await?;
                    if current.model != handle.model {
                        return Err(format!(
                            "{persona}'s actor for model {} is gone and the persona now uses {}",
                            handle.model, current.model
                        ));
                    }
                    tracing::warn!(event = "task.persona_retry", task = %task_id, persona, retry = retries, generation = current.generation, "persona call lost; retrying on the live generation");
                    Arc::make_mut(&mut self.personas).insert(persona.to_string(), current.clone());
                    handle = current;
                }
                Ok(t) => {
                    self.step_tokens += t.response.prompt_tokens + t.response.completion_tokens;
                    if !t.response.content.trim().is_empty() {
                        let mut messages = Vec::with_capacity(req.messages.len() + 1);
                        messages.push(ChatMessage::new(Role::System, t.system.clone()));
                        messages.extend(req.messages.iter().cloned());
                        self.pending.push(Exchange {
                            step: 0,
                            node: Node::Done,
                            persona: t.persona.clone(),
                            model: t.model.clone(),
                            generation: t.generation,
                            messages,
                            answer: t.response.content.clone(),
                            finish: t.response.finish,
                            tools: req.tools.clone(),
                        });
                    }
                    return Ok(t);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The handle to retry a lost call on: `lost` itself when its actor still runs (only the call's job
    /// died), else the next generation once the supervisor has started it, waiting at most `wait`.
    async fn successor(
        &self,
        persona: &str,
        lost: &Arc<PersonaHandle>,
        wait: Duration,
    ) -> Result<Arc<PersonaHandle>, String> {
        let deadline = Instant::now() + wait;
        loop {
            if lost.is_alive() {
                return Ok(lost.clone());
            }
            if let Ok(current) = self.cog.personas.current(persona) {
                if current.generation != lost.generation && current.is_alive() {
                    return Ok(current);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{persona} crashed mid-call and did not come back within {} ms",
                    wait.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn brief(task: &TaskState) -> String {
        let mut s = format!("Task from the Architect:\n{}\n", task.text);
        if let Some(plan) = &task.plan {
            s.push_str(&format!("\nALFRED's plan:\n{plan}\n"));
        }
        if let Some(ctx) = &task.context {
            // Quoted line by line: notes drawn from memory are what was remembered, never the prompt's own
            // words (issue 32), and a line of them cannot pose as a section of this brief.
            s.push_str("\nBABS's research notes (quoted):\n");
            for line in ctx.lines().filter(|l| !l.trim().is_empty()) {
                s.push_str(&format!("> {}\n", line.trim()));
            }
        }
        if !task.notes.is_empty() {
            s.push_str("\nNotes:\n");
            for n in &task.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        if let Some(g) = task.inquiry.as_ref().and_then(|i| i.guidance.as_ref()) {
            s.push_str(&format!("\nThe Architect's guidance:\n{g}\n"));
        }
        s
    }
}

/// Where a finished task goes after its run: memory and the Curator, and the checkpoint that records both.
#[derive(Clone)]
pub struct Settle {
    /// Long-term memory (done tasks).
    pub memory: Option<Arc<dyn MemoryHook>>,
    /// The Curator (done and failed tasks).
    pub curator: Option<Arc<dyn CuratorHook>>,
    /// Where `remembered` and `curated` are recorded.
    pub store: CheckpointStore,
    /// Tries of a hand-over while its organ does not answer (`orchestrator.settle_tries`).
    pub tries: u32,
    /// Pause between them (`orchestrator.settle_retry_ms`).
    pub wait: Duration,
}

impl Settle {
    /// The hooks and retry settings of `cog`, as now in force.
    pub fn new(cog: &Cognition) -> Self {
        let s = cog.settings.load();
        Settle {
            memory: cog.memory.clone(),
            curator: cog.curator.clone(),
            store: cog.store.clone(),
            tries: s.orchestrator.settle_tries,
            wait: Duration::from_millis(s.orchestrator.settle_retry_ms),
        }
    }

    /// Whether `task` still has somewhere to go.
    pub fn wanted(&self, task: &TaskState) -> bool {
        let remember = remembers(task) && !task.remembered && self.memory.is_some();
        let curate = curates(task) && !task.curated && self.curator.is_some();
        remember || curate
    }
}

/// Whether a finished task goes to memory: a done task, unless it is an exam's question (an exam teaches
/// facts as a person would, and those are remembered; its questions never are, so taking an exam does not
/// change what the next exam finds).
pub fn remembers(task: &TaskState) -> bool {
    task.status == TaskStatus::Done && task.exam().is_none_or(|e| e.teach)
}

/// Whether a finished task goes to the Curator: a done or failed task that is not an exam's (exam answers
/// are measured, never learned from).
pub fn curates(task: &TaskState) -> bool {
    matches!(task.status, TaskStatus::Done | TaskStatus::Failed) && task.exam().is_none()
}

/// Stores a done task's exchange in memory (idempotently) and hands a finished task to the Curator (which
/// ignores exchanges it has decided already), then records in its checkpoint what was done. Either failing
/// is logged and retried at the next start.
pub async fn settle(hooks: Settle, mut task: TaskState) {
    let mut changed = false;
    if let Some(memory) = hooks.memory.as_ref() {
        if remembers(&task) && !task.remembered {
            match retry_unreachable(&hooks, || memory.ingest(&task)).await {
                Ok(()) => (task.remembered, changed) = (true, true),
                Err(e) => {
                    tracing::warn!(event = "memory.ingest_failed", task = %task.id, error = %e, "task not stored in memory; retried at the next start")
                }
            }
        }
    }
    if let Some(curator) = hooks.curator.as_ref() {
        if curates(&task) && !task.curated {
            match retry_unreachable(&hooks, || curator.curate(&task)).await {
                Ok(()) => (task.curated, changed) = (true, true),
                Err(e) => {
                    tracing::warn!(event = "curator.handover_failed", task = %task.id, error = %e, "task not handed to the Curator; retried at the next start")
                }
            }
        }
    }
    if changed {
        if let Err(e) = hooks.store.save(&task) {
            tracing::warn!(event = "checkpoint.write_failed", task = %task.id, error = %e, "memory/curator hand-over done but not recorded; repeated (idempotently) at the next start");
        }
        // The task table's copy follows (a fire-and-forget note: an orchestrator restarting meanwhile reads
        // the checkpoint instead).
        let _ = crate::ask::tell(
            "orchestrator",
            super::ORCHESTRATOR_NAME,
            super::OrchestratorMsg::Settled {
                id: task.id.clone(),
                remembered: task.remembered,
                curated: task.curated,
            },
        );
    }
}

/// Runs a hand-over, again while its organ does not answer (a restart takes a moment), at most
/// `hooks.tries` times; a refusal is final at once.
async fn retry_unreachable<F, Fut>(hooks: &Settle, mut call: F) -> Result<(), PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), PortError>>,
{
    let mut tried = 1;
    loop {
        match call().await {
            Err(PortError::Unreachable(_)) if tried < hooks.tries => {
                tried += 1;
                tokio::time::sleep(hooks.wait).await;
            }
            other => return other,
        }
    }
}

fn request(prompt: String, format: Option<Value>, stream: bool) -> ThinkRequest {
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    ThinkRequest {
        messages: if prompt.is_empty() {
            Vec::new()
        } else {
            vec![ChatMessage::new(Role::User, prompt)]
        },
        tools: Vec::new(),
        format,
        // A placeholder sender marks "stream this"; `think` replaces it with one wired to the event bus.
        tokens: stream.then_some(tx),
        sample: 0,
    }
}
