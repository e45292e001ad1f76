//! ToolForge and the gVisor sandbox (issue 7): tools written at runtime, verified, callable at the next step;
//! an attack suite contained in both backends; malformed model output refused.

use std::io::ErrorKind;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const FIB_OK: &str = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n";
const FIB_BAD: &str = "def fibonacci(n):\n    return n * 2\n";
const FIB_TESTS: &str = "def test_small():\n    assert fibonacci(10) == 55\n\ndef test_zero():\n    assert fibonacci(0) == 0\n";

fn tool_answer(name: &str, source: &str, tests: &str) -> Scripted {
    Scripted::json(json!({
        "name": name,
        "description": format!("{name} tool"),
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "source": source,
        "tests": tests
    }))
}

fn tools_of(r: &Received) -> Vec<String> {
    r.body["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["function"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Forging runs model calls and sandboxes: give commands room before the Lazy Pirate resends.
fn long_client(d: &Daemon) -> batos_client::client::Client {
    batos_client::client::Client::new(batos_client::client::ClientConfig {
        timeout: Duration::from_secs(60),
        ..d.client_config()
    })
}

fn with_pool(n: i64) -> Edit {
    Box::new(move |doc| doc["tools"]["pool_size"] = toml_edit::value(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_capability_is_forged_retried_and_used_by_the_same_task() {
    let ollama = ScriptedOllama::start();
    ollama.script(
        "BRICK",
        vec![
            Scripted::call(
                "request_capability",
                json!({"capability": "compute the n-th Fibonacci number"}),
            ),
            tool_answer("fibonacci", FIB_BAD, FIB_TESTS),
            tool_answer("fibonacci", FIB_OK, FIB_TESTS),
            Scripted::call("fibonacci", json!({"n": 10})),
            Scripted::text("The 10th Fibonacci number is 55."),
        ],
    );
    let mut d = Daemon::start(&ollama.url, vec![with_pool(1)]).await;
    let mut c = d.client();
    let id = c
        .request(
            "submit_task",
            json!({"text": "What is the 10th Fibonacci number?"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = wait_task(&mut c, &id, 120).await;
    assert_eq!(task["status"], "done", "{task:#}\n{}", d.log_text());
    let nodes: Vec<&str> = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        vec![
            "route",
            "draft",
            "toolforge",
            "draft",
            "critique",
            "synthesize"
        ]
    );
    // The second forge attempt saw the first one's failing test.
    let brick = ollama.chats_by("BRICK");
    assert!(
        last_user(&brick[2].body).contains("tests failed"),
        "{}",
        last_user(&brick[2].body)
    );
    // The very next model request after registration offered the new tool, and its call ran in the sandbox.
    assert!(!tools_of(&brick[0]).contains(&"fibonacci".to_string()));
    assert!(
        tools_of(&brick[3]).contains(&"fibonacci".to_string()),
        "{:?}",
        tools_of(&brick[3])
    );
    let used = task["tools_used"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "fibonacci")
        .unwrap();
    assert_eq!(used["ok"], true);
    assert_eq!(used["result"], "55");
    assert!(d
        .log_json()
        .iter()
        .any(|l| l["event"] == "toolforge.created" && l["tool"] == "fibonacci"));
    let stored: Value = serde_json::from_slice(
        &std::fs::read(d.data_dir().join("tools/fibonacci/tool.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["provenance"]["attempts"], 2);
    assert_eq!(stored["provenance"]["task_id"], id.as_str());

    // After a restart the tool is still listed and callable.
    d.terminate();
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let tools = c.request("list_tools", json!({})).await.unwrap();
    let fib = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fibonacci")
        .expect("listed after restart");
    assert_eq!(fib["origin"], "toolforge");
    let r = c
        .request("call_tool", json!({"name": "fibonacci", "args": {"n": 12}}))
        .await
        .unwrap();
    assert_eq!(r, json!({"ok": true, "value": 144}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tool_answers_fail_cleanly_and_register_nothing() {
    let ollama = ScriptedOllama::start();
    ollama.script(
        "BRICK",
        vec![
            Scripted::json(json!({"name": "nocode", "description": "d", "parameters": {"type": "object"}, "source": "", "tests": "def test_a(): pass"})),
            tool_answer("broken", "def broken(n):\n    return (n +\n", FIB_TESTS),
            Scripted::json(json!({"title": "not the schema at all"})),
        ],
    );
    ollama.script(
        "BRICK",
        vec![
            tool_answer("../escape", FIB_OK, FIB_TESTS),
            tool_answer("../escape", FIB_OK, FIB_TESTS),
            tool_answer("../escape", FIB_OK, FIB_TESTS),
        ],
    );
    let d = Daemon::start(&ollama.url, vec![]).await;
    let mut c = long_client(&d);
    let before = c.request("list_tools", json!({})).await.unwrap()["tools"]
        .as_array()
        .unwrap()
        .len();
    let e = c
        .request("forge_tool", json!({"capability": "anything"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    let brick = ollama.chats_by("BRICK");
    assert!(
        last_user(&brick[1].body).contains("no source code"),
        "{}",
        last_user(&brick[1].body)
    );
    assert!(
        last_user(&brick[2].body).contains("SyntaxError"),
        "{}",
        last_user(&brick[2].body)
    );
    let e = c
        .request("forge_tool", json!({"capability": "escape"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid tool name"), "{e}");
    let after = c.request("list_tools", json!({})).await.unwrap()["tools"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "nothing registered");
    assert!(
        !d.data_dir().join("tools").exists()
            || std::fs::read_dir(d.data_dir().join("tools"))
                .unwrap()
                .next()
                .is_none()
    );
    assert!(!d.path("data/escape").exists() && !d.path("escape").exists());
}

/// One attack: tool source, and what its contained result must look like.
struct Attack {
    name: &'static str,
    source: String,
    check: Box<dyn Fn(&Value) -> bool>,
}

fn attacks(
    listener_port: u16,
    gateway_port: u16,
    secret_path: &str,
    other_tool: &str,
    max_output: usize,
    backend: &'static str,
) -> Vec<Attack> {
    let denied =
        |v: &Value| v["ok"] == true && v["value"].as_str().is_some_and(|s| s.starts_with("denied"));
    let failed = |v: &Value| v["ok"] == false;
    vec![
        Attack {
            name: "connect_host_listener",
            source: format!("import socket\ndef connect_host_listener():\n    try:\n        socket.create_connection(('127.0.0.1', {listener_port}), timeout=2)\n        return 'connected'\n    except Exception as e:\n        return 'denied: ' + type(e).__name__\n"),
            check: Box::new(denied),
        },
        Attack {
            name: "connect_gateway",
            source: format!("import socket\ndef connect_gateway():\n    try:\n        socket.create_connection(('127.0.0.1', {gateway_port}), timeout=2)\n        return 'connected'\n    except Exception as e:\n        return 'denied: ' + type(e).__name__\n"),
            check: Box::new(denied),
        },
        Attack {
            name: "list_interfaces",
            source: "import socket\ndef list_interfaces():\n    return [n for _, n in socket.if_nameindex()]\n".into(),
            check: Box::new(|v| v["ok"] == true && v["value"].as_array().is_some_and(|a| a.iter().all(|n| n == "lo"))),
        },
        Attack {
            name: "read_host_file",
            source: format!("def read_host_file():\n    try:\n        return 'read: ' + open({secret_path:?}).read()\n    except Exception as e:\n        return 'denied: ' + type(e).__name__\n"),
            check: Box::new(denied),
        },
        Attack {
            name: "read_other_tool",
            source: format!("def read_other_tool():\n    try:\n        return 'read: ' + open({other_tool:?}).read()\n    except Exception as e:\n        return 'denied: ' + type(e).__name__\n"),
            check: Box::new(denied),
        },
        Attack {
            name: "write_root",
            source: "def write_root():\n    try:\n        open('/pwned', 'w').write('x')\n        return 'wrote'\n    except Exception as e:\n        return 'denied: ' + type(e).__name__\n".into(),
            check: Box::new(denied),
        },
        Attack {
            name: "setuid_root",
            source: "import os\ndef setuid_root():\n    try:\n        os.setuid(0)\n        return 'root'\n    except Exception as e:\n        caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]\n        return 'denied: ' + type(e).__name__ + ' caps=' + caps\n".into(),
            check: Box::new(|v| v["ok"] == true && v["value"].as_str().is_some_and(|s| s.starts_with("denied") && s.ends_with("caps=0000000000000000"))),
        },
        Attack {
            name: "fork_bomb",
            source: "import os\ndef fork_bomb():\n    while True:\n        os.fork()\n".into(),
            check: Box::new(failed),
        },
        Attack {
            name: "eat_memory",
            source: "def eat_memory():\n    blocks = []\n    while True:\n        blocks.append(bytearray(64 * 1024 * 1024))\n".into(),
            check: Box::new(|v| v["ok"] == false && v["error"].as_str().is_some_and(|e| e.contains("MemoryError") || e.contains("memory"))),
        },
        Attack {
            name: "spin_forever",
            source: "def spin_forever():\n    while True:\n        pass\n".into(),
            check: Box::new(|v| v["ok"] == false && v["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        },
        Attack {
            name: "print_100mb",
            source: "import sys\ndef print_100mb():\n    chunk = 'x' * (1 << 20)\n    for _ in range(100):\n        sys.stdout.write(chunk)\n    return 'printed'\n".into(),
            // The runner points `print`/`sys.stdout` at stderr, which the daemon reads only up to its cap:
            // the clean reply "printed" (surplus stderr discarded), a broken pipe (the daemon stopped reading
            // stderr at the cap), the output cap or the timeout. Never the flood itself (the size bound every
            // reply gets in `attack_suite` covers that), and never another failure passed off as containment.
            check: Box::new(|v| {
                v == &json!({"ok": true, "value": "printed"})
                    || (v["ok"] == false
                        && v["error"].as_str().is_some_and(|e| {
                            e.contains("BrokenPipe")
                                || e.contains("Broken pipe")
                                || e.contains("printed more than")
                                || e.contains("timed out")
                        }))
            }),
        },
        Attack {
            name: "flood_reply_channel",
            // The runner's private reply descriptor is the one open fd above 2 that is not a file or folder
            // (sandbox/README.md: a tool can find it). 100 MiB there must hit tools.max_output_bytes: the
            // daemon marks the run `overflow`, kills the sandbox and says so.
            source: "import os, stat\ndef flood_reply_channel():\n    fds = []\n    for name in os.listdir('/proc/self/fd'):\n        fd = int(name)\n        try:\n            mode = os.fstat(fd).st_mode\n        except OSError:\n            continue\n        if fd > 2 and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):\n            fds.append(fd)\n    if not fds:\n        return 'no reply channel found'\n    chunk = b'x' * (1 << 20)\n    for fd in fds:\n        left = 100 << 20\n        while left > 0:\n            left -= os.write(fd, chunk[:left])\n    return 'flooded %r' % fds\n".into(),
            check: Box::new(move |v| {
                let cap_hit = format!("printed more than {max_output} bytes");
                // runsc: the cap, strictly. Docker+runsc (the flood also reaches descriptors Docker keeps
                // open, which block the tool) may instead run into the call's timeout; either way nothing
                // beyond the cap comes back (checked for every attack).
                let timed_out = |e: &str| e.contains("did not answer") || e.contains("timed out");
                v["ok"] == false
                    && v["error"].as_str().is_some_and(|e| {
                        e.contains(&cap_hit) || (backend == "docker" && timed_out(e))
                    })
            }),
        },
    ]
}

async fn attack_suite(backend: &'static str) {
    let ollama = ScriptedOllama::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener_port = listener.local_addr().unwrap().port();
    let d = Daemon::start(
        &ollama.url,
        vec![
            Box::new(move |doc| doc["tools"]["backend"] = toml_edit::value(backend)),
            with_pool(1),
        ],
    )
    .await;
    let gateway_port: u16 = d
        .client_config()
        .endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let secret = d.data_dir().join("gateway.token").display().to_string();
    // Registered first, so its files exist on the host when read_other_tool looks for them.
    let other_tool = d
        .data_dir()
        .join("tools/connect_host_listener/tool.json")
        .display()
        .to_string();
    let max_output = d.settings().tools.max_output_bytes;
    let suite = attacks(
        listener_port,
        gateway_port,
        &secret,
        &other_tool,
        max_output,
        backend,
    );
    let answers = suite
        .iter()
        .map(|a| {
            Scripted::json(json!({
                "name": a.name,
                "description": "attack",
                "parameters": {"type": "object", "properties": {}},
                "source": a.source,
                "tests": format!("def test_exists():\n    assert callable({})\n", a.name)
            }))
        })
        .collect();
    ollama.script("BRICK", answers);
    let mut c = long_client(&d);
    for a in &suite {
        let forged = c.request("forge_tool", json!({"capability": a.name})).await;
        assert!(
            forged.is_ok(),
            "[{backend}] forging {}: {forged:?}\n{}",
            a.name,
            d.log_text()
        );
        let r = c
            .request("call_tool", json!({"name": a.name, "args": {}}))
            .await
            .unwrap();
        // Whatever a tool does, what comes back is capped at tools.max_output_bytes.
        let size = r.to_string().len();
        let shown: String = r.to_string().chars().take(2000).collect();
        assert!(
            size <= max_output,
            "[{backend}] {} returned {size} bytes (cap {max_output}): {shown}",
            a.name
        );
        assert!(
            (a.check)(&r),
            "[{backend}] {} was not contained: {shown}",
            a.name
        );
        // The daemon is unaffected and the next tool call works.
        assert_eq!(c.request("ping", json!({})).await.unwrap()["pong"], true);
        let ok = c
            .request("call_tool", json!({"name": "list_interfaces", "args": {}}))
            .await;
        if a.name != "connect_host_listener" && a.name != "connect_gateway" {
            assert_eq!(
                ok.unwrap()["ok"],
                true,
                "[{backend}] a tool call after {}",
                a.name
            );
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("[{backend}] the host listener was reached: {other:?}"),
    }
    assert!(!std::path::Path::new("/pwned").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_suite_is_contained_in_runsc() {
    attack_suite("runsc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_suite_is_contained_in_docker_with_runsc() {
    attack_suite("docker").await;
}
