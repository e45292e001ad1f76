//! The deterministic half of the pipeline: which exchanges of a finished task are candidates, and what the
//! filters and the dedupe index say about one of them before the judge is asked.
//!
//! Order (each stage records its name in the example's lineage when passed):
//! 1. `task_done` — a failed task's exchanges are kept only as negatives (`task_failed`);
//! 2. `length` — `min_answer_chars ..= max_answer_chars` (`too_short`, `too_long`);
//! 3. `markers` — no error or refusal phrase (`marker`);
//! 4. `finished` — the answer ended at end-of-turn, not cut by its budget or the loop guard (`truncated`);
//! 5. `tools_ok` — a drafting step of a task where a tool call failed is not kept (`tool_failed`);
//! 6. `human` — a rating at or below `human_reject_at_most` refuses (`human_rejected`);
//! 7. `dissonance` — the task's final dissonance at most `max_dissonance` (`dissonant`), unless a human
//!    rated the task at or above `human_accept_at_least`;
//! 8. `exact_dedupe`, `near_dedupe` — against the persona's kept examples, train and held-out alike
//!    (`duplicate`, `near_duplicate`);
//! 9. then the judge, unless the human's rating already admits it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dataset::{Example, Lineage, Rating};
use super::dedupe::{DedupeIndex, Prepared, Verdict};
use crate::llm::{ChatMessage, Finish, Role};
use crate::ports::{TaskState, TaskStatus};
use crate::settings::CuratorSettings;

/// Why an exchange was not kept. The snake_case name is the wire code.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The task failed (kept as a negative, never trained on).
    TaskFailed,
    /// Shorter than `min_answer_chars`.
    TooShort,
    /// Longer than `max_answer_chars`.
    TooLong,
    /// Contains an error or refusal marker.
    Marker,
    /// Cut by its token budget or the loop guard.
    Truncated,
    /// A drafting step of a task where a tool call failed.
    ToolFailed,
    /// The human rated the task low.
    HumanRejected,
    /// The task ended too dissonant.
    Dissonant,
    /// The same normalised text is kept already.
    Duplicate,
    /// A text this similar is kept already.
    NearDuplicate,
    /// The judge scored it under `min_score`.
    JudgeLow,
    /// The judge's answer could not be read.
    JudgeUnparseable,
    /// The judge could not be asked (its persona failed or timed out).
    JudgeUnavailable,
}

impl Reason {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::TaskFailed => "task_failed",
            Reason::TooShort => "too_short",
            Reason::TooLong => "too_long",
            Reason::Marker => "marker",
            Reason::Truncated => "truncated",
            Reason::ToolFailed => "tool_failed",
            Reason::HumanRejected => "human_rejected",
            Reason::Dissonant => "dissonant",
            Reason::Duplicate => "duplicate",
            Reason::NearDuplicate => "near_duplicate",
            Reason::JudgeLow => "judge_low",
            Reason::JudgeUnparseable => "judge_unparseable",
            Reason::JudgeUnavailable => "judge_unavailable",
        }
    }

    /// Whether a human rating may overturn it (the example is then kept with the decision).
    pub fn overridable(self) -> bool {
        matches!(
            self,
            Reason::HumanRejected
                | Reason::Dissonant
                | Reason::JudgeLow
                | Reason::JudgeUnparseable
                | Reason::JudgeUnavailable
        )
    }

    /// Whether the example is kept with the decision: overridable rejections, and a failed task's
    /// exchanges (negatives for preference training).
    pub fn keeps_example(self) -> bool {
        self.overridable() || self == Reason::TaskFailed
    }
}

/// What the filters need of the task an exchange came from.
#[derive(Debug, Clone)]
pub struct TaskMeta {
    /// Task id.
    pub id: String,
    /// The Architect's text (the dedupe text's first part).
    pub text: String,
    /// Whether it failed.
    pub failed: bool,
    /// Its final dissonance.
    pub dissonance: Option<f64>,
    /// Whether any tool call of the task failed.
    pub tool_failed: bool,
    /// What its direct answer can be checked against (`orchestrator::graph::grounding`).
    pub grounding: Option<crate::ports::grounding::Grounding>,
}

/// One exchange waiting for a decision.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `task/step/index`.
    pub key: String,
    /// The task.
    pub task: Arc<TaskMeta>,
    /// Step (1-based).
    pub step: u32,
    /// Node name.
    pub node: String,
    /// Answering persona.
    pub persona: String,
    /// Answering model.
    pub model: String,
    /// Answering generation.
    pub generation: u64,
    /// The conversation as sent (system first).
    pub messages: Vec<ChatMessage>,
    /// The answer.
    pub answer: String,
    /// Why it ended.
    pub finish: Finish,
    /// The tools the call offered.
    pub tools: Vec<crate::llm::ToolSpec>,
}

impl Candidate {
    /// The text dedupe and the split look at: the Architect's request and the answer (not the prompt
    /// template, which every exchange of a node shares).
    pub fn dedupe_text(&self) -> String {
        format!("{}\n{}", self.task.text, self.answer)
    }

    /// The line a kept candidate becomes: its conversation ending with its answer, the tools it was offered.
    pub fn example(&self, lineage: Lineage) -> Example {
        let mut messages = self.messages.clone();
        messages.push(ChatMessage::new(Role::Assistant, self.answer.clone()));
        Example {
            messages,
            tools: self.tools.clone(),
            lineage,
        }
    }

