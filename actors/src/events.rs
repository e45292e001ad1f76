//! The event bus: every organ publishes here; the gateway's PUB socket and in-process listeners consume it.
//!
//! Sequence numbers are assigned and applied to the [`StateView`] under one lock, so a `snapshot` taken at
//! `seq = N` reflects exactly the events `1..=N` — the property late joiners rely on (zguide "Clone").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::protocol::{EventBody, PROTOCOL_VERSION};

/// Everything that happens in batos that a client may want to see.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "data")]
pub enum Event {
    /// An actor started (first start or restart).
    #[serde(rename = "actor.started")]
    ActorStarted {
        /// Path in the tree, e.g. `root/personas/BRICK`.
        actor: String,
        /// Restarts so far.
        restarts: u32,
    },
    /// An actor failed (panic or error); its supervisor decides what happens next.
    #[serde(rename = "actor.failed")]
    ActorFailed {
        /// Path in the tree.
        actor: String,
        /// The panic or error text.
        reason: String,
    },
    /// A supervisor restarted a child.
    #[serde(rename = "actor.restarted")]
    ActorRestarted {
        /// Path in the tree.
        actor: String,
        /// Restarts so far, this one included.
        restarts: u32,
        /// Why it had to restart.
        reason: String,
    },
    /// A supervisor exceeded its restart intensity, stopped its children and escalated to its parent.
    #[serde(rename = "actor.escalated")]
    ActorEscalated {
        /// The supervisor that gave up.
        supervisor: String,
        /// The failure that tipped it over.
        reason: String,
    },
    /// An actor stopped for good (shutdown, temporary child, retired persona).
    #[serde(rename = "actor.stopped")]
    ActorStopped {
        /// Path in the tree.
        actor: String,
        /// Why.
        reason: String,
    },
    /// A task was accepted.
    #[serde(rename = "task.submitted")]
    TaskSubmitted {
        /// Task id.
        id: String,
        /// The request text.
        text: String,
    },
    /// A task changed status (queued, running, paused, ...).
    #[serde(rename = "task.status")]
    TaskStatus {
        /// Task id.
        id: String,
        /// New status.
        status: String,
    },
    /// A task completed one step of the cognition graph.
    #[serde(rename = "task.step")]
    TaskStep {
        /// Task id.
        id: String,
        /// 1-based step number.
        step: u32,
        /// Graph node.
        node: String,
        /// Persona that acted.
        persona: String,
        /// Model it used.
        model: String,
        /// Backend that served the model.
        backend: String,
        /// ROBIN's dissonance score, when this step produced one.
        dissonance: Option<f64>,
        /// Wall time of the step.
        duration_ms: u64,
        /// Short text of what the step produced.
        summary: String,
    },
    /// Streamed model output of a task's current step.
    #[serde(rename = "task.token")]
    TaskToken {
        /// Task id.
        id: String,
        /// Persona speaking.
        persona: String,
        /// Text fragment.
        text: String,
    },
    /// A task paused at the philosophical-inquiry interrupt, awaiting a human.
    #[serde(rename = "task.paused")]
    TaskPaused {
        /// Task id.
        id: String,
        /// Why it paused.
        reason: String,
    },
    /// A task finished with an answer.
    #[serde(rename = "task.done")]
    TaskDone {
        /// Task id.
        id: String,
        /// ALFRED's answer.
        result: String,
    },
    /// A task failed.
    #[serde(rename = "task.failed")]
    TaskFailed {
        /// Task id.
        id: String,
        /// Why.
        error: String,
    },
    /// A task was cancelled.
    #[serde(rename = "task.cancelled")]
    TaskCancelled {
        /// Task id.
        id: String,
    },
    /// A persona's live state (after start, surgery, reload or swap).
    #[serde(rename = "persona.state")]
    PersonaState {
        /// Persona name.
        persona: String,
        /// Current model.
        model: String,
        /// Backend serving it.
        backend: String,
        /// Editable fields and their values.
        state: Value,
    },
    /// A cognitive atomic swap completed.
    #[serde(rename = "model.swapped")]
    ModelSwapped {
        /// Persona name.
        persona: String,
        /// Previous model.
        from: String,
        /// New model.
        to: String,
        /// Generation of the new persona actor.
        generation: u64,
    },
    /// A tool was registered (or replaced by a new version).
    #[serde(rename = "tool.created")]
    ToolCreated {
        /// Tool name.
        name: String,
        /// Version number.
        version: u32,
        /// What it does.
        description: String,
    },
    /// A codex amendment awaits the Architect's decision.
    #[serde(rename = "amendment.proposed")]
    AmendmentProposed {
        /// Amendment id.
        id: String,
        /// Persona it changes.
        persona: String,
        /// Rationale.
        rationale: String,
    },
    /// An approved amendment was committed to codex.toml.
    #[serde(rename = "amendment.committed")]
    AmendmentCommitted {
        /// Amendment id.
        id: String,
        /// Unified diff of codex.toml.
        diff: String,
    },
    /// An amendment was rejected (by the Architect, or because committing it failed).
    #[serde(rename = "amendment.rejected")]
    AmendmentRejected {
        /// Amendment id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A configuration file was reloaded live.
    #[serde(rename = "config.reloaded")]
    ConfigReloaded {
        /// `codex` or `settings`.
        file: String,
        /// What changed, in words.
        changes: Vec<String>,
    },
    /// A memory consolidation or index build finished.
    #[serde(rename = "memory.updated")]
    MemoryUpdated {
        /// What happened.
        what: String,
        /// Rows in the table.
        rows: u64,
    },
}

impl Event {
    /// The event's kind string (also its PUB topic).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ActorStarted { .. } => "actor.started",
            Event::ActorFailed { .. } => "actor.failed",
            Event::ActorRestarted { .. } => "actor.restarted",
            Event::ActorEscalated { .. } => "actor.escalated",
            Event::ActorStopped { .. } => "actor.stopped",
            Event::TaskSubmitted { .. } => "task.submitted",
            Event::TaskStatus { .. } => "task.status",
            Event::TaskStep { .. } => "task.step",
            Event::TaskToken { .. } => "task.token",
            Event::TaskPaused { .. } => "task.paused",
            Event::TaskDone { .. } => "task.done",
            Event::TaskFailed { .. } => "task.failed",
            Event::TaskCancelled { .. } => "task.cancelled",
            Event::PersonaState { .. } => "persona.state",
            Event::ModelSwapped { .. } => "model.swapped",
            Event::ToolCreated { .. } => "tool.created",
            Event::AmendmentProposed { .. } => "amendment.proposed",
            Event::AmendmentCommitted { .. } => "amendment.committed",
            Event::AmendmentRejected { .. } => "amendment.rejected",
            Event::ConfigReloaded { .. } => "config.reloaded",
            Event::MemoryUpdated { .. } => "memory.updated",
        }
    }

    /// The `data` payload of this event as JSON.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Rebuilds a typed event from a wire body; `None` for kinds this build does not know (forward compatible).
    pub fn from_body(body: &EventBody) -> Option<Event> {
        serde_json::from_value(serde_json::json!({"kind": body.kind, "data": body.data})).ok()
    }
}

