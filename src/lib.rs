//! `batos`: the shell around the organs — CLI, daemon boot, supervision-tree wiring, the ZeroMQ gateway
//! server and client, and the terminal UI.

pub mod boot;
pub mod client;
pub mod exam_cli;
pub mod exam_plot;
pub mod forge_cli;
pub mod gateway;
pub mod goals_cli;
pub mod image_cli;
pub mod life_cli;
pub mod logging;
pub mod send_cli;
pub mod tree;
pub mod tui;
