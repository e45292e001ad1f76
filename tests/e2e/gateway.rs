//! Foundation: gateway protocol, supervision, CLI.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_completes_end_to_end() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let pong = c.request("ping", json!({})).await.unwrap();
    assert_eq!(pong["pong"], true);
    let t = c.request("submit_task", json!({"text": "What is two plus two?"})).await.unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    let done = wait_task(&mut c, &id, 30).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(done["result"].as_str().unwrap().contains("Final answer from ALFRED"));
    let nodes: Vec<&str> = done["steps"].as_array().unwrap().iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, vec!["route", "draft", "critique", "synthesize"]);
    let _ = Duration::from_secs(1);
}