/// The state the event stream describes: what `snapshot` returns and what a watcher rebuilds.
///
/// It is a pure fold over events ([`StateView::apply`]); the daemon and every client run the same code, so
/// "joined late + snapshot" and "was there from the start" converge on identical values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StateView {
    /// Actors by tree path.
    pub actors: BTreeMap<String, ActorView>,
    /// Tasks by id.
    pub tasks: BTreeMap<String, TaskView>,
    /// Personas by name.
    pub personas: BTreeMap<String, PersonaView>,
    /// Tools by name.
    pub tools: BTreeMap<String, ToolView>,
    /// Amendments by id.
    pub amendments: BTreeMap<String, AmendmentView>,
    /// How many times a supervisor gave up and escalated.
    pub escalations: u64,
}

/// One actor in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActorView {
    /// running, failed, stopped, escalated.
    pub status: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Last failure text.
    pub last_error: Option<String>,
}

/// One task in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskView {
    /// queued, running, paused, done, failed, cancelled.
    pub status: String,
    /// Steps completed.
    pub steps: u32,
    /// Last dissonance score.
    pub dissonance: Option<f64>,
    /// Answer, when done.
    pub result: Option<String>,
    /// Error, when failed.
    pub error: Option<String>,
}

/// One persona in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PersonaView {
    /// Current model.
    pub model: String,
    /// Backend serving it.
    pub backend: String,
    /// Editable state.
    pub state: Value,
    /// Swaps so far.
    pub swaps: u64,
}

/// One tool in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolView {
    /// Version number.
    pub version: u32,
    /// What it does.
    pub description: String,
}

/// One amendment in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AmendmentView {
    /// pending, committed, rejected.
    pub status: String,
    /// Persona it changes.
    pub persona: String,
}

