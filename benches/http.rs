//! The HTTP door's event latency (issue 33): from publish to the page, against the ZeroMQ subscriber, in one
//! run. `tests/py/event_latency.py` follows the same `persona.state` events three ways at once — pyzmq's SUB on
//! the event channel, Python reading `GET /api/v1/events`, and an EventSource inside the page in headless
//! Chromium — while it makes them with `update_persona` through the HTTP door every 20 ms; each latency is the
//! reader's clock at arrival minus the event's `ts`.
//!
//! `cargo bench --bench http` (`BATOS_BENCH_HTTP_EVENTS` events, default 1000); under `cargo test` 20, a smoke
//! test of the same code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

use std::process::Command;

use daemon::{free_port, log_level, repo, shipped, Daemon};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events: usize = match full {
        true => std::env::var("BATOS_BENCH_HTTP_EVENTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
        false => 20,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Ollama at a closed port: no event here needs a model.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let d = rt.block_on(Daemon::start(
        &closed,
        vec![
            log_level("warn"),
            shipped("gateway", "heartbeat_ms"),
            Box::new(|doc| {
                doc["http"]["enabled"] = toml_edit::value(true);
                doc["http"]["bind"] = toml_edit::value(format!("127.0.0.1:{}", free_port()));
            }),
        ],
    ));
    let s = d.settings();
    let python = daemon::python();
    let out = Command::new("timeout")
        .args(["900", &python])
        .arg(repo().join("tests/py/event_latency.py"))
        .arg(format!("http://{}", s.http.bind))
        .arg(d.client_config().token.unwrap())
        .arg(&s.gateway.event_endpoint)
        .arg(events.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (run scripts/setup.sh): {e}"));
    assert!(
        out.status.success(),
        "event_latency.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "event latency, {} events: ZeroMQ SUB p50 {} ms / p99 {} ms; SSE (Python) p50 {} ms / p99 {} ms; the page \
         (Chromium EventSource) p50 {} ms / p99 {} ms",
        r["zmq"]["n"],
        r["zmq"]["p50_ms"],
        r["zmq"]["p99_ms"],
        r["sse"]["p50_ms"],
        r["sse"]["p99_ms"],
        r["page"]["p50_ms"],
        r["page"]["p99_ms"]
    );
}
