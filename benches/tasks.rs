//! Tasks per minute on the embedded model (issue 19), on the real daemon: four clients each submit tasks at
//! once (a full route → research → draft → critique → synthesize graph, one iteration, the shipped sampling
//! and critique rule), one daemon per configuration, in one run:
//!
//! - shipped: the batched decoder and prefix cache, serving the model's 8-bit copy (`serve_weights = "q8_0"`);
//! - one at a time, same weights: `parallel = 1`, `prefix_cache = false`, the same 8-bit copy;
//! - before issue 19: one at a time, no prefix cache, the `Q4_1` file as it is (`serve_weights = "as_is"`).
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

/// A configuration of the embedded backend.
#[derive(Clone, Copy, PartialEq)]
enum Config {
    Shipped,
    OneAtATime,
    Before,
}

/// Runs `clients` × `per_client` tasks on a fresh daemon in configuration `config`; returns tasks per minute
/// and what the model calls were made of.
async fn tasks_per_minute(config: Config, clients: usize, per_client: usize) -> (f64, Calls) {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let d = Daemon::start(
        &closed,
        vec![
            // One debug line per finished model call (a few dozen per run): the calls' shape, not a cost.
            log_level("warn,batos_actors::llm::embedded::decoder=debug"),
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["llm"]["request_timeout_ms"] = toml_edit::value(900_000);
                doc["orchestrator"]["max_iterations"] = toml_edit::value(1);
                if config != Config::Shipped {
                    doc["llm"]["embedded"]["parallel"] = toml_edit::value(1);
                    doc["llm"]["embedded"]["prefix_cache"] = toml_edit::value(false);
                }
                if config == Config::Before {
                    doc["llm"]["embedded"]["serve_weights"] = toml_edit::value("as_is");
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
    (
        (clients * per_client) as f64 / minutes,
        Calls::of(&d.log_json()),
    )
}

/// The model calls of one run, summed from the decoder's `llm.sequence_done` events.
#[derive(Default)]
struct Calls {
    n: u64,
    prompt: u64,
    reused: u64,
    produced: u64,
}

impl Calls {
    fn of(log: &[serde_json::Value]) -> Self {
        let mut c = Calls::default();
        for e in log.iter().filter(|e| e["event"] == "llm.sequence_done") {
            let n = |k: &str| e[k].as_u64().unwrap_or(0);
            c.n += 1;
            c.prompt += n("prompt");
            c.reused += n("reused");
            c.produced += n("produced");
        }
        c
    }
}

impl std::fmt::Display for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} model calls, {} prompt tokens ({} from the prefix cache, {} prefilled), {} generated",
            self.n,
            self.prompt,
            self.reused,
            self.prompt - self.reused,
            self.produced
        )
    }
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
        let (tpm, calls) = rt.block_on(tasks_per_minute(Config::Shipped, 1, 1));
        println!("smoke: one task, {tpm:.2} tasks/min; {calls}");
        return;
    }
    let clients = 4;
    let (shipped, s_calls) = rt.block_on(tasks_per_minute(Config::Shipped, clients, per_client));
    let (single, o_calls) = rt.block_on(tasks_per_minute(Config::OneAtATime, clients, per_client));
    let (before, b_calls) = rt.block_on(tasks_per_minute(Config::Before, clients, per_client));
    println!(
        "{clients} clients × {per_client} tasks on the embedded model, tasks/min:\n\
         | configuration | tasks/min | shipped is |\n|---|---|---|\n\
         | shipped (batched, prefix cache, 8-bit copy) | {shipped:.2} | — |\n\
         | one at a time, no prefix cache, same 8-bit copy | {single:.2} | {:.2}× |\n\
         | before issue 19 (one at a time, no prefix cache, Q4_1 as it is) | {before:.2} | {:.2}× |",
        shipped / single,
        shipped / before
    );
    println!("  shipped: {s_calls}\n  one at a time: {o_calls}\n  before: {b_calls}");
}
