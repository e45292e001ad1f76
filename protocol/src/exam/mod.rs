//! The exam's wire types: a question set (JSON lines, one [`ExamQuestion`] each), the arguments of the exam
//! commands, and what a run records ([`ExamResult`]) and lists ([`ExamSummary`]).
//!
//! A question set is parsed and checked here ([`parse_set`]) so that the CLI refuses a bad file before it
//! reaches the daemon and the daemon refuses it with the same words; the checks themselves (word-boundary
//! matching, regexes, numbers) run in the exam organ, which has a regex engine.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Most questions one set may hold.
pub const MAX_QUESTIONS: usize = 2000;
/// Longest question, taught text, accepted string or pattern, in bytes.
pub const MAX_QUESTION_BYTES: usize = 4096;
/// Longest question or category id, in bytes (ASCII letters, digits, `-`, `_`, `.`).
pub const MAX_ID_BYTES: usize = 64;

/// One question of an exam set: one line of a JSON-lines file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExamQuestion {
    /// Unique within the set: ASCII letters, digits, `-`, `_`, `.`; at most [`MAX_ID_BYTES`].
    pub id: String,
    /// What kind of question it is (`fact`, `arithmetic`, `computation`, `recall`, `instruction`,
    /// `household`, or any other id-shaped name): the per-category table groups by it.
    pub category: String,
    /// What is asked, as a person would send it (not blank, at most [`MAX_QUESTION_BYTES`]).
    pub question: String,
    /// How the answer is judged right.
    pub check: ExamCheck,
    /// The answer fails when it has more words than this (words are runs of non-space characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_words: Option<u32>,
    /// A task sent earlier in the same exam, before any question: what a person told the household, which
    /// this question needs. Taught tasks are remembered (as a person's words); the bare model never sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teach: Option<String>,
    /// The question asks about the household itself, so its inner names (the personas, the codex, ...) may
    /// be in the answer without counting as a leak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inner_ok: bool,
}

/// How an answer is judged: exactly one of `any`, `regex`, `number`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ExamCheck {
    /// Right when the answer contains one of these, case-insensitively, on word boundaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<String>>,
    /// Wrong when the answer contains one of these (case-insensitive, word boundaries), whatever else it
    /// says: a common confusion (`Sydney` for the capital of Australia). Allowed with any check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reject: Vec<String>,
    /// Right when this regular expression (Rust `regex` syntax) matches anywhere in the answer,
    /// case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Right when a number in the answer that is not also a number of the question is within `tolerance`
    /// of this. Numbers are digits (thousands separated by commas or not, a decimal point, a sign, an
    /// ordinal suffix like `19th`) or the words zero to twenty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
    /// Allowed distance from `number` (absolute, at least 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tolerance: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl ExamCheck {
    /// Which form the check takes: `any`, `regex` or `number`.
    pub fn form(&self) -> &'static str {
        if self.any.is_some() {
            "any"
        } else if self.regex.is_some() {
            "regex"
        } else {
            "number"
        }
    }
}

