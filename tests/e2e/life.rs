//! A life (issue 28) on the real daemon against the scripted Ollama double (a test double for the Ollama
//! service, which cannot run here): a short curriculum with checks makes the exam history grow by the start,
//! check and end exams; `--ablate memory` really switches memory off for the life (no `memory.updated` while it
//! runs, the switch put back after) where the full life stores rows; bad arguments and a second life are
//! refused; and a daemon killed with SIGKILL mid-life resumes it where it stood — no task sent twice, no exam
//! asked again.

use std::time::{Duration, Instant};

use batos_client::client::Client;
use batos_protocol::EventBody;
use serde_json::{json, Value};
use zeromq::SubSocket;

use crate::support::*;

const CURRICULUM: &str = r#"{"text": "Please remember that my dentist is Dr. Okafor.", "kind": "fact"}
{"text": "What is 12 times 12?", "kind": "computation"}
{"text": "My favourite tea is rooibos.", "kind": "fact"}
{"text": "Reply with one word: what is the opposite of hot?", "kind": "request"}
"#;

const EXAM: &str = r#"{"id": "r1", "category": "recall", "question": "Who is my dentist?", "check": {"any": ["Okafor"]}}
{"id": "f1", "category": "fact", "question": "What is the capital of France?", "check": {"any": ["Paris"]}}
"#;

fn quick_life(pace_ms: i64) -> Edit {
    Box::new(move |doc| {
        doc["life"]["pace_ms"] = toml_edit::value(pace_ms);
        doc["life"]["poll_ms"] = toml_edit::value(100);
        doc["life"]["check_questions"] = toml_edit::value(0);
        doc["exam"]["judge_agreement"] = toml_edit::value(false);
        doc["exam"]["poll_ms"] = toml_edit::value(50);
    })
}

async fn life_events(d: &Daemon) -> SubSocket {
    let sub =
        batos_client::client::subscriber(&d.client_config(), &["life.", "memory.", "exam.scored"])
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub
}

/// Every event up to and including `life.ended` of `id`.
async fn until_ended(sub: &mut SubSocket, id: &str, secs: u64) -> Vec<EventBody> {
    let mut seen = Vec::new();
    loop {
        let e = wait_event(sub, secs, |_| true).await;
        let end = e.kind == "life.ended" && e.data["summary"]["id"] == id;
        seen.push(e);
        if end {
            return seen;
        }
    }
}

async fn exams(c: &mut Client) -> usize {
    let h = c.request("exam_history", json!({})).await.unwrap();
    h["exams"].as_array().unwrap().len()
}

