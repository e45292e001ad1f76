//! Foundation (issue 2): gateway protocol v1 (REQ and DEALER clients, retried ids, malformed bodies, auth),
//! the CLI's `send`, an unmodified pyzmq client. Supervision is in `supervision.rs`, the event channel in
//! `events.rs`.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use zeromq::prelude::*;
use zeromq::{DealerSocket, ReqSocket, ZmqMessage};

use batos_protocol::Reply;

use crate::support::*;

fn enc(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_completes_end_to_end_and_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mode = std::fs::metadata(d.data_dir().join("gateway.token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mut c = d.client();
    let pong = c.request("ping", json!({})).await.unwrap();
    assert_eq!(pong["pong"], true);
    let t = c
        .request("submit_task", json!({"text": "What is two plus two?"}))
        .await
        .unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    let done = wait_task(&mut c, &id, 30).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(done["result"]
        .as_str()
        .unwrap()
        .contains("Final answer from ALFRED"));
    let nodes: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, vec!["route", "draft", "critique", "synthesize"]);
    let list = c.request("list_tasks", json!({})).await.unwrap();
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    // Every model call went through ollama-rs to the persona's model.
    assert!(ollama.chats().iter().all(|r| r.model == "smollm2:135m"));
    assert_eq!(ollama.chats_by("ROBIN").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_and_dealer_clients_get_replies_and_a_retried_id_runs_once() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let cfg = d.client_config();
    let token = cfg.token.clone().unwrap();
    // REQ
    let mut req = ReqSocket::new();
    req.connect(&cfg.endpoint).await.unwrap();
    req.send(ZmqMessage::from(enc(
        &json!({"v":1,"id":"r1","token":token,"cmd":"ping","args":{}}),
    )))
    .await
    .unwrap();
    let r: Reply = rmp_serde::from_slice(&req.recv().await.unwrap().into_vec()[0]).unwrap();
    assert!(r.ok && r.id == "r1");
    // DEALER sending [empty, body]
    let mut dealer = DealerSocket::new();
    dealer.connect(&cfg.endpoint).await.unwrap();
    let submit = enc(
        &json!({"v":1,"id":"same-id","token":token,"cmd":"submit_task","args":{"text":"only once"}}),
    );
    let mut replies = Vec::new();
    for _ in 0..3 {
        let mut m = ZmqMessage::from(Bytes::new());
        m.push_back(Bytes::from(submit.clone()));
        dealer.send(m).await.unwrap();
    }
    for _ in 0..3 {
        let frames = dealer.recv().await.unwrap().into_vec();
        assert_eq!(frames.len(), 2);
        assert!(frames[0].is_empty());
        let r: Reply = rmp_serde::from_slice(&frames[1]).unwrap();
        assert!(r.ok, "{r:?}");
        replies.push(r.result.unwrap()["id"].clone());
    }
    assert!(replies.windows(2).all(|w| w[0] == w[1]), "{replies:?}");
    // A retry on a fresh socket (Lazy Pirate) with the same id gets the same reply.
    let mut c = d.client();
    let again = c
        .request_with_id("same-id", "submit_task", json!({"text": "only once"}))
        .await
        .unwrap();
    assert_eq!(again["id"], replies[0]);
    let list = c.request("list_tasks", json!({})).await.unwrap();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_bodies_get_the_right_errors_and_the_daemon_survives() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let cfg = d.client_config();
    let token = cfg.token.clone().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut dealer = DealerSocket::new();
    dealer.connect(&cfg.endpoint).await.unwrap();
    let mut expected: HashMap<String, usize> = HashMap::new();
    let mut sent = 0;
    for i in 0..1000 {
        let (body, code): (Vec<u8>, &str) = match i % 10 {
            0 => {
                let mut b = vec![0u8; rng.random_range(1..64)];
                rng.fill_bytes(&mut b);
                // Random bytes that happen to start like a map are still not a valid request.
                (b, "bad_request")
            }
            1 => {
                let full = enc(&json!({"v":1,"id":format!("t{i}"),"token":token,"cmd":"ping"}));
                (
                    full[..rng.random_range(1..full.len())].to_vec(),
                    "bad_request",
                )
            }
            2 => (
                enc(&json!({"v":"one","id":format!("w{i}"),"token":token,"cmd":"ping"})),
                "bad_request",
            ),
            3 => (
                enc(&json!({"v":1,"id":format!("u{i}"),"token":token,"cmd":"ping","bogus":true})),
                "bad_request",
            ),
            4 => (
                enc(
                    &json!({"v":1,"id":format!("h{i}"),"token":token,"cmd":"submit_task","args":{"text":"x".repeat(2_000_000)}}),
                ),
                "bad_request",
            ),
            5 => (
                enc(&json!({"v":1,"id":format!("m{i}"),"token":token,"cmd":"status"}))
                    .into_iter()
                    .chain(std::iter::empty())
                    .collect(),
                "ok",
            ),
            6 => (
                enc(&json!({"v":1,"id":format!("n{i}"),"cmd":"status"})),
                "unauthorized",
            ),
            7 => (
                enc(&json!({"v":1,"id":format!("x{i}"),"token":"wrong","cmd":"status"})),
                "unauthorized",
            ),
            8 => (
                enc(&json!({"v":1,"id":format!("c{i}"),"token":token,"cmd":"no_such_command"})),
                "unknown_command",
            ),
            _ => (
                enc(
                    &json!({"v":1,"id":format!("a{i}"),"token":token,"cmd":"get_task","args":{"id":7}}),
                ),
                "bad_request",
            ),
        };
        let mut m = ZmqMessage::from(Bytes::new());
        m.push_back(Bytes::from(body));
        dealer.send(m).await.unwrap();
        *expected.entry(code.to_string()).or_default() += 1;
        sent += 1;
    }
    let mut got: HashMap<String, usize> = HashMap::new();
    for _ in 0..sent {
        let frames = tokio::time::timeout(Duration::from_secs(20), dealer.recv())
            .await
            .expect("a reply to every body")
            .unwrap()
            .into_vec();
        let r: Reply = rmp_serde::from_slice(frames.last().unwrap()).unwrap();
        let code = if r.ok {
            "ok".to_string()
        } else {
            serde_json::to_value(r.error.unwrap().code)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        };
        *got.entry(code).or_default() += 1;
    }
    assert_eq!(got, expected);
    let mut c = d.client();
    assert_eq!(c.request("ping", json!({})).await.unwrap()["pong"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_the_answer_and_fails_cleanly_when_the_daemon_is_down() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let out = batos_cmd(&d)
        .args(["send", "--config"])
        .arg(&d.config)
        .arg("Say hello")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Final answer from ALFRED"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("step 4: synthesize by ALFRED"), "{stderr}");
    let out = batos_cmd(&d)
        .args(["status", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("BRICK"));

    d.kill9();
    let s = d.settings();
    let budget = Duration::from_millis(s.client.timeout_ms * u64::from(s.client.retries + 1));
    let started = Instant::now();
    let out = batos_cmd(&d)
        .args(["send", "--config"])
        .arg(&d.config)
        .arg("anyone there?")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no reply from tcp://127.0.0.1:") && stderr.contains("3 attempts"),
        "{stderr}"
    );
    assert!(took < budget + Duration::from_secs(3), "took {took:?}");
    // A bad config is a usage error (exit 2) naming the problem.
    let out = batos_cmd(&d)
        .args(["ping", "--config", "/nonexistent/settings.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/settings.toml"));
}

/// The client crate's own binary, built without the engine, drives a real daemon as `batos` does: the same
/// commands (the daemon's binary flattens the client's), the same output, the same exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_binary_without_the_engine_drives_the_daemon_as_batos_does() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let out = batos_client_cmd()
        .args(["send", "--config"])
        .arg(&d.config)
        .arg("Say hello")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Final answer from ALFRED"), "{stdout}");
    assert!(stderr.contains("step 4: synthesize by ALFRED"), "{stderr}");
    let status = |cmd: &mut Command| {
        let out = cmd
            .args(["status", "--json", "--config"])
            .arg(&d.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let (by_client, by_batos) = (status(&mut batos_client_cmd()), status(&mut batos_cmd(&d)));
    assert_eq!(by_client["instance"], by_batos["instance"]);
    assert_eq!(by_client["tree"]["id"], "root", "{by_client}");
    assert_eq!(by_client["personas"], by_batos["personas"]);
    // Every command of the client binary is a command of `batos`, with the same help line.
    let commands = |cmd: &mut Command| -> Vec<String> {
        let out = cmd.arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        help.split("Commands:")
            .nth(1)
            .unwrap_or_default()
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with("help "))
            .collect()
    };
    let (client, batos) = (
        commands(&mut batos_client_cmd()),
        commands(&mut batos_cmd(&d)),
    );
    assert!(client.len() >= 15, "{client:?}");
    for c in &client {
        // `image` is both binaries' but says which of its actions each has (import needs the engine).
        let same = if c.starts_with("image ") {
            batos.iter().any(|b| b.starts_with("image "))
        } else {
            batos.contains(c)
        };
        assert!(same, "`{c}` of batos-client is not in batos: {batos:?}");
    }
    assert!(batos.iter().any(|c| c.starts_with("run ")), "{batos:?}");
    assert!(!client.iter().any(|c| c.starts_with("run ")), "{client:?}");
    // A bad settings value is a usage error (exit 2) naming the key, as the daemon names it.
    let bad = d.config.with_file_name("bad.toml");
    let mut doc: toml_edit::DocumentMut =
        std::fs::read_to_string(&d.config).unwrap().parse().unwrap();
    doc["client"]["poll_ms"] = toml_edit::value(0);
    std::fs::write(&bad, doc.to_string()).unwrap();
    let out = batos_client_cmd()
        .args(["ping", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client.poll_ms"));
}

/// The Python interpreter with pyzmq and msgpack (set up by scripts/setup.sh).
/// Runs `tests/py/<script>` against `d` with its command and event endpoints, its token and `extra` arguments,
/// at most 120 s (a libzmq client that hangs fails the test instead of holding the suite); its last stdout line
/// is the JSON it saw.
async fn python_client(d: &Daemon, script: &str, extra: &[&std::path::Path]) -> Value {
    let cfg = d.client_config();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", &python()])
        .arg(repo().join("tests/py").join(script))
        .args([&cfg.endpoint, &cfg.events, cfg.token.as_deref().unwrap()])
        .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup.sh): {e}", python()));
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_pyzmq_client_speaks_the_protocol() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let seen = python_client(&d, "interop.py", &[]).await;
    assert_eq!(seen["status"], "done");
    assert!(
        seen["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "task.step"),
        "{seen}"
    );
}

/// `gateway.curve = "on"`: CURVE for the clients that ask, clear text (the harness's own client) on loopback.
fn curve_on() -> Edit {
    Box::new(|doc| doc["gateway"]["curve"] = toml_edit::value("on"))
}

/// CurveZMQ (issue 32): unmodified pyzmq clients with CURVE keys — REQ, DEALER with libzmq's heartbeats, SUB —
/// talk to a daemon with `gateway.curve = "on"`; a key not in the allowed folder and a replayed handshake are
/// refused and the daemon lives; the bytes on the wire (a recording proxy) hold no token or task text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzmq_clients_with_curve_keys_are_encrypted_and_strangers_are_refused() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![curve_on()]).await;
    let data_dir = d.settings().data_dir;
    assert!(data_dir.join("curve/server.key").exists());
    let seen = python_client(&d, "curve.py", &[&data_dir]).await;
    assert_eq!(seen["status"], "done");
    // A clear-text client on loopback is still served with curve = "on".
    let v = d.client().request("ping", json!({})).await.unwrap();
    assert_eq!(v["protocol"], 1, "{v}");
}

/// The harness's own weather: a daemon started again finds its command port taken (another test's process
/// was handed it meanwhile) — it is moved to fresh ports and answers there, instead of failing the test that
/// restarted it (seen once in `cognition::a_paused_inquiry_survives_a_restart_and_resumes_on_command`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restarted_onto_a_taken_port_moves_to_fresh_ones() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let before = d.settings().gateway.command_endpoint;
    assert_eq!(d.terminate().and_then(|s| s.code()), Some(0));
    let port = before.rsplit(':').next().unwrap().to_string();
    let squatter = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    d.spawn();
    d.wait_ready().await;
    let after = d.settings().gateway.command_endpoint;
    assert_ne!(after, before);
    assert!(d.log_text().contains("Address already in use"));
    let v = d.client().request("ping", json!({})).await.unwrap();
    assert_eq!(v["protocol"], 1, "{v}");
    drop(squatter);
}

/// Issue 32, two-way liveness: libzmq clients with heartbeats on keep their connections (the front answers
/// their PINGs: the socket behind would take one for a protocol error), and a client stopped with SIGSTOP
/// (socket open, nothing answering) is dropped within `gateway.peer_timeout_ms`, with a log line saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeating_pyzmq_clients_stay_and_a_stopped_one_is_dropped_within_its_timeout() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(
        &ollama.url,
        vec![Box::new(|doc| {
            doc["gateway"]["peer_ping_ms"] = toml_edit::value(200);
            doc["gateway"]["peer_timeout_ms"] = toml_edit::value(1000);
        })],
    )
    .await;
    let timeout_ms = std::path::Path::new("1000");
    let seen = python_client(&d, "liveness.py", &[timeout_ms]).await;
    assert_eq!(seen["heartbeat_dealer_disconnects"], 0, "{seen}");
    assert_eq!(seen["heartbeat_sub_disconnects"], 0, "{seen}");
    assert_eq!(seen["idle_disconnects"], 0, "{seen}");
    let after = seen["stopped_dropped_after_s"].as_f64().unwrap();
    // Quiet is counted from its last frame (its ping's request), so the drop comes within the timeout plus a
    // tick, never before the ping period.
    assert!((0.2..=2.5).contains(&after), "dropped after {after} s");
    let lines = d.log_json();
    assert!(
        lines.iter().any(|l| l["event"] == "gateway.peer_gone"
            && l["reason"].as_str().unwrap_or("").contains("silent")),
        "no gateway.peer_gone line:\n{}",
        d.log_text()
    );
}

/// A TCP proxy on a free loopback port that forwards to `target` (`tcp://HOST:PORT`) and keeps every byte
/// either way: what crossed the wire.
struct Recorder {
    endpoint: String,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(target: &str) -> Self {
        let target = target.trim_start_matches("tcp://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bytes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let kept = kept.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = from.read(&mut buf).await {
                            if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            kept.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    });
                }
            }
        });
        Recorder { endpoint, bytes }
    }

    fn wire(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Issue 32: the CLI speaks CURVE when `gateway.curve` is on — its key pair made in the config folder at the
/// first use and put among the local daemon's allowed keys, its command and event sockets through a tunnel —
/// and a recording proxy between it and the daemon finds neither the token nor the task's text on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_curve_through_its_tunnel_and_nothing_readable_crosses_the_wire() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![curve_on()]).await;
    let s = d.settings();
    let commands = Recorder::start(&s.gateway.command_endpoint).await;
    let events = Recorder::start(&s.gateway.event_endpoint).await;
    let secret = format!("a task only the household may read {}", free_port());
    let mut cmd = batos_cmd(&d);
    cmd.args(["send", "--config"])
        .arg(&d.config)
        .args([
            "--endpoint",
            &commands.endpoint,
            "--events",
            &events.endpoint,
        ])
        .arg(&secret);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Final answer from ALFRED"));
    let keys = d.config.parent().unwrap().join("curve");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(keys.join("client.key_secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let allowed: Vec<_> = std::fs::read_dir(s.data_dir.join("curve/clients"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        allowed.iter().any(|n| n.starts_with("batos-client-")),
        "{allowed:?}"
    );
    let (cw, ew) = (commands.wire(), events.wire());
    for wire in [&cw, &ew] {
        assert!(
            holds(wire, b"CURVE") && holds(wire, b"\x07MESSAGE"),
            "not CURVE"
        );
    }
    let token = std::fs::read_to_string(s.data_dir.join("gateway.token")).unwrap();
    for needle in [token.trim().as_bytes(), secret.as_bytes(), b"submit_task"] {
        assert!(
            !holds(&cw, needle) && !holds(&ew, needle),
            "clear text on the wire: {}",
            String::from_utf8_lossy(needle)
        );
    }
}
