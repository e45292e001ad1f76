//! The embedded llama.cpp backend against the real SmolLM2-135M GGUF (installed by scripts/setup.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use batos_actors::llm::embedded::{
    tool_choice_schema, verify_model_file, EmbeddedBackend, LORA_PREFIX,
};
use batos_actors::llm::{
    ChatMessage, ChatRequest, Finish, LlmBackend, Role, Sampling, ToolCall, ToolSpec,
};
use batos_actors::settings::EmbeddedSettings;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    std::env::var("BATOS_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

fn settings() -> EmbeddedSettings {
    let shipped =
        batos_actors::settings::LoadedSettings::load(&repo().join("config/settings.toml")).unwrap();
    EmbeddedSettings {
        model_path: model_path(),
        ..shipped.settings.llm.embedded
    }
}

/// One loaded model shared by every test in this file (loading is the slow part).
fn backend() -> &'static EmbeddedBackend {
    static B: OnceLock<EmbeddedBackend> = OnceLock::new();
    B.get_or_init(|| {
        assert!(
            model_path().exists(),
            "model missing at {}: run scripts/setup.sh",
            model_path().display()
        );
        EmbeddedBackend::load(&settings(), "smollm2:135m").expect("model loads")
    })
}

fn sampling(max_tokens: u32) -> Sampling {
    Sampling::plain(0.7, 0.9, 42, max_tokens)
}

fn req(prompt: &str, format: Option<Value>, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2:135m".into(),
        messages: vec![
            ChatMessage::new(Role::System, "You are a helpful assistant."),
            ChatMessage::new(Role::User, prompt),
        ],
        tools: vec![],
        format,
        sampling: sampling(max_tokens),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generates_text_and_streams_it() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let r = backend()
        .chat(req("Name three colours.", None, 48), Some(tx))
        .await
        .unwrap();
    assert!(!r.content.trim().is_empty());
    assert!(r.completion_tokens > 0 && r.prompt_tokens > 0);
    let mut streamed = String::new();
    while let Ok(t) = rx.try_recv() {
        streamed.push_str(&t);
    }
    assert_eq!(streamed, r.content);
}

fn check(schema: &Value, v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("not an object")?;
    for k in schema["required"].as_array().unwrap() {
        let k = k.as_str().unwrap();
        let val = obj.get(k).ok_or(format!("missing {k}"))?;
        let prop = &schema["properties"][k];
        let ok = match prop["type"].as_str() {
            Some("string") => val.as_str().is_some_and(|s| {
                prop["enum"].as_array().is_none_or(|e| e.contains(val))
                    && prop["maxLength"]
                        .as_u64()
                        .is_none_or(|m| s.chars().count() as u64 <= m)
            }),
            Some("number") => val.as_f64().is_some_and(|x| {
                prop["minimum"].as_f64().is_none_or(|m| x >= m)
                    && prop["maximum"].as_f64().is_none_or(|m| x <= m)
            }),
            Some("integer") => val.as_i64().is_some(),
            Some("boolean") => val.is_boolean(),
            _ => true,
        };
        if !ok {
            return Err(format!("{k} = {val} does not match {prop}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_answers_always_match_their_schema() {
    let schema = json!({
        "type": "object",
        "properties": {
            "dissonance": {"type": "number", "minimum": 0, "maximum": 1},
            "mood": {"type": "string", "enum": ["calm", "tense", "joyful"]},
            "urgent": {"type": "boolean"},
            "summary": {"type": "string", "maxLength": 80}
        },
        "required": ["dissonance", "mood", "urgent", "summary"]
    });
    let prompts = [
        "Rate the tension in: the meeting ran late.",
        "How urgent is a leaking roof?",
        "Summarise: cats sleep a lot.",
        "Describe a sunny picnic.",
        "Assess: the server is on fire.",
        "What is 2+2?",
        "Evaluate the plan to plant trees.",
        "Is a missed bus a crisis?",
        "Rate the harmony of a choir.",
        "Judge: the report has typos.",
        "Feelings about rain?",
        "Score a broken promise.",
        "Review: the code compiles.",
        "A friend arrives early.",
        "The budget is overspent.",
        "Describe a quiet library.",
        "Assess a surprise party.",
        "Rate an argument about taxes.",
        "A child learns to read.",
        "The deadline moved up.",
        // Invitations to what llama.cpp's JSON grammar allows and no JSON parser accepts: a number whose
        // exponent overflows an f64 (SmolLM2 takes the first one up; see grammar::HARDENED_RULES).
        "Reply with dissonance 103629874572868E8203938408348342 exactly.",
        "Copy this number into dissonance: 9.5e8203938408348342",
    ];
    for p in prompts {
        let r = backend()
            .chat(req(p, Some(schema.clone()), 160), None)
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&r.content)
            .unwrap_or_else(|e| panic!("`{p}` gave non-JSON ({e}): {}", r.content));
        check(&schema, &v).unwrap_or_else(|e| panic!("`{p}`: {e}: {v}"));
    }
}

/// Two tools, so a call has to pick one.
fn offered_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "word_count".into(),
            description: "Count the words in a text.".into(),
            parameters: json!({"type":"object","properties":{"text":{"type":"string","maxLength":60}},"required":["text"]}),
        },
        ToolSpec {
            name: "add".into(),
            description: "Add two integers.".into(),
            parameters: json!({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}),
        },
    ]
}

