//! The CPU LoRA trainer (issue 15), a bench binary: training tokens/s of the candle trainer on the shipped
//! model against the embedded engine's prompt tokens/s (llama.cpp reading the same sequences with logits, as
//! the gate does), and peak resident memory. Medians of `BATOS_BENCH_RUNS` runs (default 3).
//!
//! `cargo bench --workspace --bench unsloth` (needs the model from scripts/setup.sh; `BATOS_MODEL` overrides).
//! `BATOS_BENCH_ANSWER_REPEAT=<k>` says each answer `k` times (longer sequences). With `BATOS_BENCH_DUMP=<file>` it also writes its sequences and settings as JSON for `benches/trainer_torch.py`
//! (PyTorch + peft on the same data and settings, run after it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use batos_actors::llm::embedded::EmbeddedBackend;
use batos_actors::llm::{ChatMessage, Role};
use batos_actors::settings::{EmbeddedSettings, LoadedSettings};
use batos_actors::trainer::{train, LlamaLora, LoraSpec, Schedule, Sequence, TrainConfig};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` one short run is a smoke test of the same code.
    let full = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("BATOS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 3 } else { 1 });
    let model_path = std::env::var("BATOS_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let shipped = LoadedSettings::load(&repo().join("config/settings.toml")).unwrap();
    let es = EmbeddedSettings {
        model_path: model_path.clone(),
        ..shipped.settings.llm.embedded
    };
    let b = EmbeddedBackend::load(&es, "smollm2:135m").unwrap();
    // Longer answers (the answer said `BATOS_BENCH_ANSWER_REPEAT` times, default once: 74 tokens a sequence)
    // show what grows with a sequence's length: attention's scores.
    let repeat: usize = std::env::var("BATOS_BENCH_ANSWER_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Eight examples shaped like the Curator's: a system prompt, a question, a two-sentence answer.
    let seqs: Vec<Sequence> = (0..if full { 8 } else { 2 })
        .map(|i| {
            let msgs = vec![
                ChatMessage::new(Role::System, "You are BRICK, a persona of BAT OS. Answer plainly."),
                ChatMessage::new(Role::User, format!("Question {i}: why do lighthouses turn their lights?")),
            ];
            let answer = "A turning beam sweeps the whole horizon, so every ship sees it flash. The rhythm of \
                          the flashes tells sailors which lighthouse they are looking at. "
                .repeat(repeat);
            let (tokens, prompt) = b.training_tokens(&msgs, answer.trim_end(), &[]).unwrap();
            let learn = (0..tokens.len()).map(|k| k >= prompt).collect();
            Sequence { tokens, learn }
        })
        .collect();
    let tokens: usize = seqs.iter().map(|s| s.tokens.len()).sum();
    let f = &shipped.settings.trainer;
    if let Ok(dump) = std::env::var("BATOS_BENCH_DUMP") {
        let data = serde_json::json!({
            "model": model_path, "sequences": seqs, "targets": f.targets, "rank": f.rank, "alpha": f.alpha,
            "dropout": f.dropout, "batch": f.batch, "lr": 1e-3, "steps": if full { 4 } else { 1 }, "runs": runs,
            "threads": f.threads,
        });
        std::fs::write(&dump, data.to_string()).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut served = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for s in &seqs {
            rt.block_on(b.sequence_nll("smollm2:135m", s.tokens.clone(), s.learn.clone()))
                .unwrap();
        }
        served.push(tokens as f64 / t.elapsed().as_secs_f64());
    }
    // The shipped [trainer] settings: targets, rank, alpha, dropout, batch, packing.
    let spec = LoraSpec {
        targets: f.targets.clone(),
        rank: f.rank,
        alpha: f.alpha,
        dropout: f.dropout,
        seed: 1,
    };
    let load = Instant::now();
    let m = LlamaLora::load(&mut File::open(&model_path).unwrap(), spec).unwrap();
    let load_s = load.elapsed().as_secs_f64();
    let cfg = TrainConfig {
        steps: if full { 4 } else { 1 },
        batch: f.batch,
        lr: 1e-3,
        warmup_steps: 1,
        schedule: Schedule::Cosine,
        weight_decay: 0.0,
        seed: 1,
        checkpoint_every: 0,
        pack_tokens: f.pack_tokens,
        // PyTorch's script computes every sequence whole: so does the trainer here, for a like comparison.
        share_prefix: 0,
    };
    // The same steps with every sequence in a pass of its own (pack_tokens = 1), in the same run: what
    // packing is worth.
    let rate = |pack_tokens: usize| -> f64 {
        let c = TrainConfig {
            pack_tokens,
            ..cfg.clone()
        };
        let mut trained = Vec::new();
        for _ in 0..runs {
            let mut last = 0.0;
            train(&m, &seqs, &c, None, "bench", &AtomicBool::new(false), |p| {
                last = p.tokens_per_s
            })
            .unwrap();
            trained.push(last);
        }
        median(trained)
    };
    let alone = rate(1);
    let t = rate(f.pack_tokens);
    let s = median(served);
    println!(
        "| sequences | tokens each (mean) | llama.cpp tok/s (sequence_nll) | training tok/s, unpacked | training tok/s, packed | ratio packed / llama.cpp | weights load | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {s:.0} | {alone:.1} | {t:.1} | {:.3} | {load_s:.1} s | {} MiB |",
        seqs.len(),
        tokens / seqs.len(),
        t / s,
        peak_rss_mib()
    );
}
