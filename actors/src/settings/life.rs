//! The `[life]` table: how an unattended life feeds its curriculum, checks itself and rolls back.

use serde::{Deserialize, Serialize};

/// `[life]` (live: read at every step of a life). A settings file written before it loads with these
/// defaults, which are the shipped values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifeSettings {
    /// Milliseconds of quiet after each curriculum task before the next is sent: the loops that wait for
    /// an idle household (the Curator's judge, the Motivator's goals, the trainer) get their turn.
    pub pace_ms: u64,
    /// Milliseconds a curriculum task may take before the life goes on without it (it is cancelled; a task
    /// paused for the Architect is left paused).
    pub task_timeout_ms: u64,
    /// How often (ms) the life looks at the task or exam it waits for.
    pub poll_ms: u64,
    /// Questions in the held-out subset asked every `--every` tasks (spread over the categories; 0: the
    /// whole set every time). The full set is asked at both ends.
    pub check_questions: usize,
    /// A check whose share right falls by more than this many points below the check before it rolls back
    /// what changed between them (a tuned model, a forged tool) and says so (`life.rolled_back`).
    pub rollback_points: f64,
    /// `trainer.steps` while a life runs (its trainer runs beside the curriculum on two cores).
    pub trainer_steps: usize,
    /// `curator.min_new_examples` while a life runs (a life of 60 tasks would never reach the shipped 50).
    pub min_new_examples: usize,
    /// `curator.heldout_percent` while a life runs: a few dozen examples at the shipped 10 % often leave the
    /// held-out set empty, and the trainer needs one to gate on.
    pub heldout_percent: u8,
    /// Before each exam, the life waits (at most this many ms) until the trainer neither runs nor waits,
    /// so a check measures the household as its loops left it.
    pub settle_ms: u64,
    /// Lives kept in `data_dir/life/`; the oldest finished ones are deleted beyond this.
    pub keep: usize,
    /// Most curriculum tasks in one life (after `limit`); a longer curriculum is refused before anything runs.
    pub max_tasks: usize,
    /// Seconds after which a life sends no new task when `life_run` gives no `for_s`; a larger `for_s` is
    /// refused. The end exam still runs.
    pub max_run_s: u64,
    /// Model tokens (prompt and completion) the curriculum's tasks may spend; once spent no new task is
    /// sent and the life goes to its end exam, saying so (`life.budget_spent`).
    pub max_task_tokens: u64,
}

impl Default for LifeSettings {
    fn default() -> Self {
        Self {
            pace_ms: 5_000,
            task_timeout_ms: 600_000,
            poll_ms: 500,
            check_questions: 24,
            rollback_points: 10.0,
            trainer_steps: 20,
            min_new_examples: 6,
            heldout_percent: 25,
            settle_ms: 1_800_000,
            keep: 100,
            max_tasks: 2_000,
            max_run_s: 172_800,
            max_task_tokens: 50_000_000,
        }
    }
}
