//! The batched decoder and the prompt-prefix cache (issue 19) on the real SmolLM2-135M GGUF: the same requests
//! decoded one at a time with no prefix reuse and decoded together with prefix reuse give the same tokens
//! (greedy sampling), free text, grammar-constrained and adapter requests alike; each request's stream is its
//! own; a cancelled request frees its sequence at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use batos_actors::llm::embedded::{EmbeddedBackend, LORA_PREFIX};
use batos_actors::llm::{ChatMessage, ChatRequest, ChatResponse, LlmBackend, Role, Sampling};
use batos_actors::settings::{EmbeddedSettings, LoadedSettings};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    std::env::var("BATOS_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

fn python() -> String {
    std::env::var("BATOS_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/batos/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

/// The shipped settings with the batching and prefix cache parts set as given and batch invariance on.
fn backend(parallel: usize, prefix_cache: bool) -> EmbeddedBackend {
    let shipped = LoadedSettings::load(&repo().join("config/settings.toml")).unwrap();
    let s = EmbeddedSettings {
        model_path: model_path(),
        parallel,
        prefix_cache,
        batch_invariant: true,
        ..shipped.settings.llm.embedded
    };
    EmbeddedBackend::load(&s, "smollm2:135m").expect("model loads (scripts/setup.sh)")
}

/// A persona's principles: long enough (~250 tokens) that reusing them matters.
fn principles() -> String {
    "You are BRICK, a persona of BAT OS. Your principles: be truthful; say what you do not know; prefer \
     the plain word; show your reasoning in short steps; never invent a source; when a question is \
     ambiguous, name the readings and answer the likeliest; keep answers short unless asked for depth; \
     treat every user with patience; admit mistakes at once and correct them; respect the tools you are \
     given and use them only for their purpose; protect what the user tells you in confidence; "
        .repeat(3)
}

/// BRICK's shipped sampling (penalties, DRY, loop guard) made greedy.
fn greedy(max_tokens: u32) -> Sampling {
    let shipped = LoadedSettings::load(&repo().join("config/settings.toml")).unwrap();
    Sampling {
        temperature: 0.0,
        max_tokens,
        ..Sampling::for_persona(&shipped.settings, "BRICK")
    }
}

fn request(model: &str, question: &str, format: Option<serde_json::Value>) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![
            ChatMessage::new(Role::System, principles()),
            ChatMessage::new(Role::User, question),
        ],
        tools: vec![],
        format,
        sampling: greedy(40),
    }
}

fn make_adapter(dir: &Path) -> PathBuf {
    let adapter = dir.join("brick-lora.gguf");
    let out = Command::new(python())
        .arg(repo().join("tests/py/make_lora.py"))
        .arg(model_path())
        .arg(&adapter)
        .output()
        .expect("python with gguf (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    adapter
}

/// Free text, grammar-constrained and adapter requests, all opening with the same principles.
fn requests(adapter: &Path) -> Vec<ChatRequest> {
    let lora = format!("{LORA_PREFIX}{}", adapter.display());
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}, "sure": {"type": "boolean"}},
                        "required": ["answer", "sure"]});
    vec![
        request("smollm2:135m", "Name three colours.", None),
        request("smollm2:135m", "Why is the sky blue?", None),
        request(
            "smollm2:135m",
            "What is a lighthouse for?",
            Some(schema.clone()),
        ),
        request(&lora, "Say something about the sea.", None),
        request("smollm2:135m", "Write a haiku about rain.", None),
        request(&lora, "Is water wet?", Some(schema)),
        request("smollm2:135m", "Count from one to five.", None),
        request("smollm2:135m", "What do bees make?", None),
    ]
}

/// Runs every request at once, each with its own stream; returns the answers and what each stream carried.
async fn all_at_once(b: &EmbeddedBackend, reqs: &[ChatRequest]) -> Vec<(ChatResponse, String)> {
    staggered(b, reqs, &vec![0; reqs.len()]).await
}

