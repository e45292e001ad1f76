//! The batched decoder (issue 19), end to end: four clients each run a task at once on the embedded model;
//! every task completes, and each task's token stream is its own (ALFRED's streamed synthesis ends with that
//! task's answer, and nothing of another task's answer is in it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use batos_protocol::EventBody;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_clients_run_tasks_at_once_and_every_stream_is_its_own() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let d = Daemon::start(
        &closed,
        vec![
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["max_tokens"] = toml_edit::value(48);
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["orchestrator"]["max_iterations"] = toml_edit::value(1);
                doc["orchestrator"]["stream_tokens"] = toml_edit::value(true);
                // Four tasks' calls share two cores with the other tests' daemons: room beyond the
                // harness's 20 s.
                doc["llm"]["request_timeout_ms"] = toml_edit::value(600_000);
            }),
            // The real model critiques: the shipped critique rule.
            shipped("orchestrator", "min_critique_words"),
            shipped("orchestrator", "critique_repeat_similarity"),
        ],
    )
    .await;
    let mut sub = events(&d).await;
    let questions = [
        "Name one fruit.",
        "What colour is the sky?",
        "Name a large animal.",
        "What is two plus two?",
    ];
    // Four clients, one task each, submitted together.
    let submits = questions.iter().map(|q| {
        let mut c = d.client();
        async move {
            c.request("submit_task", json!({ "text": q }))
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    });
    let ids: Vec<String> = futures::future::join_all(submits).await;
    // Collect every task's streamed fragments, per persona, until all four have ended.
    let mut streams: HashMap<(String, String), String> = HashMap::new();
    let mut ended = 0;
    let deadline = Instant::now() + Duration::from_secs(900);
    while ended < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, zeromq::SocketRecv::recv(&mut sub))
            .await
            .unwrap_or_else(|_| panic!("tasks did not end in time\n{}", d.log_text()))
            .unwrap();
        let ev: EventBody = rmp_serde::from_slice(m.into_vec().get(1).unwrap()).unwrap();
        let field = |k: &str| ev.data[k].as_str().unwrap_or_default().to_string();
        match ev.kind.as_str() {
            "task.token" => streams
                .entry((field("id"), field("persona")))
                .or_default()
                .push_str(&field("text")),
            "task.done" | "task.failed" | "task.cancelled" => ended += 1,
            _ => {}
        }
    }
    let mut c = d.client();
    let mut answers = Vec::new();
    for id in &ids {
        let task = c.request("get_task", json!({ "id": id })).await.unwrap();
        assert_eq!(
            task["status"],
            "done",
            "task {id}: {task}\n{}",
            d.log_text()
        );
        answers.push(task["result"].as_str().unwrap().to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        let alfred = streams
            .get(&(id.clone(), "ALFRED".to_string()))
            .cloned()
            .unwrap_or_default();
        assert!(
            !answers[i].trim().is_empty() && alfred.ends_with(&answers[i]),
            "task {i}: ALFRED's stream must end with its own answer\nstream: {alfred:?}\nanswer: {:?}",
            answers[i]
        );
        for (j, other) in answers.iter().enumerate() {
            if j != i && other.len() > 20 && !answers[i].contains(other.as_str()) {
                assert!(
                    !alfred.contains(other.as_str()),
                    "task {i}'s stream carries task {j}'s answer"
                );
            }
        }
    }
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(status["backend"]["kind"], "embedded");
}
