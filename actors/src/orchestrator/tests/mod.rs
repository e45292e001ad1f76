//! Unit tests of the orchestrator actor, its supervised task runs, and the cognitive atomic swap, on real
//! actors (a personas supervisor, Proto actors, the orchestrator) with the model served by
//! [`ScriptedModel`], a test double of an LLM service that answers each graph node's schema.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ask::AskError;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use ractor::{Actor, ActorRef};
use serde_json::json;

use super::*;
use crate::events::{Event, EventHub};
use crate::llm::{
    BackendKind, ChatRequest, ChatResponse, LlmBackend, LlmError, ModelSpec, Sampling,
    SamplingTable, TokenSink,
};
use crate::personas::{PersonaError, SUPERVISOR_NAME};
use crate::ports::{ModelRecorder, RecordFailed};
use crate::principles::Codex;
use crate::supervisor::{Strategy, Supervisor, SupervisorArgs, SupervisorConfig, SupervisorMsg};

/// The personas supervisor is registered under its global name (swaps find it by name), so the tests that
/// start one take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Test double of an LLM service: routing says "no research", critiques say "dissonance 0.1", anything else
/// is a short text naming the model, so a test can see which model served which step.
#[derive(Debug, Default)]
struct ScriptedModel {
    /// How long BRICK's drafting calls (the ones offered tools) take.
    draft_delay: Duration,
    /// The sampler seed of every call, in the order they came.
    seeds: Arc<std::sync::Mutex<Vec<i32>>>,
    /// Drafting calls (the ones offered tools) begun.
    drafts: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl LlmBackend for ScriptedModel {
    fn kind(&self) -> BackendKind {
        BackendKind::Ollama
    }

    fn location(&self) -> String {
        "scripted".into()
    }

    async fn chat(
        &self,
        req: ChatRequest,
        _tokens: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        self.seeds.lock().unwrap().push(req.sampling.seed);
        if !req.tools.is_empty() {
            self.drafts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.draft_delay).await;
        }
        let props = req
            .format
            .as_ref()
            .and_then(|f| f.get("properties"))
            .and_then(|p| p.as_object());
        // A grammar-held choice (the direct path's contracts): the first value allowed.
        if let Some(first) = req
            .format
            .as_ref()
            .and_then(|f| f.get("enum"))
            .and_then(|e| e.get(0))
        {
            return Ok(ChatResponse {
                content: first.to_string(),
                ..Default::default()
            });
        }
        let content = match props {
            Some(p) if p.contains_key("needs_research") => {
                json!({"needs_research": false, "plan": "answer plainly"}).to_string()
            }
            Some(p) if p.contains_key("dissonance") => {
                json!({"dissonance": 0.1, "critique": "sound"}).to_string()
            }
            _ => format!("answer from {}", req.model),
        };
        Ok(ChatResponse {
            content,
            ..Default::default()
        })
    }

    async fn embed(&self, _model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        Ok(inputs.iter().map(|_| vec![1.0; 4]).collect())
    }

    async fn create_model(&self, _spec: &ModelSpec) -> Result<(), LlmError> {
        Ok(())
    }

    async fn health(&self) -> Result<(), LlmError> {
        Ok(())
    }

    /// Every model exists except those named `missing:*`.
    async fn check_model(&self, model: &str) -> Result<(), LlmError> {
        match model.starts_with("missing:") {
            true => Err(LlmError::ModelNotFound {
                model: model.into(),
                detail: "not pulled".into(),
            }),
            false => Ok(()),
        }
    }
}

/// A memory port whose `retrieve` panics the first `panics` times: a step that panics inside a task's run.
struct PanickingMemory {
    panics: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl MemoryHook for PanickingMemory {
    async fn retrieve(&self, _query: &str) -> Result<Vec<String>, PortError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.panics {
            panic!("memory port exploded mid-step");
        }
        Ok(Vec::new())
    }

    async fn ingest(&self, _task: &TaskState) -> Result<(), PortError> {
        Ok(())
    }
}

/// Records what a swap asks to persist, like the codex organ would.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

#[async_trait]
impl ModelRecorder for Recorder {
    async fn record_model(&self, persona: &str, model: &str) -> Result<(), RecordFailed> {
        self.0
            .lock()
            .unwrap()
            .push((persona.to_string(), model.to_string()));
        Ok(())
    }
}

