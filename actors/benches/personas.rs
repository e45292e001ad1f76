//! Persona registry benchmarks (issue 3), in one run:
//! - a message routed through the persona registry (`Personas::state`: ArcSwap load + handle lookup + call)
//!   vs a bare ractor call to the same actor (`call_t!` on an `ActorRef` held by the caller);
//! - swap latency: `swap_model` from call to return (new actor spawned, stored in the registry, old one
//!   detached to drain), after which the next lookup routes to the new model.
//!
//! `cargo bench --workspace --bench personas`
//!
//! The personas never think here: their backend is [`AnyModel`], a test double of an LLM service that has every
//! model (a swap asks the backend first) and answers no chat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ractor::Actor;

use batos_actors::codex::Codex;
use batos_actors::events::EventHub;
use batos_actors::llm::{
    BackendKind, ChatRequest, ChatResponse, LlmBackend, LlmError, ModelSpec, Sampling,
    SamplingTable, TokenSink,
};
use batos_actors::personas::{Personas, ProtoMsg, SUPERVISOR_NAME};
use batos_actors::supervisor::{Strategy, Supervisor, SupervisorArgs, SupervisorConfig};

/// Test double of an LLM service: every model exists, no model ever answers.
#[derive(Debug)]
struct AnyModel;

#[async_trait::async_trait]
impl LlmBackend for AnyModel {
    fn kind(&self) -> BackendKind {
        BackendKind::Ollama
    }
    fn location(&self) -> String {
        "bench double".into()
    }
    async fn chat(&self, _: ChatRequest, _: Option<TokenSink>) -> Result<ChatResponse, LlmError> {
        Err(LlmError::Backend("the bench double does not chat".into()))
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let codex_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/codex.toml");
    let codex = Codex::load(std::path::Path::new(codex_path)).expect("codex.toml");
    let models: BTreeMap<String, String> = batos_actors::PERSONAS
        .iter()
        .map(|p| (p.to_string(), "m:a".to_string()))
        .collect();
    let hub = EventHub::new(1 << 16);
    let backend = Arc::new(AnyModel);
    let personas = Personas::new(
        &codex,
        &models,
        backend,
        SamplingTable::uniform(Sampling::plain(0.7, 0.9, 1, 16)),
        hub.clone(),
        None,
        Duration::from_secs(5),
    )
    .expect("personas");
    let (_sup, _h) = rt.block_on(async {
        Supervisor::spawn(
            Some(SUPERVISOR_NAME.into()),
            Supervisor,
            SupervisorArgs {
                config: SupervisorConfig {
                    path: "root/personas".into(),
                    name: Some(SUPERVISOR_NAME.into()),
                    strategy: Strategy::OneForOne,
                    intensity: 3,
                    period: Duration::from_secs(5),
                    shutdown_timeout: Duration::from_secs(5),
                    restart_backoff: Duration::from_millis(200),
                    hub: hub.clone(),
                },
                children: personas.child_specs(),
            },
        )
        .await
        .expect("supervisor")
    });
    rt.block_on(async {
        while personas.current("BRICK").is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let mut g = c.benchmark_group("persona_message");
    let bare = personas
        .current("BRICK")
        .expect("BRICK")
        .raw_actor()
        .clone();
    g.bench_function("bare_ractor_call", |b| {
        b.iter(|| {
            rt.block_on(async { ractor::call_t!(bare, ProtoMsg::GetState, 5000).expect("state") })
        })
    });
    g.bench_function("through_registry", |b| {
        b.iter(|| rt.block_on(personas.state("BRICK")).expect("state"))
    });
    g.finish();

    let mut g = c.benchmark_group("swap");
    let mut n = 0u64;
    g.bench_function("swap_model_until_routed", |b| {
        b.iter(|| {
            n += 1;
            let model = if n.is_multiple_of(2) { "m:a" } else { "m:b" };
            rt.block_on(personas.swap_model("BRICK", model))
                .expect("swap");
            // The very next lookup must route to the new model.
            assert_eq!(personas.current("BRICK").expect("BRICK").model, model);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
