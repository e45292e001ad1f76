//! The event bus: every organ publishes here; the gateway's PUB socket and in-process listeners consume it.
//! The events themselves and the [`StateView`] fold are wire types (`batos-protocol`); this module owns only
//! the sequence numbers and the one lock that keeps them and the view in step.
//!
//! Sequence numbers are assigned and applied to the [`StateView`] under one lock, so a `snapshot` taken at
//! `seq = N` reflects exactly the events `1..=N` — the property late joiners rely on (zguide "Clone").

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

pub use batos_protocol::{encode_body, unix_now, Event, EventBody, StateView};

/// One published event, encoded once for every consumer.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its sequence number: +1 per event, no gaps within a daemon process; a restart continues past the numbers
    /// its earlier lives reserved (so the first event of a process is not necessarily 1).
    pub seq: u64,
    /// The typed event, as folded into the hub's view under the same lock.
    pub event: Event,
    /// The msgpack body for the wire.
    pub body: Vec<u8>,
}

struct HubInner {
    seq: u64,
    view: StateView,
}

/// The one place sequence numbers come from.
pub struct EventHub {
    inner: Mutex<HubInner>,
    tx: broadcast::Sender<Arc<Published>>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("seq", &self.current_seq())
            .finish()
    }
}

impl EventHub {
    /// A hub whose consumers may fall `capacity` events behind before they lose some; its view keeps every
    /// task.
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::bounded(capacity, None)
    }

    /// Likewise, with a view that keeps at most `keep_finished_tasks` finished tasks (its memory, and the size
    /// of every `snapshot`, stay bounded however long the daemon runs).
    pub fn bounded(capacity: usize, keep_finished_tasks: Option<usize>) -> Arc<Self> {
        Self::bounded_after(capacity, keep_finished_tasks, 0)
    }

    /// Likewise, its first event numbered `last + 1`: a restarted daemon continues the sequence past every
    /// number its previous lives may have used (the image organ's reservation), so no number means two events.
    pub fn bounded_after(
        capacity: usize,
        keep_finished_tasks: Option<usize>,
        last: u64,
    ) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(Self {
            inner: Mutex::new(HubInner {
                seq: last,
                view: StateView {
                    keep_finished_tasks,
                    ..Default::default()
                },
            }),
            tx,
        })
    }

    /// Assigns the next seq, folds the event into the view and hands it to every consumer, atomically; then
    /// writes the event's one structured log line ([`log_event`]). Callers do not log what they publish:
    /// "every event is one tracing line and one gateway event" holds here.
    pub fn publish(&self, event: Event) -> u64 {
        let published = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.seq += 1;
            let seq = inner.seq;
            inner.view.apply(&event);
            let body = encode_body(seq, event.kind(), event.data());
            let published = Arc::new(Published { seq, event, body });
            // No receiver is fine (no gateway yet): the view already holds the state.
            let _ = self.tx.send(published.clone());
            published
        };
        log_event(published.seq, &published.event);
        published.seq
    }

    /// `(seq, state)`: the state after exactly the events `1..=seq`.
    pub fn snapshot(&self) -> (u64, StateView) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.seq, inner.view.clone())
    }

    /// Tasks not finished (queued, running or paused awaiting the Architect), counted under the lock without
    /// copying the view: background work (the Curator's judge) waits while this counts running ones.
    pub fn running_tasks(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .view
            .tasks
            .values()
            .filter(|t| {
                matches!(
                    t.status,
                    batos_protocol::TaskStatus::Running | batos_protocol::TaskStatus::Queued
                )
            })
            .count()
    }

    /// Ids of the tasks queued or running, read under the lock without copying the view (the Motivator
    /// tells its own goals' tasks from the users' with them).
    pub fn unfinished_tasks(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .view
            .tasks
            .iter()
            .filter(|(_, t)| {
                matches!(
                    t.status,
                    batos_protocol::TaskStatus::Running | batos_protocol::TaskStatus::Queued
                )
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The last assigned sequence number.
    pub fn current_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).seq
    }

    /// A stream of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }
}

