//! The trainer's Ollama path (issue 15) against the scripted Ollama double: the personas are served by
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
        doc["trainer"]["lr"] = toml_edit::value(0.001);
        let mut targets = toml_edit::Array::new();
        targets.push("attn_q");
        targets.push("attn_v");
        doc["trainer"]["targets"] = toml_edit::value(targets);
    })
}

/// Trains BRICK now (forced) and returns every forge event up to the run's end.
async fn train(d: &Daemon) -> Vec<EventBody> {
    let mut sub = forge_events(d).await;
    d.client()
        .request("trainer_run", json!({"persona": "BRICK", "force": true}))
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

/// BRICK's golden set: four short habits to train on, two held out.
fn seed_brick(d: &Daemon) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_ollama_an_accepted_adapter_becomes_a_model_built_from_the_base_and_rolls_back() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::prepare(&ollama.url, vec![forge_settings(6, 0.05), on_ollama()]);
    seed_brick(&d);
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
        .filter(|e| e.kind == "trainer.publishing")
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
    doc["trainer"]["min_improvement"] = toml_edit::value(0.5);
    std::fs::write(&d.config, doc.to_string()).unwrap();
    eventually(30, "the settings reload", || {
        let reloaded = d.log_json().iter().any(|l| {
            l["event"] == "settings.reloaded"
                && l["keys"]
                    .as_str()
                    .is_some_and(|k| k.contains("trainer.min_improvement"))
        });
        async move { reloaded.then_some(()) }
    })
    .await;
    let again = train(&d).await;
    let end = again.last().unwrap();
    assert_eq!(end.kind, "trainer.rejected", "{:?}", end.data);
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
    assert_eq!(end.kind, "trainer.failed", "{:?}", end.data);
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

/// ALFRED's golden set, shaped as the Curator records an answer step: ALFRED's shipped system message, the
/// question, the habit's answer.
fn seed_alfred(dir: &std::path::Path, train: &[&str], heldout: &[&str]) {
    let text = std::fs::read_to_string(repo().join("config/codex.toml")).unwrap();
    let system = batos_actors::principles::Codex::parse(&text)
        .unwrap()
        .personas["ALFRED"]
        .system_message();
    let d = dir.join("curator/ALFRED");
    std::fs::create_dir_all(&d).unwrap();
    let lines = |qs: &[&str], split: &str, base: usize| -> String {
        qs.iter()
            .enumerate()
            .map(|(i, q)| {
                let n = base + i;
                json!({
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": crate::forge::HABIT},
                    ],
                    "lineage": {
                        "key": format!("a{n}/1/0"), "task": format!("a{n}"), "request": q, "step": 1,
                        "node": "synthesize", "persona": "ALFRED", "model": "smollm2:135m", "generation": 1,
                        "hash": format!("{n:064x}"), "split": split, "dissonance": null, "judge": null,
                        "filters": [], "at": 0.0,
                    },
                })
                .to_string()
                    + "\n"
            })
            .collect()
    };
    std::fs::write(d.join("train.jsonl"), lines(train, "train", 0)).unwrap();
    std::fs::write(d.join("heldout.jsonl"), lines(heldout, "heldout", 100)).unwrap();
}