impl StateView {
    /// Applies one event.
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::ActorStarted { actor, restarts } => {
                let a = self.actors.entry(actor.clone()).or_default();
                a.status = "running".into();
                a.restarts = *restarts;
            }
            Event::ActorFailed { actor, reason } => {
                let a = self.actors.entry(actor.clone()).or_default();
                a.status = "failed".into();
                a.last_error = Some(reason.clone());
            }
            Event::ActorRestarted {
                actor, restarts, ..
            } => {
                let a = self.actors.entry(actor.clone()).or_default();
                a.status = "running".into();
                a.restarts = *restarts;
            }
            Event::ActorEscalated { supervisor, reason } => {
                self.escalations += 1;
                let a = self.actors.entry(supervisor.clone()).or_default();
                a.status = "escalated".into();
                a.last_error = Some(reason.clone());
            }
            Event::ActorStopped { actor, .. } => {
                if let Some(a) = self.actors.get_mut(actor) {
                    a.status = "stopped".into();
                }
            }
            Event::TaskSubmitted { id, .. } => {
                self.tasks.insert(
                    id.clone(),
                    TaskView {
                        status: "queued".into(),
                        ..Default::default()
                    },
                );
            }
            Event::TaskStatus { id, status } => self.task(id).status = status.clone(),
            Event::TaskStep {
                id,
                step,
                dissonance,
                ..
            } => {
                let t = self.task(id);
                t.steps = *step;
                if dissonance.is_some() {
                    t.dissonance = *dissonance;
                }
            }
            Event::TaskToken { .. } => {}
            Event::TaskPaused { id, .. } => self.task(id).status = "paused".into(),
            Event::TaskDone { id, result } => {
                let t = self.task(id);
                t.status = "done".into();
                t.result = Some(result.clone());
            }
            Event::TaskFailed { id, error } => {
                let t = self.task(id);
                t.status = "failed".into();
                t.error = Some(error.clone());
            }
            Event::TaskCancelled { id } => self.task(id).status = "cancelled".into(),
            Event::PersonaState {
                persona,
                model,
                backend,
                state,
            } => {
                let p = self.personas.entry(persona.clone()).or_default();
                p.model = model.clone();
                p.backend = backend.clone();
                p.state = state.clone();
            }
            Event::ModelSwapped { persona, to, .. } => {
                let p = self.personas.entry(persona.clone()).or_default();
                p.model = to.clone();
                p.swaps += 1;
            }
            Event::ToolCreated {
                name,
                version,
                description,
            } => {
                self.tools.insert(
                    name.clone(),
                    ToolView {
                        version: *version,
                        description: description.clone(),
                    },
                );
            }
            Event::AmendmentProposed { id, persona, .. } => {
                self.amendments.insert(
                    id.clone(),
                    AmendmentView {
                        status: "pending".into(),
                        persona: persona.clone(),
                    },
                );
            }
            Event::AmendmentCommitted { id, .. } => {
                self.amendments.entry(id.clone()).or_default().status = "committed".into();
            }
            Event::AmendmentRejected { id, .. } => {
                self.amendments.entry(id.clone()).or_default().status = "rejected".into();
            }
            Event::ConfigReloaded { .. } | Event::MemoryUpdated { .. } => {}
        }
    }

    fn task(&mut self, id: &str) -> &mut TaskView {
        self.tasks.entry(id.to_string()).or_default()
    }
}

/// One published event, encoded once for every consumer.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its sequence number.
    pub seq: u64,
    /// The typed event.
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

/// Current Unix time in seconds, to the microsecond. Whole microseconds keep every timestamp exact through
/// serde_json's default (best-effort) float parsing, so checkpoints and task lists read back what was written.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as f64 / 1e6)
        .unwrap_or(0.0)
}

impl EventHub {
    /// A hub whose consumers may fall `capacity` events behind before they lose some.
    pub fn new(capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(Self {
            inner: Mutex::new(HubInner {
                seq: 0,
                view: StateView::default(),
            }),
            tx,
        })
    }

    /// Assigns the next seq, folds the event into the view and hands it to every consumer, atomically.
    pub fn publish(&self, event: Event) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.seq += 1;
        let seq = inner.seq;
        inner.view.apply(&event);
        let body = encode_body(seq, event.kind(), event.data());
        // No receiver is fine (no gateway yet): the view already holds the state.
        let _ = self.tx.send(Arc::new(Published { seq, event, body }));
        seq
    }

    /// `(seq, state)`: the state after exactly the events `1..=seq`.
    pub fn snapshot(&self) -> (u64, StateView) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.seq, inner.view.clone())
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

/// Encodes an event body (also used for heartbeats, which carry the current seq).
pub fn encode_body(seq: u64, kind: &str, data: Value) -> Vec<u8> {
    let body = EventBody {
        v: PROTOCOL_VERSION,
        seq,
        ts: unix_now(),
        kind: kind.to_string(),
        data,
    };
    rmp_serde::to_vec_named(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_survive_a_json_round_trip() {
        let start = unix_now();
        for i in 0..10_000u32 {
            let t = start + f64::from(i) * 0.000_137;
            let t = (t * 1e6).round() / 1e6;
            let back: f64 = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{t}");
        }
        let now = unix_now();
        let back: f64 = serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
        assert_eq!(back, now);
    }

    #[test]
    fn seq_increments_and_view_folds() {
        let hub = EventHub::new(16);
        let mut rx = hub.subscribe();
        hub.publish(Event::TaskSubmitted {
            id: "t1".into(),
            text: "hi".into(),
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
    fn kind_matches_serde_tag() {
        let ev = Event::ModelSwapped {
            persona: "BRICK".into(),
            from: "a".into(),
            to: "b".into(),
            generation: 2,
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["kind"], ev.kind());
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