/// The one log line of an event: its kind as `event`, its sequence number, and its fields under the same
/// names as in its `data` (task ids as `task`), at a level that fits the kind — failures are errors or
/// warnings, streamed tokens are debug-only (a line per token would drown everything else).
fn log_event(seq: u64, event: &Event) {
    use tracing::{debug, error, info, warn};
    match event {
        Event::ActorStarted { actor, restarts } => {
            info!(event = "actor.started", seq, actor = %actor, restarts, "actor started")
        }
        Event::ActorFailed { actor, reason } => {
            error!(event = "actor.failed", seq, actor = %actor, reason = %reason, "actor failed")
        }
        Event::ActorRestarted {
            actor,
            restarts,
            reason,
        } => {
            warn!(event = "actor.restarted", seq, actor = %actor, restarts, reason = %reason, "actor restarted")
        }
        Event::ActorEscalated { supervisor, reason } => {
            error!(event = "actor.escalated", seq, supervisor = %supervisor, reason = %reason, "supervisor escalates")
        }
        Event::ActorStopped { actor, reason } => {
            info!(event = "actor.stopped", seq, actor = %actor, reason = %reason, "actor stopped")
        }
        Event::TaskSubmitted { id, .. } => {
            info!(event = "task.submitted", seq, task = %id, "task accepted")
        }
        Event::TaskStatus { id, status } => {
            info!(event = "task.status", seq, task = %id, status = %status, "task status")
        }
        Event::TaskStep {
            id,
            step,
            node,
            persona,
            model,
            dissonance,
            duration_ms,
            ..
        } => info!(event = "task.step", seq, task = %id, step, node = %node, persona = %persona,
            model = %model, dissonance = ?dissonance, duration_ms, "task step"),
        Event::TaskToken { id, persona, .. } => {
            debug!(event = "task.token", seq, task = %id, persona = %persona, "token")
        }
        Event::TaskPaused { id, reason } => {
            info!(event = "task.paused", seq, task = %id, reason = %reason, "task paused for the Architect")
        }
        Event::TaskDone { id, .. } => info!(event = "task.done", seq, task = %id, "task done"),
        Event::TaskFailed { id, error } => {
            warn!(event = "task.failed", seq, task = %id, error = %error, "task failed")
        }
        Event::TaskCancelled { id } => {
            info!(event = "task.cancelled", seq, task = %id, "task cancelled")
        }
        Event::PersonaState {
            persona,
            model,
            backend,
            ..
        } => {
            info!(event = "persona.state", seq, persona = %persona, model = %model, backend = %backend, "persona state")
        }
        Event::ModelSwapped {
            persona,
            from,
            to,
            generation,
        } => {
            info!(event = "model.swapped", seq, persona = %persona, from = %from, to = %to, generation, "cognitive atomic swap")
        }
        Event::ToolCreated { name, version, .. } => {
            info!(event = "tool.created", seq, tool = %name, version, "tool registered")
        }
        Event::AmendmentProposed { id, persona, .. } => {
            info!(event = "amendment.proposed", seq, id = %id, persona = %persona, "codex amendment awaits the Architect")
        }
        Event::AmendmentCommitted { id, .. } => {
            info!(event = "amendment.committed", seq, id = %id, "codex amendment committed and live")
        }
        Event::AmendmentRejected { id, reason } => {
            warn!(event = "amendment.rejected", seq, id = %id, reason = %reason, "codex amendment rejected")
        }
        Event::ConfigReloaded { file, changes } => {
            info!(event = "config.reloaded", seq, file = %file, keys = ?changes, "configuration reloaded")
        }
        Event::MemoryUpdated { what, rows } => {
            info!(event = "memory.updated", seq, what = %what, rows, "memory updated")
        }
        Event::CuratorAccepted {
            task,
            step,
            persona,
            split,
            score,
        } => {
            info!(event = "curator.accepted", seq, task = %task, step, persona = %persona, split = %split, score = ?score, "example accepted")
        }
        Event::CuratorRejected {
            task,
            step,
            persona,
            reason,
            detail,
        } => {
            info!(event = "curator.rejected", seq, task = %task, step, persona = %persona, reason = %reason, detail = %detail, "example rejected")
        }
        Event::CuratorTrigger {
            persona,
            new_examples,
            train,
            delivered,
            note,
        } => {
            info!(event = "curator.trigger", seq, persona = %persona, new_examples, train, delivered, note = %note, "training trigger")
        }
        Event::TrainerProgress {
            persona,
            step,
            steps,
            loss,
            tokens_per_s,
            ..
        } => {
            info!(event = "trainer.progress", seq, persona = %persona, step, steps, loss, tokens_per_s, "training step")
        }
        Event::TrainerPublishing {
            persona,
            model,
            status,
        } => {
            info!(event = "trainer.publishing", seq, persona = %persona, model = %model, status = %status, "building the tuned model on Ollama")
        }
        Event::TrainerRejected {
            persona,
            heldout_before,
            heldout_after,
            reason,
            ..
        } => {
            warn!(event = "trainer.rejected", seq, persona = %persona, heldout_before, heldout_after, reason = %reason, "adapter rejected by the gate")
        }
        Event::TrainerFailed { persona, error } => {
            error!(event = "trainer.failed", seq, persona = %persona, error = %error, "training run failed")
        }
        Event::ToolFailed { task, tool, error } => {
            warn!(event = "tool.failed", seq, task = %task.as_deref().unwrap_or("-"), tool = %tool, error = %error, "tool call failed")
        }
        Event::KnowledgeGap { task, query, best } => {
            info!(event = "knowledge.gap", seq, task = %task.as_deref().unwrap_or("-"), query = %query, best = ?best, "memory could not ground a question")
        }
        Event::MotivatorGoal {
            id,
            trigger,
            status,
            persona,
            task,
            ..
        } => {
            info!(event = "motivator.goal", seq, goal = %id, trigger = %trigger, status = %status, persona = %persona, task = %task.as_deref().unwrap_or("-"), "goal")
        }
        Event::MotivatorSuppressed {
            trigger,
            limit,
            reason,
        } => {
            info!(event = "motivator.suppressed", seq, trigger = %trigger, limit = %limit, reason = %reason, "goal suppressed")
        }
        Event::ImageSaved {
            generation,
            path,
            bytes,
            reason,
            duration_ms,
        } => {
            info!(event = "image.saved", seq, generation, path = %path, bytes, reason = %reason, duration_ms, "living image saved")
        }
        Event::MotivatorPaused { paused, reason } => {
            info!(event = "motivator.paused", seq, paused, reason = %reason, "motivator paused or resumed")
        }
        Event::ExamProgress {
            exam,
            phase,
            done,
            total,
            question,
            pass,
            bare_pass,
            ms,
            ..
        } => {
            info!(event = "exam.progress", seq, exam = %exam, phase = %phase, done, total, question = %question, pass, bare_pass = ?bare_pass, ms, "exam progress")
        }
        Event::ExamScored { summary } => {
            info!(event = "exam.scored", seq, exam = %summary.id, status = %summary.status, society_pct = summary.society_pct, bare_pct = ?summary.bare_pct, leaks = summary.leaks, "exam scored")
        }
        Event::ModelTuned {
            persona,
            model,
            heldout_before,
            heldout_after,
            ..
        } => {
            info!(event = "model.tuned", seq, persona = %persona, model = %model, heldout_before, heldout_after, "tuned adapter swapped in")
        }
        Event::ToolRetired { name, reason } => {
            warn!(event = "tool.retired", seq, tool = %name, reason = %reason, "forged tool retired")
        }
        Event::LifeProgress {
            life,
            done,
            total,
            status,
            ..
        } => {
            info!(event = "life.progress", seq, life = %life, done, total, status = %status, "life task ended")
        }
        Event::LifeExam {
            life,
            exam,
            phase,
            at_task,
            check_pct,
            pct,
        } => {
            info!(event = "life.exam", seq, life = %life, exam = %exam, phase = %phase, at_task, check_pct, pct, "life exam scored")
        }
        Event::LifeRolledBack {
            life,
            before,
            after,
            undone,
        } => {
            warn!(event = "life.rolled_back", seq, life = %life, before, after, undone = ?undone, "a check fell too far; what changed was undone")
        }
        Event::LifeEnded { summary } => {
            info!(event = "life.ended", seq, life = %summary.id, status = %summary.status, done = summary.done, start_pct = ?summary.start_pct, latest_pct = ?summary.latest_pct, "life ended")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_increments_and_view_folds() {
        let hub = EventHub::new(16);
        let mut rx = hub.subscribe();
        hub.publish(Event::TaskSubmitted {
            id: "t1".into(),
            text: "hi".into(),
            goal: None,
            exam: None,
        });
        hub.publish(Event::TaskDone {
            id: "t1".into(),
            result: "ok".into(),
        });
        let (seq, view) = hub.snapshot();
        assert_eq!(seq, 2);
        assert_eq!(view.tasks["t1"].status, "done");
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        let p = rx.try_recv().unwrap();
        let body: EventBody = rmp_serde::from_slice(&p.body).unwrap();
        assert_eq!(body.kind, "task.done");
        assert_eq!(body.seq, 2);
        assert_eq!(Event::from_body(&body), Some(p.event.clone()));
    }

    #[test]
    fn late_joiner_converges() {
        let hub = EventHub::new(64);
        let mut early = StateView::default();
        let mut rx = hub.subscribe();
        for i in 0..10 {
            hub.publish(Event::TaskSubmitted {
                id: format!("t{i}"),
                text: String::new(),
                goal: None,
                exam: None,
            });
        }
        let (snap_seq, mut late) = hub.snapshot();
        for i in 0..5 {
            hub.publish(Event::TaskDone {
                id: format!("t{i}"),
                result: "r".into(),
            });
        }
        while let Ok(p) = rx.try_recv() {
            early.apply(&p.event);
            if p.seq > snap_seq {
                late.apply(&p.event);
            }
        }
        assert_eq!(early, late);
        assert_eq!(early, hub.snapshot().1);
    }
}
