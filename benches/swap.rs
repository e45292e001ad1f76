//! Swap benchmark (issue 3), daemon level, a bench binary: task throughput with and without cognitive atomic
//! swaps happening during the run (BRICK swapped between two models every 10 ms), rounds interleaved, plus
//! the `swap_model` round trip over the gateway (spawn, store, persist to settings.toml).
//!
//! The models are served by the scripted Ollama test double (`tests/e2e/support/ollama.rs`, a real HTTP
//! server speaking Ollama's REST API) so the figures measure batos, not a model.
//!
//! `BATOS_BENCH_TASKS=48 BATOS_BENCH_ROUNDS=5 cargo bench --bench swap`

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../tests/e2e/support/ollama.rs"]
mod ollama;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use zeromq::prelude::*;

use batos_client::client::{Client, ClientConfig};
use batos_protocol::EventBody;

use daemon::{log_level, shipped, Daemon};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Submits `n` tasks from 4 clients and waits for all of them to finish; tasks per second.
async fn round(cfg: &ClientConfig, n: usize) -> f64 {
    let mut sub = batos_client::client::subscriber(cfg, &["task."])
        .await
        .expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let submitters: Vec<_> = (0..4)
        .map(|c| {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let mut client = Client::new(cfg);
                let mut ids = Vec::new();
                for i in (c..n).step_by(4) {
                    let r = client
                        .request("submit_task", json!({"text": format!("task {i}")}))
                        .await
                        .expect("submit");
                    ids.push(r["id"].as_str().unwrap_or_default().to_string());
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for s in submitters {
        ids.extend(s.await.expect("submitter"));
    }
    let mut finished = HashSet::new();
    while finished.len() < ids.len() {
        let m = tokio::time::timeout(Duration::from_secs(60), sub.recv())
            .await
            .expect("tasks stalled")
            .expect("recv");
        let Some(body) = m.into_vec().get(1).cloned() else {
            continue;
        };
        let Ok(ev) = rmp_serde::from_slice::<EventBody>(&body) else {
            continue;
        };
        if ev.kind == "task.done" || ev.kind == "task.failed" {
            assert_eq!(ev.kind, "task.done", "{:?}", ev.data);
            if let Some(id) = ev.data["id"].as_str() {
                if ids.contains(id) {
                    finished.insert(id.to_string());
                }
            }
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a small round is a smoke test of the same code.
    let full = std::env::args().any(|a| a == "--bench");
    let tasks = env("BATOS_BENCH_TASKS", if full { 48 } else { 8 });
    let rounds = env("BATOS_BENCH_ROUNDS", if full { 5 } else { 1 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let llm = ollama::ScriptedOllama::start();
    // Logging at warn, the shipped heartbeat period.
    let d = rt.block_on(Daemon::start(
        &llm.url,
        vec![
            log_level("warn"),
            shipped("gateway", "heartbeat_ms"),
            Box::new(|doc| {
                doc["orchestrator"]["max_concurrent_tasks"] = toml_edit::value(16);
                doc["personas"]["BRICK"]["model"] = toml_edit::value("brick:a");
            }),
        ],
    ));
    let cfg = ClientConfig {
        timeout: Duration::from_millis(2000),
        retries: 0,
        ..d.client_config()
    };
    let (mut plain, mut swapping, mut swaps_done) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        // Idle swap round trip.
        let mut c = Client::new(cfg.clone());
        let mut lat = Vec::new();
        for i in 0..50 {
            let to = if i % 2 == 0 { "brick:b" } else { "brick:a" };
            let t = Instant::now();
            c.request("swap_model", json!({"persona": "BRICK", "model": to}))
                .await
                .expect("swap");
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "swap_model round trip over the gateway (idle, 50 swaps): p50 {:.2} ms, p95 {:.2} ms",
            lat[lat.len() / 2],
            lat[(lat.len() * 95) / 100]
        );
        round(&cfg, tasks).await; // warm-up
        for _ in 0..rounds {
            plain.push(round(&cfg, tasks).await);
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let swapper = {
                let (cfg, stop, count) = (cfg.clone(), stop.clone(), count.clone());
                tokio::spawn(async move {
                    let mut c = Client::new(cfg);
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let to = if i.is_multiple_of(2) {
                            "brick:b"
                        } else {
                            "brick:a"
                        };
                        c.request("swap_model", json!({"persona": "BRICK", "model": to}))
                            .await
                            .expect("swap");
                        i += 1;
                        count.store(i, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            };
            swapping.push(round(&cfg, tasks).await);
            stop.store(true, Ordering::SeqCst);
            let _ = swapper.await;
            swaps_done.push(count.load(Ordering::SeqCst) as f64);
        }
    });
    println!(
        "\n| run ({tasks} tasks, 4 submitting clients, {rounds} rounds) | tasks/s (median) | all rounds |\n|---|---|---|"
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| no swaps | {:.1} | {} |",
        median(plain.clone()),
        fmt(&plain)
    );
    println!(
        "| BRICK swapped every 10 ms (median {:.0} swaps per round) | {:.1} | {} |",
        median(swaps_done.clone()),
        median(swapping.clone()),
        fmt(&swapping)
    );
    println!(
        "\nthroughput ratio with swaps / without: {:.2}",
        median(swapping) / median(plain)
    );
}
