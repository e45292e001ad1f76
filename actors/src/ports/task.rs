//! The task model: everything a task is, as the orchestrator checkpoints it and every other organ reads it —
//! its nodes, steps, origin, model exchanges, tool uses and the household's reading of it. Data and the few
//! rules that only read the data; the graph that runs a task is the orchestrator's
//! (`orchestrator::graph`), the reading of a task's text is `orchestrator::reading` (it implements
//! [`Contract`]'s rules there).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use batos_protocol::TaskStatus;

/// A node of the cognition graph.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// ALFRED frames the task and decides whether research is needed.
    Route,
    /// BABS gathers context (memory, task history).
    Research,
    /// BRICK drafts, with tools.
    Draft,
    /// ROBIN critiques and scores dissonance.
    Critique,
    /// The ToolForge closes a capability gap.
    #[serde(rename = "toolforge")]
    ToolForge,
    /// Persistent dissonance: ask for a codex amendment and wait for the Architect.
    Inquiry,
    /// Paused: waiting for the Architect's decision.
    AwaitDecision,
    /// ALFRED writes the answer.
    Synthesize,
    /// Finished.
    Done,
}

impl Node {
    /// The snake_case name used in events and Commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Node::Route => "route",
            Node::Research => "research",
            Node::Draft => "draft",
            Node::Critique => "critique",
            Node::ToolForge => "toolforge",
            Node::Inquiry => "inquiry",
            Node::AwaitDecision => "await_decision",
            Node::Synthesize => "synthesize",
            Node::Done => "done",
        }
    }

    /// The node a tool Command may jump to, by name.
    pub fn goto_target(name: &str) -> Option<Node> {
        Some(match name {
            "draft" => Node::Draft,
            "critique" => Node::Critique,
            "toolforge" => Node::ToolForge,
            "inquiry" => Node::Inquiry,
            "synthesize" => Node::Synthesize,
            _ => return None,
        })
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One completed step, as `get_task` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// 1-based step number: its index in `TaskState::steps` plus one.
    pub step: u32,
    /// Node that ran (never `AwaitDecision` or `Done`, which are not steps).
    pub node: Node,
    /// Persona whose step it was (`ALFRED`, `BABS`, `BRICK`, `ROBIN`).
    pub persona: String,
    /// Model it used ("" when no model was called).
    pub model: String,
    /// `"ollama"` or `"embedded"` (the persona's backend even when no model was called); `"<backend>@<node>"`
    /// when a worker node served the step's model call (README, "Beyond one machine").
    pub backend: String,
    /// Dissonance in 0..=1 (higher = more discord): ROBIN's score on `critique`, the task's on `inquiry`
    /// or on a `draft` a tool Command rerouted; `None` otherwise.
    pub dissonance: Option<f64>,
    /// Wall-clock time of the step in ms, model and tool calls included.
    pub duration_ms: u64,
    /// What it produced, shortened.
    pub summary: String,
    /// Why the step's model call ended (`stop`: end of turn, `length`: its token budget, `loop`: the loop
    /// guard); absent for a step without a model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<crate::llm::Finish>,
    /// Tokens its model calls evaluated and generated (prompt + completion, as the backend reported them).
    #[serde(default)]
    pub tokens: u64,
}

/// Where a task came from when no person typed it: a Motivator goal, or an exam (a question, or a fact the
/// exam teaches first). Shown by `get_task` (`"origin": {"kind": "motivator" | "exam", ...}`) and read by the
/// orchestrator (a goal waits for its own slot, never a user's), by the hand-over (exam questions are
/// never remembered or curated) and by the Motivator (exam tasks feed no trigger).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// The Motivator's goal the task runs.
    Motivator(GoalOrigin),
    /// An exam's question or taught fact.
    Exam(ExamOrigin),
}

impl Origin {
    /// The goal, when the task runs one.
    pub fn goal(&self) -> Option<&GoalOrigin> {
        match self {
            Origin::Motivator(g) => Some(g),
            Origin::Exam(_) => None,
        }
    }

    /// The exam, when the task is part of one.
    pub fn exam(&self) -> Option<&ExamOrigin> {
        match self {
            Origin::Exam(e) => Some(e),
            Origin::Motivator(_) => None,
        }
    }
}

/// A Motivator goal as its task records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GoalOrigin {
    /// The goal's id (32 lowercase hex chars).
    pub goal: String,
    /// What set the goal (`idle`, `dissonance`, `failures`, `tool_created`, `knowledge_gap`, `reflection`,
    /// `success_streak`, `curated_data`).
    pub trigger: String,
    /// Why, from the evidence.
    pub reason: String,
    /// What it rests on: event kinds with their sequence numbers and the ids they name (`task.failed#41 <id>`).
    pub evidence: Vec<String>,
    /// The persona the goal is for; a goal for BABS always goes through research.
    pub persona: String,
}

