//! A newcomer's first answers (issue 13): twenty fixed questions asked, one after another, of the real daemon on
//! the embedded SmolLM2-135M model with the shipped settings (only the ports, data dir and backend choice are
//! the harness's). Every answer must be done, end at end-of-turn or at its cap, and repeat no 6-word sequence
//! more than twice — the degenerate loop of issue 13 ("The answer must be a coin." seventy times) fails it.
//! Prints the time per question (median and worst) for BENCHMARKS.md.
//!
//! `BATOS_FIRST_HOUR_BASELINE=1` runs the settings from before issue 13 instead (temperature 0.7, top-p only, no
//! penalties, no DRY, no loop guard, 512 tokens per step for everyone, every high dissonance acted on) and
//! reports, rather than fails on, loops — the "before" figure. `BATOS_FIRST_HOUR_N` asks only the first N.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// The fixed question set: everyday, factual, how-to and open questions a first user asks.
pub const QUESTIONS: [&str; 20] = [
    "Why do lanterns attract moths?",
    "What is the capital of France?",
    "How do I boil an egg?",
    "Name three primary colours.",
    "Why is the sky blue?",
    "What does a bee make?",
    "How many legs does a spider have?",
    "Give me a tip for sleeping better.",
    "What is photosynthesis?",
    "Why do we have seasons?",
    "What is the difference between weather and climate?",
    "Suggest a name for a small grey cat.",
    "How do I say thank you in Spanish?",
    "What is two plus two?",
    "Why do leaves change colour in autumn?",
    "What should I pack for a day at the beach?",
    "Explain what a computer program is.",
    "What is the largest ocean on Earth?",
    "Write one sentence about the moon.",
    "How can I keep a houseplant alive?",
];

/// The most occurrences of any 6-word sequence (lower-cased, punctuation trimmed) in `text`, and that sequence.
pub fn worst_six_gram(text: &str) -> (usize, String) {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts: HashMap<&[String], usize> = HashMap::new();
    for g in words.windows(6) {
        *counts.entry(g).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(g, n)| (n, g.join(" ")))
        .unwrap_or((0, String::new()))
}

