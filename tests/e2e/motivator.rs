//! The Motivator on the real daemon, against the scripted Ollama double: an idle daemon sets itself a goal
//! and runs it with its provenance; a burst of triggers makes at most the rate limit of goals; people's tasks
//! go first; pause, resume and kill -9 keep the queue and run no goal twice; recurring tool failures and an
//! ungrounded question set goals that name them.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::daemon::{batos_cmd, eventually, wait_task, Daemon, Edit};
use crate::support::ollama::{last_user, Scripted, ScriptedOllama};

/// The phrasing prompt's first words (motivator::phrase::prompt).
const PHRASING: &str = "You set the household's next goal";

/// The Motivator on, quick to tick and to find people quiet, idle only after an hour unless a test says
/// otherwise.
fn motivator_on(extra: impl Fn(&mut toml_edit::DocumentMut) + 'static) -> Vec<Edit> {
    vec![Box::new(move |doc| {
        doc["motivator"]["enabled"] = toml_edit::value(true);
        doc["motivator"]["tick_ms"] = toml_edit::value(100);
        doc["motivator"]["idle_after_s"] = toml_edit::value(3600);
        doc["motivator"]["quiet_ms"] = toml_edit::value(200);
        extra(doc);
    })]
}

/// A double whose ALFRED phrases goals from the `[Why now]` line of the prompt (so each goal's text names
/// its evidence, and goals for different questions share few words: not duplicates), and whose route for a
/// task whose text holds `SLOW` takes `slow`.
fn double(slow: Duration) -> ScriptedOllama {
    let o = ScriptedOllama::start();
    o.set_responder(move |persona, body| {
        let user = last_user(body);
        if persona == Some("ALFRED") && user.starts_with(PHRASING) {
            let why = user
                .lines()
                .find_map(|l| l.strip_prefix("[Why now] "))
                .unwrap_or("nothing");
            // A question is quoted in the reason: the goal is to research just that.
            let goal = match why.split('"').nth(1) {
                Some(q) => format!("Research {q}"),
                None => format!("Look into this: {why}"),
            };
            return Some(Scripted::json(
                json!({"goal": goal, "reason": "It came up."}),
            ));
        }
        if persona == Some("ALFRED") && user.contains("SLOW") && body.get("format").is_some() {
            return Some(
                Scripted::json(json!({"needs_research": false, "plan": "Answer slowly."}))
                    .delayed(slow),
            );
        }
        None
    });
    o
}

async fn goals(c: &mut batos_client::client::Client) -> Vec<Value> {
    let v = c.request("list_goals", json!({})).await.unwrap();
    v["goals"].as_array().cloned().unwrap_or_default()
}

/// The first goal set by `trigger` that ran to its end (waits up to 30 s).
async fn goal_done(d: &Daemon, trigger: &str) -> Value {
    eventually(30, &format!("a {trigger} goal that ran to its end"), || {
        let mut c = d.client();
        async move {
            goals(&mut c)
                .await
                .into_iter()
                .find(|g| g["trigger"] == trigger && g["status"] == "done")
        }
    })
    .await
}

/// The daemon's `motivator.suppressed` log lines.
fn suppressed(d: &Daemon) -> Vec<Value> {
    d.log_json()
        .into_iter()
        .filter(|l| l["event"] == "motivator.suppressed")
        .collect()
}