/// An exam's task as it records it: which run, which question, and whether it teaches the question's fact
/// (a person's words the household should remember) or asks the question (never remembered or curated).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExamOrigin {
    /// The exam run's id (32 lowercase hex chars).
    pub exam: String,
    /// The question's id in its set.
    pub question: String,
    /// Whether this task teaches the question's fact rather than asking the question.
    pub teach: bool,
}

/// One model call of a persona step, kept for the Curator: what the persona was shown and what it answered.
/// A step has one per model call that answered in text (a drafting step with tools may have several).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exchange {
    /// The step it belongs to (1-based, as in `steps`).
    pub step: u32,
    /// That step's node.
    pub node: Node,
    /// Persona that answered.
    pub persona: String,
    /// Model of the answering actor.
    pub model: String,
    /// Generation of the answering actor.
    pub generation: u64,
    /// The conversation exactly as sent: the persona's system message first, then the prompt (and, in a
    /// drafting step with tools, the earlier assistant turns and tool results).
    pub messages: Vec<crate::llm::ChatMessage>,
    /// The persona's answer (JSON text for structured steps).
    pub answer: String,
    /// Why the answer ended.
    pub finish: crate::llm::Finish,
    /// The tools the call offered: a backend may render them into the prompt and shape the answer around
    /// them (the embedded one does), so training must see them to see what serving saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::llm::ToolSpec>,
}

/// One tool call made during a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolUse {
    /// Tool name as the model asked for it; may name no registered tool (then `ok` is false).
    pub name: String,
    /// Arguments as the model sent them: usually an object, sometimes a JSON string (parsed before the
    /// call).
    pub arguments: serde_json::Value,
    /// The tool message the model saw (value, applied Command or `tool error: ...`), cut to
    /// `MAX_COMMAND_TEXT` (16 KiB).
    pub result: String,
    /// Whether it succeeded.
    pub ok: bool,
}

/// A human's answer to a paused inquiry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Inquiry {
    /// Why the task paused.
    pub reason: String,
    /// The amendment proposed for it, if any.
    pub amendment_id: Option<String>,
    /// The Architect's decision (`approved`, `rejected`, `resumed`).
    pub decision: Option<String>,
    /// Free text from `resume_task`; every later prompt's brief quotes it as "The Architect's guidance".
    pub guidance: Option<String>,
}

/// Everything about a task; written to disk after every step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskState {
    /// 32 lowercase hex chars (UUID v4 simple), set by the orchestrator at submit; also names the
    /// checkpoint file `<id>.json`.
    pub id: String,
    /// What the Architect asked, in full (not blank; at most `orchestrator.max_task_bytes` bytes at submit).
    pub text: String,
    /// Unix seconds at submission.
    pub created_at: f64,
    /// Where it stands; checkpointed with the rest, so a task found `queued` or `running` when the
    /// orchestrator (re)starts is run again from its checkpoint.
    pub status: TaskStatus,
    /// The node to run next.
    pub next: Node,
    /// ALFRED's plan from `route` (his raw answer when it was not the JSON asked for); tools may
    /// replace it with a Command.
    pub plan: Option<String>,
    /// Whether ALFRED asked for research.
    pub needs_research: bool,
    /// Memories retrieved for this task (shown to BABS).
    #[serde(default)]
    pub memories: Vec<String>,
    /// BABS's notes.
    pub context: Option<String>,
    /// BRICK's drafts, oldest first.
    pub drafts: Vec<String>,
    /// ROBIN's critiques, oldest first.
    pub critiques: Vec<String>,
    /// ROBIN's last dissonance score in 0..=1 (0 = in harmony, 1 = discordant); an unscorable critique
    /// counts as 0. Tools may set it with a Command.
    pub dissonance: Option<f64>,
    /// Drafting rounds so far.
    pub iteration: u32,
    /// Tool calls made.
    pub tools_used: Vec<ToolUse>,
    /// A capability BRICK found missing.
    pub capability_gap: Option<String>,
    /// Notes added by tools and the ToolForge, shown to later steps.
    pub notes: Vec<String>,
    /// Set by the `inquiry` node when the task pauses; the Architect's decision and guidance are added
    /// on resume.
    pub inquiry: Option<Inquiry>,
    /// Completed steps, oldest first; appended (and checkpointed) after each step.
    pub steps: Vec<StepRecord>,
    /// ALFRED's answer from `synthesize`, once done.
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The id of the request that created it (gateway), so a retry after a crash finds it.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Whether a done task's exchange is stored in memory; a done task without it is stored again (idempotently)
    /// when the orchestrator next starts, so a crash between `task.done` and the memory write loses nothing.
    #[serde(default)]
    pub remembered: bool,
    /// Every model call of the task's persona steps, oldest first (the Curator's raw material).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<Exchange>,
    /// Whether a finished task has been handed to the Curator (which keeps it durably from then on); a
    /// finished task without it is handed over again when the orchestrator next starts.
    #[serde(default)]
    pub curated: bool,
    /// Where the task came from when no person typed it: a Motivator goal or an exam; `None` for a person's
    /// task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// How the household read the task at its route step (path, the answer's form, an exact tool call);
    /// `None` until then, and for checkpoints written before readings existed (those run the full path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<Reading>,
}

