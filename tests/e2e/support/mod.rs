//! Test support: the real daemon, its event channel, and a scripted Ollama-API server (a named test double).

pub mod daemon;
pub mod node;
pub mod ollama;
pub mod subscribe;
pub mod zmtp;

pub use daemon::*;
pub use node::*;
pub use ollama::*;
pub use subscribe::*;
pub use zmtp::*;
