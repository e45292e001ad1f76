//! Events of protocol v1: what happens in batos, typed, with the body that carries it on the wire.
//!
//! The event channel is a PUB socket; frame 1 is the topic (equal to the event's `kind`), frame 2 the
//! msgpack [`EventBody`]. Sequence numbers are assigned by the daemon's event hub, never here.

mod body;
mod kind;

pub use body::{encode_body, unix_now};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::TaskStatus;

/// Bytes of free text (a tool's error, a question) an event quotes at most; the rest is cut on a char
/// boundary. Events are broadcast to every subscriber: a long text belongs in the record it comes from.
pub const EVENT_TEXT_BYTES: usize = 500;

/// An event body on the event channel (frame 2; frame 1 is the topic, equal to `kind`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventBody {
    /// Protocol version: always [`crate::wire::PROTOCOL_VERSION`] (1) as this crate encodes it.
    pub v: u32,
    /// Sequence number: +1 per event; heartbeats carry the current value without incrementing it.
    pub seq: u64,
    /// Unix seconds when the body was encoded, to the microsecond ([`unix_now`]).
    pub ts: f64,
    /// Event kind, e.g. `task.step`.
    pub kind: String,
    /// Kind-specific payload.
    pub data: Value,
}

/// Everything that happens in batos that a client may want to see.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "data")]
pub enum Event {
    /// An actor started (first start or restart).
    #[serde(rename = "actor.started")]
    ActorStarted {
        /// Path in the tree, e.g. `root/personas/BRICK`.
        actor: String,
        /// Restarts under its current supervisor: 0 on a first start (a restart is announced as
        /// `actor.restarted` instead).
        restarts: u32,
    },
    /// An actor failed (panic or error); its supervisor decides what happens next.
    #[serde(rename = "actor.failed")]
    ActorFailed {
        /// Path in the tree.
        actor: String,
        /// The panic or error text.
        reason: String,
    },
    /// A supervisor restarted a child.
    #[serde(rename = "actor.restarted")]
    ActorRestarted {
        /// Path in the tree.
        actor: String,
        /// Restarts so far, this one included.
        restarts: u32,
        /// Why it had to restart.
        reason: String,
    },
    /// A supervisor exceeded its restart intensity, stopped its children and escalated to its parent.
    #[serde(rename = "actor.escalated")]
    ActorEscalated {
        /// The supervisor that gave up.
        supervisor: String,
        /// The failure that tipped it over.
        reason: String,
    },
    /// An actor stopped for good (shutdown, temporary child, retired persona).
    #[serde(rename = "actor.stopped")]
    ActorStopped {
        /// Path in the tree.
        actor: String,
        /// Why.
        reason: String,
    },
    /// A task was accepted.
    #[serde(rename = "task.submitted")]
    TaskSubmitted {
        /// Task id: 32 lowercase hex chars (a UUID v4 without dashes), assigned at submit; it keys every
        /// later `task.*` event of this task.
        id: String,
        /// The Architect's request, in full (at most `orchestrator.max_task_bytes`).
        text: String,
        /// The Motivator's goal the task runs; absent for a person's task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        goal: Option<String>,
        /// The exam run the task belongs to (a question or a taught fact); absent for a person's task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exam: Option<String>,
    },
    /// A task changed status (queued, running, paused, ...).
    #[serde(rename = "task.status")]
    TaskStatus {
        /// Task id (as in `task.submitted`).
        id: String,
        /// `running` as a run starts, `queued` after a resume, or any status per task reloaded from its
        /// checkpoint when the orchestrator (re)starts; paused/done/failed/cancelled have their own kinds.
        status: TaskStatus,
    },
    /// A task completed one step of the cognition graph.
    #[serde(rename = "task.step")]
    TaskStep {
        /// Task id (as in `task.submitted`).
        id: String,
        /// 1-based step number: the task's completed steps, this one included.
        step: u32,
        /// Node that ran: `route`, `research`, `draft`, `critique`, `toolforge`, `inquiry` or `synthesize`.
        node: String,
        /// Persona whose step it was (`ALFRED`, `BABS`, `BRICK` or `ROBIN`).
        persona: String,
        /// Model the persona thought with; `""` when the step called no model (e.g. a failed ToolForge run).
        model: String,
        /// Backend that served the model.
        backend: String,
        /// ROBIN's dissonance score, when this step produced one.
        dissonance: Option<f64>,
        /// Wall time of the step.
        duration_ms: u64,
        /// Short text of what the step produced.
        summary: String,
        /// Tokens the step's model calls evaluated and generated (prompt + completion, as the backend
        /// reported them); 0 for a step without a model call. The Motivator charges its goals with these.
        #[serde(default)]
        tokens: u64,
    },
    /// Streamed model output of a task's current step.
    #[serde(rename = "task.token")]
    TaskToken {
        /// Task id (as in `task.submitted`).
        id: String,
        /// Persona whose model output this is (`BRICK` drafting, `ALFRED` synthesising).
        persona: String,
        /// Next fragment of the output as the backend streamed it; in seq order the fragments rebuild the
        /// whole output.
        text: String,
    },
    /// A task paused at the philosophical-inquiry interrupt, awaiting a human.
    #[serde(rename = "task.paused")]
    TaskPaused {
        /// Task id (as in `task.submitted`).
        id: String,
        /// Why it paused.
        reason: String,
    },
    /// A task finished with an answer.
    #[serde(rename = "task.done")]
    TaskDone {
        /// Task id (as in `task.submitted`).
        id: String,
        /// ALFRED's answer from the `synthesize` step, in full.
        result: String,
    },
    /// A task failed.
    #[serde(rename = "task.failed")]
    TaskFailed {
        /// Task id (as in `task.submitted`).
        id: String,
        /// Why, in words (e.g. a failed step and its error, `orchestrator.max_steps` exceeded, a crash).
        error: String,
    },
    /// A task was cancelled.
    #[serde(rename = "task.cancelled")]
    TaskCancelled {
        /// Task id (as in `task.submitted`).
        id: String,
    },
    /// A persona's live state (after start, surgery, reload or swap).
    #[serde(rename = "persona.state")]
    PersonaState {
        /// Persona name, case-sensitive: `ALFRED`, `BABS`, `BRICK` or `ROBIN`.
        persona: String,
        /// Model the persona now thinks with (e.g. `smollm2:135m`, or `lora:<adapter.gguf>` when embedded).
        model: String,
        /// `"ollama"` or `"embedded"` (llama.cpp in-process).
        backend: String,
        /// Editable fields and their values.
        state: Value,
    },
    /// A worker node authenticated with the cookie and joined the home (issue 30).
    #[serde(rename = "node.joined")]
    NodeJoined {
        /// The node's name (`[cluster] node_name` on the worker).
        node: String,
        /// Its address as the home saw the connection.
        addr: String,
    },
    /// A worker node's link closed (killed, stopped, or the network); its calls in flight are retried.
    #[serde(rename = "node.lost")]
    NodeLost {
        /// The node's name.
        node: String,
        /// Its address.
        addr: String,
    },
    /// A cognitive atomic swap completed.
    #[serde(rename = "model.swapped")]
    ModelSwapped {
        /// Persona name, case-sensitive (`ALFRED`, `BABS`, `BRICK`, `ROBIN`).
        persona: String,
        /// Previous model.
        from: String,
        /// New model.
        to: String,
        /// Generation of the new persona actor.
        generation: u64,
    },
    /// A tool was registered (or replaced by a new version).
    #[serde(rename = "tool.created")]
    ToolCreated {
        /// Tool name: a Python identifier (lower-case letters, digits, `_`), unique in the registry.
        name: String,
        /// Version: 1 for a new tool, +1 each time the ToolForge replaces it.
        version: u32,
        /// What it does.
        description: String,
    },
    /// A codex amendment awaits the Architect's decision.
    #[serde(rename = "amendment.proposed")]
    AmendmentProposed {
        /// Amendment id: 32 lowercase hex chars (a UUID v4 without dashes), assigned by the codex governor.
        id: String,
        /// Persona whose codex entry the amendment would change.
        persona: String,
        /// The proposer's reason for the change, as the persona wrote it.
        rationale: String,
    },
    /// An approved amendment was committed to codex.toml.
    #[serde(rename = "amendment.committed")]
    AmendmentCommitted {
        /// Amendment id (as in `amendment.proposed`).
        id: String,
        /// Unified diff of codex.toml.
        diff: String,
    },
    /// An amendment was rejected (by the Architect, or because committing it failed).
    #[serde(rename = "amendment.rejected")]
    AmendmentRejected {
        /// Amendment id (as in `amendment.proposed`).
        id: String,
        /// The Architect's reason, as given to `reject_amendment`.
        reason: String,
    },
    /// A configuration file was reloaded live.
    #[serde(rename = "config.reloaded")]
    ConfigReloaded {
        /// `codex` or `settings`.
        file: String,
        /// What changed, in words.
        changes: Vec<String>,
    },
    /// Rows were stored (a finished task remembered, a `memory_ingest`), or a consolidation or index build
    /// finished.
    #[serde(rename = "memory.updated")]
    MemoryUpdated {
        /// What happened, in words (e.g. "consolidated 12 details under 2 summaries"); for people, not
        /// parsing.
        what: String,
        /// Rows in the table.
        rows: u64,
    },
    /// The Curator kept an exchange in a persona's dataset.
    #[serde(rename = "curator.accepted")]
    CuratorAccepted {
        /// Task the exchange came from.
        task: String,
        /// Its step (1-based).
        step: u32,
        /// Whose dataset it joined.
        persona: String,
        /// `train` or `heldout`.
        split: String,
        /// The judge's score (0..=5); absent when a human rating admitted it without the judge.
        score: Option<u8>,
    },
    /// The Curator refused an exchange.
    #[serde(rename = "curator.rejected")]
    CuratorRejected {
        /// Task the exchange came from.
        task: String,
        /// Its step (1-based).
        step: u32,
        /// Whose exchange it was.
        persona: String,
        /// The reason code (`too_short`, `duplicate`, `judge_low`, `judge_unparseable`, ...; docs/protocol.md).
        reason: String,
        /// The reason in words.
        detail: String,
    },
    /// A persona has enough new examples: the Forge is told to train it.
    #[serde(rename = "curator.trigger")]
    CuratorTrigger {
        /// The persona to train.
        persona: String,
        /// Accepted training examples since the previous trigger.
        new_examples: usize,
        /// Its training set's size.
        train: usize,
        /// Whether a trainer took the request (false while no Forge runs, or when it declined).
        delivered: bool,
        /// What the trainer said, or why nothing was delivered.
        note: String,
    },
    /// A training step of the trainer ended.
    #[serde(rename = "trainer.progress")]
    TrainerProgress {
        /// The persona being trained.
        persona: String,
        /// Steps done.
        step: usize,
        /// Steps in the run.
        steps: usize,
        /// Passes over the training set begun (1-based).
        epoch: usize,
        /// Mean NLL per answer token of the step's batch.
        loss: f64,
        /// Tokens per second over the run so far.
        tokens_per_s: f64,
        /// Seconds left at that rate.
        eta_s: f64,
    },
    /// An Ollama server building a tuned model from an accepted adapter says how far it got (one event per
    /// status line it streams; the last is `success`). Only on the Ollama backend.
    #[serde(rename = "trainer.publishing")]
    TrainerPublishing {
        /// The persona.
        persona: String,
        /// The model being built (`<base>-batos-<first 12 hex of the adapter's digest>`).
        model: String,
        /// The server's words (`using existing layer sha256:…`, `writing manifest`, `success`).
        status: String,
    },
    /// A trained adapter failed the gate: nothing changed.
    #[serde(rename = "trainer.rejected")]
    TrainerRejected {
        /// The persona.
        persona: String,
        /// Held-out NLL per answer token under the persona's model.
        heldout_before: f64,
        /// The same with the new adapter.
        heldout_after: f64,
        /// The general set's NLL per answer token under the persona's model.
        general_before: f64,
        /// The same with the new adapter.
        general_after: f64,
        /// Which limit it missed, in words.
        reason: String,
        /// The exam gate's share right (percent) with the persona's model, when the exam gate ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exam_before: Option<f64>,
        /// The same with the adapter swapped in (it was swapped back).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exam_after: Option<f64>,
    },
    /// A run could not finish (no golden set, no base model file, an Ollama server that refuses adapters, a
    /// crash): nothing changed.
    #[serde(rename = "trainer.failed")]
    TrainerFailed {
        /// The persona.
        persona: String,
        /// Why.
        error: String,
    },
    /// A tool call failed (the tool raised, timed out, returned an invalid Command, or no such tool exists).
    #[serde(rename = "tool.failed")]
    ToolFailed {
        /// The task whose draft step called it; absent for a direct `call_tool`.
        task: Option<String>,
        /// The tool's name as it was asked for.
        tool: String,
        /// The error, as the model saw it (cut to 500 bytes).
        error: String,
    },
    /// A question memory could not ground: a `memory_search` with no hit at or above `memory.min_relevance`,
    /// or a task whose route asked for research when memory held nothing relevant to it.
    #[serde(rename = "knowledge.gap")]
    KnowledgeGap {
        /// The task whose research found nothing; absent for a direct `memory_search`.
        task: Option<String>,
        /// The question (the search's query, or the task's text), cut to 500 bytes.
        query: String,
        /// The best similarity found (0..=1), if any row was found at all.
        best: Option<f64>,
    },
    /// The Motivator made or moved one of its goals (`phrasing`, `queued`, `running`, `done`, `failed`,
    /// `cancelled`).
    #[serde(rename = "motivator.goal")]
    MotivatorGoal {
        /// Goal id: 32 lowercase hex chars.
        id: String,
        /// What set it: `idle`, `dissonance`, `failures`, `tool_created`, `knowledge_gap`, `reflection`,
        /// `success_streak` or `curated_data`.
        trigger: String,
        /// Its new status.
        status: String,
        /// The persona the goal is for (BABS for research, BRICK for tools, else ALFRED).
        persona: String,
        /// The goal as phrased (empty while `phrasing`).
        text: String,
        /// Why, from the evidence.
        reason: String,
        /// The task running it, once it runs.
        task: Option<String>,
    },
    /// The Motivator had a reason for a goal but made none: which limit stopped it.
    #[serde(rename = "motivator.suppressed")]
    MotivatorSuppressed {
        /// The trigger that fired.
        trigger: String,
        /// The limit: `paused`, `duplicate`, `trigger_rate`, `hourly_rate`, `token_budget`.
        limit: String,
        /// The reason the goal would have had, and the limit's figures.
        reason: String,
    },
    /// The Motivator was paused or resumed (a command, or `motivator.paused` in settings.toml).
    #[serde(rename = "motivator.paused")]
    MotivatorPaused {
        /// Whether it is paused now.
        paused: bool,
        /// By what.
        reason: String,
    },
    /// A living image was written: a new generation in `data_dir/image/`, or an export.
    #[serde(rename = "image.saved")]
    ImageSaved {
        /// Its generation (an export carries the generation it was numbered with too).
        generation: u64,
        /// Where it was written.
        path: String,
        /// Its size in bytes, envelope included.
        bytes: u64,
        /// `interval`, `command` or `export`.
        reason: String,
        /// How long the save took, in milliseconds.
        duration_ms: u64,
    },
    /// An exam run answered one more question (or taught one more fact).
    #[serde(rename = "exam.progress")]
    ExamProgress {
        /// The run's id.
        exam: String,
        /// `teach` while facts are taught, `question` while questions are asked.
        phase: String,
        /// Steps of this phase done so far, this one included.
        done: u32,
        /// Steps of this phase in all.
        total: u32,
        /// The question's id.
        question: String,
        /// Its category.
        category: String,
        /// Whether the society's answer passed (questions), or the fact was remembered (teach).
        pass: bool,
        /// Whether the bare model's answer passed, when the run has the baseline.
        bare_pass: Option<bool>,
        /// The society's time on it, in milliseconds.
        ms: u64,
    },
    /// An exam run ended (done, cancelled or failed) and its result is durable.
    #[serde(rename = "exam.scored")]
    ExamScored {
        /// Its figures, per category.
        summary: crate::exam::ExamSummary,
    },
    /// A trained adapter passed the gate and the persona was swapped to it (`model.swapped` follows too).
    #[serde(rename = "model.tuned")]
    ModelTuned {
        /// The persona.
        persona: String,
        /// Its new model: `lora:<adapter file>` on the embedded backend, `<base>-batos-<short digest>` on Ollama.
        model: String,
        /// Held-out NLL per answer token before.
        heldout_before: f64,
        /// And with the adapter.
        heldout_after: f64,
        /// The general set's NLL before.
        general_before: f64,
        /// And with the adapter.
        general_after: f64,
        /// The exam gate's share right (percent) with the model before, when the exam gate ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exam_before: Option<f64>,
        /// And with the adapter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exam_after: Option<f64>,
    },
    /// A forged tool was taken out of the registry (its history stays on disk).
    #[serde(rename = "tool.retired")]
    ToolRetired {
        /// The tool.
        name: String,
        /// Why, in words (the exam answers its calls made wrong, or a life's rollback).
        reason: String,
    },
    /// A life sent, or finished waiting for, one curriculum task.
    #[serde(rename = "life.progress")]
    LifeProgress {
        /// The life's id.
        life: String,
        /// Curriculum tasks finished (sent and ended, or given up on).
        done: u32,
        /// Curriculum tasks in all.
        total: u32,
        /// The task, when one was created.
        task: Option<String>,
        /// How it ended (`done`, `failed`, `paused`, `cancelled`, `timeout`).
        status: String,
    },
    /// A life's exam ended: the curve has a new point.
    #[serde(rename = "life.exam")]
    LifeExam {
        /// The life's id.
        life: String,
        /// The exam run's id (`batos exam show`).
        exam: String,
        /// `start`, `check` (the held-out subset) or `end`.
        phase: String,
        /// Curriculum tasks done when it was taken.
        at_task: u32,
        /// The share right on the held-out subset, in percent (comparable across the whole life).
        check_pct: f64,
        /// The share right on the questions asked, in percent.
        pct: f64,
    },
    /// A check fell too far: what changed since the check before was undone.
    #[serde(rename = "life.rolled_back")]
    LifeRolledBack {
        /// The life's id.
        life: String,
        /// The check before, in percent.
        before: f64,
        /// This check, in percent.
        after: f64,
        /// What was undone, in words (`BRICK: lora:… → smollm2:135m`, `tool word_freq retired`); empty when
        /// nothing that a life can undo had changed.
        undone: Vec<String>,
    },
    /// A life ended (done, cancelled or failed); its record is durable.
    #[serde(rename = "life.ended")]
    LifeEnded {
        /// Its figures.
        summary: crate::life::LifeSummary,
    },
}

impl Event {
    /// The event's kind string (also its PUB topic): the variant's serde `rename`, read from the derived
    /// `Serialize` ([`kind`]), so adding an event is adding its variant — the name is stated once.
    pub fn kind(&self) -> &'static str {
        // Every variant is adjacently tagged by the enum's serde attributes; the fallback is unreachable.
        kind::tag_of(self).unwrap_or("unknown")
    }

    /// The `data` payload of this event as JSON.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Rebuilds a typed event from a wire body; `None` for kinds this build does not know (forward compatible).
    pub fn from_body(body: &EventBody) -> Option<Event> {
        serde_json::from_value(serde_json::json!({"kind": body.kind, "data": body.data})).ok()
    }
}

#[cfg(test)]
mod tests;
