//! The UnslothForge's Ollama path (issue 15) against the scripted Ollama double: the personas are served by
//! "Ollama", the forge trains on its local copy of the same base (the embedded SmolLM2-135M GGUF), measures the
//! gate there, uploads the accepted adapter as a blob (the double checks its digest), has the server build
//! `<base>-batos-<short digest>` from the base and that one adapter (status lines relayed as events), and swaps
//! BRICK to it; a server that cannot build from adapters fails the run with the version limit, changing nothing.

use serde_json::{json, Value};
use sha2::Digest;

use batos_protocol::EventBody;

use crate::forge::{forge_events, forge_settings, habit, is_end, seed};
use crate::support::*;

/// Ollama serves the personas; training on the short fixture prompts is gentler than the habit test's (two
/// projections, the shipped rate), so the general set stays within the test's 25 %.
fn on_ollama() -> Edit {
    Box::new(|doc| {
        doc["llm"]["backend"] = toml_edit::value("ollama");
        doc["forge"]["lr"] = toml_edit::value(0.001);
        let mut targets = toml_edit::Array::new();
        targets.push("attn_q");
        targets.push("attn_v");
        doc["forge"]["targets"] = toml_edit::value(targets);
    })
}

/// Trains BRICK now (forced) and returns every forge event up to the run's end.
async fn train(d: &Daemon) -> Vec<EventBody> {
    let mut sub = forge_events(d).await;
    d.client()
        .request("forge_train", json!({"persona": "BRICK", "force": true}))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let e = wait_event(&mut sub, 600, |_| true).await;
        let end = is_end(&e);
        seen.push(e);
        if end {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_ollama_an_accepted_adapter_becomes_a_model_built_from_the_base_and_rolls_back() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::prepare(&ollama.url, vec![forge_settings(6, 0.05), on_ollama()]);
    seed(
        &d.data_dir(),
        &habit(&[
            "Name a colour.",
            "What is the sky made of?",
            "Give me a number.",
            "Where do fish live?",
        ]),
        &habit(&["Who wrote Hamlet?", "What is rain?"]),
        &json!([]),
    );
    let d = d.spawn_and_wait().await;
    let mut c = d.client();
    let events = train(&d).await;
    let end = events.last().unwrap();
    assert_eq!(end.kind, "model.tuned", "{:?}", end.data);
    let tuned = end.data["model"].as_str().unwrap().to_string();
    let short = tuned
        .strip_prefix("smollm2:135m-batos-")
        .unwrap_or_else(|| panic!("named after the base and the adapter: {tuned}"));
    assert_eq!(short.len(), 12, "{tuned}");
    let publishing: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "forge.publishing")
        .map(|e| e.data["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        publishing.last(),
        Some(&"success"),
        "the server's status lines are relayed: {publishing:?}"
    );
    // The blob the server holds is the adapter file the gate measured, byte for byte.
    let file = std::fs::read_dir(d.data_dir().join("adapters"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .unwrap();
    let digest = format!(
        "sha256:{:x}",
        sha2::Sha256::digest(std::fs::read(&file).unwrap())
    );
    assert!(digest[7..].starts_with(short), "{digest} vs {tuned}");
    assert_eq!(
        ollama.blobs().keys().collect::<Vec<_>>(),
        vec![&digest],
        "one upload"
    );
    let creates: Vec<Value> = ollama
        .received()
        .into_iter()
        .filter(|r| r.path == "/api/create")
        .map(|r| r.body)
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0]["model"], tuned.as_str());
    assert_eq!(creates[0]["from"], "smollm2:135m", "built from the base");
    let adapters = creates[0]["adapters"].as_object().unwrap();
    assert_eq!(adapters.len(), 1, "Ollama takes one adapter: {adapters:?}");
    assert_eq!(adapters.values().next().unwrap(), digest.as_str());
    assert_eq!(ollama.created(), vec![tuned.clone()]);
    let persona = c
        .request("get_persona", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(persona["model"], tuned.as_str(), "{persona}");
    let settings: toml_edit::DocumentMut =
        std::fs::read_to_string(&d.config).unwrap().parse().unwrap();
    assert_eq!(
        settings["personas"]["BRICK"]["model"].as_str(),
        Some(tuned.as_str()),
        "the swap is persisted"
    );
    let task = c
        .request("submit_task", json!({"text": "Who wrote Hamlet?"}))
        .await
        .unwrap();
    wait_task(&mut c, task["id"].as_str().unwrap(), 120).await;
    let brick = ollama.chats_by("BRICK");
    assert_eq!(
        brick.last().map(|r| r.model.as_str()),
        Some(tuned.as_str()),
        "BRICK now thinks with the new model on the server"
    );
    // A second run on the same data: the persona's current model is measured locally with the adapter its
    // name points to, so the new adapter must beat the tuned one, not the base; it cannot by half.
    let first_after = end.data["heldout_after"].as_f64().unwrap();
    let mut doc: toml_edit::DocumentMut =
        std::fs::read_to_string(&d.config).unwrap().parse().unwrap();
    doc["forge"]["min_improvement"] = toml_edit::value(0.5);
    std::fs::write(&d.config, doc.to_string()).unwrap();
    eventually(30, "the settings reload", || {
        let reloaded = d.log_json().iter().any(|l| {
            l["event"] == "settings.reloaded"
                && l["keys"]
                    .as_str()
                    .is_some_and(|k| k.contains("forge.min_improvement"))
        });
        async move { reloaded.then_some(()) }
    })
    .await;
    let again = train(&d).await;
    let end = again.last().unwrap();
    assert_eq!(end.kind, "forge.rejected", "{:?}", end.data);
    let before = end.data["heldout_before"].as_f64().unwrap();
    assert!(
        (before - first_after).abs() < 1e-6,
        "measured against the tuned model: {before} vs {first_after}"
    );
    assert_eq!(
        ollama.created().len(),
        1,
        "a rejected adapter builds nothing"
    );
    let back = c
        .request("rollback_model", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(back["from"], tuned.as_str(), "{back}");
    assert_eq!(back["to"], "smollm2:135m", "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ollama_that_cannot_build_from_adapters_fails_the_run_naming_the_version_limit() {
    let ollama = ScriptedOllama::start();
    ollama.refuse_adapters("0.5.4");
    let d = Daemon::prepare(&ollama.url, vec![forge_settings(2, 0.0), on_ollama()]);
    seed(
        &d.data_dir(),
        &habit(&["Name a colour.", "Give me a number."]),
        &habit(&["What is rain?"]),
        &json!([]),
    );
    let d = d.spawn_and_wait().await;
    let mut c = d.client();
    let events = train(&d).await;
    let end = events.last().unwrap();
    assert_eq!(end.kind, "forge.failed", "{:?}", end.data);
    let error = end.data["error"].as_str().unwrap();
    for needle in ["v0.5.5", "0.5.4", "llm.backend = \"embedded\""] {
        assert!(error.contains(needle), "`{needle}` in: {error}");
    }
    let persona = c
        .request("get_persona", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(persona["model"], "smollm2:135m", "{persona}");
    assert!(ollama.created().is_empty());
    assert!(
        !d.data_dir().join("forge/BRICK/history.json").exists(),
        "nothing to roll back to"
    );
}
