//! Offline by default (issue 4): with no Ollama reachable, `auto` thinks on the embedded SmolLM2 model.

use std::process::Command;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_ollama_auto_runs_a_full_task_on_the_embedded_model() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let d = Daemon::start(
        &closed,
        vec![
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("auto");
                doc["llm"]["max_tokens"] = toml_edit::value(48);
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["orchestrator"]["max_iterations"] = toml_edit::value(1);
            }),
            // Real model calls beside the rest of the suite on two cores outlast the harness's 20 s limit, meant
            // for scripted answers: the shipped limit.
            shipped("llm", "request_timeout_ms"),
            // The real model critiques: the shipped critique rule (the harness's is for scripted critiques, and
            // would pause a task on one reasonless 1.00).
            shipped("orchestrator", "min_critique_words"),
            shipped("orchestrator", "critique_repeat_similarity"),
        ],
    )
    .await;
    let out = tokio::task::spawn_blocking({
        let config = d.config.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_batos"))
                .args(["send", "--config"])
                .arg(&config)
                .arg("Name one fruit.")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "send failed: {stderr}\n{}",
        d.log_text()
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(stderr.contains("synthesize by ALFRED"), "{stderr}");
    let mut c = d.client();
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(status["backend"]["kind"], "embedded");
    assert!(
        status["backend"]["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer")
            || status["backend"]["reason"]
                .as_str()
                .unwrap()
                .contains("not usable")
    );
    assert_eq!(status["personas"]["BRICK"]["backend"], "embedded");
    let tasks = c.request("list_tasks", json!({})).await.unwrap();
    let id = tasks["tasks"][0]["id"].as_str().unwrap();
    let task = c.request("get_task", json!({"id": id})).await.unwrap();
    assert_eq!(task["status"], "done");
    for step in task["steps"].as_array().unwrap() {
        assert_eq!(step["backend"], "embedded", "{step}");
    }
    assert!(d
        .log_json()
        .iter()
        .any(|l| l["event"] == "llm.backend_selected" && l["backend"] == "embedded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_is_a_clear_start_error() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut d = Daemon::prepare(
        &closed,
        vec![Box::new(|doc| {
            doc["llm"]["backend"] = toml_edit::value("embedded");
            doc["llm"]["embedded"]["model_path"] = toml_edit::value("/nonexistent/model.gguf");
        })],
    );
    d.spawn();
    let status = d.terminate_when_exited(20).expect("daemon exits");
    assert_eq!(status.code(), Some(2));
    let log = d.log_text();
    assert!(
        log.contains("/nonexistent/model.gguf") && log.contains("scripts/fetch-model.sh"),
        "{log}"
    );
}