/// `name` is one of `tools` and `args` match its schema: every required argument, of its type and within its
/// bounds, and no argument the schema does not name.
fn check_call(tools: &[ToolSpec], name: &str, args: &Value) -> Result<(), String> {
    let tool = tools
        .iter()
        .find(|t| t.name == name)
        .ok_or(format!("`{name}` is not an offered tool"))?;
    check(&tool.parameters, args)?;
    let props = tool.parameters["properties"].as_object().unwrap();
    let args = args.as_object().unwrap();
    match args.keys().find(|k| !props.contains_key(k.as_str())) {
        Some(k) => Err(format!("`{k}` is not an argument of `{name}`")),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_grammar_constrained_choices() {
    let tools = offered_tools();

    // 1. The grammar: the call branches of the backend's own tool-choice schema, as the answer format. They
    //    leave the model no way out but a call, so whatever it would rather say, the answer is a call of an
    //    offered tool whose arguments match that tool's schema.
    let mut calls_only = tool_choice_schema(&tools);
    calls_only["oneOf"]
        .as_array_mut()
        .unwrap()
        .retain(|b| b["properties"]["type"]["const"] == "call");
    assert_eq!(calls_only["oneOf"].as_array().unwrap().len(), tools.len());
    for p in ["Say hello.", "How many words are in 'the quick brown fox'?"] {
        let out = backend()
            .chat(req(p, Some(calls_only.clone()), 96), None)
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&out.content)
            .unwrap_or_else(|e| panic!("`{p}` gave non-JSON ({e}): {}", out.content));
        assert_eq!(v["type"], "call", "`{p}`: {v}");
        let name = v["tool"].as_str().unwrap_or_default();
        check_call(&tools, name, &v["arguments"]).unwrap_or_else(|e| panic!("`{p}`: {e}: {v}"));
    }

    // 2. The tool path itself (`ChatRequest.tools` in, `ChatResponse.tool_calls` out). The backend always offers
    //    "answer" beside the tools and a request has no way to force a call, so the conversation does: six
    //    earlier questions of the same two shapes were each answered by a call, and sampling is greedy, so the
    //    pinned model's choice is fixed. (A numpy replay of SmolLM2-135M-Instruct Q4_1 under this grammar
    //    picks "call" over "answer" by 3.6 and 5.5 logits here.) Anything but exactly one call of an offered
    //    tool with schema-valid arguments fails.
    let system = ChatMessage::new(Role::System, "You are a helpful assistant.");
    let mut shots = vec![system];
    for (q, name, args) in [
        (
            "How many words are in 'red green blue'?",
            "word_count",
            json!({"text": "red green blue"}),
        ),
        ("What is 2 plus 5?", "add", json!({"a": 2, "b": 5})),
        (
            "How many words are in 'one two'?",
            "word_count",
            json!({"text": "one two"}),
        ),
        ("What is 40 plus 9?", "add", json!({"a": 40, "b": 9})),
        (
            "How many words are in 'cats sleep a lot'?",
            "word_count",
            json!({"text": "cats sleep a lot"}),
        ),
        ("What is 7 plus 8?", "add", json!({"a": 7, "b": 8})),
    ] {
        shots.push(ChatMessage::new(Role::User, q));
        shots.push(ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall {
                name: name.into(),
                arguments: args,
            }],
        });
    }
    for p in [
        "How many words are in 'the quick brown fox'?",
        "What is 12 plus 30?",
    ] {
        let mut messages = shots.clone();
        messages.push(ChatMessage::new(Role::User, p));
        let r = ChatRequest {
            model: "smollm2:135m".into(),
            messages,
            tools: tools.clone(),
            format: None,
            sampling: Sampling {
                temperature: 0.0,
                ..sampling(96)
            },
        };
        let out = backend().chat(r, None).await.unwrap();
        assert_eq!(
            out.tool_calls.len(),
            1,
            "`{p}` was not answered by one tool call: {:?} / {:?}",
            out.tool_calls,
            out.content
        );
        assert!(
            out.content.is_empty(),
            "`{p}`: a call and text: {:?}",
            out.content
        );
        let call = &out.tool_calls[0];
        check_call(&tools, &call.name, &call.arguments)
            .unwrap_or_else(|e| panic!("`{p}`: {e}: {call:?}"));
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_have_the_model_dimension_and_rank_similarity() {
    let texts = vec![
        "The cat sat on the warm windowsill.".to_string(),
        "A kitten was sleeping on the sunny window ledge.".to_string(),
        "Quarterly tax filings are due to the revenue office.".to_string(),
    ];
    let v = backend().embed("smollm2:135m", &texts).await.unwrap();
    assert_eq!(v.len(), 3);
    assert!(
        v.iter().all(|e| e.len() == backend().n_embd()),
        "dimension {}",
        v[0].len()
    );
    assert_eq!(backend().n_embd(), 576);
    let similar = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!(
        similar > unrelated,
        "similar {similar} vs unrelated {unrelated}"
    );
}

fn python() -> String {
    std::env::var("BATOS_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/batos/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lora_adapter_changes_the_logits_and_serves_chat() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("brick-lora.gguf");
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
    let b = backend();
    let text = "The capital of France is";
    let base = b.logits("smollm2:135m", text).await.unwrap();
    let spec = format!("{LORA_PREFIX}{}", adapter.display());
    let tuned = b.logits(&spec, text).await.unwrap();
    let again = b.logits("smollm2:135m", text).await.unwrap();
    assert_eq!(base.len(), tuned.len());
    let diff: f32 = base
        .iter()
        .zip(&tuned)
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        / base.len() as f32;
    assert!(
        diff > 1e-3,
        "adapter must change the logits (mean abs diff {diff})"
    );
    assert_eq!(base, again, "removing the adapter restores the base model");
    // A named model made from base + adapter serves chat.
    b.create_model(&batos_actors::llm::ModelSpec {
        name: "brick:tuned".into(),
        base: "smollm2:135m".into(),
        adapter: Some(adapter.clone()),
    })
    .await
    .unwrap();
    let mut r = req("Say one word.", None, 8);
    r.model = "brick:tuned".into();
    b.chat(r, None).await.unwrap();
    let mut r = req("x", None, 8);
    r.model = "nobody:1b".into();
    let e = b.chat(r, None).await.unwrap_err().to_string();
    assert!(e.contains("nobody:1b"), "{e}");
}

#[test]
fn missing_or_corrupt_model_files_are_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.gguf");
    let e = verify_model_file(&missing, "").unwrap_err().to_string();
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("scripts/fetch-model.sh"),
        "{e}"
    );
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    assert!(verify_model_file(&junk, "")
        .unwrap_err()
        .to_string()
        .contains("not a GGUF"));
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"GGUF and then garbage").unwrap();
    let e = verify_model_file(&fake, "00").unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
    let e = EmbeddedBackend::load(
        &EmbeddedSettings {
            model_path: fake.clone(),
            model_sha256: String::new(),
            ..settings()
        },
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&fake.display().to_string()) && e.contains("scripts/fetch-model.sh"),
        "{e}"
    );
}

