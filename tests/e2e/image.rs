//! The living image (issue 17) on the real daemon: a mind with tasks, a forged tool, an approved amendment,
//! a persona override, a swapped (forge-built) model, a paused Motivator and memory is exported with
//! `batos image export`, imported with `batos image import` into an empty folder, and the fresh daemon there
//! shows the same mind and continues the event sequence. Periodic and commanded saves, `status`, kill -9,
//! a corrupt newest generation and an image from a newer batos behave as README.md says.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const FIB: &str = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n";
const FIB_TESTS: &str = "def test_small():\n    assert fibonacci(10) == 55\n";
const NEW_PROMPT: &str =
    "You are BRICK, the logic engine of BAT OS, and you keep every answer short.";
/// A name the trainer gives the models it builds on Ollama (base, `-batos-`, 12 hex of the adapter).
const TUNED: &str = "smollm2:135m-batos-0123456789ab";

fn images(interval_s: i64) -> Edit {
    Box::new(move |doc| {
        doc["image"]["interval_s"] = toml_edit::value(interval_s);
        doc["image"]["keep"] = toml_edit::value(2);
        doc["image"]["tick_ms"] = toml_edit::value(100);
        doc["motivator"]["enabled"] = toml_edit::value(true);
        // Memory is compared row for row: no summaries written behind the test's back.
        doc["memory"]["consolidate_interval_ms"] = toml_edit::value(3_600_000);
    })
}

fn slow_client(d: &Daemon) -> batos_client::client::Client {
    batos_client::client::Client::new(batos_client::client::ClientConfig {
        timeout: Duration::from_secs(60),
        ..d.client_config()
    })
}

