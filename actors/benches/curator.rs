//! Curator benchmark (issue 14), a bench binary:
//! - dedupe cost with `BATOS_BENCH_EXAMPLES` (default 100,000) examples kept: time to prepare a new
//!   example (normalise, hash, MinHash signature) and check it against the index (exact + LSH candidates),
//!   p50/p95 over 1,000 new examples, half of them near duplicates of kept ones; and the index build rate;
//! - curation throughput through the real Curator actor (filters, dedupe, judge job, files with fsync),
//!   exchanges decided per second, with the judge served by a test double of an LLM service that answers at
//!   once (the pipeline's own overhead) and, when the model file is present, by the embedded SmolLM2 model.
//!
//! `cargo bench --workspace --bench curator` (under `cargo test` it runs a small smoke form).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ractor::Actor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use batos_actors::codex::Codex;
use batos_actors::curator::dedupe::{DedupeIndex, NearParams, Verdict};
use batos_actors::curator::{CuratorActor, CuratorArgs, CuratorMsg};
use batos_actors::events::EventHub;
use batos_actors::llm::embedded::EmbeddedBackend;
use batos_actors::llm::{
    BackendKind, ChatMessage, ChatRequest, ChatResponse, Finish, LlmBackend, LlmError, ModelSpec,
    Role, SamplingTable, TokenSink,
};
use batos_actors::personas::Personas;
use batos_actors::ports::{Exchange, Node, TaskState, TaskStatus};
use batos_actors::settings::{LoadedSettings, Settings};
use batos_actors::supervisor::{Strategy, Supervisor, SupervisorArgs, SupervisorConfig};

/// Test double of an LLM service for the judge: always `{"score": 4}`, at once.
#[derive(Debug)]
struct InstantJudge;

#[async_trait::async_trait]
impl LlmBackend for InstantJudge {
    fn kind(&self) -> BackendKind {
        BackendKind::Ollama
    }
    fn location(&self) -> String {
        "bench double".into()
    }
    async fn chat(&self, _: ChatRequest, _: Option<TokenSink>) -> Result<ChatResponse, LlmError> {
        Ok(ChatResponse {
            content: r#"{"score": 4, "reason": "fine"}"#.into(),
            ..Default::default()
        })
    }
    async fn embed(&self, _: &str, _: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        Err(LlmError::Backend("the bench double does not embed".into()))
    }
    async fn create_model(&self, _: &ModelSpec) -> Result<(), LlmError> {
        Ok(())
    }
    async fn health(&self) -> Result<(), LlmError> {
        Ok(())
    }
    async fn check_model(&self, _: &str) -> Result<(), LlmError> {
        Ok(())
    }
}

const WORDS: &[&str] = &[
    "moth",
    "lantern",
    "light",
    "angle",
    "spiral",
    "night",
    "course",
    "distant",
    "near",
    "steer",
    "fly",
    "sky",
    "blue",
    "scatter",
    "wave",
    "short",
    "long",
    "red",
    "sun",
    "air",
    "cat",
    "purr",
    "larynx",
    "muscle",
    "breath",
    "sea",
    "salt",
    "river",
    "rock",
    "mineral",
    "bread",
    "yeast",
    "sugar",
    "gas",
    "dough",
    "warm",
    "kitchen",
    "tool",
    "sandbox",
    "python",
    "answer",
    "question",
    "reason",
    "because",
    "therefore",
    "first",
    "then",
    "finally",
    "each",
    "every",
    "some",
    "many",
    "few",
    "the",
    "a",
    "of",
];

