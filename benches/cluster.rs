//! Scaling over worker nodes (issue 30), in one run against the real binaries on loopback:
//!
//! - **tasks per minute** of a home node with 1, 2 and 4 worker nodes serving the personas' model calls, each
//!   worker thinking through its own model double with a fixed per-call latency and one slot (the scripted
//!   Ollama test double standing in for a GPU host that serves one request at a time); efficiency is the rate
//!   at N workers over N times the rate at one (aim ≥ 0.8 at 4);
//! - **the cost of a remote call over a local one**: the same tasks one at a time through a home whose model
//!   double answers at once, first on its own backend, then through one worker whose double answers at once;
//!   p50 and p99 of the model steps' durations, and the difference;
//! - **the cost of a remote tool run over a local one**: a stored Python tool called one call at a time
//!   (`call_tool`, each run in a fresh gVisor sandbox), first on a home's own sandbox pool, then through a home
//!   that has no sandbox and one worker serving `tools`; p50 and p99 of the round trips, and the difference.
//!
//! `cargo bench --profile dev --bench cluster` (BATOS_BENCH_SCALE_TASKS tasks per point, default 32;
//! BATOS_BENCH_SCALE_LATENCY_MS per call, default 200; BATOS_BENCH_SCALE_NODES, default `1,2,4`;
//! BATOS_BENCH_SCALE_SERIAL tasks for the call cost and tool calls for the tool cost, default 30). Under
//! `cargo test`: one worker, two tasks, two tool calls, a smoke test of the same code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../tests/e2e/support/ollama.rs"]
mod ollama;

#[allow(dead_code)]
#[path = "../tests/e2e/support/node.rs"]
mod node;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use batos_client::client::Client;
use daemon::{log_level, Daemon, Edit};
use ollama::ScriptedOllama;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn quiet() -> Edit {
    Box::new(|doc| {
        doc["orchestrator"]["max_concurrent_tasks"] = toml_edit::value(64);
    })
}

