//! `batos-actors`: the organs of BAT OS.
//!
//! One folder per organ (its actor, messages and state), plus the shared domain types (settings, the event
//! hub) and the backends the organs use (LLM, memory store, sandbox). The wire protocol is the leaf crate
//! `batos-protocol`. The binary crate `batos` wires these into the supervision tree and speaks ZeroMQ to
//! the outside world.

pub mod ask;
pub mod cluster;
pub mod codex;
pub mod curator;
pub mod events;
pub mod exam;
pub mod fsutil;
pub mod image;
pub mod job;
pub mod life;
pub mod llm;
pub mod memory;
pub mod motivator;
pub mod orchestrator;
pub mod personas;
pub mod ports;
pub mod principles;
pub mod records;
pub mod settings;
pub mod supervisor;
pub mod tools;
pub mod trainer;

pub use batos_protocol::Persona;

/// The four personas' names, in the order they are started (see [`Persona`]).
pub const PERSONAS: &[&str] = &Persona::NAMES;
