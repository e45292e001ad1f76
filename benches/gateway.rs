//! Gateway benchmarks (issue 2): command round trip vs a raw zeromq REQ/REP echo, commands/s with 1 and 8
//! clients, event fan-out to 4 subscribers. Runs the real `batos` binary on loopback.
//!
//! `cargo bench --bench gateway`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use zeromq::prelude::*;
use zeromq::{RepSocket, ReqSocket, SubSocket, ZmqMessage};

use batos::client::{Client, ClientConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    cfg: ClientConfig,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(rt: &tokio::runtime::Runtime) -> Daemon {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let cfg_dir = dir.path().join("config");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::copy(repo.join("config/codex.toml"), cfg_dir.join("codex.toml")).unwrap();
    let mut doc: toml_edit::DocumentMut =
        std::fs::read_to_string(repo.join("config/settings.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let (cmd, ev) = (free_port(), free_port());
    doc["data_dir"] = toml_edit::value("../data");
    doc["gateway"]["command_endpoint"] = toml_edit::value(format!("tcp://127.0.0.1:{cmd}"));
    doc["gateway"]["event_endpoint"] = toml_edit::value(format!("tcp://127.0.0.1:{ev}"));
    doc["log"]["level"] = toml_edit::value("warn");
    doc["llm"]["backend"] = toml_edit::value("ollama");
    doc["llm"]["ollama_url"] = toml_edit::value(format!("http://127.0.0.1:{}", free_port()));
    let config = cfg_dir.join("settings.toml");
    std::fs::write(&config, doc.to_string()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_batos"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut cfg = ClientConfig {
        endpoint: format!("tcp://127.0.0.1:{cmd}"),
        events: format!("tcp://127.0.0.1:{ev}"),
        token: None,
        timeout: Duration::from_millis(2000),
        retries: 0,
        poll: Duration::from_millis(500),
        heartbeat: Duration::from_millis(1000),
    };
    let started = Instant::now();
    rt.block_on(async {
        loop {
            cfg.token = std::fs::read_to_string(dir.path().join("data/gateway.token")).ok();
            if cfg.token.is_some()
                && Client::new(cfg.clone())
                    .request("ping", json!({}))
                    .await
                    .is_ok()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "daemon did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Daemon {
        child,
        cfg,
        _dir: dir,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let daemon = start_daemon(&rt);

    // Baseline: raw zeromq REQ/REP echo in this process, same transport.
    let echo_port = free_port();
    let echo = format!("tcp://127.0.0.1:{echo_port}");
    rt.spawn({
        let echo = echo.clone();
        async move {
            let mut rep = RepSocket::new();
            rep.bind(&echo).await.unwrap();
            loop {
                let m = rep.recv().await.unwrap();
                rep.send(m).await.unwrap();
            }
        }
    });
    let mut raw = rt.block_on(async {
        let mut s = ReqSocket::new();
        s.connect(&echo).await.unwrap();
        s
    });
    let body = Bytes::from(
        rmp_serde::to_vec_named(&json!({"v":1,"id":"x","cmd":"ping","args":{}})).unwrap(),
    );
    let mut g = c.benchmark_group("round_trip");
    g.bench_function("raw_zeromq_req_rep_echo", |b| {
        b.iter(|| {
            rt.block_on(async {
                raw.send(ZmqMessage::from(body.clone())).await.unwrap();
                raw.recv().await.unwrap();
            })
        })
    });
    let mut client = Client::new(daemon.cfg.clone());
    g.bench_function("gateway_ping", |b| {
        b.iter(|| rt.block_on(client.request("ping", json!({}))).unwrap())
    });
    g.bench_function("gateway_get_persona_routed", |b| {
        b.iter(|| {
            rt.block_on(client.request("get_persona", json!({"persona": "BRICK"})))
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("throughput");
    for clients in [1usize, 8] {
        let per = 200usize;
        g.throughput(Throughput::Elements((clients * per) as u64));
        g.bench_function(format!("ping_{clients}_clients"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..clients)
                        .map(|_| {
                            let cfg = daemon.cfg.clone();
                            tokio::spawn(async move {
                                let mut c = Client::new(cfg);
                                for _ in 0..per {
                                    c.request("ping", json!({})).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            })
        });
    }
    g.finish();

    // Fan-out: one event (persona.state from update_persona) must reach 4 subscribers.
    let mut subs: Vec<SubSocket> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..4 {
            let mut s = SubSocket::new();
            s.subscribe("persona.state").await.unwrap();
            s.connect(&daemon.cfg.events).await.unwrap();
            v.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        v
    });
    let mut g = c.benchmark_group("events");
    let mut t = 0.1f64;
    g.bench_function("fanout_to_4_subscribers", |b| {
        b.iter(|| {
            rt.block_on(async {
                t = if t > 1.5 { 0.1 } else { t + 0.01 };
                client
                    .request(
                        "update_persona",
                        json!({"persona": "BRICK", "field": "temperature", "value": t}),
                    )
                    .await
                    .unwrap();
                for s in subs.iter_mut() {
                    s.recv().await.unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
