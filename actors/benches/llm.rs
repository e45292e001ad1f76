//! Embedded backend benchmark (issue 4), a bench binary: prompt and generation tokens/s, time to first token
//! and resident memory of the embedded llama.cpp backend, then the same measurements of `llama-cpp-python` on
//! the same GGUF with the same threads, context, batch, prompts and sampling (`benches/llm_cpp_python.py`),
//! in one run. Medians of `BATOS_BENCH_RUNS` runs (default 5).
//!
//! `BATOS_BENCH_THREADS=2 cargo bench --workspace --bench llm` (the Python side runs when
//! `$BATOS_PYTHON` — default `~/.cache/batos/venv/bin/python` — can import `llama_cpp`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use batos_actors::llm::embedded::EmbeddedBackend;
use batos_actors::llm::{ChatMessage, ChatRequest, LlmBackend, Role, Sampling};
use batos_actors::settings::{EmbeddedSettings, LoadedSettings};

fn rss_mib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn long_prompt() -> String {
    // ~450 tokens of plain prose, the same file for both sides.
    let para = "The lighthouse stood at the edge of the cliff, and every night its keeper climbed the \
                hundred and twelve steps to trim the wick, polish the lens and write the weather in the log. ";
    format!(
        "Summarise the following text in one sentence.\n\n{}",
        para.repeat(12)
    )
}

fn request(nonce: &str, user: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2:135m".into(),
        messages: vec![
            ChatMessage::new(
                Role::System,
                format!("[{nonce}] You are a helpful assistant."),
            ),
            ChatMessage::new(Role::User, user),
        ],
        tools: vec![],
        format: None,
        // Plain sampling, as in earlier runs of this bench, so tokens/s stay comparable.
        sampling: Sampling::plain(0.7, 0.9, 42, max_tokens),
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let threads: u32 = std::env::var("BATOS_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let runs: usize = std::env::var("BATOS_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        // `cargo bench` passes `--bench`; under `cargo test` one run is a smoke test.
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            5
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
    let s = EmbeddedSettings {
        model_path: model.clone(),
        threads,
        ..shipped
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rss_before = rss_mib("VmRSS:");
    let t = Instant::now();
    let backend = EmbeddedBackend::load(&s, "smollm2:135m").expect("model loads");
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss_loaded = rss_mib("VmRSS:");
    let prompt = long_prompt();
    let prompt_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(prompt_file.path(), &prompt).expect("write prompt");
    let (mut ptps, mut gtps, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    let mut prompt_tokens = 0;
    rt.block_on(async {
        for i in 0..runs {
            let t = Instant::now();
            let r = backend
                .chat(request(&format!("p{i}"), &prompt, 1), None)
                .await
                .expect("prompt run");
            ptps.push(r.prompt_tokens as f64 / t.elapsed().as_secs_f64());
            prompt_tokens = r.prompt_tokens;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let t = Instant::now();
            let req = request(
                &format!("g{i}"),
                "Write a long story about a lighthouse keeper and a storm.",
                128,
            );
            let first = tokio::spawn(async move { rx.recv().await.map(|_| Instant::now()) });
            let r = backend.chat(req, Some(tx)).await.expect("generation run");
            let end = Instant::now();
            if let Ok(Some(first)) = first.await {
                if r.completion_tokens > 1 {
                    ttft.push((first - t).as_secs_f64() * 1000.0);
                    gtps.push((r.completion_tokens - 1) as f64 / (end - first).as_secs_f64());
                }
            }
        }
    });
    let (p, g, f) = (median(ptps), median(gtps), median(ttft));
    println!(
        "embedded backend vs llama-cpp-python: {} served from {} ({} threads, n_ctx {}, n_batch {}), medians of {runs} runs\n",
        model.display(),
        backend.serving_path().display(),
        threads,
        s.n_ctx,
        s.n_batch
    );
    println!("| engine | prompt tok/s ({prompt_tokens} tokens) | generation tok/s | time to first token ms | RSS loaded MiB | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| batos embedded (llama-cpp-2) | {p:.0} | {g:.1} | {f:.1} | {} | {} |",
        rss_loaded,
        rss_mib("VmHWM:")
    );
    println!("\nmodel load: {load_ms:.0} ms; RSS before load {rss_before} MiB");
    let served = backend.serving_path().to_path_buf();
    drop(backend);
    let python = std::env::var("BATOS_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/batos/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let out = std::process::Command::new(&python)
        .arg(repo.join("benches/llm_cpp_python.py"))
        // The file the backend serves (the 8-bit copy with the shipped `serve_weights`), so both sides run
        // the same kernels.
        .arg(&served)
        .arg(threads.to_string())
        .arg(s.n_ctx.to_string())
        .arg(s.n_batch.to_string())
        .arg(runs.to_string())
        .arg(prompt_file.path())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout);
            let v: serde_json::Value = match serde_json::from_str(line.trim()) {
                Ok(v) => v,
                Err(e) => {
                    println!("llama-cpp-python answered something else ({e}): {line}");
                    return;
                }
            };
            let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
            println!(
                "| llama-cpp-python | {:.0} ({} tokens) | {:.1} | {:.1} | {} (whole process) | {} |",
                num("prompt_tps"),
                v["prompt_tokens"],
                num("gen_tps"),
                num("ttft_ms"),
                v["rss_loaded_mib"],
                v["rss_peak_mib"]
            );
            println!(
                "\nratio batos / llama-cpp-python: prompt {:.2}×, generation {:.2}×, time to first token {:.2}×",
                p / num("prompt_tps").max(f64::EPSILON),
                g / num("gen_tps").max(f64::EPSILON),
                f / num("ttft_ms").max(f64::EPSILON)
            );
        }
        Ok(o) => println!(
            "\nllama-cpp-python side did not run ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(e) => println!("\nllama-cpp-python side did not run: cannot start {python}: {e}"),
    }
}
