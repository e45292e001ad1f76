//! Request-id dedupe across a daemon crash: replies are journaled under data_dir before they are sent, so a
//! retry after `kill -9` and a restart gets the first reply and nothing runs twice.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_kill_9_gets_the_first_reply_and_runs_nothing_twice() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let text = "Run me exactly once, crash or not";
    let mut c = d.client();
    let first = c
        .request_with_id("retry-across-a-crash", "submit_task", json!({"text": text}))
        .await
        .unwrap();
    let task_id = first["id"].as_str().unwrap().to_string();
    // Let the task finish, so the restart has nothing of it to resume.
    let done = wait_task(&mut c, &task_id, 30).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(d.data_dir().join("dedupe.journal").exists());

    d.kill9();
    d.spawn();
    d.wait_ready().await;

    // The client never saw the first reply (say) and retries with the same id: the same reply comes back.
    let mut c = d.client();
    let again = c
        .request_with_id("retry-across-a-crash", "submit_task", json!({"text": text}))
        .await
        .unwrap();
    assert_eq!(again, first);
    let list = c.request("list_tasks", json!({})).await.unwrap();
    let same: Vec<_> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["text"] == text)
        .collect();
    assert_eq!(same.len(), 1, "{list}");
    assert_eq!(same[0]["id"], task_id.as_str());

    // A new id still executes.
    let other = c
        .request_with_id("a-new-request", "submit_task", json!({"text": text}))
        .await
        .unwrap();
    assert_ne!(other["id"], first["id"]);
}
