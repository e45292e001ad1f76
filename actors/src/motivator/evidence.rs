//! What the events add up to, per trigger: the Motivator's reading of the system's life. Pure (no actor, no
//! clock of its own), so every trigger is unit-tested by feeding events.
//!
//! The counters that must survive a restart (failures in their window, summed importance, the success
//! streak, the day's tokens) are [`Counters`], saved with the goals; the rest (people's unfinished tasks,
//! their last dissonance, the time of the last activity) is rebuilt from the events of this life.

use std::collections::{BTreeMap, HashMap, HashSet};

use batos_protocol::truncate;
use serde::{Deserialize, Serialize};

use super::Trigger;
use crate::events::Event;
use crate::settings::MotivatorSettings;

/// Bytes of a task's text, an error or a question quoted in a goal's reason.
const QUOTE_BYTES: usize = 200;
/// Event references kept as the evidence of a summed trigger (reflection, streak): the newest.
const KEEP_EVIDENCE: usize = 20;
/// Seconds in a UTC day (the token budget's period).
const DAY_S: f64 = 86_400.0;

/// A reason for a goal, before the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// What fired.
    pub trigger: Trigger,
    /// The evidence's identity: while a goal with this key is open the same evidence sets no other.
    pub key: String,
    /// Why, in words.
    pub reason: String,
    /// The events it rests on (`kind#seq id`).
    pub evidence: Vec<String>,
    /// Who the goal is for.
    pub persona: String,
}

/// The counters saved with the goals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Failures per kind (`tool:<name>`, `task`) within the window: (unix seconds, evidence).
    pub failures: BTreeMap<String, Vec<(f64, String)>>,
    /// Importance summed since the last reflection.
    pub importance: f64,
    /// The events behind it (newest `KEEP_EVIDENCE`).
    pub importance_evidence: Vec<String>,
    /// People's tasks done in harmony in a row.
    pub streak: u32,
    /// The tasks behind it.
    pub streak_evidence: Vec<String>,
    /// The UTC day (`unix / 86400`) `tokens` counts.
    pub day: u64,
    /// Tokens used on that day.
    pub tokens: u64,
}

impl Counters {
    /// Tokens used today; a new day starts at 0.
    pub fn tokens_today(&self, now: f64) -> u64 {
        if self.day == day_of(now) {
            self.tokens
        } else {
            0
        }
    }

    /// Charges `n` tokens to today.
    pub fn charge(&mut self, n: u64, now: f64) {
        let today = day_of(now);
        if self.day != today {
            self.day = today;
            self.tokens = 0;
        }
        self.tokens = self.tokens.saturating_add(n);
    }
}

fn day_of(unix: f64) -> u64 {
    (unix / DAY_S).floor().max(0.0) as u64
}

fn push_bounded(v: &mut Vec<String>, item: String) {
    v.push(item);
    if v.len() > KEEP_EVIDENCE {
        let excess = v.len() - KEEP_EVIDENCE;
        v.drain(..excess);
    }
}

/// The Motivator's reading of events.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Saved with the goals.
    pub counters: Counters,
    /// Tasks that run goals: their events feed no trigger.
    pub own: HashSet<String>,
    /// Exam tasks: like a person's they keep goals waiting (an exam measures the household, and a goal
    /// running beside it would skew its timings), but their events feed no trigger (an exam question's
    /// discord or gap is the exam's finding, not the household's life).
    pub exam: HashSet<String>,
    /// People's unfinished tasks: their text.
    texts: HashMap<String, String>,
    /// People's unfinished tasks: their last dissonance.
    dissonance: HashMap<String, f64>,
    /// Unix seconds of the last task activity (or of the start, or of the last idle goal).
    pub last_activity: f64,
    /// Unix seconds of the last event of a person's task (0 before any): goals start only after
    /// `motivator.quiet_ms` without one.
    pub last_people: f64,
}

impl Evidence {
    /// A reading that starts at `now` from saved counters.
    pub fn new(counters: Counters, now: f64) -> Self {
        Self {
            counters,
            last_activity: now,
            ..Default::default()
        }
    }

    /// Whether a task runs a goal.
    pub fn is_own(&self, task: Option<&str>) -> bool {
        task.is_some_and(|t| self.own.contains(t))
    }