fn id_shaped(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ExamQuestion {
    /// Checks what serde cannot: shapes, sizes, exactly one check form.
    pub fn validate(&self) -> Result<(), String> {
        if !id_shaped(&self.id) {
            return Err(format!(
                "`id` must be 1..={MAX_ID_BYTES} ASCII letters, digits, '-', '_' or '.' (got {:?})",
                crate::truncate(&self.id, 80)
            ));
        }
        if !id_shaped(&self.category) {
            return Err(format!(
                "`category` must be 1..={MAX_ID_BYTES} ASCII letters, digits, '-', '_' or '.' (got {:?})",
                crate::truncate(&self.category, 80)
            ));
        }
        let text = |name: &str, t: &str| -> Result<(), String> {
            if t.trim().is_empty() {
                Err(format!("`{name}` must not be blank"))
            } else if t.len() > MAX_QUESTION_BYTES {
                Err(format!(
                    "`{name}` is longer than {MAX_QUESTION_BYTES} bytes"
                ))
            } else {
                Ok(())
            }
        };
        text("question", &self.question)?;
        if let Some(t) = &self.teach {
            text("teach", t)?;
        }
        if self.max_words == Some(0) {
            return Err("`max_words` must be at least 1".into());
        }
        let c = &self.check;
        let forms = usize::from(c.any.is_some())
            + usize::from(c.regex.is_some())
            + usize::from(c.number.is_some());
        if forms != 1 {
            return Err("`check` must have exactly one of `any`, `regex`, `number`".into());
        }
        if let Some(any) = &c.any {
            if any.is_empty() {
                return Err("`check.any` must list at least one accepted string".into());
            }
        }
        for s in c.any.iter().flatten().chain(&c.reject) {
            text("check.any/reject entry", s)?;
        }
        if let Some(r) = &c.regex {
            text("check.regex", r)?;
        }
        if let Some(n) = c.number {
            if !n.is_finite() {
                return Err("`check.number` must be finite".into());
            }
        }
        if !(c.tolerance.is_finite() && c.tolerance >= 0.0) {
            return Err("`check.tolerance` must be a finite number, at least 0".into());
        }
        if c.tolerance != 0.0 && c.number.is_none() {
            return Err("`check.tolerance` goes with `check.number` only".into());
        }
        Ok(())
    }
}

/// Parses a question set: JSON lines, blank lines and lines starting with `#` ignored. Every question is
/// validated and ids must be unique; an error names the line. At least one question, at most
/// [`MAX_QUESTIONS`].
pub fn parse_set(text: &str) -> Result<Vec<ExamQuestion>, String> {
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let q: ExamQuestion = serde_json::from_str(line).map_err(|e| format!("line {n}: {e}"))?;
        q.validate()
            .map_err(|e| format!("line {n} ({}): {e}", q.id))?;
        if !ids.insert(q.id.clone()) {
            return Err(format!("line {n}: the id `{}` is used twice", q.id));
        }
        out.push(q);
        if out.len() > MAX_QUESTIONS {
            return Err(format!("more than {MAX_QUESTIONS} questions"));
        }
    }
    if out.is_empty() {
        return Err("the set holds no question".into());
    }
    Ok(out)
}

/// Arguments of `exam_run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamRunArgs {
    /// The question set: the text of a JSON-lines file (see [`parse_set`]).
    pub set: String,
    /// A label for the history (e.g. the file's name); default `exam`.
    #[serde(default)]
    pub name: Option<String>,
    /// `bare`: ask every question of the bare model too, in the same run (same model file, same backend,
    /// its own chat template, no system prompt, ALFRED's sampling). Absent or `none`: the society only.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Ask the Curator's judge to score each of the society's answers and report how often its verdict
    /// agrees with the exam's (default `exam.judge_agreement`).
    #[serde(default)]
    pub judge: Option<bool>,
    /// Only the questions of these categories (absent: all).
    #[serde(default)]
    pub categories: Option<Vec<String>>,
}

/// Where an exam run stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExamStatus {
    /// Asking questions (also: resumed after a restart).
    Running,
    /// Every question answered and scored.
    Done,
    /// Stopped by `exam_cancel`: what was answered is kept and scored.
    Cancelled,
    /// Could not go on (its result file could not be written, the orchestrator refused every task).
    Failed,
}

impl ExamStatus {
    /// The snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ExamStatus::Running => "running",
            ExamStatus::Done => "done",
            ExamStatus::Cancelled => "cancelled",
            ExamStatus::Failed => "failed",
        }
    }
}

/// One answer to one question, by the society or the bare model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExamAnswer {
    /// The answer as given ("" when none came).
    pub answer: String,
    /// Whether the check passed (and the word limit held).
    pub pass: bool,
    /// Why it passed or failed, in a few words (`matched "Paris"`, `rejected "Sydney"`, `14 words > 5`).
    pub why: String,
    /// Inner words of the household the answer used unprompted (see the exam organ's `INNER_WORDS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<String>,
    /// Wall time from asking to the answer, in milliseconds.
    pub ms: u64,
    /// Graph steps the task took (0 for the bare model).
    #[serde(default)]
    pub steps: u32,
    /// Who answered with what: `PERSONA=model` per persona step that called a model (or `bare=model`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Tools the task called (name, with `!` appended when the call failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The task that answered (absent for the bare model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Why no answer came (the task failed, was paused, timed out; the model call failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The Curator's judge on one of the society's answers, against the exam's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeVerdict {
    /// Its score, 0..=5; absent when the judge gave none.
    pub score: Option<u8>,
    /// Whether it would keep the answer (score at or above `curator.min_score`).
    pub keep: bool,
    /// Whether that agrees with the exam (keep and right, or refuse and wrong).
    pub agrees: bool,
}

