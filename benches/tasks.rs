//! Tasks per minute on the embedded model (issue 19), on the real daemon: four clients each submit tasks at
//! once (a full route → research → draft → critique → synthesize graph, one iteration, the shipped sampling
//! and critique rule), with the batched decoder and prefix cache as shipped against `parallel = 1` and
//! `prefix_cache = false`, one daemon each, in one run.
//!
//! `cargo bench --bench tasks` (`BATOS_BENCH_TASKS` tasks per client, default 2); under `cargo test` one
//! client runs one task on the shipped settings, a smoke test of the same code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

use std::time::Instant;

use serde_json::json;

use daemon::{free_port, log_level, model_path, shipped, wait_task, Daemon};

const QUESTIONS: [&str; 8] = [
    "Name one fruit.",
    "What colour is the sky?",
    "Name a large animal.",
    "What is two plus two?",
    "Name a musical instrument.",
    "What do bees make?",
    "Name a planet.",
    "What is ice made of?",
];

/// Runs `clients` × `per_client` tasks on a fresh daemon (`batched` = shipped decoder, else one request at a
/// time and no prefix cache); returns tasks per minute.
async fn tasks_per_minute(batched: bool, clients: usize, per_client: usize) -> f64 {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let d = Daemon::start(
        &closed,
        vec![
            log_level("warn"),
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["llm"]["request_timeout_ms"] = toml_edit::value(900_000);
                doc["orchestrator"]["max_iterations"] = toml_edit::value(1);
                if !batched {
                    doc["llm"]["embedded"]["parallel"] = toml_edit::value(1);
                    doc["llm"]["embedded"]["prefix_cache"] = toml_edit::value(false);
                }
            }),
            shipped("orchestrator", "min_critique_words"),
            shipped("orchestrator", "critique_repeat_similarity"),
        ],
    )
    .await;
    let t = Instant::now();
    let runs = (0..clients).map(|c| {
        let mut client = d.client();
        async move {
            for k in 0..per_client {
                let q = QUESTIONS[(c * per_client + k) % QUESTIONS.len()];
                let id = client
                    .request("submit_task", json!({ "text": q }))
                    .await
                    .unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let task = wait_task(&mut client, &id, 1800).await;
                assert_eq!(task["status"], "done", "{task}");
            }
        }
    });
    futures::future::join_all(runs).await;
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    (clients * per_client) as f64 / minutes
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let per_client: usize = std::env::var("BATOS_BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if !full {
        let tpm = rt.block_on(tasks_per_minute(true, 1, 1));
        println!("smoke: one task, {tpm:.2} tasks/min");
        return;
    }
    let clients = 4;
    let batched = rt.block_on(tasks_per_minute(true, clients, per_client));
    let single = rt.block_on(tasks_per_minute(false, clients, per_client));
    println!(
        "{clients} clients × {per_client} tasks on the embedded model: batched decoder + prefix cache {batched:.2} tasks/min, \
         one request at a time without it {single:.2} tasks/min, ratio {:.2}×",
        batched / single
    );
}
