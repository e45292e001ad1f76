//! End-to-end tests: the real `batos` binary, real ZeroMQ sockets, the scripted Ollama-API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

mod batching;
mod cluster;
mod codex;
mod cognition;
mod curator;
mod dedupe;
mod events;
mod exam;
mod first_hour;
mod forge;
mod forge_ollama;
mod gateway;
mod hostile;
mod http;
mod image;
mod life;
mod memory;
mod motivator;
mod offline;
mod supervision;
mod swaps;
mod tools;
mod tui;
