//! Tool-call latency benchmark (issue 7), a bench binary, all in one run: p50/p95 of one call of a small
//! Python tool (`add(a, b)`) through
//! - a cold gVisor sandbox (`runsc` backend: OCI bundle, create + start + run + delete per call);
//! - a cold Docker + runsc sandbox (bollard: create + start + attach + run + remove per call);
//! - the warm pool (the `sandbox` actor with `tools.pool_size` pre-started sandboxes; calls spaced so the
//!   pool has refilled, which is its steady state under interactive use), and back to back;
//! - the floor: the same runner in a plain, unsandboxed `python3` process.
//!
//! Needs what `scripts/test.sh` sets up: `runsc`, the rootfs in `data/sandbox/rootfs`, and for the Docker row a
//! running dockerd with the `batos-sandbox:latest` image (skipped with a note otherwise).
//!
//! `BATOS_BENCH_CALLS=30 cargo bench --workspace --bench tools`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;
use serde_json::{json, Value};

use batos_actors::settings::{LoadedSettings, SandboxChoice, ToolsSettings};
use batos_actors::tools::sandbox::pool::{self, PoolArgs, SandboxPool, SANDBOX_NAME};
use batos_actors::tools::sandbox::{self, Backend, Limits};

fn request() -> Value {
    json!({
        "mode": "call",
        "source": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n",
        "function": "add",
        "args": {"a": 2, "b": 3},
    })
}

fn check(v: &Option<Value>) {
    assert_eq!(
        v.as_ref().and_then(|v| v.get("value")),
        Some(&json!(5)),
        "tool answered {v:?}"
    );
}

fn report(name: &str, mut t: Vec<Duration>) {
    t.sort();
    let p = |q: f64| t[((t.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        t.len(),
        p(0.5),
        p(0.95),
        t.iter().sum::<Duration>().as_secs_f64() * 1000.0 / t.len() as f64
    );
}

async fn cold(backend: Arc<dyn Backend>, limits: &Limits, n: usize) -> Option<Vec<Duration>> {
    if let Err(e) = backend.check().await {
        println!("(skipped: {e})");
        return None;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = backend
            .prepare(limits)
            .await
            .expect("prepare")
            .run(&request(), limits)
            .await
            .expect("run");
        times.push(t.elapsed());
        check(&out.reply);
    }
    Some(times)
}

fn plain_python(repo: &std::path::Path, n: usize) -> Vec<Duration> {
    let runner = repo.join("sandbox/runner.py");
    let body = serde_json::to_vec(&request()).expect("json");
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut child = Command::new("python3")
                .args(["-I", "-S"])
                .arg(&runner)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&body)
                .expect("write");
            let out = child.wait_with_output().expect("wait");
            let d = t.elapsed();
            let (v, _) = sandbox::Output::parse_stdout(&out.stdout);
            check(&v);
            d
        })
        .collect()
}

fn main() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let n: usize = std::env::var("BATOS_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        // `cargo bench` passes `--bench`; under `cargo test` this is a smoke test of the same paths.
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            30
        } else {
            2
        });
    let settings = LoadedSettings::load(&repo.join("config/settings.toml"))
        .expect("config/settings.toml")
        .settings;
    let base: ToolsSettings = settings.tools.clone();
    let limits = Limits::from_settings(&base);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "tool-call latency, {n} calls each; limits: {} MiB, {} cpus, pids {}; {} host threads\n",
        base.memory_mb,
        base.cpus,
        base.pids_limit,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| path | calls | p50 ms | p95 ms | mean ms |\n|---|---|---|---|---|");
    report("plain python3 (no sandbox, floor)", plain_python(&repo, n));
    let runsc_settings = ToolsSettings {
        backend: SandboxChoice::Runsc,
        ..base.clone()
    };
    if let Some(t) = rt.block_on(cold(sandbox::backend(&runsc_settings), &limits, n)) {
        report("cold runsc", t);
    }
    let docker_settings = ToolsSettings {
        backend: SandboxChoice::Docker,
        ..base.clone()
    };
    if let Some(t) = rt.block_on(cold(sandbox::backend(&docker_settings), &limits, n)) {
        report("cold docker + runsc", t);
    }
    // The warm pool: the real actor, runsc backend, pool_size from settings (at least 1).
    let pool_settings = ToolsSettings {
        pool_size: base.pool_size.max(1),
        ..runsc_settings
    };
    let (spaced, burst) = rt.block_on(async {
        let (_pool, _h) = SandboxPool::spawn(
            Some(SANDBOX_NAME.into()),
            SandboxPool,
            PoolArgs {
                settings: pool_settings.clone(),
                remote: None,
            },
        )
        .await
        .expect("pool");
        let timeout = limits.timeout + Duration::from_secs(10);
        // Let the pool fill before the first call.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut spaced = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let out = pool::SandboxHandle
                .run(request(), timeout)
                .await
                .expect("pool run");
            spaced.push(t.elapsed());
            check(&out.reply);
            // A sandbox takes well under this to refill; the next call finds a warm one.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let mut burst = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let out = pool::SandboxHandle
                .run(request(), timeout)
                .await
                .expect("pool run");
            burst.push(t.elapsed());
            check(&out.reply);
        }
        (spaced, burst)
    });
    report(
        &format!(
            "warm pool (runsc, pool_size {}), calls 1.5 s apart",
            pool_settings.pool_size
        ),
        spaced,
    );
    report(
        &format!(
            "warm pool (runsc, pool_size {}), back to back",
            pool_settings.pool_size
        ),
        burst,
    );
}
