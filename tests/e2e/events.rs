//! Foundation (issue 2): the event channel: a late joiner reconstructs the state from a snapshot, a gap
//! resyncs, and `batos watch` reports a dead daemon within three heartbeats.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use batos_client::client::{WatchItem, Watcher};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_reconstructs_the_same_state_and_a_gap_resyncs() {
    let ollama = ScriptedOllama::start();
    ollama.set_default_delay(Duration::from_millis(20));
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut early = Watcher::new(d.client_config());
    assert!(matches!(early.next().await, WatchItem::Resynced { .. }));
    let mut c = d.client();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            c.request("submit_task", json!({"text": format!("first wave {i}")}))
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Mid-stream: tasks are running while the late joiner arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = Watcher::new(d.client_config());
    assert!(matches!(late.next().await, WatchItem::Resynced { .. }));
    for i in 0..3 {
        ids.push(
            c.request("submit_task", json!({"text": format!("second wave {i}")}))
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        wait_task(&mut c, id, 60).await;
    }
    let final_seq = c.request("snapshot", json!({})).await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mut gap_seen = false;
    for (w, drop_one) in [(&mut early, true), (&mut late, false)] {
        if drop_one {
            w.drop_next_event();
        }
        while w.seq() < final_seq {
            match tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .expect("watcher progresses")
            {
                WatchItem::Resynced { reason, .. } if drop_one => {
                    assert!(
                        reason.contains("gap") || reason.contains("heartbeat"),
                        "{reason}"
                    );
                    gap_seen = true;
                }
                _ => {}
            }
        }
    }
    assert!(gap_seen, "the dropped event must trigger a resync");
    let server = c.request("snapshot", json!({})).await.unwrap();
    let server_state: batos_protocol::StateView =
        serde_json::from_value(server["state"].clone()).unwrap();
    assert_eq!(early.state(), &server_state);
    assert_eq!(late.state(), &server_state);
    assert_eq!(server_state.tasks.len(), 6);
    assert!(server_state.tasks.values().all(|t| t.status == "done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_disconnect_within_three_heartbeats_and_recovers() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let mut watch = batos_cmd(&d)
        .args(["watch", "--config"])
        .arg(&d.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let wait_line = |what: &str, secs: u64| -> Instant {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, line) = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("watch never printed `{what}`"));
            if line.starts_with(what) {
                return t;
            }
        }
    };
    wait_line("resynced", 10);
    let killed = Instant::now();
    d.kill9();
    let seen = wait_line("disconnected", 10);
    // 3 heartbeats of 200 ms, plus scheduling slack on a shared 2-core machine.
    assert!(
        seen.duration_since(killed) < Duration::from_millis(600 + 900),
        "took {:?}",
        seen.duration_since(killed)
    );
    d.spawn();
    d.wait_ready().await;
    wait_line("reconnected", 30);
    wait_line("resynced", 30);
    let _ = watch.kill();
    let _ = watch.wait();
}
