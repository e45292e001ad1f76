//! Gateway benchmarks (issue 2): command round trip vs a raw zeromq REQ/REP echo, commands/s with 1 and 8
//! clients, event fan-out to 4 subscribers. Runs the real `batos` binary on loopback.
//!
//! `cargo bench --bench gateway`

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use zeromq::prelude::*;
use zeromq::{RepSocket, ReqSocket, SubSocket, ZmqMessage};

use batos_client::client::{Client, ClientConfig};
use daemon::{free_port, log_level, shipped, Daemon};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Ollama at a closed port (no command measured here reaches a model), logging at warn, the shipped
    // heartbeat period.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let daemon = rt.block_on(Daemon::start(
        &closed,
        vec![log_level("warn"), shipped("gateway", "heartbeat_ms")],
    ));
    let cfg = ClientConfig {
        timeout: Duration::from_millis(2000),
        retries: 0,
        ..daemon.client_config()
    };

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
    let mut client = Client::new(cfg.clone());
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
                            let cfg = cfg.clone();
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
            let s = batos_client::client::subscriber(&cfg, &["persona.state"])
                .await
                .unwrap();
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
