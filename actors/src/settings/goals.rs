//! The `[image]` and `[motivator]` tables: the organs that look after the mind as a whole (its picture on
//! disk, its goals of its own).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[image]` (live: read at every tick and save).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Seconds between periodic saves (0: only on command); a save is skipped when nothing changed.
    pub interval_s: u64,
    /// Image generations kept in `data_dir/image/`; older ones are deleted after a save succeeds (at least 2,
    /// so a torn or corrupt newest always has a predecessor).
    pub keep: usize,
    /// Event sequence numbers reserved on disk ahead of use: a restart (even after kill -9) starts past the
    /// reservation, so numbers never repeat, at the cost of a gap of at most this many.
    pub seq_reserve: u64,
    /// How often (ms) the image organ looks at the clock and at the event sequence's reservation.
    pub tick_ms: u64,
}

/// `[motivator]` (live: read at every event and tick, except `enabled` and `running_goals`, read at start).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MotivatorSettings {
    /// Whether the Motivator runs at all (read at start).
    pub enabled: bool,
    /// Paused by the owner: no goal is made or started while true (live; `motivator_pause` and
    /// `motivator_resume` pause on top of it, durably, without editing this file).
    pub paused: bool,
    /// The persona that phrases goals.
    pub persona: String,
    /// How often (ms) the Motivator looks at the clock: idleness, and whether a queued goal may start.
    pub tick_ms: u64,
    /// Seconds with no task queued or running after which the system sets itself a goal.
    pub idle_after_s: u64,
    /// A person's task that ends with dissonance (0..=1) at or above this sets a goal.
    pub dissonance_threshold: f64,
    /// Failures of one kind (one tool, or failed tasks) within `failure_window_s` that set a goal.
    pub failure_count: usize,
    /// See `failure_count` (seconds).
    pub failure_window_s: u64,
    /// Importance points per event kind (`task.done`, `task.failed`, ...); kinds not listed count 0.
    pub importance: BTreeMap<String, f64>,
    /// Summed importance of events since the last reflection at which a reflection goal is set
    /// (Generative Agents reflect at 150).
    pub importance_threshold: f64,
    /// People's tasks done in a row at or below `streak_max_dissonance` that set a goal.
    pub success_streak: u32,
    /// See `success_streak` (0..=1).
    pub streak_max_dissonance: f64,
    /// Goals at most per trigger in any hour.
    pub trigger_per_hour: u32,
    /// Goals at most in any hour, all triggers together.
    pub goals_per_hour: u32,
    /// Tokens (prompt + completion) the Motivator's phrasing and its goals' tasks may use per UTC day.
    pub daily_tokens: u64,
    /// Goals waiting to run at most; a goal beyond it is suppressed (`queue_full`).
    pub max_queued: usize,
    /// Goal tasks running at once; they have their own slots, never a person's (read at start).
    pub running_goals: usize,
    /// Milliseconds without a person's task queued or running before a goal is phrased or started: someone
    /// sending tasks one after another is never interrupted by a goal starting in between.
    pub quiet_ms: u64,
    /// Word-set Jaccard similarity (0..=1) at or above which a phrased goal duplicates an open or recent one.
    pub duplicate_similarity: f64,
    /// Finished goals kept (listed by `batos goals`, shown to the phrasing persona, checked for duplicates).
    pub keep_goals: usize,
    /// Finished goals shown to the phrasing persona, each of done and failed.
    pub prompt_goals: usize,
    /// Longest goal text in bytes; a longer phrasing is cut.
    pub max_goal_bytes: usize,
    /// Priority per trigger (higher runs first; equal priorities run oldest first).
    pub priority: TriggerPriorities,
}

/// `[motivator.priority]`: one number per trigger, higher first.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TriggerPriorities {
    /// No task for `idle_after_s`.
    pub idle: u8,
    /// A task ended discordant.
    pub dissonance: u8,
    /// Recurring failures of one kind.
    pub failures: u8,
    /// A new tool to exercise and document.
    pub tool_created: u8,
    /// A question memory could not ground.
    pub knowledge_gap: u8,
    /// Enough important events to reflect on.
    pub reflection: u8,
    /// A run of successes.
    pub success_streak: u8,
    /// The Curator has enough new examples.
    pub curated_data: u8,
}
