//! `batos-actors`: the organs of BAT OS.
//!
//! One folder per organ (its actor, messages and state), plus the shared domain types (settings, wire
//! protocol, events) and the backends the organs use (LLM, memory store, sandbox). The binary crate `batos`
//! wires these into the supervision tree and speaks ZeroMQ to the outside world.

pub mod codex;
pub mod events;
pub mod fsutil;
pub mod llm;
pub mod memory;
pub mod orchestrator;
pub mod personas;
pub mod protocol;
pub mod settings;
pub mod supervisor;
pub mod tools;

/// The four personas, in the order they are started.
pub const PERSONAS: &[&str] = &["ALFRED", "BABS", "BRICK", "ROBIN"];
