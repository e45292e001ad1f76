//! The Motivator's cost to people (issue 16), on the real daemon against the scripted Ollama double:
//! - a person's tasks one after another, each after a `memory_search` memory cannot ground (so a research goal
//!   per task, no rate limits), with the Motivator on vs paused in alternating blocks on one daemon: with the
//!   shipped `quiet_ms` (goals wait until the person pauses) and with `quiet_ms = 0` (a goal runs between every
//!   two tasks: the worst case);
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

use batos_client::client::Client;
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

/// Waits until no goal is open (phrasing, queued, starting or running).
async fn drained(c: &mut Client) {
    let started = Instant::now();
    loop {
        let open = goals(c).await.iter().any(|g| {
            matches!(
                g["status"].as_str(),
                Some("running" | "starting" | "queued" | "phrasing")
            )
        });
        if !open {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "goals never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daemon with the Motivator on and no rate limits (a goal per knowledge gap), `quiet_ms` as shipped or
/// as given.
async fn daemon(o: &ScriptedOllama, quiet_ms: Option<i64>) -> Daemon {
    Daemon::start(
        &o.url,
        vec![
            log_level("warn"),
            Box::new(move |doc| {
                doc["motivator"]["enabled"] = toml_edit::value(true);
                doc["motivator"]["tick_ms"] = toml_edit::value(20);
                doc["motivator"]["idle_after_s"] = toml_edit::value(3600);
                doc["motivator"]["trigger_per_hour"] = toml_edit::value(100_000);
                doc["motivator"]["goals_per_hour"] = toml_edit::value(100_000);
                doc["motivator"]["daily_tokens"] = toml_edit::value(1_000_000_000i64);
                doc["motivator"]["max_queued"] = toml_edit::value(100_000);
                doc["motivator"]["keep_goals"] = toml_edit::value(50);
                if let Some(q) = quiet_ms {
                    doc["motivator"]["quiet_ms"] = toml_edit::value(q);
                }
                // The double's hashed embedding makes chance neighbours of the tasks stored as the bench
                // runs: only a near copy counts as relevant, so every bench query is a knowledge gap.
                doc["memory"]["min_relevance"] = toml_edit::value(0.99);
            }),
        ],
    )
    .await
}

/// A person's tasks one after another (each after a search memory cannot ground: a research goal each),
/// the Motivator on and paused in alternating blocks — memory grows with every task and slows the later
/// ones, which one block per mode would charge to the second. Returns the medians in words.
async fn interleaved(c: &mut Client, n: &mut u64, blocks: usize, per_block: usize) -> String {
    let (mut on, mut paused) = (Vec::new(), Vec::new());
    for _ in 0..blocks {
        for (pause, out) in [(false, &mut on), (true, &mut paused)] {
            let cmd = if pause {
                "motivator_pause"
            } else {
                "motivator_resume"
            };
            c.request(cmd, json!({})).await.unwrap();
            for _ in 0..per_block {
                *n += 1;
                let t = Instant::now();
                c.request(
                    "memory_search",
                    json!({"query": format!("subject {n} alpha{n}")}),
                )
                .await
                .unwrap();
                run_task(c, &format!("Question {n}.")).await;
                out.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let ran = goals(c)
        .await
        .iter()
        .filter(|g| g["status"] == "done")
        .count();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m_on, m_paused) = (median(&mut on), median(&mut paused));
    format!(
        "{} tasks per mode, median {m_on:.1} ms on vs {m_paused:.1} ms paused (on/paused {:.3}); goals done meanwhile: {ran}",
        on.len(),
        m_on / m_paused
    )
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
    let d = rt.block_on(daemon(&o, None));
    let mut c = d.client();

    let mut n = 0u64;
    let full = std::env::args().any(|a| a == "--bench");
    let (blocks, per_block) = if full { (12, 5) } else { (1, 1) };
    let shipped = rt.block_on(interleaved(&mut c, &mut n, blocks, per_block));
    eprintln!("interleaved, shipped quiet_ms: {shipped}");
    {
        // The worst case: no quiet period, so a goal runs between every two of a person's tasks.
        let eager = rt.block_on(daemon(&o, Some(0)));
        let mut e = eager.client();
        let worst = rt.block_on(interleaved(&mut e, &mut n, blocks, per_block));
        eprintln!("interleaved, quiet_ms = 0: {worst}");
    }
    // Latency of a person's task while a goal's task runs, vs none running (paused, the queue drained).
    rt.block_on(c.request("motivator_resume", json!({})))
        .unwrap();
    rt.block_on(drained(&mut c));
    rt.block_on(c.request("motivator_pause", json!({})))
        .unwrap();
    let mut g = cr.benchmark_group("user_latency");
    g.bench_function("no_goal_running", |b| {
        b.iter(|| rt.block_on(run_task(&mut c, "A quick question.")))
    });
    rt.block_on(c.request("motivator_resume", json!({})))
        .unwrap();
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
                        assert!(started.elapsed() < Duration::from_secs(60), "no goal ran");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let t = Instant::now();
                    run_task(&mut c, "A quick question while a goal runs.").await;
                    total += t.elapsed();
                    drained(&mut c).await;
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
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(15)).warm_up_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