    /// Reads one event (`seq` is its sequence number); returns the proposals it completes.
    pub fn observe(
        &mut self,
        seq: u64,
        event: &Event,
        s: &MotivatorSettings,
        now: f64,
    ) -> Vec<Proposal> {
        let reference = |id: &str| format!("{}#{seq} {id}", event.kind());
        let mut out = Vec::new();
        if let Some(task) = task_of(event) {
            self.last_activity = now;
            match event {
                Event::TaskSubmitted {
                    goal: Some(_), id, ..
                } => {
                    self.own.insert(id.clone());
                }
                Event::TaskSubmitted {
                    exam: Some(_), id, ..
                } => {
                    self.exam.insert(id.clone());
                }
                _ => {}
            }
            if self.own.contains(task) {
                return out;
            }
            self.last_people = now;
            if self.exam.contains(task) {
                if matches!(
                    event,
                    Event::TaskDone { .. } | Event::TaskFailed { .. } | Event::TaskCancelled { .. }
                ) {
                    self.exam.remove(task);
                }
                return out;
            }
        }
        match event {
            Event::TaskSubmitted { id, text, .. } => {
                self.texts.insert(id.clone(), text.clone());
            }
            Event::TaskStep {
                id,
                dissonance: Some(d),
                ..
            } => {
                self.dissonance.insert(id.clone(), *d);
            }
            Event::TaskDone { id, .. } => {
                let text = self.texts.remove(id).unwrap_or_default();
                let d = self.dissonance.remove(id).unwrap_or(0.0);
                if d >= s.dissonance_threshold {
                    out.push(Proposal {
                        trigger: Trigger::Dissonance,
                        key: format!("dissonance:{id}"),
                        reason: format!(
                            "a task ended with dissonance {d:.2} (threshold {:.2}): \"{}\"",
                            s.dissonance_threshold,
                            truncate(&text, QUOTE_BYTES)
                        ),
                        evidence: vec![reference(id)],
                        persona: "ALFRED".into(),
                    });
                }
                if d <= s.streak_max_dissonance {
                    self.counters.streak += 1;
                    push_bounded(&mut self.counters.streak_evidence, reference(id));
                    if self.counters.streak >= s.success_streak {
                        out.push(Proposal {
                            trigger: Trigger::SuccessStreak,
                            key: format!("success_streak:{seq}"),
                            reason: format!(
                                "{} tasks in a row ended in harmony (dissonance at most {:.2}): time for a harder one",
                                self.counters.streak, s.streak_max_dissonance
                            ),
                            evidence: std::mem::take(&mut self.counters.streak_evidence),
                            persona: "ALFRED".into(),
                        });
                        self.counters.streak = 0;
                    }
                } else {
                    self.reset_streak();
                }
            }
            Event::TaskFailed { id, error } => {
                self.texts.remove(id);
                self.dissonance.remove(id);
                self.reset_streak();
                out.extend(self.failure(
                    "task",
                    reference(id),
                    s,
                    now,
                    |n, w| {
                        format!(
                            "{n} tasks failed within {w} s; the last: {}",
                            truncate(error, QUOTE_BYTES)
                        )
                    },
                    "ALFRED",
                ));
            }
            Event::TaskCancelled { id } => {
                self.texts.remove(id);
                self.dissonance.remove(id);
            }
            Event::ToolFailed { tool, error, task } => {
                let kind = format!("tool:{tool}");
                let r = reference(task.as_deref().unwrap_or("-"));
                out.extend(self.failure(
                    &kind,
                    r,
                    s,
                    now,
                    |n, w| {
                        format!(
                            "the tool `{tool}` failed {n} times within {w} s; the last error: {}",
                            truncate(error, QUOTE_BYTES)
                        )
                    },
                    "BRICK",
                ));
            }
            Event::ToolCreated {
                name,
                version,
                description,
            } => out.push(Proposal {
                trigger: Trigger::ToolCreated,
                key: format!("tool_created:{name}:{version}"),
                reason: format!(
                    "a new tool `{name}` (version {version}) was created: {}; exercise it and document what it does",
                    truncate(description, QUOTE_BYTES)
                ),
                evidence: vec![reference(name)],
                persona: "BRICK".into(),
            }),
            Event::KnowledgeGap { task, query, best } => {
                let best = best.map(|b| format!(" (best similarity {b:.2})")).unwrap_or_default();
                out.push(Proposal {
                    trigger: Trigger::KnowledgeGap,
                    key: format!("knowledge_gap:{}", normalise(query)),
                    reason: format!(
                        "memory holds nothing relevant to \"{}\"{best}: research it",
                        truncate(query, QUOTE_BYTES)
                    ),
                    evidence: vec![reference(task.as_deref().unwrap_or("-"))],
                    persona: "BABS".into(),
                });
            }
            Event::CuratorTrigger {
                persona,
                new_examples,
                ..
            } => out.push(Proposal {
                trigger: Trigger::CuratedData,
                key: format!("curated_data:{persona}:{seq}"),
                reason: format!(
                    "the Curator kept {new_examples} new examples of {persona}'s work: review what they teach"
                ),
                evidence: vec![reference(persona)],
                persona: if crate::PERSONAS.contains(&persona.as_str()) {
                    persona.clone()
                } else {
                    "ALFRED".into()
                },
            }),
            _ => {}
        }
        if let Some(points) = s.importance.get(event.kind()).copied() {
            if points > 0.0 {
                self.counters.importance += points;
                let id = task_of(event).unwrap_or("-");
                push_bounded(&mut self.counters.importance_evidence, reference(id));
                if self.counters.importance >= s.importance_threshold {
                    out.push(Proposal {
                        trigger: Trigger::Reflection,
                        key: format!("reflection:{seq}"),
                        reason: format!(
                            "events of importance {:.0} (threshold {:.0}) since the last reflection: reflect on what they mean",
                            self.counters.importance, s.importance_threshold
                        ),
                        evidence: std::mem::take(&mut self.counters.importance_evidence),
                        persona: "ALFRED".into(),
                    });
                    self.counters.importance = 0.0;
                }
            }
        }
        out
    }