#[test]
fn the_six_gram_check_catches_the_coin_loop() {
    let coin = "The answer must be a coin. ".repeat(70);
    assert_eq!(worst_six_gram(&coin).0, 70);
    assert!(worst_six_gram("Moths steer by the moon; a lamp confuses them.").0 <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "~11 min on the embedded model: scripts/test.sh runs it alone, after the other tests"]
async fn twenty_first_questions_get_answers_that_end_and_do_not_loop() {
    let model = model_path();
    let baseline = std::env::var("BATOS_FIRST_HOUR_BASELINE").is_ok_and(|v| v == "1");
    let n: usize = std::env::var("BATOS_FIRST_HOUR_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUESTIONS.len())
        .min(QUESTIONS.len());
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut edits: Vec<Edit> = vec![
        log_level("warn"),
        shipped("llm", "request_timeout_ms"),
        // The harness judges the graph on scores alone; here the shipped critique rule is what is tested.
        shipped("orchestrator", "min_critique_words"),
        shipped("orchestrator", "critique_repeat_similarity"),
        Box::new(move |doc| {
            doc["llm"]["backend"] = toml_edit::value("embedded");
            doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
        }),
    ];
    if baseline {
        edits.push(Box::new(|doc| {
            let llm = &mut doc["llm"];
            llm["temperature"] = toml_edit::value(0.7);
            llm["top_k"] = toml_edit::value(0);
            llm["min_p"] = toml_edit::value(0.0);
            llm["repeat_penalty"] = toml_edit::value(1.0);
            llm["dry_multiplier"] = toml_edit::value(0.0);
            llm["loop_ngram"] = toml_edit::value(0);
            llm["max_tokens"] = toml_edit::value(512);
            for p in ["ALFRED", "BABS", "BRICK", "ROBIN"] {
                if let Some(t) = doc["personas"][p].as_table_mut() {
                    t.remove("max_tokens");
                }
            }
            doc["orchestrator"]["min_critique_words"] = toml_edit::value(0);
            doc["orchestrator"]["critique_repeat_similarity"] = toml_edit::value(1.0);
        }));
    }
    let d = Daemon::start(&closed, edits).await;
    let mut c = d.client();
    let mut times = Vec::new();
    let mut finishes: HashMap<String, usize> = HashMap::new();
    let mut rounds = 0u64;
    let mut looping = 0;
    let mut escalations = 0u64;
    let mut dissonance_pauses = 0u64;
    for q in &QUESTIONS[..n] {
        let started = Instant::now();
        let r = c.request("submit_task", json!({"text": q})).await.unwrap();
        let id = r["id"].as_str().unwrap().to_string();
        let t = wait_task(&mut c, &id, 900).await;
        times.push(started.elapsed());
        // BRICK may escalate to the Architect through the `escalate_to_architect` tool: the model's explicit
        // choice, a path the system offers on purpose. Such a pause is resumed and counted. A pause for
        // dissonance is the critique rule at work only when ROBIN repeats the same complaint after a redraft;
        // the rule must keep those rare (before issue 13 a bare score could pause a task: baseline), so they
        // are resumed, counted, and bounded below.
        let escalated = t["tools_used"]
            .as_array()
            .is_some_and(|u| u.iter().any(|x| x["name"] == "escalate_to_architect"));
        if t["status"] == "paused" {
            escalations += u64::from(escalated);
            dissonance_pauses += u64::from(!escalated);
            let _ = c
                .request("resume_task", json!({"id": id, "guidance": "Answer now."}))
                .await;
            let _ = wait_task(&mut c, &id, 900).await;
        }
        let t = c.request("get_task", json!({"id": id})).await.unwrap();
        assert_eq!(t["status"], "done", "`{q}`: {t}");
        let answer = t["result"].as_str().unwrap_or_default();
        assert!(!answer.trim().is_empty(), "`{q}`: empty answer");
        let (repeats, gram) = worst_six_gram(answer);
        if repeats > 2 {
            looping += 1;
        }
        assert!(
            baseline || repeats <= 2,
            "`{q}`: \"{gram}\" occurs {repeats} times in the answer:\n{answer}"
        );
        let steps = t["steps"].as_array().unwrap();
        let last = steps.last().unwrap();
        assert_eq!(last["node"], "synthesize");
        let finish = last["finish"].as_str().unwrap_or("none").to_string();
        assert!(
            matches!(finish.as_str(), "stop" | "length" | "loop"),
            "`{q}`: the answer did not end at end-of-turn, its cap or the loop guard: {last}"
        );
        *finishes.entry(finish).or_insert(0) += 1;
        rounds += steps.iter().filter(|s| s["node"] == "draft").count() as u64;
    }
    times.sort();
    let median = (times[(n - 1) / 2] + times[n / 2]) / 2;
    println!(
        "first answers{}: {n} questions, median {:.1} s, worst {:.1} s, total {:.0} s; {rounds} drafting rounds; \
         answers ended by {finishes:?}; {looping} answers repeat a 6-word sequence 3+ times; \
         {escalations} escalated by BRICK's tool and {dissonance_pauses} paused for a repeated complaint, resumed",
        if baseline { " (baseline: settings before issue 13)" } else { "" },
        median.as_secs_f64(),
        times[n - 1].as_secs_f64(),
        times.iter().sum::<Duration>().as_secs_f64()
    );
    assert!(
        baseline || dissonance_pauses <= 2,
        "{dissonance_pauses} of {n} questions paused for a repeated complaint"
    );
}

/// `scripts/batos` (the README's second-terminal command) reaches the daemon from another directory without
/// building anything, and says what to do when nothing is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batos_script_works_from_any_directory_without_building() {
    let ollama = ScriptedOllama::start();
    let d = Daemon::start(&ollama.url, vec![]).await;
    // A build folder holding only the binary cargo built for this test, as scripts/test.sh leaves it.
    let target = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(target.path().join("debug")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_batos"),
        target.path().join("debug/batos"),
    )
    .unwrap();
    let script = repo().join("scripts/batos");
    let run = |target: &std::path::Path| {
        Command::new(&script)
            .arg("ping")
            .current_dir("/")
            .env("CARGO_TARGET_DIR", target)
            .env("BATOS_CONFIG", &d.config)
            .output()
            .unwrap()
    };
    // Blocking is fine here: the daemon is another process.
    let out = run(target.path());
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pong"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run scripts/run.sh"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
