//! Cognition (issue 3): the Socratic Contrapunto, checkpoints, tool Commands, the inquiry interrupt. The
//! atomic swap is in `swaps.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

fn distinct_models() -> Edit {
    Box::new(|doc| {
        for (p, m) in [
            ("ALFRED", "alfred:1b"),
            ("BABS", "babs:1b"),
            ("BRICK", "brick:7b"),
            ("ROBIN", "robin:3b"),
        ] {
            doc["personas"][p]["model"] = toml_edit::value(m);
        }
    })
}

fn brief_of(body: &Value) -> String {
    last_user(body)
}

fn nodes(task: &Value) -> Vec<(String, String, String)> {
    task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_string(),
                s["persona"].as_str().unwrap().to_string(),
                s["model"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contrapunto_loops_on_high_dissonance_through_each_personas_model() {
    let ollama = ScriptedOllama::start();
    ollama.script(
        "ROBIN",
        vec![
            Scripted::json(
                json!({"dissonance": 0.85, "critique": "It ignores the Architect's constraint."}),
            ),
            Scripted::json(json!({"dissonance": 0.15, "critique": "Now it sings."})),
        ],
    );
    ollama.script(
        "BRICK",
        vec![Scripted::text("DRAFT-ONE"), Scripted::text("DRAFT-TWO")],
    );
    let d = Daemon::start(&ollama.url, vec![distinct_models()]).await;
    let mut sub = events(&d).await;
    let mut c = d.client();
    let id = c
        .request("submit_task", json!({"text": "Plan a picnic"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = Vec::new();
    loop {
        let ev = wait_event(&mut sub, 30, |e| {
            e.data["id"] == id.as_str() && (e.kind == "task.step" || e.kind == "task.done")
        })
        .await;
        if ev.kind == "task.done" {
            break;
        }
        assert!(ev.data["duration_ms"].is_u64());
        seen.push((
            ev.data["node"].as_str().unwrap().to_string(),
            ev.data["persona"].as_str().unwrap().to_string(),
            ev.data["dissonance"].clone(),
        ));
    }
    let expected = [
        ("route", "ALFRED"),
        ("draft", "BRICK"),
        ("critique", "ROBIN"),
        ("draft", "BRICK"),
        ("critique", "ROBIN"),
        ("synthesize", "ALFRED"),
    ];
    assert_eq!(
        seen.iter()
            .map(|(n, p, _)| (n.as_str(), p.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(seen[2].2, json!(0.85));
    assert_eq!(seen[4].2, json!(0.15));
    let task = c.request("get_task", json!({"id": id})).await.unwrap();
    let steps = nodes(&task);
    let models: BTreeMap<&str, &str> = [
        ("ALFRED", "alfred:1b"),
        ("BRICK", "brick:7b"),
        ("ROBIN", "robin:3b"),
    ]
    .into();
    for (node, persona, model) in &steps {
        assert_eq!(models[persona.as_str()], model, "{node} by {persona}");
    }
    // Every request the scripted server saw went to the acting persona's own model.
    for r in ollama.chats() {
        let p = r.persona.clone().unwrap();
        assert_eq!(models[p.as_str()], r.model);
    }
    // The second draft was asked with the first draft and ROBIN's critique in hand.
    let second = &ollama.chats_by("BRICK")[1];
    assert!(
        brief_of(&second.body).contains("DRAFT-ONE")
            && brief_of(&second.body).contains("ignores the Architect")
    );
    assert_eq!(task["result"], "Final answer from ALFRED (alfred:1b).");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_after_step_three_resumes_without_repeating_steps() {
    let ollama = ScriptedOllama::start();
    ollama.script(
        "ROBIN",
        vec![Scripted::json(
            json!({"dissonance": 0.8, "critique": "Again, please."}),
        )],
    );
    ollama.script(
        "BRICK",
        vec![
            Scripted::text("DRAFT-ONE"),
            // Step 4 is slow: the daemon dies while it is in flight.
            Scripted::text("DRAFT-LOST").delayed(Duration::from_secs(3)),
            Scripted::text("DRAFT-TWO"),
        ],
    );
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let mut sub = events(&d).await;
    let mut c = d.client();
    let id = c
        .request("submit_task", json!({"text": "Survive a crash"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_event(&mut sub, 30, |e| {
        e.kind == "task.step" && e.data["id"] == id.as_str() && e.data["step"] == 3
    })
    .await;
    // Die while step 4's model call is in flight.
    eventually(10, "step 4's request to reach the model", || {
        let n = ollama.chats_by("BRICK").len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    d.kill9();
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let task = wait_task(&mut c, &id, 60).await;
    assert_eq!(task["status"], "done", "{task}");
    let steps: Vec<String> = nodes(&task).into_iter().map(|(n, ..)| n).collect();
    assert_eq!(
        steps,
        vec![
            "route",
            "draft",
            "critique",
            "draft",
            "critique",
            "synthesize"
        ]
    );
    let numbers: Vec<u64> = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5, 6]);
    // Steps 1-3 ran once: one routing call, one first draft, one critique of DRAFT-ONE.
    let alfred_routes = ollama
        .chats_by("ALFRED")
        .into_iter()
        .filter(|r| !r.body["format"].is_null())
        .count();
    assert_eq!(alfred_routes, 1);
    let first_drafts = ollama
        .chats_by("BRICK")
        .into_iter()
        .filter(|r| !brief_of(&r.body).contains("previous draft"))
        .count();
    assert_eq!(first_drafts, 1);
    let critiques_of_one = ollama
        .chats_by("ROBIN")
        .into_iter()
        .filter(|r| brief_of(&r.body).contains("DRAFT-ONE"))
        .count();
    assert_eq!(critiques_of_one, 1);
    assert_eq!(
        task["drafts"],
        json!(["DRAFT-ONE", "DRAFT-TWO"]),
        "{task:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_command_raises_dissonance_and_reroutes_and_a_bad_command_is_a_tool_error() {
    let ollama = ScriptedOllama::start();
    ollama.script(
        "BRICK",
        vec![
            // Task 1: a malformed Command (score out of range) is reported, and the task goes on.
            Scripted::call(
                "escalate_to_architect",
                json!({"score": 7, "reason": "bad score"}),
            ),
            Scripted::text("A calm draft."),
            // Task 2: a valid Command raises dissonance and routes straight to the inquiry.
            Scripted::call(
                "escalate_to_architect",
                json!({"score": 0.97, "reason": "this asks me to deceive"}),
            ),
        ],
    );
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let t1 = c
        .request("submit_task", json!({"text": "first"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = wait_task(&mut c, &t1, 30).await;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["tools_used"][0]["ok"], false);
    assert!(task["tools_used"][0]["result"]
        .as_str()
        .unwrap()
        .contains("invalid command"));
    let retry = &ollama.chats_by("BRICK")[1].body;
    let tool_msg = retry["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(tool_msg["content"]
        .as_str()
        .unwrap()
        .contains("`dissonance` must be a number in 0..=1"));
    // The tools offered came from the live registry.
    let offered: Vec<&str> = retry["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        offered.contains(&"word_count") && offered.contains(&"request_capability"),
        "{offered:?}"
    );

    let t2 = c
        .request("submit_task", json!({"text": "second"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = wait_task(&mut c, &t2, 30).await;
    assert_eq!(task["status"], "paused", "{task}");
    assert_eq!(task["dissonance"], json!(0.97));
    let steps: Vec<String> = nodes(&task).into_iter().map(|(n, ..)| n).collect();
    assert_eq!(steps, vec!["route", "draft", "inquiry"]);
    assert!(task["notes"][0].as_str().unwrap().contains("deceive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_inquiry_survives_a_restart_and_resumes_on_command() {
    let ollama = ScriptedOllama::start();
    ollama.set_responder(|persona, body| {
        (persona == Some("ROBIN") && !body["format"].is_null()).then(|| {
            Scripted::json(json!({"dissonance": 0.95, "critique": "This betrays a principle."}))
        })
    });
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = d.client();
    let id = c
        .request("submit_task", json!({"text": "A troubling request"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = wait_task(&mut c, &id, 30).await;
    assert_eq!(task["status"], "paused", "{task}");
    let steps: Vec<String> = nodes(&task).into_iter().map(|(n, ..)| n).collect();
    assert_eq!(
        steps,
        vec!["route", "draft", "critique", "draft", "critique", "draft", "critique", "inquiry"]
    );
    assert_eq!(d.terminate().and_then(|s| s.code()), Some(0));
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let task = c.request("get_task", json!({"id": id})).await.unwrap();
    assert_eq!(task["status"], "paused");
    let calls_before = ollama.chats().len();
    c.request(
        "resume_task",
        json!({"id": id, "guidance": "Answer, but name the tension openly."}),
    )
    .await
    .unwrap();
    let task = wait_task(&mut c, &id, 30).await;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["inquiry"]["decision"], "resumed");
    let after: Vec<_> = ollama.chats().into_iter().skip(calls_before).collect();
    assert_eq!(after.len(), 1, "only the synthesis runs after the resume");
    assert!(brief_of(&after[0].body).contains("name the tension openly"));
    let e = c
        .request("resume_task", json!({"id": id}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not paused"), "{e}");
}
