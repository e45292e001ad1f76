//! The exam (issue 27) on the real daemon and the embedded SmolLM2-135M model with the shipped route: a small
//! set with a taught fact runs to the end beside its bare floor, its result is durable (a restart still
//! shows it) and listed, the recall question passes, and the exact computation passes through the built-in
//! tool. Exam questions are never remembered; the taught fact is, as a person's words.

use std::time::{Duration, Instant};

use batos_client::client::Client;
use serde_json::{json, Value};

use crate::support::*;

const SET: &str = r#"{"id": "recall-1", "category": "recall", "question": "What is my cat called?", "check": {"any": ["Pixel"]}, "teach": "Please remember that my cat is called Pixel."}
{"id": "comp-1", "category": "computation", "question": "What is 4821 multiplied by 397?", "check": {"number": 1913937, "tolerance": 0}}
{"id": "comp-2", "category": "computation", "question": "How many days are there between March 3, 2024 and July 15, 2024?", "check": {"number": 134, "tolerance": 0}}
{"id": "house-1", "category": "household", "question": "Which of your tools counts the words in a text? Answer with the tool's name.", "check": {"any": ["word_count"]}, "inner_ok": true}
"#;

async fn wait_exam(c: &mut Client, id: &str, secs: u64) -> Value {
    let started = Instant::now();
    loop {
        let r = c.request("exam_get", json!({ "id": id })).await.unwrap();
        if r["summary"]["status"] != "running" {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "the exam did not finish in {secs} s: {}",
            r["summary"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_exam_with_a_taught_fact_runs_beside_its_bare_floor_is_kept_and_recalls_the_fact() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let mut d = Daemon::start(
        &closed,
        vec![
            log_level("warn"),
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
            }),
            // Real model calls beside the rest of the suite on two cores: the shipped limits and route.
            shipped("llm", "request_timeout_ms"),
            shipped("orchestrator", "route"),
        ],
    )
    .await;
    let mut c = d.client();
    let run = c
        .request(
            "exam_run",
            json!({"set": SET, "name": "e2e", "baseline": "bare", "judge": false}),
        )
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    // A second run while one runs is refused with a clear error.
    let busy = c.request("exam_run", json!({ "set": SET })).await;
    assert!(busy.is_err(), "{busy:?}");
    let r = wait_exam(&mut c, &id, 900).await;
    let s = &r["summary"];
    assert_eq!(s["status"], "done", "{s}");
    assert_eq!(s["done"], 4);
    assert_eq!(s["baseline"], true);
    assert_eq!(s["leaks"], 0, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for q in results {
        assert!(q["bare"]["answer"].is_string(), "no bare answer: {q}");
        assert!(q["society"]["task"].is_string(), "no society task: {q}");
    }
    let by_id = |id: &str| results.iter().find(|q| q["id"] == id).unwrap().clone();
    let recall = by_id("recall-1");
    assert_eq!(recall["society"]["pass"], true, "{recall}");
    for comp in ["comp-1", "comp-2"] {
        let q = by_id(comp);
        assert_eq!(q["society"]["pass"], true, "{q}");
    }
    // The taught fact went in as a person's words and was remembered before the questions began.
    let taught = r["taught"].as_array().unwrap();
    assert_eq!(taught.len(), 1, "{r}");
    assert_eq!(taught[0]["remembered"], true, "{taught:?}");
    let hits = c
        .request(
            "memory_search",
            json!({"query": "my cat is called Pixel", "k": 20}),
        )
        .await
        .unwrap();
    let rows: Vec<Value> = ["details", "recent"]
        .iter()
        .flat_map(|k| hits[*k].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(
        rows.iter().any(|h| h["persona"] == "person"
            && h["text"].as_str().unwrap_or_default().contains("Pixel")),
        "{hits}"
    );
    // No exam question left a row of its own.
    let question_tasks: Vec<String> = results
        .iter()
        .map(|q| q["society"]["task"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !rows
            .iter()
            .any(|h| question_tasks.iter().any(|t| h["task_id"] == t.as_str())),
        "{hits}"
    );
    // Listed, and durable across a restart.
    let history = c.request("exam_history", json!({})).await.unwrap();
    assert!(
        history["exams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str()),
        "{history}"
    );
    d.terminate();
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let again = c.request("exam_get", json!({ "id": id })).await.unwrap();
    assert_eq!(again["summary"], r["summary"]);
    assert!(d
        .path("data/exam/results")
        .join(format!("{id}.json"))
        .exists());
}

/// Issue 32: an exam run is bounded — a set beyond `exam.max_questions` is refused at the door, and a run past
/// `exam.max_run_ms` asks nothing more and ends `failed`, scored on what it answered, saying why. On the
/// scripted Ollama double (a test double for the Ollama service), every model call 300 ms late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exam_past_its_time_bound_stops_and_says_why_and_a_set_too_large_is_refused() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(
        &ollama.url,
        vec![Box::new(|doc| {
            doc["exam"]["max_questions"] = toml_edit::value(3);
            doc["exam"]["max_run_ms"] = toml_edit::value(1000);
            doc["exam"]["judge_agreement"] = toml_edit::value(false);
            doc["exam"]["poll_ms"] = toml_edit::value(50);
        })],
    )
    .await;
    let mut c = d.client();
    let q = |i: u32| {
        format!(
            "{{\"id\": \"q{i}\", \"category\": \"fact\", \"question\": \"Name colour {i}.\", \"check\": {{\"any\": [\"blue\"]}}}}\n"
        )
    };
    let four: String = (0..4).map(q).collect();
    let e = c
        .request("exam_run", json!({ "set": four }))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("4 questions") && e.contains("exam.max_questions"),
        "{e}"
    );
    ollama.set_default_delay(Duration::from_millis(300));
    let three: String = (0..3).map(q).collect();
    let run = c
        .request("exam_run", json!({ "set": three, "baseline": "bare" }))
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let r = wait_exam(&mut c, &id, 120).await;
    let s = &r["summary"];
    assert_eq!(s["status"], "failed", "{s}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("exam.max_run_ms"), "{r}");
    let done = s["done"].as_u64().unwrap();
    assert!(
        (1..3).contains(&done),
        "asked before the bound, none after: {s}"
    );
    assert_eq!(r["results"].as_array().unwrap().len() as u64, done);
}