/// The loop guard on the real model: asked for a poem of one repeated line, greedy SmolLM2 falls into a loop
/// (the same line over and over to its budget) without the guard; with it the answer ends (`loop`)
/// holding no 6-word sequence more than twice, and the stream carried exactly the final text (nothing that
/// was cut afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_guard_ends_a_repeating_answer_and_streams_only_what_stays() {
    let prompt =
        "Write a very long poem where every line is 'I love the sea and the sea loves me'.";
    let plain = Sampling::plain(0.0, 1.0, 42, 200);
    let unguarded = backend().chat(req_with(prompt, plain), None).await.unwrap();
    assert_eq!(
        unguarded.finish,
        Finish::Length,
        "without the guard the model loops to its budget: {}",
        unguarded.content
    );
    let guarded = Sampling {
        loop_ngram: 6,
        loop_max_repeats: 2,
        ..plain
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = backend()
        .chat(req_with(prompt, guarded), Some(tx))
        .await
        .unwrap();
    assert_eq!(out.finish, Finish::Loop, "{}", out.content);
    assert!(out.completion_tokens < unguarded.completion_tokens);
    let mut streamed = String::new();
    while let Ok(p) = rx.try_recv() {
        streamed.push_str(&p);
    }
    assert_eq!(streamed, out.content);
    assert!(
        most_repeated_6gram(&unguarded.content) > 2,
        "{}",
        unguarded.content
    );
    assert!(most_repeated_6gram(&out.content) <= 2, "{}", out.content);
}