fn phases(events: &[EventBody]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == "life.exam")
        .map(|e| e.data["phase"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_life_grows_the_exam_history_and_its_ablation_really_switches_memory_off() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![quick_life(100)]).await;
    let mut c = d.client();
    let mut sub = life_events(&d).await;
    // Refused at the door, naming the mistake.
    for (args, needle) in [
        (
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 2, "ablate": "dreams"}),
            "memory, tools, trainer, motivator",
        ),
        (
            json!({"curriculum": "{\"txt\": 1}", "exam": EXAM, "every": 2}),
            "line 1",
        ),
        (
            json!({"curriculum": CURRICULUM, "exam": "not json", "every": 2}),
            "exam set",
        ),
        (
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 0}),
            "every",
        ),
    ] {
        let e = c.request("life_run", args).await.unwrap_err().to_string();
        assert!(e.contains(needle), "`{needle}` in: {e}");
    }
    let run = c
        .request(
            "life_run",
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 2, "ablate": "memory", "name": "e2e"}),
        )
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let busy = c
        .request(
            "life_run",
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 2}),
        )
        .await;
    assert!(busy.unwrap_err().to_string().contains("is running"));
    let ablated = until_ended(&mut sub, &id, 300).await;
    assert_eq!(phases(&ablated), ["start", "check", "end"], "{ablated:?}");
    assert!(
        !ablated.iter().any(|e| e.kind == "memory.updated"),
        "memory stored rows while switched off: {ablated:?}"
    );
    let end = ablated.last().unwrap();
    assert_eq!(end.data["summary"]["status"], "done", "{:?}", end.data);
    assert_eq!(exams(&mut c).await, 3, "start, one check, end");
    let rec = c.request("life_get", json!({"id": id})).await.unwrap();
    let tasks = rec["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{rec}");
    assert!(tasks.iter().all(|t| t["status"] == "done"), "{rec}");
    let switched = rec["switched"].as_array().unwrap();
    let memory = switched
        .iter()
        .find(|s| s["key"] == "memory.active")
        .unwrap();
    assert_eq!(memory["before"], "true");
    assert_eq!(memory["during"], "false");
    assert!(
        rec["exams"][0]["bare_pct"].is_number(),
        "the start is beside the bare floor: {rec}"
    );
    let settings = std::fs::read_to_string(&d.config).unwrap();
    let doc: toml_edit::DocumentMut = settings.parse().unwrap();
    assert_eq!(
        doc["memory"]["active"].as_bool(),
        Some(true),
        "the switch is put back"
    );
    assert_eq!(
        doc["trainer"]["steps"].as_integer(),
        Some(40),
        "the trainer's budget is put back"
    );
    // The same life with every loop: the person's facts are stored.
    let full = c
        .request(
            "life_run",
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 2, "name": "e2e"}),
        )
        .await
        .unwrap();
    let full_id = full["id"].as_str().unwrap().to_string();
    let lived = until_ended(&mut sub, &full_id, 300).await;
    assert!(
        lived.iter().any(|e| e.kind == "memory.updated"),
        "the full life stores the facts told: {lived:?}"
    );
    assert_eq!(exams(&mut c).await, 6, "the history grows with every life");
    let list = c.request("life_list", json!({})).await.unwrap();
    assert_eq!(list["lives"].as_array().unwrap().len(), 2);
    let report = batos_protocol::life::report(&[
        serde_json::from_value(rec.clone()).unwrap(),
        serde_json::from_value(c.request("life_get", json!({"id": full_id})).await.unwrap())
            .unwrap(),
    ]);
    assert_eq!(report.lives.len(), 2);
    assert!(report.shares.contains_key("memory"), "{report:?}");
    let cancel = c.request("life_cancel", json!({"id": full_id})).await;
    assert!(cancel.unwrap_err().to_string().contains("not running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_life_killed_mid_curriculum_resumes_where_it_stood_sending_no_task_twice() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![quick_life(1500)]).await;
    let mut c = d.client();
    let mut sub = life_events(&d).await;
    let run = c
        .request(
            "life_run",
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 10}),
        )
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    wait_event(&mut sub, 120, |e| {
        e.kind == "life.progress" && e.data["done"] == 1
    })
    .await;
    d.kill9();
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let started = Instant::now();
    let rec: Value = loop {
        let r = c.request("life_get", json!({"id": id})).await.unwrap();
        if r["summary"]["status"] != "running" {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the life did not end: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(rec["summary"]["status"], "done", "{rec}");
    let tasks = rec["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{rec}");
    let ids: std::collections::BTreeSet<&str> =
        tasks.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "four distinct tasks: {rec}");
    let all = c.request("list_tasks", json!({})).await.unwrap();
    for line in CURRICULUM.lines() {
        let text: Value = serde_json::from_str(line).unwrap();
        let sent = all["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["text"] == text["text"])
            .count();
        assert_eq!(
            sent, 1,
            "each curriculum task sent once, the one in flight at the kill found again: {text}"
        );
    }
    let phases: Vec<&str> = rec["exams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["start", "end"]);
    assert_eq!(exams(&mut c).await, 2, "the start exam was not asked again");
}

/// Issue 32: a life is bounded — a curriculum beyond `life.max_tasks` is refused at the door, and once its
/// tasks have spent `life.max_task_tokens` it sends no more and goes to its end exam, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_life_stops_at_its_token_budget_and_a_curriculum_beyond_its_bound_is_refused() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(
        &ollama.url,
        vec![
            quick_life(100),
            Box::new(|doc| {
                doc["life"]["max_tasks"] = toml_edit::value(3);
                doc["life"]["max_task_tokens"] = toml_edit::value(1);
            }),
        ],
    )
    .await;
    let mut c = d.client();
    let mut sub = life_events(&d).await;
    let e = c
        .request(
            "life_run",
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 2}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 tasks") && e.contains("life.max_tasks"), "{e}");
    let run = c
        .request(
            "life_run",
            json!({"curriculum": CURRICULUM, "exam": EXAM, "every": 2, "limit": 3}),
        )
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let seen = until_ended(&mut sub, &id, 300).await;
    assert_eq!(phases(&seen), ["start", "end"], "{seen:?}");
    let rec = c.request("life_get", json!({"id": id})).await.unwrap();
    assert_eq!(rec["summary"]["status"], "done", "{rec}");
    let tasks = rec["tasks"].as_array().unwrap();
    assert_eq!(
        tasks.len(),
        1,
        "one task spends the budget of 1 token: {rec}"
    );
    assert!(rec["cost"]["task_tokens"].as_u64().unwrap() >= 1, "{rec}");
    assert!(
        d.log_json()
            .iter()
            .any(|l| l["event"] == "life.budget_spent"),
        "no life.budget_spent line"
    );
}
