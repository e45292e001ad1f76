//! Beyond one machine (issue 30): a home daemon and worker nodes (`batos node run`) as real processes on
//! loopback, each worker thinking through its own scripted Ollama (a named test double of a model host).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Subscribes to task and node events.
async fn node_events(d: &Daemon) -> zeromq::SubSocket {
    let sub = batos_client::client::subscriber(&d.client_config(), &["task.", "node."])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub
}

async fn submit(c: &mut batos_client::client::Client, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = c
            .request(
                "submit_task",
                json!({"text": format!("{tag} question {i}")}),
            )
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    ids
}

/// The backends the task's steps record (`ollama@w1`, ...).
fn hosts(task: &Value) -> Vec<String> {
    task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["backend"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_calls_run_on_two_workers_and_every_task_ends_once_when_one_is_killed() {
    let home_model = ScriptedOllama::start();
    let (o1, o2) = (ScriptedOllama::start(), ScriptedOllama::start());
    for o in [&o1, &o2] {
        o.set_default_delay(Duration::from_millis(150));
    }
    let home = Daemon::start(&home_model.url, vec![home_edits("unavailable")]).await;
    let mut sub = node_events(&home).await;
    let cookie = home.data_dir().join("cluster.cookie");
    let mut w1 = Worker::prepare(&home, "w1", &o1.url, &cookie);
    let mut w2 = Worker::prepare(&home, "w2", &o2.url, &cookie);
    w1.spawn();
    w2.spawn();
    let mut joined = Vec::new();
    while joined.len() < 2 {
        let ev = wait_event(&mut sub, 60, |e| e.kind == "node.joined").await;
        joined.push(ev.data["node"].as_str().unwrap().to_string());
    }
    joined.sort();
    assert_eq!(joined, ["w1", "w2"]);
    let mut c = home.client();
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(
        status["cluster"]["nodes"].as_array().unwrap().len(),
        2,
        "{status}"
    );

    // Tasks: every persona call runs on a worker, and both workers get calls.
    let first = submit(&mut c, 4, "first").await;
    for id in &first {
        let t = wait_task(&mut c, id, 120).await;
        assert_eq!(t["status"], "done", "{t}");
        for h in hosts(&t) {
            assert!(h == "ollama@w1" || h == "ollama@w2", "a step ran at {h}");
        }
    }
    assert!(!o1.chats().is_empty() && !o2.chats().is_empty());

    // kill -9 of w1 while calls are in flight: every task still ends, once, on w2.
    let before = o1.chats().len();
    let second = submit(&mut c, 6, "second").await;
    eventually(60, "w1 busy with the second batch", || {
        let n = o1.chats().len();
        async move { (n > before).then_some(()) }
    })
    .await;
    w1.kill9();
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    let mut lost = false;
    while done.len() < second.len() || !lost {
        let ev = wait_event(&mut sub, 180, |e| {
            e.kind == "node.lost"
                || (e.kind == "task.done" && second.iter().any(|i| e.data["id"] == i.as_str()))
        })
        .await;
        if ev.kind == "node.lost" {
            assert_eq!(ev.data["node"], "w1");
            lost = true;
        } else {
            *done
                .entry(ev.data["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in &second {
        let t = wait_task(&mut c, id, 60).await;
        assert_eq!(t["status"], "done", "task {id} after the kill: {t}");
        assert_eq!(done[id], 1, "task {id} ended {} times", done[id]);
    }
    // No more task.done for them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = home.log_text();
    assert!(
        log.contains("cluster.call_lost"),
        "the in-flight call was retried"
    );

    // w1 comes back: it rejoins and gets calls again.
    w1.spawn();
    let ev = wait_event(&mut sub, 60, |e| e.kind == "node.joined").await;
    assert_eq!(ev.data["node"], "w1");
    let before = o1.chats().len();
    let third = submit(&mut c, 4, "third").await;
    for id in &third {
        let t = wait_task(&mut c, id, 120).await;
        assert_eq!(t["status"], "done", "{t}");
    }
    assert!(
        o1.chats().len() > before,
        "the returned worker got calls again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_wrong_cookie_is_refused_and_without_nodes_a_call_is_unavailable() {
    let home_model = ScriptedOllama::start();
    let worker_model = ScriptedOllama::start();
    let home = Daemon::start(&home_model.url, vec![home_edits("unavailable")]).await;
    let wrong = home.dir.path().join("wrong.cookie");
    std::fs::write(&wrong, "not-the-cookie").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut w = Worker::prepare(&home, "intruder", &worker_model.url, &wrong);
    w.spawn();
    let status = w.exited_within(30).expect("the refused worker exits");
    assert_eq!(status.code(), Some(2), "{}", w.log_text());
    assert!(w.log_text().contains("node.refused"), "{}", w.log_text());
    eventually(10, "the home's refusal in its log", || {
        let log = home.log_text();
        async move { log.contains("cluster.refused").then_some(()) }
    })
    .await;
    // A cookie file others can read is refused before any connection.
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut loose = Worker::prepare(&home, "loose", &worker_model.url, &wrong);
    loose.spawn();
    assert_eq!(loose.exited_within(30).and_then(|s| s.code()), Some(2));
    assert!(
        loose.log_text().contains("chmod 600"),
        "{}",
        loose.log_text()
    );
    // No node serves think and when_no_node = "unavailable": the task fails at once, naming the role.
    let mut c = home.client();
    let id = submit(&mut c, 1, "lonely").await.remove(0);
    let t = wait_task(&mut c, &id, 60).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert!(t.to_string().contains("no worker node serves think"), "{t}");
    assert!(worker_model.chats().is_empty() && home_model.chats().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_with_its_own_ollama_url_thinks_on_that_host_and_the_rest_stay_home() {
    let home_model = ScriptedOllama::start();
    let gpu = ScriptedOllama::start();
    let url = gpu.url.clone();
    let d = Daemon::start(
        &home_model.url,
        vec![Box::new(move |doc| {
            doc["personas"]["BRICK"]["ollama_url"] = toml_edit::value(url.as_str());
        })],
    )
    .await;
    let mut c = d.client();
    let id = submit(&mut c, 1, "hosted").await.remove(0);
    let t = wait_task(&mut c, &id, 60).await;
    assert_eq!(t["status"], "done", "{t}");
    let on_gpu: Vec<_> = gpu.chats().into_iter().map(|r| r.persona).collect();
    assert!(!on_gpu.is_empty(), "BRICK drafted on its host");
    assert!(
        on_gpu.iter().all(|p| p.as_deref() == Some("BRICK")),
        "{on_gpu:?}"
    );
    assert!(home_model.chats_by("BRICK").is_empty());
    assert!(
        !home_model.chats_by("ALFRED").is_empty(),
        "the others stay home"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_a_worker_serves_and_one_in_clear_text_or_from_another_ca_is_refused() {
    let home_model = ScriptedOllama::start();
    let worker_model = ScriptedOllama::start();
    let scratch = tempfile::tempdir().unwrap();
    let certs = Certs::make(&scratch.path().join("cluster"));
    let strangers = Certs::make(&scratch.path().join("other"));
    let home = Daemon::start(
        &home_model.url,
        vec![home_edits("unavailable"), certs.edit()],
    )
    .await;
    let mut sub = node_events(&home).await;
    let cookie = home.data_dir().join("cluster.cookie");
    let mut w = Worker::prepare_with(&home, "w1", &worker_model.url, &cookie, vec![certs.edit()]);
    w.spawn();
    let ev = wait_event(&mut sub, 60, |e| e.kind == "node.joined").await;
    assert_eq!(ev.data["node"], "w1");
    let mut c = home.client();
    let id = submit(&mut c, 1, "tls").await.remove(0);
    let t = wait_task(&mut c, &id, 60).await;
    assert_eq!(t["status"], "done", "{t}");
    assert!(hosts(&t).iter().all(|h| h == "ollama@w1"), "{t}");
    // The right cookie in clear text: refused.
    let mut clear = Worker::prepare(&home, "clear", &worker_model.url, &cookie);
    clear.spawn();
    assert_eq!(
        clear.exited_within(30).and_then(|s| s.code()),
        Some(2),
        "{}",
        clear.log_text()
    );
    assert!(
        clear.log_text().contains("node.refused"),
        "{}",
        clear.log_text()
    );
    // The right cookie, TLS, a certificate from another CA: refused at the handshake.
    let mut stranger = Worker::prepare_with(
        &home,
        "stranger",
        &worker_model.url,
        &cookie,
        vec![strangers.edit()],
    );
    stranger.spawn();
    assert_eq!(
        stranger.exited_within(30).and_then(|s| s.code()),
        Some(2),
        "{}",
        stranger.log_text()
    );
    assert!(
        stranger.log_text().contains("TLS handshake"),
        "{}",
        stranger.log_text()
    );
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(
        status["cluster"]["nodes"].as_array().unwrap().len(),
        1,
        "{status}"
    );
}

const FIB: &str = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n";
const FIB_TESTS: &str = "def test_small():\n    assert fibonacci(10) == 55\n";

/// `call_tool fibonacci {n}` through the home, with room for a sandbox.
async fn fib(c: &mut batos_client::client::Client, n: u64) -> Value {
    c.request("call_tool", json!({"name": "fibonacci", "args": {"n": n}}))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxed_tool_runs_go_to_a_worker_serving_tools_and_a_second_worker_of_its_name_is_refused(
) {
    let model = ScriptedOllama::start();
    model.script(
        "BRICK",
        vec![Scripted::json(json!({
            "name": "fibonacci",
            "description": "the n-th Fibonacci number",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            "source": FIB,
            "tests": FIB_TESTS
        }))],
    );
    // The home cannot sandbox at all (no runsc at that path): every run it answers ran on the worker.
    let home = Daemon::start(
        &model.url,
        vec![
            home_edits("unavailable"),
            Box::new(|doc| {
                doc["cluster"]["remote_tools"] = toml_edit::value(true);
                doc["cluster"]["remote_personas"] = toml_edit::Array::new().into();
                doc["tools"]["runsc_path"] = toml_edit::value("/nonexistent/runsc");
            }),
        ],
    )
    .await;
    let mut sub = node_events(&home).await;
    let cookie = home.data_dir().join("cluster.cookie");
    let tools_only: fn() -> Edit = || {
        Box::new(|doc| {
            let mut roles = toml_edit::Array::new();
            roles.push("tools");
            doc["cluster"]["roles"] = toml_edit::value(roles);
            doc["tools"]["pool_size"] = toml_edit::value(1);
        })
    };
    let mut w1 = Worker::prepare_with(&home, "w1", &model.url, &cookie, vec![tools_only()]);
    w1.spawn();
    let ev = wait_event(&mut sub, 60, |e| e.kind == "node.joined").await;
    assert_eq!(ev.data["node"], "w1");
    let mut c = batos_client::client::Client::new(batos_client::client::ClientConfig {
        timeout: Duration::from_secs(60),
        ..home.client_config()
    });
    let nodes = c.request("status", json!({})).await.unwrap()["cluster"]["nodes"].clone();
    assert_eq!(nodes[0]["roles"], json!(["tools"]), "{nodes}");

    // The ToolForge's test run and the tool's call both ran in the worker's sandbox.
    let forged = c
        .request("forge_tool", json!({"capability": "Fibonacci numbers"}))
        .await
        .unwrap();
    assert_eq!(forged["name"], "fibonacci", "{forged}\n{}", home.log_text());
    assert_eq!(fib(&mut c, 12).await, json!({"ok": true, "value": 144}));
    let nodes = c.request("status", json!({})).await.unwrap()["cluster"]["nodes"].clone();
    assert!(nodes[0]["answered"].as_u64().unwrap() >= 2, "{nodes}");
    let log = w1.log_text();
    assert!(
        log.contains("sandbox.ready") && log.contains("\"role\":\"tools\""),
        "{log}"
    );
    assert!(home.log_text().contains("sandbox.unavailable"));

    // A second process named w1 is refused: it exits 2 saying why; the first keeps serving.
    let mut twin = Worker::prepare_with(&home, "w1", &model.url, &cookie, vec![tools_only()]);
    twin.spawn();
    let status = twin.exited_within(30).expect("the twin exits");
    assert_eq!(status.code(), Some(2), "{}", twin.log_text());
    assert!(
        twin.log_text().contains("already joined"),
        "{}",
        twin.log_text()
    );
    assert!(home.log_text().contains("its name is already in use"));
    let nodes = c.request("status", json!({})).await.unwrap()["cluster"]["nodes"].clone();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(fib(&mut c, 10).await, json!({"ok": true, "value": 55}));

    // No node serves tools and when_no_node = "unavailable": the call fails at once, naming the role.
    w1.kill9();
    let ev = wait_event(&mut sub, 60, |e| e.kind == "node.lost").await;
    assert_eq!(ev.data["node"], "w1");
    let r = fib(&mut c, 5).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("no worker node serves tools"),
        "{r}"
    );

    // w1 restarted rejoins and runs tools again.
    w1.spawn();
    let ev = wait_event(&mut sub, 60, |e| e.kind == "node.joined").await;
    assert_eq!(ev.data["node"], "w1");
    assert_eq!(fib(&mut c, 7).await, json!({"ok": true, "value": 13}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_run_trains_on_a_worker_serving_train_and_resumes_there_after_kill_9() {
    use crate::forge::{forge_events, forge_settings, habit, is_end, seed};
    let ollama = ScriptedOllama::start();
    // Six steps over two examples (no bound on passes), a checkpoint every three.
    let unbounded =
        || -> Edit { Box::new(|doc| doc["trainer"]["max_epochs"] = toml_edit::value(0.0)) };
    let home = Daemon::prepare(
        &ollama.url,
        vec![
            forge_settings(6, 0.05),
            unbounded(),
            home_edits("unavailable"),
            Box::new(|doc| {
                doc["cluster"]["remote_training"] = toml_edit::value(true);
                doc["cluster"]["remote_personas"] = toml_edit::Array::new().into();
                doc["cluster"]["progress_poll_ms"] = toml_edit::value(200);
            }),
        ],
    );
    seed(
        &home.data_dir(),
        &habit(&["Name a colour.", "Give me a number."]),
        &habit(&["What is rain?"]),
        &json!([]),
    );
    let home = home.spawn_and_wait().await;
    let mut nodes = node_events(&home).await;
    let mut sub = forge_events(&home).await;
    let cookie = home.data_dir().join("cluster.cookie");
    let train_only = || -> Edit {
        Box::new(|doc| {
            let mut roles = toml_edit::Array::new();
            roles.push("train");
            doc["cluster"]["roles"] = toml_edit::value(roles);
        })
    };
    let mut w = Worker::prepare_with(
        &home,
        "t1",
        &ollama.url,
        &cookie,
        vec![forge_settings(6, 0.05), train_only()],
    );
    w.spawn();
    wait_event(&mut nodes, 60, |e| e.kind == "node.joined").await;
    let mut c = home.client();
    let status = c.request("status", json!({})).await.unwrap();
    assert_eq!(
        status["cluster"]["nodes"][0]["roles"],
        json!(["train"]),
        "{status}"
    );
    c.request("trainer_run", json!({"persona": "BRICK", "force": true}))
        .await
        .unwrap();
    // The worker's progress reaches the home's events; killed after step 4, its checkpoint of step 3 is kept.
    let ev = wait_event(&mut sub, 300, |e| {
        e.kind == "trainer.progress" && e.data["step"].as_u64() >= Some(4) || is_end(e)
    })
    .await;
    assert_eq!(ev.kind, "trainer.progress", "{:?}", ev.data);
    w.kill9();
    let ckpts: Vec<_> = std::fs::read_dir(w.files.data_dir().join("node/train"))
        .unwrap()
        .collect();
    assert_eq!(ckpts.len(), 1, "the worker's checkpoint");
    w.spawn();
    let resumed = wait_event(&mut sub, 300, |e| e.kind == "trainer.progress" || is_end(e)).await;
    assert_eq!(resumed.kind, "trainer.progress", "{:?}", resumed.data);
    assert_eq!(
        resumed.data["step"], 4,
        "resumed after the checkpoint of step 3"
    );
    let end = wait_event(&mut sub, 600, is_end).await;
    assert_ne!(
        end.kind,
        "trainer.failed",
        "{:?}\n{}",
        end.data,
        home.log_text()
    );
    // The training ran on the worker (both lives), the gate and the adapter at home.
    let log = w.log_text();
    assert_eq!(log.matches("\"node.training\"").count(), 2, "{log}");
    assert!(log.contains("\"trainer.resumed\""), "{log}");
    let home_log = home.log_text();
    assert!(home_log.contains("\"trainer.remote\"") && !home_log.contains("\"trainer.local\""));
    assert!(
        !home_log.contains("\"trainer.resumed\""),
        "the home trained nothing itself"
    );
    assert!(
        home_log.contains("cluster.call_lost"),
        "the run was asked again after the kill"
    );
    let adapters = std::fs::read_dir(home.data_dir().join("adapters"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "gguf"))
        })
        .count();
    assert_eq!(adapters, 1, "the adapter came home");
    let s = c.request("trainer_status", json!({})).await.unwrap();
    assert_eq!(s["last"][0]["resumed_from"], 3, "{s}");
    assert_eq!(s["last"][0]["steps"], 6, "{s}");
    // The run is over: the worker's checkpoint is gone.
    let left = std::fs::read_dir(w.files.data_dir().join("node/train"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}
