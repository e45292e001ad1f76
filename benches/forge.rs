//! The trainer end to end (issue 15), a bench binary: the time from the trigger (`trainer_run`) to the
//! gate's verdict and the swapped model, on the real daemon and the embedded SmolLM2-135M, for a golden set of
//! 200 examples (180 to train, 20 held out) with the shipped `[trainer]` settings; the training rate the run
//! reported and the daemon's peak resident memory.
//!
//! The examples are shaped as the Curator records BRICK's drafting calls (BRICK's system message, the
//! orchestrator's brief, a two-sentence answer) but without a tools preamble, which would make each ~2.3x longer.
//!
//! `cargo bench --bench forge` (needs the model from scripts/setup.sh; `BATOS_MODEL` overrides;
//! `BATOS_BENCH_SHARE_PREFIX=0` computes every sequence whole, for the shared prefix's share). Under
//! `cargo test` a set of 8 examples and one step is a smoke test of the same code. It prints the phases too:
//! trigger to the first step's report (set-up), to the last (training), to the verdict (the gate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../tests/e2e/support/ollama.rs"]
mod ollama;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use zeromq::prelude::*;

use batos_protocol::EventBody;

use daemon::{log_level, model_path, repo, Daemon};

const TOPICS: [&str; 6] = [
    "lighthouses",
    "tides",
    "bridges",
    "bees",
    "glaciers",
    "printing presses",
];

/// One line in the Curator's format.
fn line(i: usize, split: &str, system: &str) -> String {
    let topic = TOPICS[i % TOPICS.len()];
    let question = format!("Question {i}: how do {topic} work?");
    let brief = format!(
        "Task from the Architect:\n{question}\n\nALFRED's plan:\nAnswer directly and briefly.\n\nBABS's research \
         notes:\nNo memories match this task.\n\nWrite your draft answer. Use the offered tools when they help; if \
         a capability is missing, call request_capability."
    );
    let answer = format!(
        "Decomposed: {topic} rest on one load-bearing principle, applied step by step. Each step follows from \
         the one before, so the whole holds ({i})."
    );
    json!({
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": brief},
            {"role": "assistant", "content": answer},
        ],
        "lineage": {
            "key": format!("bench{i}/3/0"), "task": format!("bench{i}"), "request": question, "step": 3,
            "node": "draft", "persona": "BRICK", "model": "smollm2:135m", "generation": 1,
            "hash": format!("{i:064x}"), "split": split, "dissonance": null, "judge": null,
            "filters": [], "at": 0.0,
        },
    })
    .to_string()
        + "\n"
}

fn seed(dir: &Path, n: usize) {
    let text = std::fs::read_to_string(repo().join("config/codex.toml")).unwrap();
    let system = batos_actors::principles::Codex::parse(&text)
        .unwrap()
        .personas["BRICK"]
        .system_message();
    let d = dir.join("curator/BRICK");
    std::fs::create_dir_all(&d).unwrap();
    let held = (n / 10).max(1);
    let train: String = (held..n).map(|i| line(i, "train", &system)).collect();
    let heldout: String = (0..held).map(|i| line(i, "heldout", &system)).collect();
    std::fs::write(d.join("train.jsonl"), train).unwrap();
    std::fs::write(d.join("heldout.jsonl"), heldout).unwrap();
}

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a small run is a smoke test of the same code.
    let full = std::env::args().any(|a| a == "--bench");
    let examples = if full { 200 } else { 8 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let llm = ollama::ScriptedOllama::start();
    let model = model_path();
    // `BATOS_BENCH_SHARE_PREFIX=<n>` overrides trainer.share_prefix (0: every sequence computed whole).
    let share: Option<i64> = std::env::var("BATOS_BENCH_SHARE_PREFIX")
        .ok()
        .and_then(|v| v.parse().ok());
    let d = Daemon::prepare(
        &llm.url,
        vec![
            log_level("warn"),
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["curator"]["enabled"] = toml_edit::value(true);
                // The trainer and the NLL gate are measured here; the exam gate is an exam's cost (benches/life.rs).
                doc["trainer"]["exam_gate"] = toml_edit::value("");
                if let Some(n) = share {
                    doc["trainer"]["share_prefix"] = toml_edit::value(n);
                }
                if !full {
                    doc["trainer"]["steps"] = toml_edit::value(1);
                    doc["trainer"]["batch"] = toml_edit::value(2);
                }
            }),
        ],
    );
    seed(&d.data_dir(), examples);
    let d = rt.block_on(d.spawn_and_wait());
    let settings = d.settings().trainer;
    let (verdict, secs, rate, phases) = rt.block_on(async {
        let mut sub =
            batos_client::client::subscriber(&d.client_config(), &["trainer.", "model.tuned"])
                .await
                .expect("subscribe");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = d.client();
        let t = Instant::now();
        c.request("trainer_run", json!({"persona": "BRICK", "force": true}))
            .await
            .expect("trainer_run");
        let mut rate = 0.0;
        // Seconds from the trigger to the first step's report and to the last one: set-up, training, the gate.
        let (mut first, mut last) = (None, 0.0);
        loop {
            let m = tokio::time::timeout(Duration::from_secs(7200), sub.recv())
                .await
                .expect("the run ends")
                .expect("event");
            let Some(ev) = m
                .into_vec()
                .get(1)
                .and_then(|b| rmp_serde::from_slice::<EventBody>(b).ok())
            else {
                continue;
            };
            match ev.kind.as_str() {
                "trainer.progress" => {
                    rate = ev.data["tokens_per_s"].as_f64().unwrap_or(0.0);
                    last = t.elapsed().as_secs_f64();
                    first.get_or_insert(last);
                }
                "model.tuned" | "trainer.rejected" | "trainer.failed" => {
                    break (
                        format!("{} {}", ev.kind, ev.data),
                        t.elapsed().as_secs_f64(),
                        rate,
                        (first.unwrap_or(0.0), last),
                    )
                }
                _ => {}
            }
        }
    });
    assert!(!verdict.starts_with("trainer.failed"), "{verdict}");
    let rss = d.pid().map(peak_rss_mib).unwrap_or(0);
    println!("verdict: {verdict}");
    println!(
        "phases: trigger -> first step reported {:.0} s, -> last step reported {:.0} s, -> verdict {secs:.0} s (the gate and the adapter's writing: {:.0} s)",
        phases.0,
        phases.1,
        secs - phases.1
    );
    println!(
        "\n| examples (train / held out) | steps × batch | trigger → verdict (and swap) | training tok/s (run's last report) | daemon peak RSS |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} / {} | {} × {} | {secs:.0} s | {rate:.1} | {rss} MiB |",
        examples - (examples / 10).max(1),
        (examples / 10).max(1),
        settings.steps,
        settings.batch
    );
}