/// A home node and `n` workers, each thinking through its own one-slot double answering in `latency`.
async fn cluster(
    n: usize,
    latency: Duration,
    home_model: &ScriptedOllama,
) -> (Daemon, Vec<node::Worker>, Vec<ScriptedOllama>) {
    let home = Daemon::start(
        &home_model.url,
        vec![log_level("warn"), quiet(), node::home_edits("unavailable")],
    )
    .await;
    let cookie = home.data_dir().join("cluster.cookie");
    let mut workers = Vec::new();
    let mut models = Vec::new();
    for i in 0..n {
        let m = ScriptedOllama::start();
        m.set_default_delay(latency);
        m.one_slot();
        let mut w = node::Worker::prepare(&home, &format!("w{i}"), &m.url, &cookie);
        w.spawn();
        workers.push(w);
        models.push(m);
    }
    let mut c = home.client();
    let started = Instant::now();
    loop {
        let s = c.request("status", json!({})).await.unwrap();
        if s["cluster"]["nodes"]
            .as_array()
            .is_some_and(|v| v.len() == n)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{n} workers did not join"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (home, workers, models)
}

async fn submit(c: &mut Client, text: &str) -> String {
    let r = c
        .request("submit_task", json!({"text": text}))
        .await
        .unwrap();
    r["id"].as_str().unwrap().to_string()
}

async fn wait_done(c: &mut Client, id: &str) -> Value {
    loop {
        let t = c.request("get_task", json!({"id": id})).await.unwrap();
        match t["status"].as_str() {
            Some("done") => return t,
            Some("failed" | "cancelled") => panic!("task {id} ended badly: {t}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Tasks per minute with `tasks` submitted at once.
async fn rate(home: &Daemon, tasks: usize, tag: &str) -> f64 {
    let mut c = home.client();
    // One task first, so no figure includes a cold start.
    let warm = submit(&mut c, &format!("{tag} warm-up")).await;
    wait_done(&mut c, &warm).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..tasks {
        ids.push(submit(&mut c, &format!("{tag} question {i}")).await);
    }
    for id in &ids {
        wait_done(&mut c, id).await;
    }
    tasks as f64 * 60.0 / started.elapsed().as_secs_f64()
}

/// The durations (ms) of the model steps of `tasks` tasks run one at a time.
async fn step_ms(home: &Daemon, tasks: usize, tag: &str) -> Vec<f64> {
    let mut c = home.client();
    let mut out = Vec::new();
    for i in 0..tasks + 1 {
        let id = submit(&mut c, &format!("{tag} serial {i}")).await;
        let t = wait_done(&mut c, &id).await;
        if i == 0 {
            continue; // warm-up
        }
        for s in t["steps"].as_array().unwrap() {
            if s["tokens"].as_u64().unwrap_or(0) > 0
                || !s["model"].as_str().unwrap_or("").is_empty()
            {
                out.push(s["duration_ms"].as_f64().unwrap());
            }
        }
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

/// A Python tool stored in `data_dir` before the daemon starts (the ToolForge loads it at start).
fn seed_tool(data_dir: &std::path::Path) {
    let dir = data_dir.join("tools/fibonacci");
    std::fs::create_dir_all(&dir).unwrap();
    let record = json!({
        "name": "fibonacci", "description": "the n-th Fibonacci number",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "source": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        "tests": "def test_small():\n    assert fibonacci(10) == 55\n",
        "version": 1,
        "provenance": {"task_id": null, "capability": "bench", "model": "bench", "attempts": 1, "created_at": 0.0},
    });
    std::fs::write(dir.join("tool.json"), record.to_string()).unwrap();
}

/// The round trips (ms) of `calls` tool calls one at a time, after one warm-up; every answer checked.
async fn tool_ms(home: &Daemon, calls: usize) -> Vec<f64> {
    let mut c = Client::new(batos_client::client::ClientConfig {
        timeout: Duration::from_secs(60),
        ..home.client_config()
    });
    let mut out = Vec::new();
    for i in 0..calls + 1 {
        let started = Instant::now();
        let r = c
            .request("call_tool", json!({"name": "fibonacci", "args": {"n": 20}}))
            .await
            .unwrap();
        assert_eq!(r, json!({"ok": true, "value": 6765}), "call {i}");
        if i > 0 {
            out.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

/// The tool cost: the same calls on a home's own pool, then through one worker serving `tools`.
async fn tool_cost(home_model: &ScriptedOllama, calls: usize) {
    let pool: fn() -> Edit = || Box::new(|doc| doc["tools"]["pool_size"] = toml_edit::value(1));
    let local_home = Daemon::prepare(&home_model.url, vec![log_level("warn"), pool()]);
    seed_tool(&local_home.data_dir());
    let local_home = local_home.spawn_and_wait().await;
    let local = tool_ms(&local_home, calls).await;
    drop(local_home);
    let home = Daemon::prepare(
        &home_model.url,
        vec![
            log_level("warn"),
            node::home_edits("unavailable"),
            Box::new(|doc| {
                doc["cluster"]["remote_tools"] = toml_edit::value(true);
                doc["cluster"]["remote_personas"] = toml_edit::Array::new().into();
                doc["tools"]["runsc_path"] = toml_edit::value("/nonexistent/runsc");
            }),
        ],
    );
    seed_tool(&home.data_dir());
    let home = home.spawn_and_wait().await;
    let cookie = home.data_dir().join("cluster.cookie");
    let tools_only: Edit = Box::new(|doc| {
        let mut roles = toml_edit::Array::new();
        roles.push("tools");
        doc["cluster"]["roles"] = toml_edit::value(roles);
        doc["tools"]["pool_size"] = toml_edit::value(1);
    });
    let mut w = node::Worker::prepare_with(
        &home,
        "bench-tools",
        &home_model.url,
        &cookie,
        vec![log_level("warn"), tools_only],
    );
    w.spawn();
    let mut c = home.client();
    for _ in 0..600 {
        let s = c.request("status", json!({})).await.unwrap();
        if s["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let remote = tool_ms(&home, calls).await;
    println!(
        "tool call (call_tool, a fresh gVisor sandbox each), {}",
        compared(
            "on the home's pool",
            "through a worker serving tools",
            &local,
            &remote
        )
    );
    drop(w);
    drop(home);
}

/// Two sorted samples (ms) side by side: p50 and p99 of each, and what the remote side costs at each.
fn compared(here: &str, there: &str, local: &[f64], remote: &[f64]) -> String {
    let (l50, l99, r50, r99) = (
        pct(local, 0.5),
        pct(local, 0.99),
        pct(remote, 0.5),
        pct(remote, 0.99),
    );
    format!(
        "{here}: p50 {l50:.1} ms, p99 {l99:.1} ms; {there}: p50 {r50:.1} ms, p99 {r99:.1} ms ({} each); remote \
         costs {:+.1} ms at p50, {:+.1} ms at p99",
        local.len().min(remote.len()),
        r50 - l50,
        r99 - l99,
    )
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tasks = env("BATOS_BENCH_SCALE_TASKS", if full { 32 } else { 2 });
    let serial = env("BATOS_BENCH_SCALE_SERIAL", if full { 30 } else { 2 });
    let latency = Duration::from_millis(env("BATOS_BENCH_SCALE_LATENCY_MS", 200) as u64);
    let nodes: Vec<usize> = std::env::var("BATOS_BENCH_SCALE_NODES")
        .unwrap_or_else(|_| if full { "1,2,4".into() } else { "1".into() })
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let home_model = ScriptedOllama::start();
        // The cost of a remote call: local first, then through one worker, both doubles answering at once.
        let local_home = Daemon::start(&home_model.url, vec![log_level("warn"), quiet()]).await;
        let local = step_ms(&local_home, serial, "local").await;
        drop(local_home);
        let (home, workers, _models) = cluster(1, Duration::ZERO, &home_model).await;
        let remote = step_ms(&home, serial, "remote").await;
        drop(workers);
        drop(home);
        println!(
            "model step, {}",
            compared("local", "through a worker node", &local, &remote)
        );
        assert!(!remote.is_empty(), "no model step went through the worker");
        tool_cost(&home_model, serial).await;
        // Tasks per minute against 1, 2 and 4 workers.
        let mut one = None;
        for n in &nodes {
            let (home, workers, models) = cluster(*n, latency, &home_model).await;
            let r = rate(&home, tasks, &format!("n{n}")).await;
            let calls: Vec<usize> = models.iter().map(|m| m.chats().len()).collect();
            assert!(calls.iter().all(|c| *c > 0), "a worker got no call: {calls:?}");
            let base = *one.get_or_insert(r / *n as f64);
            println!(
                "{n} worker(s), {} ms per call, one slot each: {r:.1} tasks/min over {tasks} tasks; efficiency \
                 {:.2} of linear; calls per worker {calls:?}",
                latency.as_millis(),
                r / (base * *n as f64),
            );
            drop(workers);
            drop(home);
        }
    });
}
