//! `batos-protocol`: wire protocol v1 of BAT OS, the contract every client relies on (`docs/protocol.md`).
//!
//! A leaf crate: serde, serde_json and rmp-serde, nothing else. The daemon's gateway, the `batos` client
//! commands, the TUI and any other program that speaks to batos share these types, so a client compiles
//! none of the organs (LanceDB, DataFusion, llama.cpp) just to talk.
//!
//! ```text
//! wire     Request / Reply / ErrorBody / ErrorCode, decode_request: the envelope and its boundary checks
//! command  Command and each command's arguments (deny_unknown_fields)
//! event    Event (typed) and EventBody (on the wire), encode_body
//! view     StateView: the pure fold over events that `snapshot` returns and watchers rebuild
//! exam     the exam: question sets, run arguments, results and summaries
//! types    Persona, TaskStatus, IngestItem: values shared by the wire and the organs
//! ```

pub mod command;
pub mod event;
pub mod exam;
pub mod life;
pub mod types;
pub mod view;
pub mod wire;

pub use command::*;
pub use event::{encode_body, unix_now, Event, EventBody, EVENT_TEXT_BYTES};
pub use types::{IngestItem, Persona, TaskStatus, UnknownPersona};
pub use view::{ActorView, AmendmentView, PersonaView, StateView, TaskView, ToolView};
pub use wire::{
    decode_request, events_auth_topic, truncate, ErrorBody, ErrorCode, Reply, Request,
    EVENTS_AUTH_PREFIX, MAX_ID_LEN, PROTOCOL_VERSION,
};