struct Rig {
    hub: Arc<EventHub>,
    personas: Arc<Personas>,
    orch: ActorRef<OrchestratorMsg>,
    sup: ActorRef<SupervisorMsg>,
    store: CheckpointStore,
    dir: tempfile::TempDir,
    cog: Arc<Cognition>,
    /// The scripted model's record of sampler seeds.
    seeds: Arc<std::sync::Mutex<Vec<i32>>>,
    /// The scripted model's count of drafting calls begun.
    drafts: Arc<std::sync::atomic::AtomicUsize>,
}

impl Rig {
    /// Changes the live `[orchestrator]` settings, as a settings reload would.
    fn orchestrator(&self, change: impl FnOnce(&mut crate::settings::OrchestratorSettings)) {
        let mut s = (**self.cog.settings.load()).clone();
        change(&mut s.orchestrator);
        self.cog.settings.store(Arc::new(s));
    }

    async fn new(memory: Option<Arc<dyn MemoryHook>>, recorder: Option<Arc<Recorder>>) -> Rig {
        Rig::with_model(memory, recorder, ScriptedModel::default()).await
    }

    /// A rig whose BRICK drafting calls take `ms` milliseconds: time to act while a step is in flight.
    async fn slow_drafts(ms: u64) -> Rig {
        Rig::with_model(
            None,
            None,
            ScriptedModel {
                draft_delay: Duration::from_millis(ms),
                ..Default::default()
            },
        )
        .await
    }

