//! How a goal is phrased: a structured prompt (the system's state, recent done and failed goals, the trigger
//! and its reason) asked of a persona with a JSON schema, a strict reading of the answer, and a plain
//! template when the answer is unusable — a goal is never lost to a small model's bad JSON, and
//! `phrased_by` says which it was.

use batos_protocol::truncate;
use serde_json::{json, Value};

use super::{Goal, GoalStatus, Trigger};

/// Bytes of an earlier goal's text or outcome quoted in the prompt.
const QUOTE_BYTES: usize = 160;

/// The prompt's opening: what a goal is.
const INTRO: &str = "You set the household's next goal of its own. Nobody asked for it: it must be worth the time, \
                     and small enough to finish in one task (one question or one piece of work, not a project).";
/// The prompt's closing instruction, with the answer's shape.
const OUTRO: &str =
    "Do not repeat a goal above; learn from the failed ones. Answer with JSON only:";
/// The placeholder of the answer's `goal`.
const GOAL_PLACEHOLDER: &str = "the task, as one or two sentences addressed to the household";
/// The placeholder of the answer's `reason`.
const REASON_PLACEHOLDER: &str = "one sentence";
/// The prompt's section labels.
const LABELS: &str =
    "Why now For State tools tasks finished so far Goals done recently Goals that failed recently";
/// A phrased goal at least this share of whose words are the prompt's own fixed words (its instructions,
/// placeholders and labels, not the evidence it quotes) is an echo of the prompt, not a goal: a small model
/// that copies `"the task, as one or two sentences addressed to the household"` back has said nothing.
pub const ECHO_SHARE: f64 = 0.8;
/// A goal of fewer words than this is judged an echo only when every word is the prompt's.
const ECHO_MIN_WORDS: usize = 3;

/// Whether `goal` merely repeats the prompt's own words (see [`ECHO_SHARE`]).
pub fn is_echo(goal: &str) -> bool {
    let fixed: std::collections::BTreeSet<String> =
        [INTRO, OUTRO, GOAL_PLACEHOLDER, REASON_PLACEHOLDER, LABELS]
            .iter()
            .flat_map(|t| super::evidence::words(t))
            .chain(["goal", "reason", "json"].map(String::from))
            .collect();
    let words = super::evidence::words(goal);
    if words.is_empty() {
        return true;
    }
    let own = words.iter().filter(|w| fixed.contains(*w)).count();
    if words.len() < ECHO_MIN_WORDS {
        return own == words.len();
    }
    own as f64 / words.len() as f64 >= ECHO_SHARE
}

/// The JSON schema of the answer.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string"},
            "reason": {"type": "string"}
        },
        "required": ["goal", "reason"]
    })
}

/// What the persona is told about the system besides the goals.
#[derive(Debug, Clone, Default)]
pub struct Situation {
    /// Registered tools by name.
    pub tools: Vec<String>,
    /// Tasks the system has seen finish (done, failed, cancelled) in this life.
    pub finished_tasks: usize,
}

/// The prompt for phrasing `goal` (its trigger, reason and persona are set), with up to `keep` done and
/// `keep` failed goals of `history`, newest first.
pub fn prompt(goal: &Goal, history: &[Goal], situation: &Situation, keep: usize) -> String {
    let mut recent: Vec<&Goal> = history.iter().filter(|g| g.status.is_final()).collect();
    recent.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    let list = |status: GoalStatus| -> String {
        let lines: Vec<String> = recent
            .iter()
            .filter(|g| g.status == status)
            .take(keep)
            .map(|g| {
                format!(
                    "- {} → {}",
                    truncate(&g.text, QUOTE_BYTES),
                    truncate(g.outcome.as_deref().unwrap_or("-"), QUOTE_BYTES)
                )
            })
            .collect();
        if lines.is_empty() {
            "- none\n".into()
        } else {
            lines.join("\n") + "\n"
        }
    };
    let tools = if situation.tools.is_empty() {
        "none".to_string()
    } else {
        situation.tools.join(", ")
    };
    format!(
        "{INTRO}\n\n\
         [Why now] {trigger}: {reason}\n\
         [For] {persona}\n\
         [State] tools: {tools}; tasks finished so far: {finished}\n\
         [Goals done recently]\n{done}\
         [Goals that failed recently]\n{failed}\n\
         {OUTRO} {{\"goal\": \"<{GOAL_PLACEHOLDER}>\", \"reason\": \"<{REASON_PLACEHOLDER}>\"}}.",
        trigger = goal.trigger.as_str(),
        reason = goal.reason,
        persona = goal.persona,
        finished = situation.finished_tasks,
        done = list(GoalStatus::Done),
        failed = list(GoalStatus::Failed),
    )
}

/// Reads the persona's answer: the goal text (trimmed, cut to `max_bytes`) and its reason. `Err` says what
/// was wrong — also when the goal only echoes the prompt's own words ([`is_echo`]), so it is phrased from the
/// template instead and never queued as it stands.
pub fn parse(text: &str, max_bytes: usize) -> Result<(String, String), String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|_| {
        format!(
            "the answer is not the JSON asked for: {:?}",
            truncate(text.trim(), 120)
        )
    })?;
    let goal = v
        .get("goal")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .ok_or("no non-empty `goal` in the answer")?;
    if is_echo(goal) {
        return Err(format!(
            "the goal only echoes the prompt's own words: {:?}",
            truncate(goal, 120)
        ));
    }
    let reason = v
        .get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    Ok((
        truncate(goal, max_bytes).to_string(),
        truncate(reason, max_bytes).to_string(),
    ))
}

/// The goal in plain words when the persona's answer is unusable.
pub fn template(trigger: Trigger, persona: &str, reason: &str, max_bytes: usize) -> String {
    let text = match trigger {
        Trigger::KnowledgeGap => format!("{persona}: research this and write down what you find, because {reason}."),
        Trigger::Failures => format!("{persona}: find out why this keeps failing and how to avoid it, because {reason}."),
        Trigger::ToolCreated => format!("{persona}: try the new tool on a small example and describe when to use it, because {reason}."),
        Trigger::Dissonance => format!("Revisit a task that ended in discord and write a better answer, because {reason}."),
        Trigger::Reflection => format!("Reflect on recent events and write down three lessons, because {reason}."),
        Trigger::SuccessStreak => format!("Take on a slightly harder task in the same area, because {reason}."),
        Trigger::CuratedData => format!("Review what {persona}'s newest curated examples teach, because {reason}."),
        Trigger::Idle => format!("Choose one small, useful thing to learn or improve and do it, because {reason}."),
    };
    truncate(&text, max_bytes).to_string()
}
