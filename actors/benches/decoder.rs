//! Batched decoder benchmark (issue 19), a bench binary, one run, same GGUF for every side:
//!
//! - aggregate generation tokens/s with 1, 2, 4 and 8 requests at once: the batched decoder (`parallel` = 8,
//!   prefix cache on) against the same backend one request at a time (`parallel` = 1, prefix cache off), and
//!   against llama-cpp-python serving the same requests one after another;
//! - time to first token of a persona call (~330 prompt tokens of principles, then a question) when the
//!   principles are cached against cold, and against llama-cpp-python (which reuses the previous prompt's
//!   prefix too).
//!
//! `cargo bench --profile dev --workspace --bench decoder` (the Python side runs when `$BATOS_PYTHON` —
//! default `~/.cache/batos/venv/bin/python` — can import `llama_cpp`). Medians of `BATOS_BENCH_RUNS` (3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use batos_actors::llm::embedded::EmbeddedBackend;
use batos_actors::llm::{ChatMessage, ChatRequest, LlmBackend, Role, Sampling};
use batos_actors::settings::{EmbeddedSettings, LoadedSettings};

const MAX_TOKENS: u32 = 64;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn principles() -> String {
    "You are BRICK, a persona of BAT OS. Your principles: be truthful; say what you do not know; prefer \
     the plain word; show your reasoning in short steps; never invent a source; when a question is \
     ambiguous, name the readings and answer the likeliest; keep answers short unless asked for depth; \
     treat every user with patience; admit mistakes at once and correct them; respect the tools you are \
     given and use them only for their purpose; protect what the user tells you in confidence; "
        .repeat(3)
}

fn messages(system: &str, user: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, system),
        ChatMessage::new(Role::User, user),
    ]
}

fn request(msgs: Vec<ChatMessage>, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2:135m".into(),
        messages: msgs,
        tools: vec![],
        format: None,
        // Greedy and no loop guard: every side generates the same number of tokens for the same prompt.
        sampling: Sampling::plain(0.0, 1.0, 42, max_tokens),
    }
}

/// The i-th throughput request: a short system prompt (so it measures generation) and its own question.
fn story(i: usize) -> Vec<ChatMessage> {
    messages(
        "You are a helpful assistant.",
        &format!("Write a long story about lighthouse keeper number {i} and a storm."),
    )
}

fn load(base: &EmbeddedSettings, parallel: usize, prefix_cache: bool) -> EmbeddedBackend {
    let s = EmbeddedSettings {
        parallel,
        prefix_cache,
        ..base.clone()
    };
    EmbeddedBackend::load(&s, "smollm2:135m").expect("model loads")
}

/// Aggregate completion tokens/s of `n` requests: all at once, or one after another.
async fn throughput(b: &EmbeddedBackend, n: usize, together: bool) -> f64 {
    let t = Instant::now();
    let tokens: u64 = if together {
        futures::future::join_all((0..n).map(|i| b.chat(request(story(i), MAX_TOKENS), None)))
            .await
            .into_iter()
            .map(|r| r.expect("chat").completion_tokens)
            .sum()
    } else {
        let mut sum = 0;
        for i in 0..n {
            sum += b
                .chat(request(story(i), MAX_TOKENS), None)
                .await
                .expect("chat")
                .completion_tokens;
        }
        sum
    };
    tokens as f64 / t.elapsed().as_secs_f64()
}

/// Milliseconds to the first streamed piece of a persona call.
async fn ttft(b: &EmbeddedBackend, question: &str) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t = Instant::now();
    let first = tokio::spawn(async move { rx.recv().await.map(|_| Instant::now()) });
    b.chat(request(messages(&principles(), question), 8), Some(tx))
        .await
        .expect("chat");
    first
        .await
        .ok()
        .flatten()
        .map_or(f64::NAN, |f| (f - t).as_secs_f64() * 1000.0)
}