/// One question's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuestionResult {
    /// The question's id.
    pub id: String,
    /// Its category.
    pub category: String,
    /// Its text.
    pub question: String,
    /// The society's answer (through the Contrapunto).
    pub society: ExamAnswer,
    /// The bare model's answer, when the run has the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare: Option<ExamAnswer>,
    /// The judge's verdict on the society's answer, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeVerdict>,
}

/// A taught task and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TeachRecord {
    /// The question that needs it.
    pub question: String,
    /// Its task.
    pub task: Option<String>,
    /// Whether the household stored it in memory before the questions began.
    pub remembered: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What was examined: enough to tell two results' subjects apart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Fingerprint {
    /// The LLM backend (`embedded` or `ollama`) and where it lives.
    pub backend: String,
    /// Per persona: its model (`lora:<file>` for an adapter) and, for an adapter, the file's SHA-256.
    pub personas: BTreeMap<String, PersonaPrint>,
    /// SHA-256 over the tool registry (name, version, origin, description, schema of each tool).
    pub tools: String,
    /// The tools by name with their version.
    pub tool_names: Vec<String>,
    /// SHA-256 of the codex as the personas hold it.
    pub codex: String,
    /// The memory table's version and rows when the run started (absent when memory did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryPrint>,
    /// SHA-256 of the live settings (as TOML).
    pub settings: String,
}

/// One persona in a [`Fingerprint`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PersonaPrint {
    /// The model it thinks with.
    pub model: String,
    /// SHA-256 of its adapter file, for a `lora:` model whose file could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_sha256: Option<String>,
}

/// The memory table in a [`Fingerprint`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MemoryPrint {
    /// The LanceDB version of the table.
    pub version: u64,
    /// Its rows.
    pub rows: u64,
}

/// One category's score in a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CategoryScore {
    /// The category.
    pub category: String,
    /// Questions of it answered so far.
    pub n: u32,
    /// Of those, right by the society.
    pub society: u32,
    /// Of those, right by the bare model (absent without the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare: Option<u32>,
}

impl CategoryScore {
    /// The society's share right, in percent (0 when nothing was answered).
    pub fn society_pct(&self) -> f64 {
        pct(self.society, self.n)
    }

    /// The bare model's share right, in percent.
    pub fn bare_pct(&self) -> Option<f64> {
        self.bare.map(|b| pct(b, self.n))
    }
}

/// `part` of `n` in percent (0 when `n` is 0).
pub fn pct(part: u32, n: u32) -> f64 {
    if n == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(n)
    }
}

/// A run's figures: what `exam_history` lists and `exam.scored` announces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExamSummary {
    /// The run's id: 32 lowercase hex chars.
    pub id: String,
    /// Its label.
    pub name: String,
    /// SHA-256 of the set's questions (as parsed), so runs of the same set can be compared.
    pub set_digest: String,
    /// Where it stands (`running`, `done`, `cancelled`, `failed`).
    pub status: String,
    /// Unix seconds at its start.
    pub started_at: f64,
    /// Unix seconds at its end (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// Questions answered so far.
    pub done: u32,
    /// Questions in the run.
    pub total: u32,
    /// Whether the bare model was asked too.
    pub baseline: bool,
    /// Per category, in the set's order.
    pub categories: Vec<CategoryScore>,
    /// The society's share right, in percent, over every answered question.
    pub society_pct: f64,
    /// The bare model's (absent without the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_pct: Option<f64>,
    /// The society's answers that used an inner word unprompted.
    pub leaks: u32,
    /// The bare model's (absent without the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_leaks: Option<u32>,
    /// Median time per question, in milliseconds: the society's.
    pub median_ms: u64,
    /// And the bare model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_median_ms: Option<u64>,
    /// Of the society's answers the judge scored, the share whose verdict agreed with the exam's (0..=1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_agreement: Option<f64>,
    /// Answers the judge scored.
    #[serde(default)]
    pub judged: u32,
}

