//! The state the event stream describes, as a pure fold: what `snapshot` returns and what a watcher or the
//! TUI rebuilds from events.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::types::TaskStatus;

/// The state the event stream describes: what `snapshot` returns and what a watcher rebuilds.
///
/// It is a pure fold over events ([`StateView::apply`]); the daemon and every client run the same code, so
/// "joined late + snapshot" and "was there from the start" converge on identical values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StateView {
    /// Actors by tree path.
    pub actors: BTreeMap<String, ActorView>,
    /// Tasks by id: every task seen since the daemon started, except finished ones beyond
    /// `keep_finished_tasks` (the oldest to finish go first).
    pub tasks: BTreeMap<String, TaskView>,
    /// Personas by name (`ALFRED`, `BABS`, `BRICK`, `ROBIN`), from `persona.state` and `model.swapped`.
    pub personas: BTreeMap<String, PersonaView>,
    /// Tools by name, only those announced by `tool.created` (not the built-ins; `list_tools` has all).
    pub tools: BTreeMap<String, ToolView>,
    /// Amendments by id, from `amendment.proposed` on; decided ones stay.
    pub amendments: BTreeMap<String, AmendmentView>,
    /// How many times a supervisor gave up and escalated.
    pub escalations: u64,
    /// Most finished (done, failed, cancelled) tasks the view keeps; `None` keeps all. Set by the daemon
    /// (`gateway.view_keep_finished_tasks`) and carried in every snapshot, so a client that starts from a
    /// snapshot prunes exactly as the daemon does and both stay equal.
    #[serde(default)]
    pub keep_finished_tasks: Option<usize>,
    /// Ids of finished tasks still in the view, in the order they finished (the pruning order).
    #[serde(default)]
    pub finished: VecDeque<String>,
}

/// One actor in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActorView {
    /// running, failed, stopped, escalated.
    pub status: String,
    /// Restarts under its current supervisor, as the last `actor.started` or `actor.restarted` said.
    pub restarts: u32,
    /// Last failure text.
    pub last_error: Option<String>,
}

/// One task in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskView {
    /// Where the task stands.
    pub status: TaskStatus,
    /// Steps completed: the `step` of the last `task.step` (0 for a task loaded from its checkpoint at
    /// daemon start).
    pub steps: u32,
    /// Last dissonance (0..=1, higher = more discord) any `task.step` carried; a step without one keeps it.
    pub dissonance: Option<f64>,
    /// Answer, when done.
    pub result: Option<String>,
    /// Why it failed (`task.failed`); `None` otherwise.
    pub error: Option<String>,
}

/// One persona in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PersonaView {
    /// Model in use: from the last `persona.state`, or the `to` of a later `model.swapped`.
    pub model: String,
    /// `"ollama"` or `"embedded"`, from the last `persona.state` (`""` until one arrives).
    pub backend: String,
    /// `state` of the last `persona.state` (`temperature`, `top_p`, `max_tokens`, `extra_instructions`,
    /// `generation`); null until one arrives.
    pub state: Value,
    /// `model.swapped` events seen for this persona since the daemon started.
    pub swaps: u64,
}

/// One tool in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolView {
    /// 1 for a new tool, +1 each time the ToolForge replaces it.
    pub version: u32,
    /// What it does.
    pub description: String,
}

/// One amendment in the view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AmendmentView {
    /// pending, committed, rejected.
    pub status: String,
    /// Persona whose codex entry it would change, from `amendment.proposed` (`""` for one proposed before
    /// the daemon last started).
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
                        status: TaskStatus::Queued,
                        ..Default::default()
                    },
                );
            }
            Event::TaskStatus { id, status } => {
                self.task(id).status = *status;
                self.note_finished(id);
            }
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
            Event::TaskPaused { id, .. } => self.task(id).status = TaskStatus::Paused,
            Event::TaskDone { id, result } => {
                let t = self.task(id);
                t.status = TaskStatus::Done;
                t.result = Some(result.clone());
                self.note_finished(id);
            }
            Event::TaskFailed { id, error } => {
                let t = self.task(id);
                t.status = TaskStatus::Failed;
                t.error = Some(error.clone());
                self.note_finished(id);
            }
            Event::TaskCancelled { id } => {
                self.task(id).status = TaskStatus::Cancelled;
                self.note_finished(id);
            }
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
            // Every other event leaves the view as it is: an event is folded here only when it changes what
            // a client sees of actors, personas, tasks, tools or amendments.
            _ => {}
        }
    }

    fn task(&mut self, id: &str) -> &mut TaskView {
        self.tasks.entry(id.to_string()).or_default()
    }

    /// After a status change: a task that just became final joins the pruning order, and the oldest finished
    /// tasks beyond `keep_finished_tasks` leave the view.
    fn note_finished(&mut self, id: &str) {
        let finished = self.tasks.get(id).is_some_and(|t| t.status.is_final());
        if finished && !self.finished.iter().any(|f| f == id) {
            self.finished.push_back(id.to_string());
        }
        if let Some(keep) = self.keep_finished_tasks {
            while self.finished.len() > keep {
                if let Some(old) = self.finished.pop_front() {
                    self.tasks.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_folds_through_its_statuses() {
        let mut v = StateView::default();
        v.apply(&Event::TaskSubmitted {
            id: "t".into(),
            text: "q".into(),
            goal: None,
            exam: None,
        });
        assert_eq!(v.tasks["t"].status, TaskStatus::Queued);
        v.apply(&Event::TaskStatus {
            id: "t".into(),
            status: TaskStatus::Running,
        });
        assert_eq!(v.tasks["t"].status, "running");
        v.apply(&Event::TaskDone {
            id: "t".into(),
            result: "a".into(),
        });
        assert_eq!(v.tasks["t"].status, TaskStatus::Done);
        assert_eq!(v.tasks["t"].result.as_deref(), Some("a"));
        // The wire form of the view is unchanged: statuses are the same lower-case strings as before.
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["tasks"]["t"]["status"], "done");
    }

    #[test]
    fn finished_tasks_beyond_the_retention_leave_the_view_oldest_first() {
        let mut v = StateView {
            keep_finished_tasks: Some(2),
            ..Default::default()
        };
        for i in 0..4 {
            v.apply(&Event::TaskSubmitted {
                id: format!("t{i}"),
                text: String::new(),
                goal: None,
                exam: None,
            });
        }
        for i in [2, 0, 1] {
            v.apply(&Event::TaskDone {
                id: format!("t{i}"),
                result: String::new(),
            });
        }
        let ids: Vec<&str> = v.tasks.keys().map(String::as_str).collect();
        assert_eq!(ids, ["t0", "t1", "t3"], "t2 finished first and went first");
        assert_eq!(v.finished, ["t0", "t1"]);
        // A snapshot carries the retention: a client folding on from it prunes alike.
        let mut late: StateView =
            serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
        let ev = Event::TaskFailed {
            id: "t3".into(),
            error: "x".into(),
        };
        v.apply(&ev);
        late.apply(&ev);
        assert_eq!(v, late);
        assert_eq!(v.tasks.len(), 2);
    }
}
