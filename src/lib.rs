//! `batos`: the daemon around the organs — boot, supervision-tree wiring, the ZeroMQ gateway server and the
//! offline `image import`. Talking to a daemon (client library, CLI commands, terminal UI) is the
//! `batos-client` crate's, which builds without the engine.

pub mod boot;
pub mod gateway;
pub mod image_cli;
pub mod logging;
pub mod tree;
