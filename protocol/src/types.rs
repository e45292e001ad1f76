//! Domain values that cross the wire and the organs alike: who a persona is, where a task stands, and what
//! a client may ask memory to keep. One definition each, so events, the view, the gateway and the organs
//! cannot drift apart in spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task stands. Serialised as the lower-case name (`"running"`), which is also what the event
/// `task.status` and the view's `tasks.*.status` carry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Accepted, waiting for a slot.
    #[default]
    Queued,
    /// Running through the graph.
    Running,
    /// Waiting for a human (philosophical inquiry).
    Paused,
    /// Answered.
    Done,
    /// Failed; the task's `error` says why.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Paused,
        TaskStatus::Done,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Whether the task will never run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// Lower-case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for TaskStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for TaskStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// The four members of the household. Serialised as the upper-case name (`"BRICK"`), as in codex.toml,
/// settings.toml and every event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum Persona {
    /// The steward: routes tasks and writes the final answer.
    Alfred,
    /// The researcher: brings memory and context.
    Babs,
    /// The builder: drafts, with tools.
    Brick,
    /// The critic: scores dissonance.
    Robin,
}

impl Persona {
    /// Every persona, in start order.
    pub const ALL: [Persona; 4] = [
        Persona::Alfred,
        Persona::Babs,
        Persona::Brick,
        Persona::Robin,
    ];

    /// The names of [`Persona::ALL`], for messages and schemas.
    pub const NAMES: [&'static str; 4] = ["ALFRED", "BABS", "BRICK", "ROBIN"];

    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::Alfred => "ALFRED",
            Persona::Babs => "BABS",
            Persona::Brick => "BRICK",
            Persona::Robin => "ROBIN",
        }
    }
}

impl fmt::Display for Persona {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the four personas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPersona(pub String);

impl fmt::Display for UnknownPersona {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no persona named `{}` (known: {})",
            crate::wire::truncate(&self.0, 64),
            Persona::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownPersona {}

impl FromStr for Persona {
    type Err = UnknownPersona;

    /// Exact, case-sensitive match: `BRICK` is a persona, `brick` is not (names are identifiers here).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Persona::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPersona(s.to_string()))
    }
}

/// One thing to remember (`memory_ingest`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestItem {
    /// Text to store; the memory organ chunks it.
    pub text: String,
    /// Whose words these are: a persona's name (the default, ALFRED), `person` for what a person told the
    /// household, or `tool:<name>` for a tool's exact result. Retrieval shows the source with the text.
    #[serde(default)]
    pub persona: Option<String>,
    /// Task it came from.
    #[serde(default)]
    pub task_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for p in Persona::ALL {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, p.as_str());
            assert_eq!(p.as_str().parse::<Persona>().unwrap(), p);
        }
        assert_eq!(
            Persona::ALL.map(Persona::as_str),
            Persona::NAMES,
            "NAMES follows ALL"
        );
        assert!("brick".parse::<Persona>().is_err());
        for s in TaskStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s, s.as_str());
        }
    }
}
