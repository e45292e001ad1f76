//! CurveZMQ's cost on the gateway (issue 32): the ping round trip of a CURVE client against a clear-text one,
//! both pyzmq (libzmq) REQ sockets on one daemon with `gateway.curve = "on"`, measured in alternating blocks in
//! one run (`tests/py/curve_ping.py`), so both meet the same weather. libzmq on both sides, so the comparison
//! is the daemon's cost alone (`batos`'s own CURVE goes through its tunnel, one more hop).
//!
//! `cargo bench --bench curve` (`BATOS_BENCH_CURVE_PINGS` pings each, default 2000); under `cargo test` 40
//! each, a smoke test of the same code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

use std::process::Command;

use daemon::{free_port, log_level, repo, Daemon};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let pings: usize = match full {
        true => std::env::var("BATOS_BENCH_CURVE_PINGS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000),
        false => 40,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Ollama at a closed port: a ping reaches no model.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let d = rt.block_on(Daemon::start(
        &closed,
        vec![
            log_level("warn"),
            Box::new(|doc| doc["gateway"]["curve"] = toml_edit::value("on")),
        ],
    ));
    let cfg = d.client_config();
    let python = daemon::python();
    let out = Command::new("timeout")
        .args(["600", &python])
        .arg(repo().join("tests/py/curve_ping.py"))
        .arg(&cfg.endpoint)
        .arg(d.settings().data_dir)
        .arg(pings.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (run scripts/setup.sh): {e}"));
    assert!(
        out.status.success(),
        "curve_ping.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "ping round trip, {} each: clear text p50 {} µs / p99 {} µs; CURVE p50 {} µs / p99 {} µs; CURVE/clear p50 {}×",
        r["curve"]["n"],
        r["null"]["p50_us"],
        r["null"]["p99_us"],
        r["curve"]["p50_us"],
        r["curve"]["p99_us"],
        r["ratio_p50"]
    );
}