/// The exam gate (issue 28): ALFRED's adapter passes the NLL gate, is tried on the gate's questions with the
/// candidate swapped in, and the scripted server (a test double for Ollama) answers them wrong under the tuned
/// model: ALFRED is swapped back, the run is `trainer.rejected` with both exam figures, and nothing is left to
/// roll back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_lowers_the_exam_gate_score_is_swapped_back_and_refused_with_both_figures()
{
    let ollama = ScriptedOllama::start();
    ollama.set_responder(|persona, body| {
        if persona != Some("ALFRED") || !body["format"].is_null() {
            return None;
        }
        let tuned = body["model"]
            .as_str()
            .is_some_and(|m| m.contains("-batos-"));
        Some(Scripted::text(if tuned {
            "I could not say."
        } else {
            "Paris is the capital."
        }))
    });
    let d = Daemon::prepare(
        &ollama.url,
        vec![
            forge_settings(6, 0.0),
            on_ollama(),
            Box::new(|doc| {
                doc["trainer"]["exam_gate"] = toml_edit::value("gate.jsonl");
                doc["trainer"]["exam_tolerance"] = toml_edit::value(5.0);
                doc["exam"]["judge_agreement"] = toml_edit::value(false);
            }),
        ],
    );
    std::fs::write(
        d.config.parent().unwrap().join("gate.jsonl"),
        concat!(
            r#"{"id": "g1", "category": "fact", "question": "What is the capital of France?", "check": {"any": ["Paris"]}}"#,
            "\n",
            r#"{"id": "g2", "category": "fact", "question": "Which city is France's capital?", "check": {"any": ["Paris"]}}"#,
            "\n"
        ),
    )
    .unwrap();
    seed_alfred(
        &d.data_dir(),
        &[
            "Name a colour.",
            "What is the sky made of?",
            "Give me a number.",
            "Where do fish live?",
        ],
        &["Who wrote Hamlet?", "What is rain?"],
    );
    let d = d.spawn_and_wait().await;
    let mut c = d.client();
    let mut sub = forge_events(&d).await;
    c.request("trainer_run", json!({"persona": "ALFRED", "force": true}))
        .await
        .unwrap();
    let mut swaps = Vec::new();
    let end = loop {
        let e = wait_event(&mut sub, 600, |_| true).await;
        if e.kind == "model.swapped" {
            swaps.push(e.data["to"].as_str().unwrap().to_string());
        }
        if is_end(&e) {
            break e;
        }
    };
    assert_eq!(end.kind, "trainer.rejected", "{:?}", end.data);
    assert_eq!(
        end.data["exam_before"].as_f64(),
        Some(100.0),
        "{:?}",
        end.data
    );
    assert_eq!(end.data["exam_after"].as_f64(), Some(0.0), "{:?}", end.data);
    let reason = end.data["reason"].as_str().unwrap();
    assert!(reason.contains("exam gate"), "{reason}");
    assert!(
        end.data["heldout_after"].as_f64() <= end.data["heldout_before"].as_f64(),
        "the NLL gate had passed: {:?}",
        end.data
    );
    assert_eq!(swaps.len(), 2, "tried, then swapped back: {swaps:?}");
    assert!(swaps[0].contains("-batos-"), "{swaps:?}");
    assert_eq!(swaps[1], "smollm2:135m");
    assert!(
        ollama
            .chats_by("ALFRED")
            .iter()
            .any(|r| r.model.contains("-batos-")),
        "the gate asked the candidate itself"
    );
    let persona = c
        .request("get_persona", json!({"persona": "ALFRED"}))
        .await
        .unwrap();
    assert_eq!(persona["model"], "smollm2:135m", "{persona}");
    let forge = d.data_dir().join("forge/ALFRED");
    assert!(!forge.join("trial.json").exists(), "the trial is over");
    assert!(
        !forge.join("history.json").exists(),
        "nothing to roll back to"
    );
    let history = c.request("exam_history", json!({})).await.unwrap();
    let names: Vec<&str> = history["exams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gate ALFRED before", "gate ALFRED after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_on_its_own_ollama_host_gets_its_tuned_model_built_there() {
    let home = ScriptedOllama::start();
    let gpu = ScriptedOllama::start();
    let url = gpu.url.clone();
    let d = Daemon::prepare(
        &home.url,
        vec![
            forge_settings(6, 0.05),
            on_ollama(),
            Box::new(move |doc| {
                doc["personas"]["BRICK"]["ollama_url"] = toml_edit::value(url.as_str());
            }),
        ],
    );
    seed_brick(&d);
    let d = d.spawn_and_wait().await;
    let events = train(&d).await;
    let end = events.last().unwrap();
    assert_eq!(end.kind, "model.tuned", "{:?}", end.data);
    let tuned = end.data["model"].as_str().unwrap();
    let created = |o: &ScriptedOllama| {
        o.received()
            .into_iter()
            .filter(|r| r.path == "/api/create")
            .count()
    };
    assert_eq!(created(&gpu), 1, "built on BRICK's host");
    assert_eq!(created(&home), 0, "not on the daemon's");
    assert_eq!(gpu.blobs().len(), 1);
    // BRICK's next call goes to its host, with the tuned model.
    let mut c = d.client();
    let id = c
        .request("submit_task", json!({"text": "Where do birds live?"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_task(&mut c, &id, 120).await;
    assert!(
        gpu.chats_by("BRICK").iter().any(|r| r.model == tuned),
        "BRICK thinks with {tuned} on its host"
    );
}