impl TaskState {
    /// A new queued task.
    pub fn new(id: String, text: String) -> Self {
        TaskState {
            id,
            text,
            created_at: crate::events::unix_now(),
            status: TaskStatus::Queued,
            next: Node::Route,
            plan: None,
            needs_research: false,
            memories: Vec::new(),
            context: None,
            drafts: Vec::new(),
            critiques: Vec::new(),
            dissonance: None,
            iteration: 0,
            tools_used: Vec::new(),
            capability_gap: None,
            notes: Vec::new(),
            inquiry: None,
            steps: Vec::new(),
            result: None,
            error: None,
            request_id: None,
            remembered: false,
            exchanges: Vec::new(),
            curated: false,
            origin: None,
            reading: None,
        }
    }

    /// The Motivator goal the task runs, if any.
    pub fn goal(&self) -> Option<&GoalOrigin> {
        self.origin.as_ref().and_then(Origin::goal)
    }

    /// The exam the task belongs to, if any.
    pub fn exam(&self) -> Option<&ExamOrigin> {
        self.origin.as_ref().and_then(Origin::exam)
    }

    /// The short form `list_tasks` shows.
    pub fn summary(&self) -> TaskSummary {
        TaskSummary {
            id: self.id.clone(),
            status: self.status,
            text: batos_protocol::truncate(&self.text, 200).to_string(),
            steps: self.steps.len() as u32,
            created_at: self.created_at,
            dissonance: self.dissonance,
            goal: self.goal().map(|g| g.goal.clone()),
            exam: self.exam().map(|e| e.exam.clone()),
        }
    }
}

/// A task in a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSummary {
    /// Task id (32 lowercase hex chars).
    pub id: String,
    /// Where the task stands (`queued`, `running`, `paused`, `done`, `failed`, `cancelled`).
    pub status: TaskStatus,
    /// The task's text cut to at most 200 bytes (on a char boundary).
    pub text: String,
    /// Steps completed so far (the length of the task's step history).
    pub steps: u32,
    /// Unix seconds at submission.
    pub created_at: f64,
    /// Last dissonance score in 0..=1; `None` until ROBIN has critiqued.
    pub dissonance: Option<f64>,
    /// The Motivator's goal it runs; absent for a person's task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// The exam run it belongs to; absent for a person's task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exam: Option<String>,
}

/// Which way a task goes through the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Notes, an exact tool result when one applies, and one answer by ALFRED.
    Direct,
    /// The full Contrapunto: research, draft, critique, synthesis.
    #[default]
    Full,
}

/// The form an answer must take, as the question states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Contract {
    /// Free text.
    #[default]
    Free,
    /// "Answer yes or no".
    YesNo,
    /// "Reply with only the number": a whole number (a decimal grammar let the small model run on into
    /// `1.5789362406827572`; exact decimals come from the computation path instead).
    Number,
    /// "Answer with one word", "in at most five words": at most `max` words.
    Words {
        /// Most words, at least 1.
        max: u32,
    },
    /// "Answer with the tool's name" / "answer with one name" about the household: one of these names.
    OneOf {
        /// The names allowed, as the registry or the codex spells them.
        names: Vec<String>,
    },
}

/// The household's reading of one task, kept on its checkpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reading {
    /// The path taken.
    pub path: Path,
    /// The answer's form.
    #[serde(default)]
    pub contract: Contract,
    /// The built-in tool call that answers the task exactly, when one does: `(tool, arguments)`.
    #[serde(default)]
    pub computation: Option<(String, Value)>,
    /// Whether the task asks about the household itself (its tools, members or principles): then its
    /// self-knowledge is among the notes.
    #[serde(default)]
    pub about_household: bool,
}

/// The names of the built-in exact tools (the tools organ's `compute` module builds them).
pub const COMPUTE_TOOLS: [&str; 3] = ["calculate", "days_between", "count_letters"];

/// Whether `name` is one of [`COMPUTE_TOOLS`]: their results are exact, and worth remembering as such.
pub fn is_compute(name: &str) -> bool {
    COMPUTE_TOOLS.contains(&name)
}