/// How often the most frequent 6-word sequence occurs (case and punctuation ignored, as the guard counts).
fn most_repeated_6gram(text: &str) -> usize {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts = std::collections::HashMap::new();
    for w in words.windows(6) {
        *counts.entry(w.join(" ")).or_insert(0usize) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

fn req_with(prompt: &str, sampling: Sampling) -> ChatRequest {
    ChatRequest {
        sampling,
        ..req(prompt, None, sampling.max_tokens)
    }
}

/// The shipped settings serve the `Q4_1` model from its 8-bit copy: the copy sits beside the model, and it is
/// the same model — on every prompt the next token it ranks first is the one the `Q4_1` file ranks first, and
/// its logits stay within 3 % of their spread (1.3 % measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_8_bit_copy_is_served_and_is_the_same_model() {
    let b = backend();
    let copy = b.serving_path().to_path_buf();
    assert_ne!(copy, model_path());
    assert!(
        copy.to_string_lossy().ends_with(".q8_0.gguf") && copy.parent() == model_path().parent(),
        "{}",
        copy.display()
    );
    let plain = EmbeddedBackend::load(
        &EmbeddedSettings {
            serve_weights: batos_actors::settings::ServeWeights::AsIs,
            ..settings()
        },
        "smollm2:135m",
    )
    .unwrap();
    assert_eq!(plain.serving_path(), model_path());
    for text in [
        "The capital of France is",
        "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
        "fn main() { println!(\"hello",
    ] {
        let q8 = b.logits("smollm2:135m", text).await.unwrap();
        let q4 = plain.logits("smollm2:135m", text).await.unwrap();
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        assert_eq!(argmax(&q8), argmax(&q4), "{text:?}");
        let spread =
            q4.iter().fold(f32::MIN, |a, &x| a.max(x)) - q4.iter().fold(f32::MAX, |a, &x| a.min(x));
        let mean_diff =
            q8.iter().zip(&q4).map(|(x, y)| (x - y).abs()).sum::<f32>() / q4.len() as f32;
        println!("{text:?}: mean |Δlogit| {mean_diff:.4} of a spread of {spread:.2}");
        assert!(
            mean_diff < spread * 0.03,
            "{text:?}: mean |Δlogit| {mean_diff} vs spread {spread}"
        );
    }
}

/// The decoder builds a DRY sampler once per parameter set (the build walks the whole vocabulary, ~9 ms on the
/// inference thread) and clones it for later requests: a clone samples exactly as the fresh build did — and
/// DRY does change this answer, so the comparison means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_dry_sampler_samples_as_a_fresh_one() {
    // Its own backend, so the first request here is the one that builds the sampler; no prefix reuse, so the
    // two requests run the same kernels.
    let b = EmbeddedBackend::load(
        &EmbeddedSettings {
            parallel: 1,
            prefix_cache: false,
            ..settings()
        },
        "smollm2:135m",
    )
    .unwrap();
    let prompt =
        "Write a very long poem where every line is 'I love the sea and the sea loves me'.";
    let plain = Sampling::plain(0.0, 1.0, 42, 120);
    let dry = Sampling {
        dry_multiplier: 0.8,
        dry_base: 1.75,
        dry_allowed_length: 2,
        repeat_last_n: 64,
        ..plain
    };
    let built = b.chat(req_with(prompt, dry), None).await.unwrap().content;
    let cloned = b.chat(req_with(prompt, dry), None).await.unwrap().content;
    assert_eq!(built, cloned);
    let without = b.chat(req_with(prompt, plain), None).await.unwrap().content;
    assert_ne!(built, without, "DRY must shape this answer: {without}");
}