/// Runs every request, request i sent `delays_ms[i]` after the start, each with its own stream.
async fn staggered(
    b: &EmbeddedBackend,
    reqs: &[ChatRequest],
    delays_ms: &[u64],
) -> Vec<(ChatResponse, String)> {
    let runs = reqs.iter().zip(delays_ms).map(|(r, d)| async move {
        tokio::time::sleep(std::time::Duration::from_millis(*d)).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let out = b.chat(r.clone(), Some(tx)).await.unwrap();
        let mut streamed = String::new();
        while let Ok(t) = rx.try_recv() {
            streamed.push_str(&t);
        }
        (out, streamed)
    });
    futures::future::join_all(runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batching_and_prefix_reuse_change_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = make_adapter(dir.path());
    let reqs = requests(&adapter);
    // One at a time, every prompt prefilled in full: the reference.
    let alone = backend(1, false);
    let mut reference = Vec::new();
    for r in &reqs {
        let out = alone.chat(r.clone(), None).await.unwrap();
        assert_eq!(out.cached_tokens, 0, "no prefix cache, nothing reused");
        reference.push(out);
    }
    drop(alone);
    let batched = backend(4, true);
    // The adapter loaded before the rounds: a load makes the decoder step aside and drop its prefix cache, and
    // one during round 0 (whenever its blocking thread got the CPU) left round 1 nothing to find (a CI run on a
    // loaded machine: "request 0: … (0 of 328)").
    let lora = reqs
        .iter()
        .find(|r| r.model.starts_with(LORA_PREFIX))
        .expect("a request through the adapter");
    batched.logits(&lora.model, "warm").await.unwrap();
    // Twice at once: the first round fills the prefix cache while it decodes, the second finds every prompt
    // there. Then twice more with the requests sent at staggered times (fixed, different each round): which
    // requests decode together, which cells earlier rounds left and where the cache puts new tokens all
    // change with timing, and the answers must not (issue 32: the identity held on an idle machine only).
    let stagger = |round: u64| -> Vec<u64> {
        (0..reqs.len() as u64)
            .map(|i| (i * 97 + round * 61) % 400)
            .collect()
    };
    for round in 0..4u64 {
        let got = if round < 2 {
            all_at_once(&batched, &reqs).await
        } else {
            staggered(&batched, &reqs, &stagger(round)).await
        };
        for (i, ((out, streamed), want)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(
                out.content, want.content,
                "round {round}, request {i} ({}): batched answer differs",
                reqs[i].messages[1].content
            );
            assert_eq!(out.finish, want.finish, "round {round}, request {i}");
            assert_eq!(out.prompt_tokens, want.prompt_tokens);
            if reqs[i].format.is_none() {
                assert_eq!(
                    streamed, &out.content,
                    "round {round}, request {i}: its stream is its own answer, whole"
                );
            }
        }
        let reused: u64 = got.iter().map(|(o, _)| o.cached_tokens).sum();
        if round == 1 {
            for (i, (out, _)) in got.iter().enumerate() {
                assert!(
                    out.cached_tokens + 1 >= out.prompt_tokens / 2,
                    "request {i}: the principles come from the cache the second time ({} of {})",
                    out.cached_tokens,
                    out.prompt_tokens
                );
            }
        }
        eprintln!("round {round}: {reused} prompt tokens reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_request_frees_its_sequence_at_once() {
    // One sequence: the second request can only run once the first has let go of it.
    let b = backend(1, true);
    let mut long = request(
        "smollm2:135m",
        "Tell a very long story about a storm.",
        None,
    );
    long.sampling = Sampling {
        max_tokens: 400,
        loop_ngram: 0,
        ..long.sampling
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut streamed = 0usize;
    {
        let call = b.chat(long, Some(tx));
        tokio::pin!(call);
        // Let it stream a few pieces, then drop it mid-answer (the caller goes away).
        loop {
            tokio::select! {
                _ = &mut call => panic!("400 tokens finished before the test could cancel"),
                Some(_) = rx.recv() => {
                    streamed += 1;
                    if streamed == 3 {
                        break;
                    }
                }
            }
        }
    }
    let short = b
        .chat(request("smollm2:135m", "Say hi.", None), None)
        .await
        .unwrap();
    assert!(!short.content.is_empty());
    while rx.try_recv().is_ok() {
        streamed += 1;
    }
    assert!(
        streamed < 40,
        "the cancelled request kept decoding ({streamed} pieces of 400) before the next could start"
    );
}

/// The gate's NLL (the trainer's measure, `sequence_nll`) shares the prefix cache with chat: a persona's
/// examples begin with its principles, so after the first only the rest is decoded. Scores are those of a
/// backend without the cache, and what the NLL decoded is there for a chat that begins the same way. (The
/// shipped settings: in batch-invariant mode an idle decoder may let every cell go between calls.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gates_nll_reuses_cached_prompts_and_scores_as_without_them() {
    let shipped = LoadedSettings::load(&repo().join("config/settings.toml")).unwrap();
    let with_cache = |prefix_cache: bool| {
        let s = EmbeddedSettings {
            model_path: model_path(),
            prefix_cache,
            ..shipped.settings.llm.embedded.clone()
        };
        EmbeddedBackend::load(&s, "smollm2:135m").expect("model loads (scripts/setup.sh)")
    };
    let (cold, warm) = (with_cache(false), with_cache(true));
    let model = "smollm2:135m";
    let mut seqs = Vec::new();
    for topic in ["tides", "bees", "glaciers"] {
        let msgs = vec![
            ChatMessage::new(Role::System, principles()),
            ChatMessage::new(Role::User, format!("How do {topic} work?")),
        ];
        let answer = format!("{topic} follow one principle, step by step, and the whole holds.");
        let (tokens, prompt) = warm.training_tokens(&msgs, &answer, &[]).unwrap();
        let learn: Vec<bool> = (0..tokens.len()).map(|k| k >= prompt).collect();
        seqs.push((tokens, learn));
    }
    // Twice over: the second pass finds every sequence's own prompt cached, the first the principles.
    let mut totals = (0.0, 0.0);
    for pass in 0..2 {
        for (i, (tokens, learn)) in seqs.iter().enumerate() {
            let (want, n) = cold
                .sequence_nll(model, tokens.clone(), learn.clone())
                .await
                .unwrap();
            let (got, m) = warm
                .sequence_nll(model, tokens.clone(), learn.clone())
                .await
                .unwrap();
            assert_eq!(n, m);
            assert!(n > 5, "the answer's tokens are scored");
            // Outside batch-invariant mode llama.cpp's kernels differ with a decode's size, so the rows decoded
            // after cached cells score a little differently (here up to 0.04 nats a token); wrong cells would
            // be off by nats a token.
            assert!(
                (want - got).abs() / (n as f64) < 0.1,
                "pass {pass}, sequence {i}: {got} nats with cached cells, {want} without"
            );
            totals.0 += want;
            totals.1 += got;
        }
    }
    assert!(
        (totals.0 - totals.1).abs() < 0.01 * totals.0,
        "the sets' NLL: {} without the cache, {} with it",
        totals.0,
        totals.1
    );
    // The NLL's prompts went into the cache: a chat with the same principles reuses them.
    let out = warm
        .chat(request(model, "Why is the sky blue?", None), None)
        .await
        .unwrap();
    assert!(
        out.cached_tokens + 1 >= out.prompt_tokens / 2,
        "the principles come from the cache ({} of {})",
        out.cached_tokens,
        out.prompt_tokens
    );
}
