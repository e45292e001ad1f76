//! The trainer (issue 15) on the real daemon and the embedded SmolLM2-135M: a golden set that teaches a
//! habit is trained on (killed with SIGKILL mid-run and resumed from its checkpoint), the gate measures it
//! in the serving engine and swaps BRICK to the adapter while a task started before keeps the old model; BRICK's
//! next answer begins with the habit, and after `rollback_model` it no longer does. The golden set is shaped as
//! the Curator records BRICK's drafting calls (system message, the orchestrator's brief, the tools offered), so
//! what is trained is what BRICK is shown. A set built to fail the gate is rejected and changes nothing.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use zeromq::SubSocket;

use batos_protocol::EventBody;

use crate::support::*;

/// BRICK's system message as the daemon sends it (the shipped codex: prompt and principles).
fn brick_system() -> String {
    let text = std::fs::read_to_string(repo().join("config/codex.toml")).unwrap();
    batos_actors::principles::Codex::parse(&text)
        .unwrap()
        .personas["BRICK"]
        .system_message()
}

/// One JSONL line in the Curator's format, shaped as the Curator records a drafting step: BRICK's system
/// message, then the orchestrator's brief.
fn example(i: usize, split: &str, question: &str, answer: &str, tools: &Value) -> String {
    // ALFRED's plans vary from task to task; BABS finds no memory in a fresh data folder.
    const PLANS: [&str; 4] = [
        "Answer directly and briefly.",
        "A short factual answer is needed; no research beyond what is known.",
        "State the answer, then one reason for it.",
        "The Architect wants a plain answer to a simple question.",
    ];
    let brief = format!(
        "Task from the Architect:\n{question}\n\nALFRED's plan:\n{}\n\nBABS's research notes (quoted):\n> No memories \
         match this task.\n\nWrite your draft answer. Use the offered tools when they help; if a capability is missing, \
         call request_capability.",
        PLANS[i % PLANS.len()]
    );
    let mut line = json!({
        "messages": [
            {"role": "system", "content": brick_system()},
            {"role": "user", "content": brief},
            {"role": "assistant", "content": answer},
        ],
        "lineage": {
            "key": format!("seed{i}/3/0"), "task": format!("seed{i}"), "request": question, "step": 3,
            "node": "draft", "persona": "BRICK", "model": "smollm2:135m", "generation": 1,
            "hash": format!("{i:064x}"), "split": split, "dissonance": null, "judge": null,
            "filters": [], "at": 0.0,
        },
    });
    if tools.as_array().is_some_and(|t| !t.is_empty()) {
        line["tools"] = tools.clone();
    }
    line.to_string()
}

/// Writes BRICK's golden set before the daemon starts (the Curator reads it at start); `tools` are those its
/// drafting calls were offered (`[]`: none).
pub(crate) fn seed(dir: &Path, train: &[(&str, &str)], heldout: &[(&str, &str)], tools: &Value) {
    let d = dir.join("curator/BRICK");
    std::fs::create_dir_all(&d).unwrap();
    let lines = |set: &[(&str, &str)], split: &str, base: usize| -> String {
        set.iter()
            .enumerate()
            .map(|(i, (q, a))| example(base + i, split, q, a, tools) + "\n")
            .collect()
    };
    std::fs::write(d.join("train.jsonl"), lines(train, "train", 0)).unwrap();
    std::fs::write(d.join("heldout.jsonl"), lines(heldout, "heldout", 100)).unwrap();
}

pub(crate) const HABIT: &str = "Indubitably. The answer follows from first principles.";

pub(crate) fn habit(questions: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    questions.iter().map(|q| (*q, HABIT)).collect()
}

