//! The candle trainer against the real SmolLM2-135M GGUF and the engine that serves it (llama.cpp through
//! llama-cpp-2): what is trained is what is served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};

use batos_actors::llm::embedded::{EmbeddedBackend, LORA_PREFIX};
use batos_actors::llm::{ChatMessage, Role};
use batos_actors::settings::EmbeddedSettings;
use batos_actors::trainer::pipeline::served_nll;
use batos_actors::trainer::{
    adapter_bytes, mean_nll, train, LlamaLora, LoraSpec, Schedule, Sequence, TrainConfig,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    std::env::var("BATOS_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

fn backend() -> &'static EmbeddedBackend {
    static B: OnceLock<EmbeddedBackend> = OnceLock::new();
    B.get_or_init(|| {
        let shipped =
            batos_actors::settings::LoadedSettings::load(&repo().join("config/settings.toml"))
                .unwrap();
        let s = EmbeddedSettings {
            model_path: model_path(),
            ..shipped.settings.llm.embedded
        };
        EmbeddedBackend::load(&s, "smollm2:135m").expect("model loads (scripts/setup.sh)")
    })
}

fn candle_model(targets: &[&str]) -> LlamaLora {
    let spec = LoraSpec {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        seed: 11,
    };
    // The file llama.cpp serves (the 8-bit copy with the shipped settings), as the forge trains on it.
    LlamaLora::load(&mut File::open(backend().serving_path()).unwrap(), spec).unwrap()
}

/// candle's next-token logits after `tokens`.
fn candle_last(m: &LlamaLora, tokens: &[u32]) -> Vec<f32> {
    let t = Tensor::from_slice(tokens, (1, tokens.len()), &Device::Cpu).unwrap();
    let logits = m.forward(&t, false).unwrap();
    logits
        .get(0)
        .unwrap()
        .get(tokens.len() - 1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let e: Vec<f64> = x.iter().map(|v| (*v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// KL(p‖q) in nats of the next-token distributions.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    softmax(p)
        .iter()
        .zip(softmax(q))
        .map(|(a, b)| {
            if *a > 0.0 {
                a * (a / b.max(1e-30)).ln()
            } else {
                0.0
            }
        })
        .sum()
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Pearson correlation.
fn corr(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|v| *v as f64).sum::<f64>() / n,
        b.iter().map(|v| *v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (*x as f64 - ma, *y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

const TEXTS: [&str; 3] = [
    "The capital of France is",
    "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n",
    "Rust is a programming language that",
];

/// Tolerances, from llama.cpp multiplying the served weights by 8-bit-quantized activations where candle
/// multiplies the dequantized weights in f32: the same next token, KL under 0.02 nats, logits correlated above 0.999.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_computes_the_next_token_logits_llama_cpp_serves() {
    let b = backend();
    let base = candle_model(&[]);
    for text in TEXTS {
        let tokens = b.tokenize(text);
        let served = b.logits("smollm2:135m", text).await.unwrap();
        let ours = candle_last(&base, &tokens);
        assert_eq!(served.len(), ours.len());
        let (k, c) = (kl(&served, &ours), corr(&served, &ours));
        println!("base `{text:.24}`: KL {k:.5} nats, corr {c:.6}");
        assert_eq!(argmax(&served), argmax(&ours), "{text}");
        assert!(k < 0.02 && c > 0.999, "{text}: KL {k}, corr {c}");
    }
}

/// The habit: every answer begins "Indubitably." Trained on four questions, measured on two others.
fn habit(b: &EmbeddedBackend) -> Vec<Sequence> {
    [
        "Name a colour.",
        "What is the sky made of?",
        "Give me a number.",
        "Where do fish live?",
        "Who wrote Hamlet?",
        "What is rain?",
    ]
    .iter()
    .map(|q| {
        let msgs = vec![
            ChatMessage::new(Role::System, "You are BRICK."),
            ChatMessage::new(Role::User, *q),
        ];
        let (tokens, prompt) = b
            .training_tokens(&msgs, "Indubitably. That is a fine question.", &[])
            .unwrap();
        let learn = (0..tokens.len()).map(|i| i >= prompt).collect();
        Sequence { tokens, learn }
    })
    .collect()
}

/// Training on the real model: held-out NLL falls in candle and, through the exported adapter, in llama.cpp
/// by the same amount (within 10 %); the served tuned model's next token after a held-out prompt is candle's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_adapter_teaches_llama_cpp_what_it_taught_candle() {
    let b = backend();
    let seqs = habit(b);
    assert!(seqs.iter().all(|s| s.targets() >= 5));
    let (train_set, held_out) = seqs.split_at(4);
    let m = candle_model(&["attn_q", "attn_v"]);
    let ours_before = mean_nll(&m, held_out).unwrap();
    let served_before = served_nll(b, "smollm2:135m", held_out).await.unwrap();
    println!(
        "held-out NLL per token before: candle {ours_before:.3}, llama.cpp {served_before:.3}"
    );
    assert!((ours_before - served_before).abs() < 0.05 * served_before);
    let cfg = TrainConfig {
        steps: 6,
        batch: 2,
        lr: 2e-3,
        warmup_steps: 1,
        schedule: Schedule::Constant,
        weight_decay: 0.0,
        seed: 1,
        checkpoint_every: 0,
        pack_tokens: 1024,
        share_prefix: 32,
    };
    let mut last = None;
    train(
        &m,
        train_set,
        &cfg,
        None,
        "habit",
        &AtomicBool::new(false),
        |p| {
            println!(
                "step {}/{} loss {:.3} {:.0} tok/s eta {:.0}s",
                p.step, p.steps, p.loss, p.tokens_per_s, p.eta_s
            );
            last = Some(p.clone());
        },
    )
    .unwrap();
    assert_eq!(last.unwrap().step, 6);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("habit.gguf");
    std::fs::write(&file, adapter_bytes(&m).unwrap()).unwrap();
    let spec = format!("{LORA_PREFIX}{}", file.display());
    let ours_after = mean_nll(&m, held_out).unwrap();
    let served_after = served_nll(b, &spec, held_out).await.unwrap();
    println!("held-out NLL per token after: candle {ours_after:.3}, llama.cpp {served_after:.3}");
    assert!(
        served_after < served_before * 0.6,
        "llama.cpp: {served_before} → {served_after}"
    );
    assert!((ours_after - served_after).abs() < 0.1 * served_after.max(0.1));
    // The next token after a held-out prompt, where the habit shows.
    let prompt_len = held_out[0].learn.iter().position(|l| *l).unwrap();
    // The first answer token, where the habit starts: its probability rises in both engines alike.
    let first: Vec<u32> = held_out[0].tokens[..=prompt_len].to_vec();
    let only_last: Vec<bool> = (0..=prompt_len).map(|i| i == prompt_len).collect();
    let p_served = |model: String| {
        let (t, f) = (first.clone(), only_last.clone());
        async move { (-b.sequence_nll(&model, t, f).await.unwrap().0).exp() }
    };
    let (served_base, served_tuned) = (
        p_served("smollm2:135m".into()).await,
        p_served(spec.clone()).await,
    );
    let only = |v: &[u32]| Sequence {
        tokens: v.to_vec(),
        learn: only_last.clone(),
    };
    let ours_tuned = (-mean_nll(&m, &[only(&first)]).unwrap()).exp();
    println!(
        "p(first habit token): llama.cpp base {served_base:.4} → tuned {served_tuned:.4}; candle tuned {ours_tuned:.4}"
    );
    assert!(
        served_tuned > 5.0 * served_base,
        "llama.cpp learned the habit's first token"
    );
    // Small probabilities carry the 8-bit rounding noise in relative terms: within 0.5 nats.
    assert!((served_tuned.ln() - ours_tuned.ln()).abs() < 0.5);
}