/// One run in full, as `exam_get` answers it and `data_dir/exam/results/<id>.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExamResult {
    /// Its figures.
    pub summary: ExamSummary,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was examined, taken when the run started.
    pub fingerprint: Fingerprint,
    /// The questions, as asked (so a result can be read without its set).
    pub questions: Vec<ExamQuestion>,
    /// The taught tasks and whether each was remembered.
    #[serde(default)]
    pub taught: Vec<TeachRecord>,
    /// Each answered question's outcome, in the set's order.
    pub results: Vec<QuestionResult>,
    /// Whether the judge scores answers in this run.
    #[serde(default)]
    pub judge: bool,
}

impl ExamResult {
    /// Recomputes the summary's figures from `results` (the categories in the order of `questions`).
    pub fn rescore(&mut self) {
        let mut order: Vec<String> = Vec::new();
        for q in &self.questions {
            if !order.contains(&q.category) {
                order.push(q.category.clone());
            }
        }
        let baseline = self.summary.baseline;
        let mut cats: Vec<CategoryScore> = order
            .iter()
            .map(|c| CategoryScore {
                category: c.clone(),
                n: 0,
                society: 0,
                bare: baseline.then_some(0),
            })
            .collect();
        let (mut right, mut bare_right, mut leaks, mut bare_leaks) = (0u32, 0u32, 0u32, 0u32);
        let (mut times, mut bare_times) = (Vec::new(), Vec::new());
        let (mut judged, mut agreed) = (0u32, 0u32);
        for r in &self.results {
            if let Some(c) = cats.iter_mut().find(|c| c.category == r.category) {
                c.n += 1;
                c.society += u32::from(r.society.pass);
                if let (Some(b), Some(a)) = (c.bare.as_mut(), r.bare.as_ref()) {
                    *b += u32::from(a.pass);
                }
            }
            right += u32::from(r.society.pass);
            leaks += u32::from(!r.society.leaks.is_empty());
            times.push(r.society.ms);
            if let Some(b) = &r.bare {
                bare_right += u32::from(b.pass);
                bare_leaks += u32::from(!b.leaks.is_empty());
                bare_times.push(b.ms);
            }
            if let Some(j) = &r.judge {
                judged += 1;
                agreed += u32::from(j.agrees);
            }
        }
        let n = self.results.len() as u32;
        let s = &mut self.summary;
        s.categories = cats;
        s.done = n;
        s.society_pct = pct(right, n);
        s.bare_pct = baseline.then(|| pct(bare_right, n));
        s.leaks = leaks;
        s.bare_leaks = baseline.then_some(bare_leaks);
        s.median_ms = median(&mut times);
        s.bare_median_ms = baseline.then(|| median(&mut bare_times));
        s.judged = judged;
        s.judge_agreement = (judged > 0).then(|| f64::from(agreed) / f64::from(judged));
    }
}

/// The median of `xs` (the lower middle of an even count; 0 for none).
pub fn median(xs: &mut [u64]) -> u64 {
    if xs.is_empty() {
        return 0;
    }
    xs.sort_unstable();
    xs[(xs.len() - 1) / 2]
}

/// The per-category table of a run, as `batos exam run` prints it at the end and the README quotes it.
pub fn table(s: &ExamSummary) -> String {
    let mut out = String::new();
    let bare = s.baseline;
    out.push_str(&format!(
        "{:<14} {:>4} {:>9}{}\n",
        "category",
        "n",
        "society",
        if bare { "      bare       Δ" } else { "" }
    ));
    let row = |name: &str, n: u32, soc: f64, b: Option<f64>| -> String {
        let mut line = format!("{name:<14} {n:>4} {soc:>8.0}%");
        if let Some(b) = b {
            line.push_str(&format!(" {b:>8.0}% {:>+7.0}", soc - b));
        }
        line.push('\n');
        line
    };
    for c in &s.categories {
        out.push_str(&row(&c.category, c.n, c.society_pct(), c.bare_pct()));
    }
    out.push_str(&row("overall", s.done, s.society_pct, s.bare_pct));
    out.push_str(&format!(
        "leaks: {}{}   median time per question: {:.1} s{}",
        s.leaks,
        s.bare_leaks
            .map(|b| format!(" (bare {b})"))
            .unwrap_or_default(),
        s.median_ms as f64 / 1000.0,
        s.bare_median_ms
            .map(|b| format!(" (bare {:.1} s)", b as f64 / 1000.0))
            .unwrap_or_default()
    ));
    if let Some(a) = s.judge_agreement {
        out.push_str(&format!(
            "   judge agrees with the exam on {:.0}% of {} answers",
            a * 100.0,
            s.judged
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