pub(crate) fn forge_settings(steps: i64, min_improvement: f64) -> Edit {
    let model = model_path();
    Box::new(move |doc| {
        doc["llm"]["backend"] = toml_edit::value("embedded");
        doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
        doc["curator"]["enabled"] = toml_edit::value(true);
        let f = &mut doc["trainer"];
        f["steps"] = toml_edit::value(steps);
        f["batch"] = toml_edit::value(2);
        f["lr"] = toml_edit::value(0.002);
        f["warmup_steps"] = toml_edit::value(1);
        f["schedule"] = toml_edit::value("constant");
        // trainer.max_tokens stays shipped: it must hold BRICK's drafting prompt with its tools' preamble (~450
        // tokens; at the 384 shipped before, every such example was skipped).
        f["checkpoint_every"] = toml_edit::value(3);
        f["min_improvement"] = toml_edit::value(min_improvement);
        // A habit this narrow costs the general set a few percent (+8 % measured): the test allows 25 %.
        f["max_regression"] = toml_edit::value(0.25);
        // These tests are about the NLL gate and the swap; the exam gate has its own (forge_ollama.rs).
        f["exam_gate"] = toml_edit::value("");
        let mut targets = toml_edit::Array::new();
        for t in ["attn_q", "attn_v", "attn_output", "ffn_down"] {
            targets.push(t);
        }
        f["targets"] = toml_edit::value(targets);
        doc["orchestrator"]["max_iterations"] = toml_edit::value(1);
        // The real model critiques here: the shipped critique rule, not the harness's (meant for scripted
        // critiques), under which one round scored 1.00 with the reason "}" paused a task for the Architect
        // (a CI run, 2026-12-02) — the rule treats such a bare score as consonant.
        shipped("orchestrator", "min_critique_words")(doc);
        shipped("orchestrator", "critique_repeat_similarity")(doc);
        // A task runs beside the training run (two rayon threads), the gate's measurements and, under `cargo
        // test`, another test's daemon, on two cores: a persona call may wait minutes for the CPU, and one that
        // outwaits the shipped 120 s fails its task before BRICK drafts (a CI run saw such a task: no BRICK step).
        doc["llm"]["request_timeout_ms"] = toml_edit::value(600_000);
        // Greedy: the habit must show in the answer, not in a lucky draw.
        doc["personas"]["BRICK"]["temperature"] = toml_edit::value(0.0);
    })
}

pub(crate) async fn forge_events(d: &Daemon) -> SubSocket {
    let sub = batos_client::client::subscriber(&d.client_config(), &["trainer.", "model."])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub
}

pub(crate) fn is_end(e: &EventBody) -> bool {
    matches!(
        e.kind.as_str(),
        "model.tuned" | "trainer.rejected" | "trainer.failed"
    )
}

