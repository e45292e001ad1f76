//! The Motivator's cost to people (issue 16), on the real daemon against the scripted Ollama double:
//! - a person's task, one after another, with the Motivator on (it phrases and runs goals between the tasks:
//!   success streaks, reflections, and one knowledge gap per task from a `memory_search`) vs paused, in one
//!   run on one daemon;
//! - the latency of a person's task submitted while a goal's task is running, vs with no goal running.
//!
//! The double answers at once except where said, so the figures are the Motivator's own overhead (events,
//! limits, the goal file, the orchestrator's goal slot), not a model's: on the embedded model a running goal
//! also competes for the cores and the one model context.
//!
//! `cargo bench --bench motivator`; under `cargo test` each case runs once (a smoke test of the same code).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../tests/e2e/support/ollama.rs"]
mod ollama;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use batos::client::Client;
use daemon::{log_level, Daemon};
use ollama::{last_user, Scripted, ScriptedOllama};

/// How long a goal task's first answer takes in the latency case (a goal that is surely running when the
/// person's task arrives).
const GOAL_STEP: Duration = Duration::from_millis(1500);

async fn run_task(c: &mut Client, text: &str) {
    let t = c
        .request("submit_task", json!({"text": text}))
        .await
        .unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    loop {
        let t = c.request("get_task", json!({"id": id})).await.unwrap();
        if matches!(t["status"].as_str(), Some("done" | "failed" | "cancelled")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn goals(c: &mut Client) -> Vec<Value> {
    let v = c.request("list_goals", json!({})).await.unwrap();
    v["goals"].as_array().cloned().unwrap_or_default()
}

fn bench(cr: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let o = ScriptedOllama::start();
    o.set_responder(|persona, body| {
        let user = last_user(body);
        if persona == Some("ALFRED") && user.starts_with("You set the household's next goal") {
            let why = user
                .lines()
                .find_map(|l| l.strip_prefix("[Why now] "))
                .unwrap_or("-");
            // Just the quoted question: goals for different questions are not duplicates.
            let q = why.split('"').nth(1).unwrap_or(why);
            return Some(Scripted::json(
                json!({"goal": format!("GOAL {q}"), "reason": "bench"}),
            ));
        }
        // A goal task's route takes GOAL_STEP when its text asks for it.
        if user.contains("GOAL") && user.contains("slowly") && body.get("format").is_some() {
            return Some(
                Scripted::json(json!({"needs_research": false, "plan": "Slowly."}))
                    .delayed(GOAL_STEP),
            );
        }
        None
    });
    let d = rt.block_on(Daemon::start(
        &o.url,
        vec![
            log_level("warn"),
            Box::new(|doc| {
                doc["motivator"]["enabled"] = toml_edit::value(true);
                doc["motivator"]["tick_ms"] = toml_edit::value(20);
                doc["motivator"]["idle_after_s"] = toml_edit::value(3600);
                doc["motivator"]["trigger_per_hour"] = toml_edit::value(100_000);
                doc["motivator"]["goals_per_hour"] = toml_edit::value(100_000);
                doc["motivator"]["daily_tokens"] = toml_edit::value(1_000_000_000i64);
                doc["motivator"]["max_queued"] = toml_edit::value(100_000);
                doc["motivator"]["keep_goals"] = toml_edit::value(50);
            }),
        ],
    ));
    let mut c = d.client();

    let mut g = cr.benchmark_group("user_task");
    let mut n = 0u64;
    for (name, pause) in [("motivator_on", false), ("motivator_paused", true)] {
        let cmd = if pause {
            "motivator_pause"
        } else {
            "motivator_resume"
        };
        rt.block_on(c.request(cmd, json!({}))).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    n += 1;
                    // A question memory cannot ground: with the Motivator on, a research goal follows.
                    c.request(
                        "memory_search",
                        json!({"query": format!("subject {n} alpha{n}")}),
                    )
                    .await
                    .unwrap();
                    run_task(&mut c, &format!("Question {n}.")).await;
                })
            })
        });
    }
    g.finish();
    let made = rt.block_on(goals(&mut c)).len();
    eprintln!("goals made while on: {made} (kept: at most motivator.keep_goals finished)");

    // Latency of a person's task while a goal's task runs, vs none running.
    rt.block_on(c.request("motivator_resume", json!({})))
        .unwrap();
    let mut g = cr.benchmark_group("user_latency");
    g.bench_function("no_goal_running", |b| {
        b.iter(|| rt.block_on(run_task(&mut c, "A quick question.")))
    });
    g.bench_function("goal_running", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    c.request(
                        "memory_search",
                        json!({"query": format!("slowly topic{n} beta{n}")}),
                    )
                    .await
                    .unwrap();
                    // Wait until that goal's task runs (its route takes GOAL_STEP).
                    let started = Instant::now();
                    loop {
                        let g = goals(&mut c).await;
                        let running = g.iter().any(|g| {
                            g["status"] == "running"
                                && g["reason"]
                                    .as_str()
                                    .unwrap_or("")
                                    .contains(&format!("topic{n}"))
                        });
                        if running {
                            break;
                        }
                        assert!(started.elapsed() < Duration::from_secs(20), "no goal ran");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let t = Instant::now();
                    run_task(&mut c, "A quick question while a goal runs.").await;
                    total += t.elapsed();
                    // Let the goal end before the next iteration.
                    loop {
                        let g = goals(&mut c).await;
                        if !g.iter().any(|g| {
                            matches!(
                                g["status"].as_str(),
                                Some("running" | "starting" | "queued" | "phrasing")
                            )
                        }) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                total
            })
        })
    });
    g.finish();
    drop(d);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
