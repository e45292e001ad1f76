//! `[orchestrator]`: how tasks run through the graph, and which path they take.

use serde::{Deserialize, Serialize};

/// `[orchestrator]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    /// Tasks running at once.
    pub max_concurrent_tasks: usize,
    /// Dissonance above which a draft goes back to BRICK.
    pub dissonance_threshold: f64,
    /// Most BRICK/ROBIN rounds.
    pub max_iterations: u32,
    /// Dissonance above which, after `max_iterations`, the task pauses for an inquiry.
    pub inquiry_threshold: f64,
    /// Most tool calls in one drafting step.
    pub max_tool_calls_per_step: u32,
    /// Finished tasks kept.
    pub keep_finished_tasks: usize,
    /// Longest task text.
    pub max_task_bytes: usize,
    /// Most steps per task.
    pub max_steps: u32,
    /// Stream draft/synthesis output as `task.token` events.
    pub stream_tokens: bool,
    /// How often a task whose run crashed (a panic in a step) is resumed from its last checkpoint before it
    /// is failed with the crash as its reason. 0: fail at the first crash.
    pub task_restarts: u32,
    /// How long, in milliseconds from its first loss, one persona call lost to a crash (of the persona or of
    /// its call) is retried on the generations that replace it; past it the step fails with the reason.
    /// 0: the step fails at the first loss. A task outwaits a crash storm instead of failing on a count.
    pub persona_outwait_ms: u64,
    /// Pause before the second retry of one lost call, in milliseconds; doubled before each later one (the
    /// first retry goes as soon as the next generation runs).
    pub persona_retry_backoff_ms: u64,
    /// Longest pause between two retries of one lost call, in milliseconds.
    pub persona_retry_backoff_max_ms: u64,
    /// Bytes of retrieved memories put in BABS's research prompt (nearest first; the last one shortened).
    pub research_max_bytes: usize,
    /// Words ROBIN's critique needs for its dissonance to send a draft back or pause the task.
    pub min_critique_words: usize,
    /// Jaccard overlap (0..=1) of word sets at or above which a critique repeats the previous one and does
    /// not justify another round.
    pub critique_repeat_similarity: f64,
    /// How often a finished task's hand-over to memory or the Curator is tried while that organ does not
    /// answer (restarting), `settle_retry_ms` apart; after that it is tried again at the next start.
    pub settle_tries: u32,
    /// Pause between those tries, in milliseconds.
    pub settle_retry_ms: u64,
    /// Which tasks go through the full Contrapunto (see [`RouteMode`]).
    #[serde(default)]
    pub route: RouteMode,
    /// Under `route = "auto"`, tasks of at most this many bytes take the direct path.
    #[serde(default = "default_direct_max_bytes")]
    pub direct_max_bytes: usize,
    /// Most notes (memories and self-knowledge) put before a direct answer.
    #[serde(default = "default_direct_notes")]
    pub direct_notes: usize,
    /// Share (0..=1) of a task's content words a note must hold to be put before a direct answer.
    #[serde(default = "default_note_min_share")]
    pub note_min_share: f64,
    /// Answers ALFRED samples for a direct task; the one most like the others is given (1: a single answer,
    /// streamed as it is written).
    #[serde(default = "default_direct_samples")]
    pub direct_samples: usize,
}

fn default_direct_samples() -> usize {
    3
}

fn default_note_min_share() -> f64 {
    0.5
}

fn default_direct_max_bytes() -> usize {
    240
}

fn default_direct_notes() -> usize {
    3
}

/// How `orchestrator.route` sends tasks through the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// Short tasks (`direct_max_bytes`) on the direct path (notes, an exact tool result, one answer by
    /// ALFRED); long work and the Motivator's goals through the Contrapunto. The exam decided it: on the
    /// embedded model the Contrapunto answered short questions worse than the bare model (BENCHMARKS.md).
    #[default]
    Auto,
    /// Every task through the Contrapunto.
    Full,
}