    /// The prompt the judge is shown: the last user message.
    pub fn request(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default()
    }
}

impl Candidate {
    /// Whether this is the final answer of a direct task and holds the task's grounding (with
    /// `curator.admit_grounded`): it is admitted without the judge.
    pub fn grounded(&self, s: &CuratorSettings) -> bool {
        s.admit_grounded
            && self.node == "synthesize"
            && self
                .task
                .grounding
                .as_ref()
                .is_some_and(|g| g.holds(&self.answer, s.grounded_max_new_words))
    }
}

/// The candidates of a finished task: every exchange of a curated node, keyed `task/step/index`.
pub fn candidates(task: &TaskState, nodes: &[String]) -> Vec<Candidate> {
    let meta = Arc::new(TaskMeta {
        id: task.id.clone(),
        text: task.text.clone(),
        failed: task.status == TaskStatus::Failed,
        dissonance: task.dissonance,
        tool_failed: task.tools_used.iter().any(|t| !t.ok),
        grounding: (task.status == TaskStatus::Done)
            .then(|| crate::ports::grounding::grounding(task))
            .flatten(),
    });
    let mut out: Vec<Candidate> = Vec::new();
    let mut per_step: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for x in &task.exchanges {
        let slot = per_step.entry(x.step).or_insert(0);
        let index_in_step = *slot;
        *slot += 1;
        if !nodes.iter().any(|n| n == x.node.as_str()) {
            continue;
        }
        out.push(Candidate {
            key: format!("{}/{}/{}", task.id, x.step, index_in_step),
            task: meta.clone(),
            step: x.step,
            node: x.node.as_str().to_string(),
            persona: x.persona.clone(),
            model: x.model.clone(),
            generation: x.generation,
            messages: x.messages.clone(),
            answer: x.answer.clone(),
            finish: x.finish,
            tools: x.tools.clone(),
        });
    }
    out
}

/// What the deterministic stages decided.
#[derive(Debug)]
pub enum Screened {
    /// Refused, with the reason in words and the stages passed before.
    Reject(Reason, String, Vec<&'static str>),
    /// Passed everything; the judge decides.
    Judge(Prepared, Vec<&'static str>),
    /// Passed everything and a human rating admits it without the judge.
    Admit(Prepared, Vec<&'static str>),
}

/// Runs stages 1–8 on one candidate.
pub fn screen(
    c: &Candidate,
    s: &CuratorSettings,
    rating: Option<&Rating>,
    index: &DedupeIndex,
) -> Screened {
    let mut passed: Vec<&'static str> = Vec::new();
    macro_rules! reject {
        ($r:expr, $($why:tt)+) => {
            return Screened::Reject($r, format!($($why)+), passed)
        };
    }
    if c.task.failed {
        reject!(Reason::TaskFailed, "the task failed");
    }
    passed.push("task_done");
    let grounded = c.grounded(s);
    let chars = c.answer.trim().chars().count();
    // A grounded answer is checked; a short one ("Dr. Okafor.") is the form asked for, not junk.
    if chars < s.min_answer_chars && !grounded {
        reject!(
            Reason::TooShort,
            "{chars} characters, fewer than {}",
            s.min_answer_chars
        );
    }
    if chars > s.max_answer_chars {
        reject!(
            Reason::TooLong,
            "{chars} characters, more than {}",
            s.max_answer_chars
        );
    }
    passed.push("length");
    let lower = c.answer.to_lowercase();
    if let Some(m) = s
        .reject_markers
        .iter()
        .find(|m| !m.is_empty() && lower.contains(&m.to_lowercase()))
    {
        reject!(Reason::Marker, "contains {m:?}");
    }
    passed.push("markers");
    if c.finish != Finish::Stop {
        let why = match c.finish {
            Finish::Length => "its token budget",
            _ => "the loop guard",
        };
        reject!(Reason::Truncated, "the answer was cut by {why}");
    }
    passed.push("finished");
    if c.node == "draft" && c.task.tool_failed {
        reject!(Reason::ToolFailed, "a tool call of this task failed");
    }
    passed.push("tools_ok");
    let human = rating.map(|r| r.score);
    if let Some(score) = human.filter(|h| *h <= s.human_reject_at_most) {
        reject!(Reason::HumanRejected, "a human rated the task {score}");
    }
    passed.push("human");
    let admitted = human.is_some_and(|h| h >= s.human_accept_at_least);
    match c.task.dissonance {
        Some(d) if d > s.max_dissonance && !admitted => {
            reject!(
                Reason::Dissonant,
                "final dissonance {d:.2} above {}",
                s.max_dissonance
            );
        }
        _ => {}
    }
    passed.push("dissonance");
    let p = index.prepare(&c.dedupe_text());
    match index.check(&p) {
        Verdict::Exact(k) => reject!(Reason::Duplicate, "the same text is kept as {k}"),
        Verdict::Near(k, j) => {
            passed.push("exact_dedupe");
            reject!(
                Reason::NearDuplicate,
                "estimated Jaccard {j:.2} with {k} (threshold {})",
                s.near_duplicate
            )
        }
        Verdict::New => {}
    }
    passed.push("exact_dedupe");
    passed.push("near_dedupe");
    if grounded {
        passed.push("grounded");
    }
    if admitted || grounded {
        Screened::Admit(p, passed)
    } else {
        Screened::Judge(p, passed)
    }
}
