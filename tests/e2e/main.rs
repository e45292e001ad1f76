//! End-to-end tests: the real `batos` binary, real ZeroMQ sockets, the scripted Ollama-API server.

#[allow(dead_code)]
mod support;

mod codex;
mod cognition;
mod gateway;
mod memory;
mod offline;
mod tools;
