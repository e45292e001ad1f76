//! Test support: the real daemon, and a scripted Ollama-API server (a named test double).

pub mod daemon;
pub mod ollama;

pub use daemon::*;
pub use ollama::*;