/// What must be equal in the exported mind and the imported one.
async fn picture(c: &mut batos_client::client::Client) -> Value {
    let brick = c
        .request("get_persona", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    let tools: Vec<Value> = c.request("list_tools", json!({})).await.unwrap()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["name"], t["origin"], t["description"]]))
        .collect();
    let amendments: Vec<Value> = c.request("list_amendments", json!({})).await.unwrap()
        ["amendments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!([a["id"], a["status"]]))
        .collect();
    let goals = c.request("list_goals", json!({})).await.unwrap();
    let found = c
        .request("memory_search", json!({"query": "lighthouse keeper lamp"}))
        .await
        .unwrap();
    let hits = |k: &str| -> Vec<Value> {
        found[k]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| json!([h["id"], h["text"]]))
            .collect()
    };
    let tasks: Vec<Value> = c.request("list_tasks", json!({})).await.unwrap()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["id"], t["status"]]))
        .collect();
    json!({
        "brick": [brick["model"], brick["temperature"], brick["extra_instructions"], brick["system_prompt"]],
        "tools": tools,
        "amendments": amendments,
        "goals": [goals["state"]["paused"], goals["goals"]],
        "memory": [hits("summaries"), hits("details"), hits("recent")],
        "tasks": tasks,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_mind_imported_into_an_empty_folder_is_the_same_mind() {
    let ollama = ScriptedOllama::start();
    ollama.script(
        "BRICK",
        vec![Scripted::json(json!({
            "name": "fibonacci", "description": "fibonacci tool",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            "source": FIB, "tests": FIB_TESTS
        }))],
    );
    let d = Daemon::start(&ollama.url, vec![images(0)]).await;
    let mut c = slow_client(&d);
    // Paused first: a new tool would otherwise set a goal, whose task would run while the test compares.
    c.request("motivator_pause", json!({})).await.unwrap();
    c.request(
        "forge_tool",
        json!({"capability": "the n-th Fibonacci number"}),
    )
    .await
    .unwrap();
    let rows = c
        .request(
            "memory_ingest",
            json!({"items": [
                {"text": "The lighthouse keeper trims the lamp wick at dusk.", "persona": "BABS"},
                {"text": "Fog horns sound every thirty seconds in thick weather.", "persona": "BABS"},
            ]}),
        )
        .await
        .unwrap();
    assert!(rows["rows"].as_u64().unwrap() >= 2, "{rows}");
    discordant_robin(&ollama, NEW_PROMPT);
    let paused = c
        .request("submit_task", json!({"text": "Explain the tides."}))
        .await
        .unwrap();
    let task = wait_task(&mut c, paused["id"].as_str().unwrap(), 60).await;
    let amendment = task["inquiry"]["amendment_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{task}"));
    let a = c
        .request("approve_amendment", json!({"id": amendment}))
        .await
        .unwrap();
    assert_eq!(a["status"], "committed", "{a}");
    ollama.set_responder(|_, _| None);
    let id = paused["id"].as_str().unwrap().to_string();
    eventually(60, "the resumed task to finish", || {
        let (mut c, id) = (d.client(), id.clone());
        async move {
            let t = c.request("get_task", json!({"id": id})).await.ok()?;
            (t["status"] == "done").then_some(())
        }
    })
    .await;
    let done = c
        .request("submit_task", json!({"text": "Name a colour."}))
        .await
        .unwrap();
    assert_eq!(
        wait_task(&mut c, done["id"].as_str().unwrap(), 60).await["status"],
        "done"
    );
    c.request(
        "update_persona",
        json!({"persona": "BRICK", "field": "temperature", "value": 0.25}),
    )
    .await
    .unwrap();
    c.request(
        "update_persona",
        json!({"persona": "BRICK", "field": "extra_instructions", "value": "Cite the codex."}),
    )
    .await
    .unwrap();
    c.request("swap_model", json!({"persona": "BRICK", "model": TUNED}))
        .await
        .unwrap();
    let before = picture(&mut c).await;
    let seq_before = c.request("ping", json!({})).await.unwrap()["seq"]
        .as_u64()
        .unwrap();

    // The daemon writes where it is told, but never over a file that is not an image, nor to a relative path.
    let settings_before = std::fs::read(&d.config).unwrap();
    let e = c
        .request(
            "image_export",
            json!({"path": d.config.display().to_string()}),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a living image"), "{e}");
    assert_eq!(std::fs::read(&d.config).unwrap(), settings_before);
    let e = c
        .request("image_export", json!({"path": "mind.batos"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("absolute"), "{e}");
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("mind.batos");
    let out = batos_cmd(&d)
        .args(["image", "export", "--config"])
        .arg(&d.config)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rows"),
        "{out:?}"
    );
    let (data, config) = (
        elsewhere.path().join("data"),
        elsewhere.path().join("config"),
    );
    // A folder that is not empty is refused, and nothing is written there.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("stray"), b"x").unwrap();
    let import = || {
        batos_cmd(&d)
            .args(["image", "import"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config-dir")
            .arg(&config)
            .output()
            .unwrap()
    };
    let refused = import();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    std::fs::remove_file(data.join("stray")).unwrap();
    let out = import();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("batos run --config"),
        "{out:?}"
    );
    // Both minds run on this machine at once: the copy gets its own ports.
    let settings = config.join("settings.toml");
    let mut doc: toml_edit::DocumentMut =
        std::fs::read_to_string(&settings).unwrap().parse().unwrap();
    for key in ["command_endpoint", "event_endpoint"] {
        doc["gateway"][key] = toml_edit::value(format!("tcp://127.0.0.1:{}", free_port()));
    }
    std::fs::write(&settings, doc.to_string()).unwrap();
    let copy = Daemon::at(tempfile::tempdir().unwrap(), settings)
        .spawn_and_wait()
        .await;
    let mut c2 = slow_client(&copy);
    let after = picture(&mut c2).await;
    assert_eq!(before, after, "the imported mind differs");
    assert_eq!(before["brick"][0], TUNED);
    assert_eq!(before["goals"][0], "command", "{}", before["goals"]);
    assert!(
        !before["memory"][2].as_array().unwrap().is_empty(),
        "{}",
        before["memory"]
    );
    // Its tool runs in its own sandbox, its codex is the amended one, its events continue the sequence.
    let r = c2
        .request("call_tool", json!({"name": "fibonacci", "args": {"n": 12}}))
        .await
        .unwrap();
    assert_eq!(r, json!({"ok": true, "value": 144}));
    assert!(std::fs::read_to_string(config.join("codex.toml"))
        .unwrap()
        .contains(NEW_PROMPT));
    let seq_after = c2.request("ping", json!({})).await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        seq_after > seq_before,
        "sequence went from {seq_before} back to {seq_after}"
    );
    let status = c2.request("status", json!({})).await.unwrap();
    assert_eq!(
        status["image"]["last"]["reason"], "boot",
        "{}",
        status["image"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_roll_a_kill_9_and_a_corrupt_newest_fall_back_and_a_newer_format_refuses() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![images(1)]).await;
    let mut c = d.client();
    // Periodic: the first save comes within a second or so; then nothing changes, so nothing more is written.
    let first = eventually(30, "a periodic image", || {
        let mut c = d.client();
        async move {
            let s = c.request("status", json!({})).await.ok()?;
            (s["image"]["last"]["reason"] == "interval").then(|| s["image"]["last"].clone())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(
        status["image"]["last"]["generation"], first["generation"],
        "{status}"
    );
    assert!(d
        .log_json()
        .iter()
        .any(|l| l["event"] == "image.saved" && l["reason"] == "interval"));
    // A change, then a save on command: a new generation, the oldest beyond image.keep deleted.
    let t = c
        .request("submit_task", json!({"text": "Name a tree."}))
        .await
        .unwrap();
    wait_task(&mut c, t["id"].as_str().unwrap(), 60).await;
    let out = batos_cmd(&d)
        .args(["image", "save", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let saved = c.request("image_save", json!({})).await.unwrap();
    let newest = saved["generation"].as_u64().unwrap();
    assert!(
        newest >= first["generation"].as_u64().unwrap() + 2,
        "{saved}"
    );
    let dir = d.data_dir().join("image");
    let kept = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
        .count();
    assert_eq!(kept, 2, "image.keep = 2");
    let out = batos_cmd(&d)
        .args(["status", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("image: generation {newest}")),
        "{out:?}"
    );
    let seq_before = c.request("ping", json!({})).await.unwrap()["seq"]
        .as_u64()
        .unwrap();

    // kill -9, a torn newest image: the daemon starts from the one before, says so, continues the sequence.
    d.kill9();
    let path = dir.join(format!("image-{newest:012}.img"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(
        status["image"]["last"]["generation"],
        newest - 1,
        "{status}"
    );
    assert!(dir
        .join("corrupt")
        .join(path.file_name().unwrap())
        .is_file());
    assert!(d.log_json().iter().any(|l| l["event"] == "image.set_aside"));
    assert!(status["seq"].as_u64().unwrap() > seq_before, "{status}");
    let t = c
        .request("submit_task", json!({"text": "Name a river."}))
        .await
        .unwrap();
    assert_eq!(
        wait_task(&mut c, t["id"].as_str().unwrap(), 60).await["status"],
        "done"
    );
    // The next save does not reuse the torn generation's number.
    let again = c.request("image_save", json!({})).await.unwrap();
    assert_eq!(again["generation"], newest + 1, "{again}");

    // An image written by a newer batos: the daemon refuses to start and says why (exit 2).
    d.terminate();
    let path = dir.join(format!("image-{:012}.img", newest + 1));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let out = d.run_once();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("format 99"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