fn questions(runs: usize) -> Vec<String> {
    (0..runs)
        .map(|i| format!("Question {i}: what is a good name for a ship?"))
        .collect()
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let runs: usize = std::env::var("BATOS_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            3
        } else {
            1
        });
    let shipped = LoadedSettings::load(&repo.join("config/settings.toml"))
        .expect("config/settings.toml")
        .settings
        .llm
        .embedded;
    let model = std::env::var("BATOS_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| shipped.model_path.clone());
    // Another GGUF (e.g. the same weights requantized, to compare llama.cpp's kernels) skips the shipped
    // file's checksum.
    let sha = if model == shipped.model_path {
        shipped.model_sha256.clone()
    } else {
        String::new()
    };
    let base = EmbeddedSettings {
        model_path: model.clone(),
        model_sha256: sha,
        ..shipped
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let full = std::env::args().any(|a| a == "--bench");
    // Under `cargo test`, a smoke test of the same code: two counts, no Python side.
    let counts: &[usize] = if full { &[1, 2, 4, 8] } else { &[1, 2] };
    println!(
        "batched decoder: {} (threads {}, n_ctx {}, n_batch {}, batch_invariant {}), {MAX_TOKENS} tokens per request, medians of {runs}\n",
        model.display(),
        base.threads,
        base.n_ctx,
        base.n_batch,
        base.batch_invariant
    );
    let (batched_tps, single_tps, cached, cold, unpadded, served) = rt.block_on(async {
        let batched = load(&base, 8, true);
        // The file llama.cpp serves (the 8-bit copy with the shipped `serve_weights`): what llama-cpp-python
        // gets too, so both sides run the same kernels.
        let served = batched.serving_path().to_path_buf();
        let mut batched_tps = Vec::new();
        for &n in counts {
            let mut v = Vec::new();
            for _ in 0..runs {
                v.push(throughput(&batched, n, true).await);
            }
            batched_tps.push(median(v));
        }
        // Cached: the principles are in the cache from the call before.
        ttft(&batched, "Warm the cache.").await;
        let mut cached = Vec::new();
        for q in questions(runs) {
            cached.push(ttft(&batched, &q).await);
        }
        drop(batched);
        let single = load(&base, 1, false);
        let mut single_tps = Vec::new();
        for &n in counts {
            let mut v = Vec::new();
            for _ in 0..runs {
                v.push(throughput(&single, n, false).await);
            }
            single_tps.push(median(v));
        }
        let mut cold = Vec::new();
        for q in questions(runs) {
            cold.push(ttft(&single, &q).await);
        }
        drop(single);
        let unpadded = EmbeddedBackend::load(
            &EmbeddedSettings {
                parallel: 1,
                prefix_cache: false,
                batch_invariant: !base.batch_invariant,
                ..base.clone()
            },
            "smollm2:135m",
        )
        .expect("model loads");
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(throughput(&unpadded, 1, false).await);
        }
        let unpadded = median(v);
        (
            batched_tps,
            single_tps,
            median(cached),
            median(cold),
            unpadded,
            served,
        )
    });
    println!("served from {}\n", served.display());
    let python = if full {
        python_side(&base, &served, counts, runs)
    } else {
        None
    };
    println!("| concurrent requests | batched tok/s | one at a time tok/s | ratio | llama-cpp-python tok/s | ratio |");
    println!("|---|---|---|---|---|---|");
    for (i, n) in counts.iter().enumerate() {
        let py = python.as_ref().map(|p| p.0[i]);
        println!(
            "| {n} | {:.1} | {:.1} | {:.2}× | {} | {} |",
            batched_tps[i],
            single_tps[i],
            batched_tps[i] / single_tps[i],
            py.map_or("—".into(), |p| format!("{p:.1}")),
            py.map_or("—".into(), |p| format!("{:.2}×", batched_tps[i] / p)),
        );
    }
    println!(
        "\none request alone: {:.1} tok/s with batch_invariant = {}, {unpadded:.1} tok/s with it {}",
        single_tps[0],
        base.batch_invariant,
        !base.batch_invariant
    );
    println!("\n| time to first token, persona call | ms |\n|---|---|");
    println!("| principles cached (batched decoder) | {cached:.0} |");
    println!(
        "| cold (no prefix cache) | {cold:.0} | \n| ratio cached / cold | {:.2} |",
        cached / cold
    );
    if let Some((_, py_ttft)) = python {
        println!("| llama-cpp-python (its previous-prompt reuse) | {py_ttft:.0} |");
    }
}

/// llama-cpp-python on the same requests: aggregate tok/s per count (one after another) and the median
/// time to first token of the persona calls. `None` when it cannot run here.
fn python_side(
    base: &EmbeddedSettings,
    model: &std::path::Path,
    counts: &[usize],
    runs: usize,
) -> Option<(Vec<f64>, f64)> {
    let python = std::env::var("BATOS_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/batos/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wire = |m: &[ChatMessage]| -> serde_json::Value {
        m.iter()
            .map(|c| json!({"role": if c.role == Role::System {"system"} else {"user"}, "content": c.content}))
            .collect()
    };
    let threads = if base.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        base.threads
    };
    let mut tps = Vec::new();
    let mut ttft_ms = 0.0;
    for (k, &n) in counts.iter().enumerate() {
        let throughput: Vec<_> = (0..n)
            .map(|i| json!([wire(&story(i)), MAX_TOKENS]))
            .collect();
        // Warm with one call, as the Rust side's cache is warmed, then the timed persona calls.
        let mut ttft_msgs = vec![wire(&messages(&principles(), "Warm the cache."))];
        ttft_msgs.extend(
            questions(runs)
                .iter()
                .map(|q| wire(&messages(&principles(), q))),
        );
        let file = tempfile::NamedTempFile::new().ok()?;
        let ttft_list = if k == 0 { ttft_msgs } else { Vec::new() };
        std::fs::write(
            file.path(),
            json!({"throughput": throughput, "ttft": ttft_list}).to_string(),
        )
        .ok()?;
        let out = std::process::Command::new(&python)
            .arg(repo.join("benches/decoder_cpp_python.py"))
            .arg(model)
            .arg(threads.to_string())
            .arg(base.n_ctx.to_string())
            .arg(base.n_batch.to_string())
            .arg(file.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "llama-cpp-python side skipped: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        tps.push(v["gen_tps"].as_f64()?);
        if k == 0 {
            let t: Vec<f64> = v["ttft_ms"]
                .as_array()?
                .iter()
                .skip(1)
                .filter_map(|x| x.as_f64())
                .collect();
            ttft_ms = median(t);
        }
    }
    Some((tps, ttft_ms))
}