    async fn with_model(
        memory: Option<Arc<dyn MemoryHook>>,
        recorder: Option<Arc<Recorder>>,
        model: ScriptedModel,
    ) -> Rig {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(repo.join("config/settings.toml")).unwrap();
        let mut settings = Settings::parse(&text, &repo.join("config/settings.toml")).unwrap();
        settings.orchestrator.task_restarts = 1;
        settings.orchestrator.stream_tokens = false;
        // The scripted model answers the Contrapunto's steps in order (the direct path: `direct_path_*`).
        settings.orchestrator.route = crate::settings::RouteMode::Full;
        let live = Arc::new(ArcSwap::from_pointee(settings));
        let codex = Codex::load(&repo.join("config/codex.toml")).unwrap();
        let hub = EventHub::new(4096);
        let (seeds, drafts) = (model.seeds.clone(), model.drafts.clone());
        let models = crate::PERSONAS
            .iter()
            .map(|p| (p.to_string(), "scripted:a".to_string()))
            .collect();
        let personas = Personas::new(
            &codex,
            &models,
            Arc::new(model),
            SamplingTable::uniform(Sampling::plain(0.0, 1.0, 1, 32)),
            hub.clone(),
            recorder.map(|r| r as Arc<dyn ModelRecorder>),
            Duration::from_secs(5),
        )
        .unwrap();
        let (sup, _) = Supervisor::spawn(
            Some(SUPERVISOR_NAME.into()),
            Supervisor,
            SupervisorArgs {
                config: SupervisorConfig {
                    path: "root/personas".into(),
                    name: Some(SUPERVISOR_NAME.into()),
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
        while crate::PERSONAS.iter().any(|p| personas.current(p).is_err()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
        let cog = Arc::new(Cognition {
            personas: personas.clone(),
            tools: crate::tools::ToolRegistry::with_builtins(hub.clone()),
            hub: hub.clone(),
            settings: live,
            store: store.clone(),
            memory,
            forge: None,
            inquiry: None,
            curator: None,
        });
        let (orch, _) = Actor::spawn(None, Orchestrator, OrchestratorArgs { cog: cog.clone() })
            .await
            .unwrap();
        Rig {
            hub,
            personas,
            orch,
            sup,
            store,
            dir,
            cog,
            seeds,
            drafts,
        }
    }

    /// Stops the orchestrator and starts a new one on the same checkpoints, as a daemon restart would.
    async fn restart_orchestrator(&mut self) {
        let _ = self
            .orch
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        let (orch, _) = Actor::spawn(
            None,
            Orchestrator,
            OrchestratorArgs {
                cog: self.cog.clone(),
            },
        )
        .await
        .unwrap();
        self.orch = orch;
    }

    async fn submit(&self, text: &str) -> Result<TaskSummary, OrchError> {
        ractor::call!(
            self.orch,
            OrchestratorMsg::Submit,
            text.to_string(),
            None,
            None
        )
        .unwrap()
    }

    async fn get(&self, id: &str) -> Result<Box<TaskState>, OrchError> {
        ractor::call!(self.orch, OrchestratorMsg::Get, id.to_string()).unwrap()
    }

    /// The task once it is final (done, failed or cancelled), within 20 s.
    async fn finished(&self, id: &str) -> TaskState {
        for _ in 0..2000 {
            let t = self.get(id).await.unwrap();
            if t.status.is_final() {
                return *t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("task {id} did not finish: {:?}", self.get(id).await);
    }

    /// Waits until the task has completed `n` steps (its next call is then in flight).
    async fn after_steps(&self, id: &str, n: usize) {
        for _ in 0..2000 {
            if self.get(id).await.unwrap().steps.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {id} did not reach {n} steps");
    }

    async fn stop(self) {
        self.orch.stop(None);
        let _ = self
            .sup
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }
}

#[tokio::test]
async fn the_actor_runs_tasks_and_refuses_what_it_cannot_do() {
    let _turn = TURN.lock().await;
    let rig = Rig::new(None, None).await;
    assert!(matches!(rig.submit("  ").await, Err(OrchError::Invalid(_))));
    assert!(matches!(
        rig.get("nope").await,
        Err(OrchError::NotFound(id)) if id == "nope"
    ));
    let s = rig.submit("why is the sky blue?").await.unwrap();
    assert_eq!(s.status, TaskStatus::Queued);
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Done, "{t:?}");
    let nodes: Vec<Node> = t.steps.iter().map(|r| r.node).collect();
    assert_eq!(
        nodes,
        [Node::Route, Node::Draft, Node::Critique, Node::Synthesize]
    );
    assert_eq!(t.result.as_deref(), Some("answer from scripted:a"));
    // Durable: the checkpoint holds the finished task.
    assert_eq!(rig.store.load(&s.id).unwrap().status, TaskStatus::Done);
    let list = ractor::call!(rig.orch, OrchestratorMsg::List).unwrap();
    assert_eq!(list.len(), 1);
    assert!(matches!(
        ractor::call!(rig.orch, OrchestratorMsg::Cancel, s.id.clone()).unwrap(),
        Err(OrchError::Conflict(_))
    ));
    let resumed = ractor::call!(rig.orch, |reply| OrchestratorMsg::Resume {
        id: s.id.clone(),
        decision: "resumed".into(),
        guidance: None,
        reply,
    })
    .unwrap();
    assert!(matches!(resumed, Err(OrchError::Conflict(_))));
    let (_, view) = rig.hub.snapshot();
    assert_eq!(view.tasks[&s.id].status, TaskStatus::Done);
    rig.stop().await;
}

#[tokio::test]
async fn a_step_that_panics_fails_its_run_and_the_task_is_resumed_then_failed_by_policy() {
    let _turn = TURN.lock().await;
    // Panics once: the run crashes, the task resumes from its checkpoint and completes.
    let rig = Rig::new(
        Some(Arc::new(PanickingMemory {
            panics: 1,
            calls: AtomicUsize::new(0),
        })),
        None,
    )
    .await;
    let mut events = rig.hub.subscribe();
    let s = rig.submit("survive one crash").await.unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Done, "{t:?}");
    let run = format!("root/orchestrator/task/{}", s.id);
    let mut failures = 0;
    while let Ok(p) = events.try_recv() {
        if let Event::ActorFailed { actor, reason } = &p.event {
            assert_eq!(actor, &run);
            assert!(reason.contains("memory port exploded"), "{reason}");
            failures += 1;
        }
    }
    assert_eq!(failures, 1, "one actor.failed for the one crash");
    assert_eq!(
        ractor::ActorStatus::Running,
        rig.orch.get_status(),
        "the orchestrator survives its task's crash"
    );
    rig.stop().await;

    // Panics every time: after task_restarts (1) resumes the task is failed with the crash as its reason.
    let rig = Rig::new(
        Some(Arc::new(PanickingMemory {
            panics: usize::MAX,
            calls: AtomicUsize::new(0),
        })),
        None,
    )
    .await;
    let s = rig.submit("crash forever").await.unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    let error = t.error.unwrap_or_default();
    assert!(
        error.contains("crashed 2 time(s)") && error.contains("memory port exploded"),
        "{error}"
    );
    let (_, view) = rig.hub.snapshot();
    assert_eq!(view.tasks[&s.id].status, TaskStatus::Failed);
    assert_eq!(
        view.actors[&format!("root/orchestrator/task/{}", s.id)].status,
        "failed"
    );
    assert!(
        view.tasks.values().all(|t| t.status != TaskStatus::Running),
        "nothing stays running"
    );
    assert_eq!(rig.store.load(&s.id).unwrap().status, TaskStatus::Failed);
    rig.stop().await;
}

#[tokio::test]
async fn a_swap_routes_new_tasks_to_the_new_model_and_is_recorded_by_the_owner_of_settings() {
    let _turn = TURN.lock().await;
    let recorder = Arc::new(Recorder::default());
    let rig = Rig::new(None, Some(recorder.clone())).await;
    let before = rig.personas.current("BRICK").unwrap();
    assert!(matches!(
        rig.personas.swap_model("BRICK", "  ").await,
        Err(PersonaError::Invalid(_))
    ));
    assert!(matches!(
        rig.personas.swap_model("NOBODY", "m").await,
        Err(PersonaError::Unknown(_))
    ));
    assert!(matches!(
        rig.personas.swap_model("BRICK", "missing:typo").await,
        Err(PersonaError::Invalid(e)) if e.contains("missing:typo")
    ));
    assert_eq!(rig.personas.current("BRICK").unwrap().model, "scripted:a");
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "a refused swap records nothing"
    );
    let out = rig
        .personas
        .swap_model("BRICK", "scripted:b")
        .await
        .unwrap();
    assert_eq!(
        (out.from.as_str(), out.to.as_str()),
        ("scripted:a", "scripted:b")
    );
    assert!(out.persisted);
    assert!(out.generation > before.generation);
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![("BRICK".to_string(), "scripted:b".to_string())]
    );
    let s = rig.submit("after the swap").await.unwrap();
    let t = rig.finished(&s.id).await;
    let brick: Vec<&str> = t
        .steps
        .iter()
        .filter(|r| r.persona == "BRICK")
        .map(|r| r.model.as_str())
        .collect();
    assert_eq!(brick, ["scripted:b"], "{:?}", t.steps);
    let alfred = t.steps.iter().find(|r| r.persona == "ALFRED").unwrap();
    assert_eq!(
        alfred.model, "scripted:a",
        "other personas keep their model"
    );
    // The old generation drains: once the last holder lets go, it stops.
    let old = before.raw_actor().clone();
    drop(before);
    for _ in 0..200 {
        if old.get_status() == ractor::ActorStatus::Stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(old.get_status(), ractor::ActorStatus::Stopped);
    rig.stop().await;
}

#[tokio::test]
async fn a_checkpoint_that_cannot_be_written_fails_the_task_and_publishes_no_step() {
    let _turn = TURN.lock().await;
    let rig = Rig::slow_drafts(300).await;
    let mut events = rig.hub.subscribe();
    let s = rig.submit("a full disk").await.unwrap();
    rig.after_steps(&s.id, 1).await;
    // The disk "fills": even root cannot write below a file.
    let cp = rig.dir.path().join("checkpoints");
    std::fs::remove_dir_all(&cp).unwrap();
    std::fs::write(&cp, b"not a directory").unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(
        t.error
            .as_deref()
            .unwrap_or_default()
            .contains("checkpoint cannot be written"),
        "{:?}",
        t.error
    );
    while let Ok(p) = events.try_recv() {
        match &p.event {
            Event::TaskStep { step, .. } => assert_eq!(*step, 1, "no step after the failed write"),
            Event::TaskDone { .. } => panic!("a task whose checkpoint failed was announced done"),
            _ => {}
        }
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_cancel_during_a_step_is_final_on_disk_and_in_the_table() {
    let _turn = TURN.lock().await;
    let rig = Rig::slow_drafts(300).await;
    let mut events = rig.hub.subscribe();
    let s = rig.submit("cancel me mid-draft").await.unwrap();
    rig.after_steps(&s.id, 1).await;
    let c = ractor::call!(rig.orch, OrchestratorMsg::Cancel, s.id.clone())
        .unwrap()
        .unwrap();
    assert_eq!(c.status, TaskStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rig.get(&s.id).await.unwrap().status, TaskStatus::Cancelled);
    assert_eq!(rig.store.load(&s.id).unwrap().status, TaskStatus::Cancelled);
    while let Ok(p) = events.try_recv() {
        assert!(
            !matches!(
                p.event,
                Event::TaskDone { .. } | Event::TaskStep { step: 2, .. }
            ),
            "the cancelled run went on: {:?}",
            p.event
        );
    }
    rig.stop().await;
}

mod direct;
mod handover;
mod restarts;
