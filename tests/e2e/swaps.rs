//! The cognitive atomic swap (issue 3): swaps under load keep every task on one model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// The task text a request belongs to (every prompt starts with the Architect's task).
fn task_text_of(body: &Value) -> Option<String> {
    body["messages"].as_array()?.iter().find_map(|m| {
        let c = m["content"].as_str()?;
        let rest = c.strip_prefix("Task from the Architect:\n")?;
        Some(rest.lines().next()?.to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_keep_every_task_on_one_model() {
    let ollama = ScriptedOllama::start();
    // Two drafting rounds per task so a task spans time; every answer takes a few ms.
    let critiques: Arc<Mutex<HashMap<String, u32>>> = Default::default();
    let seen = critiques.clone();
    ollama.set_responder(move |persona, body| {
        if persona == Some("ROBIN") && !body["format"].is_null() {
            let key = task_text_of(body).unwrap_or_default();
            let mut m = seen.lock().unwrap();
            let n = m.entry(key).or_default();
            *n += 1;
            let d = if *n == 1 { 0.8 } else { 0.1 };
            return Some(
                Scripted::json(json!({"dissonance": d, "critique": "c"}))
                    .delayed(Duration::from_millis(5)),
            );
        }
        None
    });
    ollama.set_default_delay(Duration::from_millis(5));
    let d = Daemon::start(
        &ollama.url,
        vec![Box::new(|doc| {
            doc["personas"]["BRICK"]["model"] = toml_edit::value("brick:a");
            doc["orchestrator"]["max_concurrent_tasks"] = toml_edit::value(16);
        })],
    )
    .await;
    let mut sub = events(&d).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Background load: tasks submitted continuously while swaps happen.
    let load = {
        let cfg = d.client_config();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = batos_client::client::Client::new(cfg);
            let mut ids = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = c
                    .request("submit_task", json!({"text": format!("load {i}")}))
                    .await
                    .unwrap();
                ids.push(r["id"].as_str().unwrap().to_string());
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        })
    };
    let mut c = d.client();
    let mut probes: Vec<(String, String, String)> = Vec::new(); // (id, text, model it must use)
    for n in 0..50 {
        let to = if n % 2 == 0 { "brick:b" } else { "brick:a" };
        let r = c
            .request("swap_model", json!({"persona": "BRICK", "model": to}))
            .await
            .unwrap();
        assert_eq!(r["to"], to);
        let ev = wait_event(&mut sub, 10, |e| e.kind == "model.swapped").await;
        assert_eq!(ev.data["to"], to);
        let text = format!("probe {n}");
        let id = c
            .request("submit_task", json!({"text": text}))
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        probes.push((id, text, to.to_string()));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let load_ids = load.await.unwrap();
    assert!(load_ids.len() > 10, "load generator ran");
    for id in load_ids.iter().chain(probes.iter().map(|p| &p.0)) {
        let t = wait_task(&mut c, id, 120).await;
        assert_eq!(t["status"], "done", "{t}");
    }
    // Per task, every BRICK call used one model.
    let mut per_task: HashMap<String, Vec<String>> = HashMap::new();
    for r in ollama.chats_by("BRICK") {
        per_task
            .entry(task_text_of(&r.body).unwrap())
            .or_default()
            .push(r.model.clone());
    }
    for (text, models) in &per_task {
        assert!(models.len() >= 2, "{text}: {models:?}");
        assert!(
            models.windows(2).all(|w| w[0] == w[1]),
            "task `{text}` mixed models: {models:?}"
        );
    }
    for (_, text, model) in &probes {
        assert_eq!(
            &per_task[text][0], model,
            "task `{text}` started after the swap to {model}"
        );
    }
    // The swap is recorded in settings.toml, comments intact.
    let settings = std::fs::read_to_string(&d.config).unwrap();
    assert!(
        settings.contains("model = \"brick:a\"")
            && settings.contains("# The model each persona thinks with.")
    );
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(status["personas"]["BRICK"]["model"], "brick:a");
    // Every replaced generation drained and retired once its last task let go of it.
    let retired = eventually(20, "50 retired BRICK generations", || {
        let n = d
            .log_json()
            .iter()
            .filter(|l| {
                l["event"] == "actor.stopped"
                    && l["actor"] == "root/personas/BRICK (previous generation)"
                    && l["reason"] == "retired"
            })
            .count();
        async move { (n == 50).then_some(n) }
    })
    .await;
    assert_eq!(retired, 50);
}