    /// At a tick: an idle proposal when nothing ran for `idle_after_s` and no task is unfinished. Resets the
    /// clock, so the next one needs another idle period.
    pub fn idle(&mut self, unfinished: usize, s: &MotivatorSettings, now: f64) -> Option<Proposal> {
        if unfinished > 0 {
            self.last_activity = now;
            return None;
        }
        let idle = now - self.last_activity;
        if idle < s.idle_after_s as f64 {
            return None;
        }
        self.last_activity = now;
        Some(Proposal {
            trigger: Trigger::Idle,
            key: "idle".into(),
            reason: format!("no task for {idle:.0} s: choose something worth doing"),
            evidence: Vec::new(),
            persona: "ALFRED".into(),
        })
    }

    fn reset_streak(&mut self) {
        self.counters.streak = 0;
        self.counters.streak_evidence.clear();
    }

    /// Counts one failure of `kind`; a proposal when the window holds `failure_count` (the window then
    /// starts over).
    fn failure(
        &mut self,
        kind: &str,
        reference: String,
        s: &MotivatorSettings,
        now: f64,
        reason: impl FnOnce(usize, u64) -> String,
        persona: &str,
    ) -> Option<Proposal> {
        let window = s.failure_window_s as f64;
        let list = self.counters.failures.entry(kind.to_string()).or_default();
        list.retain(|(t, _)| now - t <= window);
        list.push((now, reference));
        if list.len() < s.failure_count {
            return None;
        }
        let evidence: Vec<String> = list.drain(..).map(|(_, e)| e).collect();
        self.counters.failures.remove(kind);
        Some(Proposal {
            trigger: Trigger::Failures,
            key: format!("failures:{kind}"),
            reason: reason(evidence.len(), s.failure_window_s),
            evidence,
            persona: persona.into(),
        })
    }
}

/// The task an event is about, if any.
fn task_of(event: &Event) -> Option<&str> {
    match event {
        Event::TaskSubmitted { id, .. }
        | Event::TaskStatus { id, .. }
        | Event::TaskStep { id, .. }
        | Event::TaskPaused { id, .. }
        | Event::TaskDone { id, .. }
        | Event::TaskFailed { id, .. }
        | Event::TaskCancelled { id } => Some(id),
        Event::ToolFailed { task, .. } | Event::KnowledgeGap { task, .. } => task.as_deref(),
        _ => None,
    }
}

/// Lower-case words, single-spaced: two phrasings of one question share a key.
pub fn normalise(text: &str) -> String {
    let words: Vec<String> = words(text).into_iter().collect();
    truncate(&words.join(" "), QUOTE_BYTES).to_string()
}

/// The lower-case alphanumeric words of a text, in order.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
