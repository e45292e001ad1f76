//! The event bus: every organ publishes here; the gateway's PUB socket and in-process listeners consume it.
//! The events themselves and the [`StateView`] fold are wire types (`batos-protocol`); this module owns only
//! the sequence numbers and the one lock that keeps them and the view in step.
//!
//! Sequence numbers are assigned and applied to the [`StateView`] under one lock, so a `snapshot` taken at
//! `seq = N` reflects exactly the events `1..=N` — the property late joiners rely on (zguide "Clone").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

pub use batos_protocol::{encode_body, unix_now, Event, EventBody, StateView};

use crate::settings::DEFAULT_LOG_FIELD_CHARS;

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
    /// `log.event_field_chars`: the longest text of an event's log line.
    log_field_chars: AtomicUsize,
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
            log_field_chars: AtomicUsize::new(DEFAULT_LOG_FIELD_CHARS),
        })
    }

    /// Sets the longest text, in characters, an event's log line carries for one field
    /// (`log.event_field_chars`; 0: never cut).
    pub fn set_log_field_chars(&self, chars: usize) {
        self.log_field_chars.store(chars, Ordering::Relaxed);
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
            let (kind, data) = (event.kind(), event.data());
            // The data is copied for the log line only when that line will be written (a streamed token's,
            // debug-only, usually is not).
            let logged = logged(kind).then(|| data.clone());
            let body = encode_body(seq, kind, data);
            let published = Arc::new(Published { seq, event, body });
            // No receiver is fine (no gateway yet): the view already holds the state.
            let _ = self.tx.send(published.clone());
            (published, kind, logged)
        };
        let (published, kind, logged) = published;
        if let Some(data) = logged {
            log_event(
                published.seq,
                kind,
                &data,
                self.log_field_chars.load(Ordering::Relaxed),
            );
        }
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

/// The one log line of an event, derived from what the event says on the wire, so a new event is logged
/// without a line written for it here:
///
/// - `event` is its kind and the message is the kind in words (`actor.restarted` → "actor restarted");
/// - `fields` is its wire `data` as one JSON object ([`log_fields`]: a `task.*` event's `id` named `task`, a
///   `tool.*` event's `name` named `tool`, an absent value written `-`, each text cut at
///   `log.event_field_chars` characters), which the daemon's JSON log format spreads into the line itself, so
///   a line is found by `task`, `actor`, `reason`... as a person greps for them;
/// - the level is [`level`]'s: failures are errors or warnings, streamed tokens debug-only.
fn log_event(seq: u64, kind: &'static str, data: &serde_json::Value, field_chars: usize) {
    use tracing::Level;
    let lvl = level(kind);
    let fields = serde_json::Value::Object(log_fields(kind, data, field_chars));
    let message = kind.replace(['.', '_'], " ");
    macro_rules! line {
        ($lvl:expr) => {
            tracing::event!($lvl, event = kind, seq, fields = %fields, "{message}")
        };
    }
    match lvl {
        Level::ERROR => line!(Level::ERROR),
        Level::WARN => line!(Level::WARN),
        Level::DEBUG => line!(Level::DEBUG),
        _ => line!(Level::INFO),
    }
}

/// An event's `data` as its log line's fields: every member, under the name a person looks for (a `task.*`
/// event's `id` is `task`, a `tool.*` event's `name` is `tool`), `null` written `-`, and each text — a
/// nested value as its JSON text — cut at `max_chars` characters (0: never cut).
pub fn log_fields(
    kind: &str,
    data: &serde_json::Value,
    max_chars: usize,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let cut = |text: String| {
        if max_chars == 0 {
            text
        } else {
            clip(text, max_chars)
        }
    };
    let Value::Object(members) = data else {
        return serde_json::Map::new();
    };
    members
        .iter()
        .map(|(k, v)| {
            let name = match k.as_str() {
                "id" if kind.starts_with("task.") => "task",
                "name" if kind.starts_with("tool.") => "tool",
                other => other,
            };
            let value = match v {
                Value::Null => Value::String("-".into()),
                Value::String(s) => Value::String(cut(s.clone())),
                Value::Number(_) | Value::Bool(_) => v.clone(),
                nested => Value::String(cut(nested.to_string())),
            };
            (name.to_string(), value)
        })
        .collect()
}

/// Whether the log filter in force lets `kind`'s line through (checked before any of it is built).
fn logged(kind: &str) -> bool {
    use tracing::Level;
    match level(kind) {
        Level::ERROR => tracing::enabled!(Level::ERROR),
        Level::WARN => tracing::enabled!(Level::WARN),
        Level::DEBUG => tracing::enabled!(Level::DEBUG),
        _ => tracing::enabled!(Level::INFO),
    }
}

/// The level of an event's log line: the few kinds that are not `info`. A kind not named here is `info`,
/// so adding an event needs no line here unless it reports a failure.
fn level(kind: &str) -> tracing::Level {
    use tracing::Level;
    match kind {
        "actor.failed" | "actor.escalated" | "trainer.failed" => Level::ERROR,
        "actor.restarted" | "task.failed" | "tool.failed" | "tool.retired"
        | "amendment.rejected" | "trainer.rejected" | "life.rolled_back" => Level::WARN,
        "task.token" => Level::DEBUG,
        _ => Level::INFO,
    }
}

/// `text` cut to at most `max` characters, marked with `…` when cut.
fn clip(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
        text.push('…');
    }
    text
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