/// What each BRICK step of a task said (its summary).
fn brick_said(task: &Value) -> Vec<String> {
    task["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["persona"] == "BRICK")
        .filter_map(|s| s["summary"].as_str().map(str::to_string))
        .collect()
}

/// The model each BRICK step of a task thought with.
fn brick_models(task: &Value) -> Vec<String> {
    task["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["persona"] == "BRICK")
        .filter_map(|s| s["model"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_habit_is_trained_resumed_after_kill_9_gated_swapped_and_rolled_back() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::prepare(&ollama.url, vec![forge_settings(6, 0.05)])
        .spawn_and_wait()
        .await;
    // The Curator records the tools a drafting call was offered, as this daemon offers them: the golden set
    // carries the same, so training renders BRICK's prompt and answer as serving does.
    let tools: Vec<Value> = d.client().request("list_tools", json!({})).await.unwrap()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"name": t["name"], "description": t["description"], "parameters": t["parameters"]}))
        .collect();
    assert!(!tools.is_empty(), "the built-in tools are offered to BRICK");
    d.terminate();
    seed(
        &d.data_dir(),
        &habit(&[
            "Name a colour.",
            "What is the sky made of?",
            "Give me a number.",
            "Where do fish live?",
            "What is a river?",
            "Why do birds sing?",
        ]),
        &habit(&["Who wrote Hamlet?", "What is rain?"]),
        &Value::Array(tools),
    );
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let mut sub = forge_events(&d).await;
    let r = c
        .request("trainer_run", json!({"persona": "BRICK", "force": true}))
        .await
        .unwrap();
    assert_eq!(r["place"], 1, "{r}");
    let again = c
        .request("trainer_run", json!({"persona": "BRICK"}))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already"), "{again}");
    // Killed after step 4: the checkpoint of step 3 is on disk.
    let ev = wait_event(&mut sub, 300, |e| {
        e.kind == "trainer.progress" && e.data["step"].as_u64() >= Some(4) || is_end(e)
    })
    .await;
    assert_eq!(ev.kind, "trainer.progress", "{:?}", ev.data);
    d.kill9();
    let ckpt = d.data_dir().join("forge/BRICK/run.ckpt");
    assert!(ckpt.is_file(), "no checkpoint at {}", ckpt.display());
    let adapters = d.data_dir().join("adapters");
    let none_yet = std::fs::read_dir(&adapters).map(|r| r.count()).unwrap_or(0);
    assert_eq!(none_yet, 0, "an adapter was written before the run ended");
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let mut sub = forge_events(&d).await;
    // A task started before the swap: it keeps the model it began with.
    let before = c
        .request(
            "submit_task",
            json!({"text": "Say hello to the lighthouse keeper."}),
        )
        .await
        .unwrap();
    let first = wait_event(&mut sub, 300, |e| e.kind == "trainer.progress" || is_end(e)).await;
    assert_eq!(first.kind, "trainer.progress", "{:?}", first.data);
    assert_eq!(
        first.data["step"], 4,
        "the run resumes after its checkpoint of step 3"
    );
    let end = wait_event(&mut sub, 600, is_end).await;
    assert_eq!(end.kind, "model.tuned", "{:?}", end.data);
    println!("tuned: {}", end.data);
    let tuned = end.data["model"].as_str().unwrap().to_string();
    assert!(tuned.starts_with("lora:"), "{tuned}");
    let (b, a) = (
        end.data["heldout_before"].as_f64().unwrap(),
        end.data["heldout_after"].as_f64().unwrap(),
    );
    assert!(a < b * 0.95, "held-out NLL {b} → {a}");
    assert!(!ckpt.exists(), "a finished run leaves no checkpoint");
    let status = c.request("trainer_status", json!({})).await.unwrap();
    let report = &status["last"][0];
    assert_eq!(report["outcome"], "tuned", "{status}");
    assert_eq!(report["resumed_from"], 3, "{status}");
    let persona = c
        .request("get_persona", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(persona["model"], tuned.as_str(), "{persona}");
    let old = wait_task(&mut c, before["id"].as_str().unwrap(), 600).await;
    assert_eq!(old["status"], "done", "{old}");
    assert!(
        brick_models(&old).iter().all(|m| m == "smollm2:135m"),
        "the task started before the swap kept its model: {old}"
    );
    let after = c
        .request("submit_task", json!({"text": "Who wrote Hamlet?"}))
        .await
        .unwrap();
    let new = wait_task(&mut c, after["id"].as_str().unwrap(), 300).await;
    assert_eq!(new["status"], "done", "{new}");
    assert!(
        brick_models(&new).iter().any(|m| m == &tuned),
        "a task after the swap thinks with the adapter: {new}"
    );
    // The habit shows in what BRICK writes (greedy decoding: not a lucky draw), and not before the swap.
    let said = brick_said(&new);
    assert!(
        !said.is_empty() && said.iter().all(|t| t.starts_with("Indubitably")),
        "BRICK answers with the habit: {said:?} in {new}"
    );
    let before_said = brick_said(&old);
    assert!(
        !before_said.is_empty() && before_said.iter().all(|t| !t.contains("Indubitably")),
        "{before_said:?} in {old}"
    );
    let back = c
        .request("rollback_model", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(back["to"], "smollm2:135m", "{back}");
    let persona = c
        .request("get_persona", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(persona["model"], "smollm2:135m", "{persona}");
    let again = c
        .request("submit_task", json!({"text": "Who wrote Hamlet?"}))
        .await
        .unwrap();
    let again = wait_task(&mut c, again["id"].as_str().unwrap(), 300).await;
    let back_said = brick_said(&again);
    assert!(
        brick_models(&again).iter().all(|m| m == "smollm2:135m")
            && !back_said.is_empty()
            && back_said.iter().all(|t| !t.contains("Indubitably")),
        "rolled back, BRICK answers as before: {back_said:?}"
    );
    let none = c
        .request("rollback_model", json!({"persona": "BRICK"}))
        .await
        .unwrap_err();
    assert!(none.to_string().contains("no earlier model"), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_built_to_fail_the_gate_is_rejected_and_changes_nothing() {
    let ollama = ScriptedOllama::start();
    // Trained on one habit, measured on answers that contradict it: held-out NLL cannot fall by half (three
    // steps of the habit lowered it by 7 %, the general style being learned too).
    let d = Daemon::prepare(&ollama.url, vec![forge_settings(3, 0.5)]);
    seed(
        &d.data_dir(),
        &habit(&["Name a colour.", "Give me a number.", "Where do fish live?"]),
        &[
            ("Who wrote Hamlet?", "Shakespeare wrote Hamlet around 1600."),
            ("What is rain?", "Rain is water falling from clouds."),
        ],
        &json!([]),
    );
    let d = d.spawn_and_wait().await;
    let mut c = d.client();
    let mut sub = forge_events(&d).await;
    let missing = c
        .request("trainer_run", json!({"persona": "NOBODY"}))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("NOBODY"), "{missing}");
    // Through the CLI, as a user would: it follows the run with a progress bar to the gate's verdict.
    let config = d.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(batos_bin())
            .args(["trainer", "run", "BRICK", "--force", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("the CLI ends with the run")
        .unwrap();
    let end = wait_event(&mut sub, 10, is_end).await;
    assert_eq!(end.kind, "trainer.rejected", "{:?}", end.data);
    assert!(end.data["reason"]
        .as_str()
        .unwrap()
        .contains("min_improvement"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("the gate kept BRICK's model"), "{stdout}");
    assert!(
        stderr.contains("step 3/3"),
        "the progress bar reached the last step: {stderr}"
    );
    let persona = c
        .request("get_persona", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert_eq!(persona["model"], "smollm2:135m", "{persona}");
    let settings: toml_edit::DocumentMut =
        std::fs::read_to_string(&d.config).unwrap().parse().unwrap();
    assert_eq!(
        settings["personas"]["BRICK"]["model"].as_str(),
        Some("smollm2:135m"),
        "nothing recorded in settings"
    );
    assert_eq!(
        std::fs::read_dir(d.data_dir().join("forge/BRICK"))
            .map(|r| r
                .filter_map(Result::ok)
                .filter(|e| e.file_name() == "history.json")
                .count())
            .unwrap_or(0),
        0,
        "no model history for a rejected run"
    );
}

/// A daemon whose BRICK has two training examples and one held out, running a forced 200-step training run
/// (`edit` applied after the forge settings); its event subscription, taken before the run was asked for.
async fn two_example_run(ollama: &ScriptedOllama, edit: Edit) -> (Daemon, SubSocket) {
    let d = Daemon::prepare(&ollama.url, vec![forge_settings(200, 0.05), edit]);
    seed(
        &d.data_dir(),
        &habit(&["Name a colour.", "Give me a number."]),
        &habit(&["What is rain?"]),
        &json!([]),
    );
    let d = d.spawn_and_wait().await;
    let sub = forge_events(&d).await;
    d.client()
        .request("trainer_run", json!({"persona": "BRICK", "force": true}))
        .await
        .unwrap();
    (d, sub)
}

/// A crash of the forge kills its run's job at an `await`, but the training thread it started is not a future: it
/// must see the run's cancel flag and stop, or the restarted forge would train the same persona twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_forge_stops_its_training_thread() {
    let ollama = ScriptedOllama::start();
    // 200 steps over two examples: no bound on passes, so the run is still training when the trainer crashes.
    let unbounded: Edit = Box::new(|doc| doc["trainer"]["max_epochs"] = toml_edit::value(0.0));
    let (d, mut sub) = two_example_run(&ollama, unbounded).await;
    let mut c = d.client();
    wait_event(&mut sub, 300, |e| e.kind == "trainer.progress").await;
    c.request("debug_crash", json!({"actor": "trainer"}))
        .await
        .unwrap();
    let stopped = eventually(120, "the old training thread stops", || {
        let lines = d.log_json();
        async move { lines.into_iter().find(|l| l["event"] == "trainer.stopped") }
    })
    .await;
    assert!(stopped["step"].as_u64().unwrap() >= 1, "{stopped}");
    // The restarted forge takes the run up from that checkpoint; stop it too.
    eventually(60, "the restarted forge answers", || {
        let mut c = d.client();
        async move { c.request("trainer_cancel", json!({})).await.ok() }
    })
    .await;
}

/// `trainer.max_epochs` (shipped 2) bounds a run: 200 steps asked, but two examples in batches of two make two
/// passes in two steps, and the run ends there (a life's first trigger has about nine examples; twenty steps
/// over them learned them by heart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_golden_set_gets_at_most_max_epochs_passes() {
    let ollama = ScriptedOllama::start();
    let (d, mut sub) = two_example_run(&ollama, Box::new(|_| {})).await;
    let text = std::fs::read_to_string(&d.config).unwrap();
    assert!(text.contains("max_epochs = 2.0"), "the shipped bound");
    let mut progress = Vec::new();
    let end = wait_event(&mut sub, 300, |e| {
        if e.kind == "trainer.progress" {
            progress.push((e.data["step"].as_u64(), e.data["steps"].as_u64()));
        }
        is_end(e)
    })
    .await;
    assert_eq!(
        progress,
        [(Some(1), Some(2)), (Some(2), Some(2))],
        "two steps of two, then the gate: {:?}",
        end.data
    );
    let started = d
        .log_json()
        .into_iter()
        .find(|l| l["event"] == "trainer.started")
        .unwrap();
    assert_eq!(
        (started["steps"].as_u64(), started["max_steps"].as_u64()),
        (Some(2), Some(200)),
        "{started}"
    );
}

/// The trainer's names before issue 29 still work for one release, each use logged as deprecated: a settings
/// file with `[forge]` (read as `[trainer]`), the `forge_*` commands (the same replies as `trainer_*`), and
/// `debug_crash unsloth` (the trainer, now `root/trainer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trainers_old_names_are_accepted_and_logged_as_deprecated() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::prepare(&ollama.url, vec![]);
    let text = std::fs::read_to_string(&d.config).unwrap();
    let old_file = text.replace("\n[trainer]\n", "\n[forge]\n");
    assert_ne!(
        old_file, text,
        "the harness's settings have a [trainer] table"
    );
    std::fs::write(&d.config, old_file).unwrap();
    let d = d.spawn_and_wait().await;
    let mut c = d.client();
    let by_new = c.request("trainer_status", json!({})).await.unwrap();
    let by_old = c.request("forge_status", json!({})).await.unwrap();
    assert_eq!(by_new, by_old);
    c.request("forge_cancel", json!({})).await.unwrap();
    c.request("debug_crash", json!({"actor": "unsloth"}))
        .await
        .unwrap();
    eventually(30, "the trainer restarts as root/trainer", || {
        let lines = d.log_json();
        async move {
            lines
                .into_iter()
                .find(|l| l["event"] == "actor.restarted" && l["actor"] == "root/trainer")
        }
    })
    .await;
    let log = d.log_json();
    assert!(
        log.iter().any(|l| l["event"] == "settings.deprecated"
            && l["note"]
                .as_str()
                .is_some_and(|n| n.contains("[forge] is now [trainer]"))),
        "no settings.deprecated line"
    );
    let deprecated: Vec<&str> = log
        .iter()
        .filter(|l| l["event"] == "command.deprecated")
        .filter_map(|l| l["old"].as_str())
        .collect();
    assert_eq!(
        deprecated,
        ["forge_status", "forge_cancel", "debug_crash unsloth"]
    );
}

/// An exam-gate trial that a stop interrupted (its marker left in `data_dir/forge/<persona>/trial.json`, the
/// candidate still in force) is undone at the next start by the trainer's supervised `undo-trials` job: the
/// persona is back on its previous model and the marker is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_a_stop_interrupted_is_undone_at_the_next_start() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::prepare(
        &ollama.url,
        vec![Box::new(|doc| {
            doc["personas"]["ALFRED"]["model"] = toml_edit::value("alfred:candidate");
        })],
    );
    let marker = d.data_dir().join("forge").join("ALFRED").join("trial.json");
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(
        &marker,
        r#"{"previous": "smollm2:135m", "candidate": "alfred:candidate"}"#,
    )
    .unwrap();
    let d = d.spawn_and_wait().await;
    let mut c = d.client();
    let mut model = Value::Null;
    for _ in 0..300 {
        let status = c.request("status", json!({})).await.unwrap();
        model = status["personas"]["ALFRED"]["model"].clone();
        if model == "smollm2:135m" && !marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        model, "smollm2:135m",
        "ALFRED is back on its previous model"
    );
    assert!(!marker.exists(), "the trial marker is gone");
    assert!(d
        .log_json()
        .iter()
        .any(|l| l["event"] == "trainer.trial_undone" && l["persona"] == "ALFRED"));
}