fn text(rng: &mut StdRng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
        + &format!(" {}", rng.random::<u32>())
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn settings(repo: &std::path::Path) -> Settings {
    LoadedSettings::load(&repo.join("config/settings.toml"))
        .expect("config/settings.toml")
        .settings
}

fn dedupe_bench(s: &Settings, n: usize) {
    let c = &s.curator;
    let params = NearParams {
        shingle_words: c.shingle_words,
        hashes: c.minhash_hashes,
        bands: c.lsh_bands,
        threshold: c.near_duplicate,
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut ix = DedupeIndex::new(params);
    let kept: Vec<String> = (0..n).map(|_| text(&mut rng, 60)).collect();
    let t = Instant::now();
    for (i, k) in kept.iter().enumerate() {
        let p = ix.prepare(k);
        ix.insert(&format!("k{i}"), p);
    }
    let build = t.elapsed().as_secs_f64();
    let (mut check, mut insert, mut near) = (Vec::new(), Vec::new(), 0);
    for i in 0..1000 {
        // Half are kept texts with two words changed (near duplicates), half new.
        let probe = if i % 2 == 0 {
            let mut w: Vec<&str> = kept[rng.random_range(0..n)].split(' ').collect();
            w[3] = "changed";
            w[40] = "edited";
            w.join(" ")
        } else {
            text(&mut rng, 60)
        };
        let t = Instant::now();
        let p = ix.prepare(&probe);
        let v = ix.check(&p);
        check.push(t.elapsed().as_secs_f64() * 1000.0);
        if matches!(v, Verdict::Near(..)) {
            near += 1;
        }
        let t = Instant::now();
        ix.insert(&format!("new{i}"), p);
        insert.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "dedupe at {n} kept examples (60 words each): index build {:.0} examples/s; prepare+check p50 {:.3} ms, p95 {:.3} ms; insert p50 {:.3} ms; near duplicates found {near}/500",
        n as f64 / build,
        pct(check.clone(), 0.5),
        pct(check, 0.95),
        pct(insert, 0.5),
    );
}

fn task(i: usize, rng: &mut StdRng) -> TaskState {
    let mut t = TaskState::new(
        format!("{i:032x}"),
        format!("Question {i}: {}", text(rng, 8)),
    );
    t.status = TaskStatus::Done;
    t.dissonance = Some(0.1);
    for (step, node, persona) in [(2, Node::Draft, "BRICK"), (4, Node::Synthesize, "ALFRED")] {
        t.exchanges.push(Exchange {
            step,
            node,
            persona: persona.into(),
            model: "m".into(),
            generation: 1,
            messages: vec![
                ChatMessage::new(Role::System, format!("You are {persona}.")),
                ChatMessage::new(Role::User, format!("Task from the Architect:\n{}", t.text)),
            ],
            answer: text(rng, 40),
            finish: Finish::Stop,
            tools: Vec::new(),
        });
    }
    t
}

async fn throughput(repo: &std::path::Path, backend: Arc<dyn LlmBackend>, tasks: usize) -> f64 {
    let mut s = settings(repo);
    s.curator.idle_poll_ms = 5;
    s.curator.nodes = vec!["draft".into(), "synthesize".into()];
    let live = Arc::new(ArcSwap::from_pointee(s));
    let codex = Codex::load(&repo.join("config/codex.toml")).unwrap();
    let hub = EventHub::new(65536);
    let models = batos_actors::PERSONAS
        .iter()
        .map(|p| (p.to_string(), "smollm2:135m".to_string()))
        .collect();
    let personas = Personas::new(
        &codex,
        &models,
        backend,
        SamplingTable::from_settings(&live.load()),
        hub.clone(),
        None,
        Duration::from_secs(120),
    )
    .unwrap();
    let (_sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: SupervisorConfig {
                path: "root/personas".into(),
                name: None,
                strategy: Strategy::OneForOne,
                intensity: 10,
                period: Duration::from_secs(5),
                shutdown_timeout: Duration::from_secs(2),
                restart_backoff: Duration::from_millis(50),
                hub: hub.clone(),
            },
            children: personas.child_specs(),
        },
    )
    .await
    .unwrap();
    while batos_actors::PERSONAS
        .iter()
        .any(|p| personas.current(p).is_err())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = CuratorArgs {
        dir: dir.path().join("curator"),
        settings: live,
        personas,
        hub,
        trainer: None,
    };
    let (curator, _) = Actor::spawn(None, CuratorActor, args).await.unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let all: Vec<TaskState> = (0..tasks).map(|i| task(i, &mut rng)).collect();
    let t = Instant::now();
    for task in all {
        ractor::call!(curator, CuratorMsg::Curate, Box::new(task))
            .unwrap()
            .unwrap();
    }
    loop {
        let s = ractor::call!(curator, CuratorMsg::Stats).unwrap();
        if s.queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = (tasks * 2) as f64 / t.elapsed().as_secs_f64();
    curator.stop(None);
    rate
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BATOS_BENCH_EXAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let s = settings(&repo);
    dedupe_bench(&s, n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tasks = if full { 200 } else { 5 };
    let rate = rt.block_on(throughput(&repo, Arc::new(InstantJudge), tasks));
    println!(
        "curation, judge by the double: {rate:.1} exchanges/s ({} exchanges)",
        tasks * 2
    );
    let model = std::env::var("BATOS_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| s.llm.embedded.model_path.clone());
    if full && model.exists() {
        let e = batos_actors::settings::EmbeddedSettings {
            model_path: model,
            ..s.llm.embedded.clone()
        };
        let backend = EmbeddedBackend::load(&e, "smollm2:135m").expect("model loads");
        let tasks = 5;
        let rate = rt.block_on(throughput(&repo, Arc::new(backend), tasks));
        println!(
            "curation, judge by the embedded model: {rate:.2} exchanges/s ({} exchanges)",
            tasks * 2
        );
    }
}
