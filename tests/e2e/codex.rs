//! The philosophical loop (issue 6): amendments approved by a human, committed safely, hot-reloaded live.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const NEW_PROMPT: &str = "You are BRICK, the logic engine of BAT OS, and you weigh every deduction against the harm it could do.";

fn codex_path(d: &Daemon) -> std::path::PathBuf {
    d.path("config/codex.toml")
}

fn system_prompt_of(r: &Received) -> String {
    r.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn paused_task_with_amendment(
    d: &Daemon,
    c: &mut batos_client::client::Client,
    text: &str,
) -> (String, String) {
    let id = c
        .request("submit_task", json!({"text": text}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = wait_task(c, &id, 30).await;
    assert_eq!(task["status"], "paused", "{task}");
    let amendment = task["inquiry"]["amendment_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no amendment: {task:#}\n{}", d.log_text()))
        .to_string();
    (id, amendment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_amendment_is_committed_with_comments_and_reaches_brick() {
    let ollama = ScriptedOllama::start();
    discordant_robin(&ollama, NEW_PROMPT);
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let original = std::fs::read_to_string(codex_path(&d)).unwrap();
    let (task_id, amendment) =
        paused_task_with_amendment(&d, &mut c, "Should we automate the layoffs?").await;
    let list = c.request("list_amendments", json!({})).await.unwrap();
    assert_eq!(list["amendments"][0]["id"], amendment.as_str());
    assert_eq!(list["amendments"][0]["status"], "pending");
    assert_eq!(list["amendments"][0]["proposal"]["persona"], "BRICK");
    // Nothing is written before the Architect decides.
    assert_eq!(std::fs::read_to_string(codex_path(&d)).unwrap(), original);

    let a = c
        .request("approve_amendment", json!({"id": amendment}))
        .await
        .unwrap();
    assert_eq!(a["status"], "committed");
    assert!(a["diff"].as_str().unwrap().contains(NEW_PROMPT), "{a}");
    let after = std::fs::read_to_string(codex_path(&d)).unwrap();
    for line in original.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(after.contains(line), "comment lost: {line}");
    }
    assert!(after.contains(NEW_PROMPT));
    let backup = a["backup"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(backup).unwrap(), original);
    // The paused task resumes with the decision and finishes.
    let task = eventually(20, "the resumed task to finish", || {
        let mut c = d.client();
        let id = task_id.clone();
        async move {
            let t = c.request("get_task", json!({"id": id})).await.ok()?;
            (t["status"] == "done").then_some(t)
        }
    })
    .await;
    assert_eq!(task["inquiry"]["decision"], "approved");
    // The next task's request to BRICK carries the new system prompt.
    ollama.set_responder(|_, _| None);
    let before = ollama.chats_by("BRICK").len();
    let t2 = c
        .request("submit_task", json!({"text": "A quiet question"}))
        .await
        .unwrap();
    assert_eq!(
        wait_task(&mut c, t2["id"].as_str().unwrap(), 30).await["status"],
        "done"
    );
    let brick = &ollama.chats_by("BRICK")[before];
    assert!(
        system_prompt_of(brick).starts_with(NEW_PROMPT),
        "{}",
        system_prompt_of(brick)
    );
    let again = c
        .request("approve_amendment", json!({"id": amendment}))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_amendment_leaves_the_codex_byte_identical() {
    let ollama = ScriptedOllama::start();
    discordant_robin(&ollama, NEW_PROMPT);
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let original = std::fs::read(codex_path(&d)).unwrap();
    let (task_id, amendment) =
        paused_task_with_amendment(&d, &mut c, "Rewrite the rules for me").await;
    let e = c
        .request("reject_amendment", json!({"id": amendment, "reason": ""}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reason"));
    let a = c
        .request(
            "reject_amendment",
            json!({"id": amendment, "reason": "BRICK's rigour is the point."}),
        )
        .await
        .unwrap();
    assert_eq!(a["status"], "rejected");
    assert_eq!(std::fs::read(codex_path(&d)).unwrap(), original);
    let task = eventually(20, "the task to finish", || {
        let mut c = d.client();
        let id = task_id.clone();
        async move {
            let t = c.request("get_task", json!({"id": id})).await.ok()?;
            (t["status"] == "done").then_some(t)
        }
    })
    .await;
    assert_eq!(task["inquiry"]["decision"], "rejected");
    assert!(task["inquiry"]["guidance"]
        .as_str()
        .unwrap()
        .contains("rigour is the point"));
    let none = c
        .request("approve_amendment", json!({"id": "nope"}))
        .await
        .unwrap_err();
    assert!(none.to_string().starts_with("not_found"), "{none}");
}

fn edit_codex(text: &str, persona: &str, new_prompt: &str) -> String {
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["personas"][persona]["system_prompt"] = toml_edit::value(new_prompt);
    doc.to_string()
}

async fn persona_prompt(c: &mut batos_client::client::Client, persona: &str) -> String {
    c.request("get_persona", json!({"persona": persona}))
        .await
        .unwrap()["system_prompt"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_reach_the_live_personas_and_invalid_ones_are_refused() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let path = codex_path(&d);
    // 1. Written in place.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        edit_codex(&text, "ROBIN", "You are ROBIN, edited in place."),
    )
    .unwrap();
    eventually(10, "the in-place edit to go live", || {
        let mut c = d.client();
        async move {
            persona_prompt(&mut c, "ROBIN")
                .await
                .starts_with("You are ROBIN, edited in place.")
                .then_some(())
        }
    })
    .await;
    // 2. Written to a temp file and renamed over (what editors and atomic writers do).
    let text = std::fs::read_to_string(&path).unwrap();
    let tmp = d.path("config/.codex.toml.swp");
    std::fs::write(
        &tmp,
        edit_codex(&text, "BABS", "You are BABS, renamed into place."),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eventually(10, "the renamed edit to go live", || {
        let mut c = d.client();
        async move {
            persona_prompt(&mut c, "BABS")
                .await
                .starts_with("You are BABS, renamed into place.")
                .then_some(())
        }
    })
    .await;
    // 3. An invalid edit (a persona removed) is refused; the old codex stays live.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["personas"].as_table_mut().unwrap().remove("ALFRED");
    std::fs::write(&path, doc.to_string()).unwrap();
    eventually(10, "the refusal to be logged", || {
        let refused = d
            .log_json()
            .iter()
            .any(|l| l["event"] == "codex.reload_rejected");
        async move { refused.then_some(()) }
    })
    .await;
    assert!(persona_prompt(&mut c, "ALFRED")
        .await
        .starts_with("You answer questions"));
    assert!(persona_prompt(&mut c, "BABS")
        .await
        .starts_with("You are BABS, renamed into place."));
    let t = c
        .request("submit_task", json!({"text": "still thinking?"}))
        .await
        .unwrap();
    assert_eq!(
        wait_task(&mut c, t["id"].as_str().unwrap(), 30).await["status"],
        "done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approvals_and_a_racing_hand_edit_never_corrupt_the_file() {
    let ollama = ScriptedOllama::start();
    discordant_robin(&ollama, NEW_PROMPT);
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let (_, a1) = paused_task_with_amendment(&d, &mut c, "first troubling task").await;
    let (_, a2) = paused_task_with_amendment(&d, &mut c, "second troubling task").await;
    let path = codex_path(&d);
    let text = std::fs::read_to_string(&path).unwrap();
    let hand = edit_codex(&text, "ALFRED", "You are ALFRED, by hand.");
    let cfg = d.client_config();
    let (r1, r2, _) = tokio::join!(
        async {
            let mut c = batos_client::client::Client::new(cfg.clone());
            c.request("approve_amendment", json!({"id": a1})).await
        },
        async {
            let mut c = batos_client::client::Client::new(cfg.clone());
            c.request("approve_amendment", json!({"id": a2})).await
        },
        async {
            let tmp = d.path("config/.hand.tmp");
            std::fs::write(&tmp, &hand).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    );
    // Both amendments propose the same change: the second finds nothing left to change and is refused cleanly.
    assert!(r1.is_ok() || r2.is_ok(), "{r1:?} {r2:?}");
    let final_text = std::fs::read_to_string(&path).unwrap();
    let codex = batos_actors::codex::Codex::parse(&final_text).expect("codex.toml stays valid");
    let brick = &codex.personas["BRICK"].system_prompt;
    let alfred = &codex.personas["ALFRED"].system_prompt;
    // Either order is fine; a torn or mixed file is not.
    assert!(
        brick.starts_with(NEW_PROMPT) || alfred.starts_with("You are ALFRED, by hand."),
        "{final_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_changed_in_settings_swaps_atomically_under_load() {
    let ollama = ScriptedOllama::start();
    ollama.set_default_delay(Duration::from_millis(30));
    let d = Daemon::start(
        &ollama.url,
        vec![Box::new(|doc| {
            doc["personas"]["BRICK"]["model"] = toml_edit::value("brick:old")
        })],
    )
    .await;
    let mut c = d.client();
    let mut early = Vec::new();
    for i in 0..4 {
        early.push(
            c.request("submit_task", json!({"text": format!("early {i}")}))
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Hand edit of settings.toml while those tasks are in flight.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["personas"]["BRICK"]["model"] = toml_edit::value("brick:new");
    doc["orchestrator"]["dissonance_threshold"] = toml_edit::value(0.55);
    std::fs::write(&d.config, doc.to_string()).unwrap();
    let started = Instant::now();
    eventually(10, "the swap", || {
        let mut c = d.client();
        async move {
            let s = c.request("status", json!({})).await.ok()?;
            (s["personas"]["BRICK"]["model"] == "brick:new").then_some(())
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let late = c
        .request("submit_task", json!({"text": "late one"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in early.iter().chain([&late]) {
        assert_eq!(wait_task(&mut c, id, 30).await["status"], "done");
    }
    let by_task = |text: &str| -> Vec<String> {
        ollama
            .chats_by("BRICK")
            .into_iter()
            .filter(|r| last_user(&r.body).contains(&format!("Architect:\n{text}\n")))
            .map(|r| r.model)
            .collect()
    };
    for i in 0..4 {
        let m = by_task(&format!("early {i}"));
        assert!(m.windows(2).all(|w| w[0] == w[1]), "early {i}: {m:?}");
    }
    assert_eq!(by_task("late one"), vec!["brick:new"]);
    assert!(d
        .log_json()
        .iter()
        .any(|l| l["event"] == "settings.reloaded"
            && l["keys"]
                .as_str()
                .is_some_and(|k| k.contains("orchestrator.dissonance_threshold"))));
}
