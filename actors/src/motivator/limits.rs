//! The budget and manners: which proposals become goals, which phrased goals are duplicates, and which
//! queued goal runs next. Pure functions of the goals, the counters and the settings.
//!
//! The checks run cheapest and most telling first, and before any model call: a burst of a hundred
//! triggers costs a hundred comparisons and a hundred `motivator.suppressed` events, not a hundred
//! phrasings.

use std::collections::HashSet;

use super::evidence::{words, Counters, Proposal};
use super::{Goal, GoalStatus};
use crate::settings::MotivatorSettings;

/// Seconds in the rate limits' window.
pub const HOUR_S: f64 = 3600.0;

/// Why a proposal or a phrased goal was not made a goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppressed {
    /// `paused`, `duplicate`, `queue_full`, `trigger_rate`, `hourly_rate` or `token_budget`.
    pub limit: &'static str,
    /// The figures, in words.
    pub detail: String,
}

fn suppressed(limit: &'static str, detail: String) -> Result<(), Suppressed> {
    Err(Suppressed { limit, detail })
}

/// Whether `p` may become a goal now. `paused` says by what the Motivator is paused, if it is.
pub fn admit(
    p: &Proposal,
    goals: &[Goal],
    counters: &Counters,
    paused: Option<&str>,
    s: &MotivatorSettings,
    now: f64,
) -> Result<(), Suppressed> {
    if let Some(by) = paused {
        return suppressed("paused", format!("the motivator is paused (by {by})"));
    }
    if let Some(g) = goals
        .iter()
        .find(|g| !g.status.is_final() && g.key == p.key)
    {
        return suppressed(
            "duplicate",
            format!(
                "goal {} is {} for the same evidence",
                g.id,
                g.status.as_str()
            ),
        );
    }
    let waiting = goals
        .iter()
        .filter(|g| matches!(g.status, GoalStatus::Phrasing | GoalStatus::Queued))
        .count();
    if waiting >= s.max_queued {
        return suppressed(
            "queue_full",
            format!("{waiting} goals wait already (motivator.max_queued)"),
        );
    }
    let recent: Vec<&Goal> = goals
        .iter()
        .filter(|g| now - g.created_at < HOUR_S)
        .collect();
    let same = recent.iter().filter(|g| g.trigger == p.trigger).count();
    if same >= s.trigger_per_hour as usize {
        return suppressed(
            "trigger_rate",
            format!(
                "{same} {} goals in the last hour (motivator.trigger_per_hour = {})",
                p.trigger.as_str(),
                s.trigger_per_hour
            ),
        );
    }
    if recent.len() >= s.goals_per_hour as usize {
        return suppressed(
            "hourly_rate",
            format!(
                "{} goals in the last hour (motivator.goals_per_hour = {})",
                recent.len(),
                s.goals_per_hour
            ),
        );
    }
    let used = counters.tokens_today(now);
    if used >= s.daily_tokens {
        return suppressed(
            "token_budget",
            format!(
                "{used} tokens used today (motivator.daily_tokens = {})",
                s.daily_tokens
            ),
        );
    }
    Ok(())
}

/// Jaccard similarity of two texts' word sets (0 when both are empty).
pub fn jaccard(a: &str, b: &str) -> f64 {
    let a: HashSet<String> = words(a).into_iter().collect();
    let b: HashSet<String> = words(b).into_iter().collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// The open or recent goal (other than `id`) whose text `text` duplicates, if any: open ones always count,
/// finished ones except those dropped (a dropped goal never ran, so its text is no precedent).
pub fn duplicate_of<'a>(
    id: &str,
    text: &str,
    goals: &'a [Goal],
    s: &MotivatorSettings,
) -> Option<&'a Goal> {
    goals.iter().find(|g| {
        g.id != id
            && g.status != GoalStatus::Dropped
            && g.status != GoalStatus::Phrasing
            && jaccard(&g.text, text) >= s.duplicate_similarity
    })
}

/// The queued goal to run next: the highest priority, then the oldest.
pub fn next_to_run(goals: &[Goal]) -> Option<usize> {
    goals
        .iter()
        .enumerate()
        .filter(|(_, g)| g.status == GoalStatus::Queued)
        .max_by(|(_, a), (_, b)| {
            a.priority
                .cmp(&b.priority)
                .then(b.created_at.total_cmp(&a.created_at))
        })
        .map(|(i, _)| i)
}
