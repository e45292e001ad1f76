//! The Curator (issue 14) end to end: finished tasks become examples in each persona's dataset, with the
//! judge (ROBIN) served by the scripted Ollama double; human ratings through `rate_task`; kill -9 during
//! curation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use zeromq::prelude::*;

use batos_client::client::Client;
use batos_protocol::EventBody;

use crate::support::*;

/// The judge's answer for a judge prompt, by a marker in the answer it is shown: `POOR` scores 1, `GARBLED`
/// is prose instead of JSON, anything else 4. `None` for every other request.
fn judge_answer(body: &Value, delay: Duration) -> Option<Scripted> {
    let prompt = last_user(body);
    if !prompt.contains("additive rubric") {
        return None;
    }
    let answer = prompt.split("[Answer]").nth(1).unwrap_or_default();
    let s = if answer.contains("GARBLED") {
        Scripted::text("What a lovely answer, five stars from me!")
    } else if answer.contains("POOR") {
        Scripted::json(json!({"score": 1, "reason": "Poor."}))
    } else {
        Scripted::json(json!({"score": 4, "reason": "Relevant and clear."}))
    };
    Some(s.delayed(delay))
}

/// Personas answer by markers in the task text: `POOR-TASK` makes BRICK's draft poor, `GARBLED-TASK` makes
/// ALFRED's answer one the judge cannot score, `TOOL-TASK` makes BRICK call a tool that does not exist
/// before drafting. Each answer quotes the task (markers left out), so tasks differ.
fn responder(ollama: &ScriptedOllama, judge_delay: Duration) {
    ollama.set_responder(move |persona, body| {
        if let Some(j) = judge_answer(body, judge_delay) {
            return Some(j);
        }
        let structured = body.get("format").is_some_and(|f| !f.is_null());
        let prompt = last_user(body);
        let task = prompt
            .split("Task from the Architect:\n")
            .nth(1)
            .and_then(|r| r.lines().next())
            .unwrap_or_default()
            .replace("POOR-TASK", "")
            .replace("GARBLED-TASK", "")
            .replace("TOOL-TASK", "");
        let tool_result_seen = body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
        match (persona, structured) {
            (Some("BRICK"), false) if prompt.contains("TOOL-TASK") && !tool_result_seen => {
                Some(Scripted::call("no_such_tool", json!({"x": 1})))
            }
            (Some("BRICK"), false) if prompt.contains("POOR-TASK") => Some(Scripted::text(
                format!("A POOR draft for «{task}», long enough to pass every filter."),
            )),
            (Some("BRICK"), false) => Some(Scripted::text(format!(
                "BRICK's draft for «{task}»: the facts, then the reasons."
            ))),
            (Some("ALFRED"), false) if prompt.contains("GARBLED-TASK") => Some(Scripted::text(
                format!("A GARBLED final answer for «{task}», long enough to pass."),
            )),
            (Some("ALFRED"), false) => Some(Scripted::text(format!(
                "ALFRED's answer to «{task}», plainly put."
            ))),
            _ => None,
        }
    });
}

fn curator_on(min_new_examples: i64) -> Edit {
    Box::new(move |doc| {
        doc["curator"]["enabled"] = toml_edit::value(true);
        doc["curator"]["min_new_examples"] = toml_edit::value(min_new_examples);
        doc["curator"]["idle_poll_ms"] = toml_edit::value(20);
    })
}

async fn run_task(c: &mut Client, text: &str) -> String {
    run_task_within(c, text, 60).await
}

/// Runs a task to its end within `secs`; a task paused for the Architect is resumed (a small model may pause
/// one), so it ends done or failed.
async fn run_task_within(c: &mut Client, text: &str, secs: u64) -> String {
    let t = c
        .request("submit_task", json!({"text": text}))
        .await
        .unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    let mut done = wait_task(c, &id, secs).await;
    if done["status"] == "paused" {
        c.request(
            "resume_task",
            json!({"id": id, "guidance": "Answer plainly."}),
        )
        .await
        .unwrap();
        done = wait_task(c, &id, secs).await;
    }
    assert!(
        matches!(done["status"].as_str(), Some("done" | "failed")),
        "{done}"
    );
    id
}

