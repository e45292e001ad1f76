//! `batos-client`: everything that talks to a running batos daemon — the gateway client library (Lazy Pirate
//! requests, the event watcher), the CLI commands, and the terminal UI. It depends on the wire protocol crate
//! and a few general crates, never on the organs: a person who only drives a household (or writes a tool that
//! does) builds this in minutes, without the engine's ~650 crates. The `batos` binary flattens the same
//! commands into its own, so both binaries take the same flags and print the same lines.

pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod exam_cli;
pub mod exam_plot;
pub mod goals_cli;
pub mod image_cli;
pub mod life_cli;
pub mod send_cli;
pub mod session;
pub mod trainer_cli;
pub mod tui;
