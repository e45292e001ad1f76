//! The `[exam]` table: how the exam organ asks its questions and keeps its results.

use serde::{Deserialize, Serialize};

/// `[exam]` (live: read when a run starts and at every question). A settings file written before it loads
/// with these defaults, which are the shipped values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExamSettings {
    /// Whether a run asks the Curator's judge to score each of the society's answers (so its agreement
    /// with the exam is measured) unless `exam_run` says otherwise. Each verdict is one more model call.
    pub judge_agreement: bool,
    /// The persona whose sampling the bare model answers with (the baseline's "personas' sampling").
    pub bare_persona: String,
    /// Milliseconds a question's task may take before the exam cancels it and records no answer.
    pub question_timeout_ms: u64,
    /// Milliseconds a taught task may take before the exam goes on without it (recorded as not remembered).
    pub teach_timeout_ms: u64,
    /// Milliseconds the exam waits, after a taught task is done, for memory to have stored it.
    pub remember_timeout_ms: u64,
    /// How often (ms) the exam looks at a task it waits for.
    pub poll_ms: u64,
    /// Results kept in `data_dir/exam/results/`; the oldest finished ones are deleted beyond it.
    pub keep_results: usize,
    /// Most questions in one run (after `categories`); a larger set is refused before anything runs.
    pub max_questions: usize,
    /// Milliseconds a run may take from its start, restarts included; past it no further fact is taught and
    /// no further question asked, and the run ends `failed`, scored on what was answered, saying why.
    pub max_run_ms: u64,
}

impl Default for ExamSettings {
    fn default() -> Self {
        Self {
            judge_agreement: true,
            bare_persona: "ALFRED".into(),
            question_timeout_ms: 300_000,
            teach_timeout_ms: 300_000,
            remember_timeout_ms: 30_000,
            poll_ms: 200,
            keep_results: 500,
            max_questions: 1_000,
            max_run_ms: 21_600_000,
        }
    }
}