/// Waits until every task in `ids` is handed to the Curator (`curated` in its checkpoint) and the Curator
/// has nothing queued.
async fn settled(c: &mut Client, ids: &[String], secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut handed = true;
        for id in ids {
            let t = c.request("get_task", json!({"id": id})).await.unwrap();
            handed &= t["curated"] == true;
        }
        if !handed {
            assert!(
                std::time::Instant::now() < deadline,
                "tasks not handed to the curator in {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Ok(s) = c.request("curator_stats", json!({})).await {
            if s["queued"] == 0 {
                return s;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the curator did not settle in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lines(p: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(p) else {
        return Vec::new();
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a torn line",
        p.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: a line does not parse ({e}): {l}", p.display()))
        })
        .collect()
}

/// Every kept example of a persona: key → split.
fn kept(d: &Daemon, persona: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for split in ["train", "heldout"] {
        for ex in lines(
            &d.data_dir()
                .join(format!("curator/{persona}/{split}.jsonl")),
        ) {
            let key = ex["lineage"]["key"].as_str().unwrap().to_string();
            assert!(
                m.insert(key.clone(), split.to_string()).is_none(),
                "{key} kept twice"
            );
        }
    }
    m
}

/// The nodes of `task` whose exchanges `persona` kept.
fn kept_nodes(d: &Daemon, persona: &str, task: &str) -> BTreeSet<String> {
    ["train", "heldout"]
        .iter()
        .flat_map(|split| {
            lines(
                &d.data_dir()
                    .join(format!("curator/{persona}/{split}.jsonl")),
            )
        })
        .filter(|ex| ex["lineage"]["task"] == task)
        .map(|ex| ex["lineage"]["node"].as_str().unwrap().to_string())
        .collect()
}

fn rejected(stats: &Value, persona: &str, reason: &str) -> u64 {
    stats["personas"][persona]["rejected"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_become_examples_judged_deduplicated_split_and_rated() {
    let ollama = ScriptedOllama::start();
    responder(&ollama, Duration::ZERO);
    let mut d = Daemon::start(&ollama.url, vec![curator_on(3)]).await;
    let mut c = d.client();
    let mut sub = batos_client::client::subscriber(&d.client_config(), &["curator."])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tool = run_task(&mut c, "TOOL-TASK: add two numbers with a tool").await;
    let moths = run_task(&mut c, "Why do moths fly to lanterns?").await;
    let again = run_task(&mut c, "Why do moths fly to lanterns?").await;
    let poor = run_task(&mut c, "POOR-TASK: why is the sea salty?").await;
    let garbled = run_task(&mut c, "GARBLED-TASK: why do cats purr?").await;
    let all = [
        tool.clone(),
        moths.clone(),
        again.clone(),
        poor.clone(),
        garbled.clone(),
    ];
    let stats = settled(&mut c, &all, 60).await;

    // Accepted exchanges are in the right persona's file, in the chat format, with lineage.
    let brick = kept(&d, "BRICK");
    let alfred = kept(&d, "ALFRED");
    assert!(brick.keys().any(|k| k.starts_with(&moths)), "{brick:?}");
    assert!(alfred.keys().any(|k| k.starts_with(&moths)), "{alfred:?}");
    let ex = lines(&d.data_dir().join("curator/ALFRED/train.jsonl"))
        .into_iter()
        .chain(lines(&d.data_dir().join("curator/ALFRED/heldout.jsonl")))
        .find(|e| e["lineage"]["task"] == moths.as_str() && e["lineage"]["node"] == "synthesize")
        .unwrap();
    let roles: Vec<&str> = ex["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.first(), Some(&"system"));
    assert_eq!(roles.last(), Some(&"assistant"));
    // ALFRED's shipped system message (config/codex.toml), exactly as sent.
    assert!(ex["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("You answer questions and carry out requests."));
    assert_eq!(ex["lineage"]["judge"]["persona"], "ROBIN");
    assert_eq!(ex["lineage"]["judge"]["score"], 4);
    assert_eq!(ex["lineage"]["hash"].as_str().unwrap().len(), 64);

    // The repeated task: its exchanges duplicate the first one's, and every step of it says so.
    assert!(!brick.keys().any(|k| k.starts_with(&again)));
    assert!(rejected(&stats, "BRICK", "duplicate") >= 1, "{stats}");
    assert!(rejected(&stats, "ALFRED", "duplicate") >= 1, "{stats}");
    // The failed tool call, the low score, the unparseable answer.
    assert_eq!(rejected(&stats, "BRICK", "tool_failed"), 1, "{stats}");
    assert!(!brick.keys().any(|k| k.starts_with(&tool)));
    assert_eq!(rejected(&stats, "BRICK", "judge_low"), 1, "{stats}");
    assert!(!brick.keys().any(|k| k.starts_with(&poor)));
    assert_eq!(
        rejected(&stats, "ALFRED", "judge_unparseable"),
        1,
        "{stats}"
    );
    assert!(!kept_nodes(&d, "ALFRED", &garbled).contains("synthesize"));
    assert!(kept_nodes(&d, "ALFRED", &garbled).contains("route"));

    // Each rejection is an event with its reason.
    let mut reasons = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reasons.len() < 4 && std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(Ok(m)) = tokio::time::timeout(left, sub.recv()).await else {
            break;
        };
        let ev: EventBody = rmp_serde::from_slice(m.into_vec().get(1).unwrap()).unwrap();
        if ev.kind == "curator.rejected" {
            reasons.insert(ev.data["reason"].as_str().unwrap().to_string());
        }
    }
    for r in ["duplicate", "tool_failed", "judge_low", "judge_unparseable"] {
        assert!(
            reasons.contains(r),
            "no curator.rejected with {r}: {reasons:?}"
        );
    }

    // Humans override the judge: 1 removes what it liked, 5 admits what it did not.
    let out = c
        .request(
            "rate_task",
            json!({"id": moths, "score": 1, "comment": "wrong"}),
        )
        .await
        .unwrap();
    assert!(out["removed"].as_u64().unwrap() >= 2, "{out}");
    assert!(!kept(&d, "BRICK").keys().any(|k| k.starts_with(&moths)));
    let out = c
        .request("rate_task", json!({"id": poor, "score": 5}))
        .await
        .unwrap();
    assert!(out["admitted"].as_u64().unwrap() >= 1, "{out}");
    assert!(kept(&d, "BRICK").keys().any(|k| k.starts_with(&poor)));
    let bad = c
        .request("rate_task", json!({"id": poor, "score": 0}))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("bad_request"), "{bad}");
    let unknown = c
        .request("rate_task", json!({"id": "0".repeat(32), "score": 3}))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("not_found"), "{unknown}");

    // Export names the files; train and held-out are disjoint (kept() checks) and stable across a restart.
    let export = c
        .request("curator_export", json!({"persona": "BRICK"}))
        .await
        .unwrap();
    assert!(Path::new(export["train"].as_str().unwrap()).exists());
    let stats = c.request("curator_stats", json!({})).await.unwrap();
    let before = (
        kept(&d, "BRICK"),
        kept(&d, "ALFRED"),
        stats["personas"].clone(),
    );
    assert!(d.terminate().is_some());
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let stats = settled(&mut c, &all, 30).await;
    assert_eq!(
        (
            kept(&d, "BRICK"),
            kept(&d, "ALFRED"),
            stats["personas"].clone()
        ),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_curation_leaves_every_file_parseable_and_nothing_accepted_twice() {
    let ollama = ScriptedOllama::start();
    // A slow judge, so kills land while exchanges are being judged and written.
    responder(&ollama, Duration::from_millis(150));
    let mut d = Daemon::start(&ollama.url, vec![curator_on(4)]).await;
    let mut c = d.client();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            run_task(
                &mut c,
                &format!("Question {i}: why is thing {i} the way it is?"),
            )
            .await,
        );
    }
    let mut rng_state = 0x9e37_79b9_u64;
    for round in 0..6 {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait_ms = 100 + (rng_state >> 33) % 700;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        d.kill9();
        for persona in ["ALFRED", "BABS", "BRICK", "ROBIN"] {
            // Between crashes too: every line of every file parses (the torn-tail check is in lines()).
            for f in ["train", "heldout", "decisions"] {
                let p = d.data_dir().join(format!("curator/{persona}/{f}.jsonl"));
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let complete = text.rsplit_once('\n').map_or("", |(a, _)| a);
                    for l in complete.lines() {
                        serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
                            panic!("round {round}: {} has a bad line ({e}): {l}", p.display())
                        });
                    }
                }
            }
        }
        d.spawn();
        d.wait_ready().await;
        if round % 2 == 1 {
            let mut c = d.client();
            ids.push(run_task(&mut c, &format!("Question after crash {round}: why?")).await);
        }
    }
    let mut c = d.client();
    let stats = settled(&mut c, &ids, 120).await;
    let mut decided_tasks = BTreeSet::new();
    for persona in ["ALFRED", "BABS", "BRICK", "ROBIN"] {
        // kept() panics on a key kept twice or on a torn line; decisions must also parse.
        let k = kept(&d, persona);
        let decisions = lines(
            &d.data_dir()
                .join(format!("curator/{persona}/decisions.jsonl")),
        );
        let mut accepted = BTreeMap::new();
        for dcs in &decisions {
            let key = dcs["key"].as_str().unwrap().to_string();
            decided_tasks.insert(dcs["task"].as_str().unwrap().to_string());
            if dcs["outcome"] == "accepted" {
                *accepted.entry(key).or_insert(0) += 1;
            }
        }
        for (key, n) in &accepted {
            assert_eq!(*n, 1, "{persona}: {key} accepted {n} times");
            assert!(
                k.contains_key(key),
                "{persona}: {key} accepted but not kept"
            );
        }
        assert_eq!(
            stats["personas"][persona]["accepted"].as_u64().unwrap() as usize,
            k.len(),
            "{stats}"
        );
    }
    // Every task handed over before or between the crashes was curated in the end.
    for id in &ids {
        assert!(decided_tasks.contains(id), "task {id} never curated");
    }
    assert!(std::fs::read_dir(d.data_dir().join("curator/inbox"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_model_judges_a_real_curation_and_its_scores_parse() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let d = Daemon::start(
        &closed,
        vec![
            curator_on(50),
            // Real model calls beside the rest of the suite on two cores (the batching test's four tasks, other
            // daemons' models) outlast the harness's 20 s limit, meant for scripted answers: the shipped limit.
            shipped("llm", "request_timeout_ms"),
            // The shipped critique rule: a bare 1.00 from SmolLM2 neither loops nor pauses the task.
            shipped("orchestrator", "min_critique_words"),
            shipped("orchestrator", "critique_repeat_similarity"),
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["orchestrator"]["max_iterations"] = toml_edit::value(1);
                // Two steps per task are judged (the draft and the answer): a real curation, kept short.
                let mut nodes = toml_edit::Array::new();
                nodes.push("draft");
                nodes.push("synthesize");
                doc["curator"]["nodes"] = toml_edit::value(nodes);
            }),
        ],
    )
    .await;
    let mut c = d.client();
    let mut ids = Vec::new();
    for q in [
        "Name one fruit.",
        "Why is the sky blue?",
        "What is a lantern?",
    ] {
        ids.push(run_task_within(&mut c, q, 240).await);
    }
    let stats = settled(&mut c, &ids, 300).await;
    let mut judged = 0;
    let mut unparseable = 0;
    for persona in ["ALFRED", "BRICK"] {
        for dcs in lines(
            &d.data_dir()
                .join(format!("curator/{persona}/decisions.jsonl")),
        ) {
            if dcs["score"].is_u64() {
                judged += 1;
            }
            if dcs["outcome"] == "judge_unparseable" {
                unparseable += 1;
            }
            assert_ne!(dcs["outcome"], "judge_unavailable", "{dcs}");
        }
    }
    // SmolLM2 answers under the JSON-schema grammar, so its scores parse; the scores themselves are its own.
    // Only finished tasks are curated: name what became of each task when nothing was judged.
    let mut outcomes = Vec::new();
    for id in &ids {
        let t = c.request("get_task", json!({"id": id})).await.unwrap();
        outcomes.push(format!("{}: {}", t["status"], t["error"]));
    }
    assert!(judged >= 1, "{stats}\ntasks: {outcomes:?}");
    assert_eq!(unparseable, 0, "{stats}");
}