/// The tasks that ran each goal, by goal id.
async fn tasks_by_goal(c: &mut batos_client::client::Client) -> HashMap<String, Vec<String>> {
    let l = c.request("list_tasks", json!({})).await.unwrap();
    let mut by: HashMap<String, Vec<String>> = HashMap::new();
    for t in l["tasks"].as_array().unwrap() {
        if let Some(g) = t["goal"].as_str() {
            by.entry(g.into())
                .or_default()
                .push(t["id"].as_str().unwrap().into());
        }
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_sets_itself_a_goal_and_runs_it_with_its_provenance() {
    let o = double(Duration::ZERO);
    let d = Daemon::start(
        &o.url,
        motivator_on(|doc| doc["motivator"]["idle_after_s"] = toml_edit::value(1)),
    )
    .await;
    let mut c = d.client();
    let goal = goal_done(&d, "idle").await;
    assert_eq!(goal["phrased_by"], "ALFRED", "{goal}");
    assert!(
        goal["text"]
            .as_str()
            .unwrap()
            .starts_with("Look into this: idle"),
        "{goal}"
    );
    assert!(goal["tokens"].as_u64().unwrap() > 0, "{goal}");
    let task = c
        .request("get_task", json!({"id": goal["task"]}))
        .await
        .unwrap();
    assert_eq!(task["status"], "done");
    assert_eq!(task["text"], goal["text"]);
    let origin = &task["origin"];
    assert_eq!(origin["kind"], "motivator", "{task}");
    assert_eq!(origin["goal"], goal["id"]);
    assert_eq!(origin["trigger"], "idle");
    assert!(origin["reason"].as_str().unwrap().contains("no task for"));
    assert!(task["result"].as_str().unwrap().contains("ALFRED"));
    // The status command shows the Motivator's state.
    let st = c.request("status", json!({})).await.unwrap();
    assert!(st["motivator"]["paused"].is_null(), "{st}");
    assert!(st["motivator"]["goals_last_hour"].as_u64().unwrap() >= 1);
    // The CLI: `batos goals` lists it; `batos motivator pause|resume`; `batos status` shows the state.
    let cli = |args: &[&str]| {
        let out = batos_cmd(&d)
            .args(args)
            .arg("--config")
            .arg(&d.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listed = cli(&["goals"]);
    let id = goal["id"].as_str().unwrap();
    assert!(
        listed.contains(&format!("{id} [done] idle for ALFRED")),
        "{listed}"
    );
    assert!(listed.contains("goal:    Look into this: idle"), "{listed}");
    assert!(cli(&["motivator", "pause"]).contains("paused by command"));
    assert!(cli(&["status"]).contains("motivator: paused by command"));
    assert!(cli(&["motivator", "resume"]).starts_with("motivator: active"));
    // A crash of the Motivator loses nothing: restarted, it reads its goals back.
    c.request("debug_crash", json!({"actor": "motivator"}))
        .await
        .unwrap();
    eventually(10, "the motivator restarted", || {
        std::future::ready(
            d.log_json()
                .iter()
                .any(|l| l["event"] == "actor.restarted" && l["actor"] == "root/motivator")
                .then_some(()),
        )
    })
    .await;
    eventually(10, "the motivator back with its goals", || {
        let mut c = d.client();
        let id = goal["id"].clone();
        async move {
            let g = c.request("list_goals", json!({})).await.ok()?;
            g["goals"]
                .as_array()?
                .iter()
                .any(|g| g["id"] == id && g["status"] == "done")
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_hundred_gaps_makes_at_most_the_rate_limit_of_research_goals_for_babs() {
    let o = double(Duration::ZERO);
    let d = Daemon::start(
        &o.url,
        motivator_on(|doc| {
            doc["motivator"]["trigger_per_hour"] = toml_edit::value(3);
            doc["motivator"]["goals_per_hour"] = toml_edit::value(10);
            // The double's hashed bag-of-words embedding makes chance neighbours of the goal tasks stored
            // meanwhile: only a near copy counts as relevant here.
            doc["memory"]["min_relevance"] = toml_edit::value(0.99);
        }),
    )
    .await;
    let mut c = d.client();
    // Each query's words are its own: memory cannot ground any of them.
    for i in 0..100 {
        let q = format!("q{i}alpha q{i}beta q{i}gamma");
        c.request("memory_search", json!({"query": q}))
            .await
            .unwrap();
    }
    let done = eventually(60, "the research goals to end", || {
        let mut c = d.client();
        async move {
            let g = goals(&mut c).await;
            let gaps: Vec<Value> = g
                .into_iter()
                .filter(|g| g["trigger"] == "knowledge_gap")
                .collect();
            (gaps.len() == 3 && gaps.iter().all(|g| g["status"] == "done")).then_some(gaps)
        }
    })
    .await;
    let gap_lines = || {
        suppressed(&d)
            .into_iter()
            .filter(|l| l["trigger"] == "knowledge_gap")
            .collect::<Vec<Value>>()
    };
    for _ in 0..100 {
        if gap_lines().len() >= 97 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = gap_lines();
    let gaps = d
        .log_json()
        .into_iter()
        .filter(|l| l["event"] == "knowledge.gap" && l["task"] == "-")
        .count();
    assert_eq!(
        gaps, 100,
        "knowledge.gap events for 100 ungrounded searches"
    );
    assert_eq!(s.len(), 97, "every gap is a goal or a suppression");
    assert!(
        s.iter().all(|l| l["limit"] == "trigger_rate"
            && l["reason"]
                .as_str()
                .unwrap()
                .contains("trigger_per_hour = 3")),
        "{:?}",
        s.first()
    );
    for g in &done {
        assert_eq!(g["persona"], "BABS", "{g}");
        assert!(g["reason"]
            .as_str()
            .unwrap()
            .contains("memory holds nothing relevant to"));
        let t = c
            .request("get_task", json!({"id": g["task"]}))
            .await
            .unwrap();
        // A goal for BABS goes through research; its own gap sets no further goal.
        assert!(
            t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["node"] == "research" && s["persona"] == "BABS"),
            "{t}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gaps = goals(&mut c)
        .await
        .into_iter()
        .filter(|g| g["trigger"] == "knowledge_gap")
        .count();
    assert_eq!(gaps, 3, "a goal task's own gap set another goal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_go_first_and_pause_resume_and_kill_9_keep_the_queue_and_run_each_goal_once() {
    let o = double(Duration::from_secs(4));
    let mut d = Daemon::start(&o.url, motivator_on(|_| {})).await;
    let mut c = d.client();
    let a = c
        .request("submit_task", json!({"text": "SLOW task A"}))
        .await
        .unwrap();
    let a = a["id"].as_str().unwrap().to_string();
    for q in ["zebra migration", "quantum tunnelling"] {
        c.request("memory_search", json!({"query": q}))
            .await
            .unwrap();
    }
    // Both goals are made, but wait (phrasing waits while a task runs; none starts while one does).
    let open = eventually(10, "two goals", || {
        let mut c = d.client();
        async move {
            let g = goals(&mut c).await;
            (g.len() == 2).then_some(g)
        }
    })
    .await;
    assert!(open.iter().all(|g| g["task"].is_null()), "{open:?}");
    // A person's task submitted now starts at once and ends before any goal task starts.
    let b = c
        .request("submit_task", json!({"text": "Task B, quick."}))
        .await
        .unwrap();
    let b = b["id"].as_str().unwrap().to_string();
    wait_task(&mut c, &b, 10).await;
    assert!(
        tasks_by_goal(&mut c).await.is_empty(),
        "a goal started while task A ran"
    );
    // Paused: the goals are phrased and queued but do not start; a new trigger is suppressed at once.
    let p = c.request("motivator_pause", json!({})).await.unwrap();
    assert_eq!(p["paused"], "command");
    c.request("memory_search", json!({"query": "lunar geology"}))
        .await
        .unwrap();
    eventually(5, "a suppression for the pause", || {
        std::future::ready(
            suppressed(&d)
                .into_iter()
                .any(|l| l["limit"] == "paused" && l["reason"].as_str().unwrap().contains("lunar"))
                .then_some(()),
        )
    })
    .await;
    wait_task(&mut c, &a, 20).await;
    let queued = eventually(10, "two queued goals", || {
        let mut c = d.client();
        async move {
            let g = goals(&mut c).await;
            (g.len() == 2 && g.iter().all(|g| g["status"] == "queued")).then_some(g)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tasks_by_goal(&mut c).await.is_empty(),
        "a goal started while paused"
    );
    // kill -9: the same goals, still queued and paused, after the restart.
    d.kill9();
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let after = goals(&mut c).await;
    let ids = |g: &[Value]| {
        let mut v: Vec<String> = g.iter().map(|g| g["id"].as_str().unwrap().into()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&after), ids(&queued));
    assert!(after.iter().all(|g| g["status"] == "queued"), "{after:?}");
    let st = c.request("list_goals", json!({})).await.unwrap();
    assert_eq!(
        st["state"]["paused"], "command",
        "the pause survives a restart"
    );
    // Resume: both run, each exactly once.
    c.request("motivator_resume", json!({})).await.unwrap();
    eventually(30, "both goals done", || {
        let mut c = d.client();
        async move {
            let g = goals(&mut c).await;
            (g.len() == 2 && g.iter().all(|g| g["status"] == "done")).then_some(())
        }
    })
    .await;
    let by = tasks_by_goal(&mut c).await;
    assert_eq!(by.len(), 2, "{by:?}");
    assert!(
        by.values().all(|t| t.len() == 1),
        "a goal ran twice: {by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_keeps_failing_sets_a_goal_that_names_the_failure() {
    let o = double(Duration::ZERO);
    // BRICK calls word_count with an argument it does not take, then answers.
    for _ in 0..3 {
        o.script(
            "BRICK",
            vec![
                Scripted::call("word_count", json!({"txt": "two words"})),
                Scripted::text("Counted, after a fashion."),
            ],
        );
    }
    let d = Daemon::start(&o.url, motivator_on(|_| {})).await;
    let mut c = d.client();
    for i in 0..3 {
        let t = c
            .request(
                "submit_task",
                json!({"text": format!("Count the words of text {i}.")}),
            )
            .await
            .unwrap();
        wait_task(&mut c, t["id"].as_str().unwrap(), 20).await;
    }
    let goal = goal_done(&d, "failures").await;
    assert_eq!(goal["persona"], "BRICK", "{goal}");
    let reason = goal["reason"].as_str().unwrap();
    assert!(
        reason.contains("the tool `word_count` failed 3 times"),
        "{reason}"
    );
    assert!(reason.contains("txt"), "the error is named: {reason}");
    assert_eq!(goal["evidence"].as_array().unwrap().len(), 3, "{goal}");
    // The persona was shown the failure when phrasing it.
    let asked = o
        .chats_by("ALFRED")
        .into_iter()
        .map(|r| last_user(&r.body))
        .find(|u| u.starts_with(PHRASING) && u.contains("failures"))
        .unwrap();
    assert!(asked.contains("word_count"), "{asked}");
}
