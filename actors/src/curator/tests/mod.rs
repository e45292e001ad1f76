//! Unit tests of the Curator actor on real actors (an unnamed personas supervisor with Proto actors, the
//! Curator) and real files in a temp dir, with the judge's model served by [`JudgeModel`], a test double of
//! an LLM service that scores by a marker in the answer it is shown.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use ractor::{Actor, ActorRef};
use serde_json::json;

use super::dataset::{read_lines, Decision, Example, Split};
use super::*;
use crate::events::{Event, EventHub};
use crate::llm::{
    BackendKind, ChatMessage, ChatRequest, ChatResponse, Finish, LlmBackend, LlmError, ModelSpec,
    Role, Sampling, SamplingTable, TokenSink,
};
use crate::personas::Personas;
use crate::ports::{Exchange, Node, TaskState, TaskStatus, ToolUse};
use crate::principles::Codex;
use crate::supervisor::{Strategy, Supervisor, SupervisorArgs, SupervisorConfig};

/// Test double of the judge's LLM service: reads the answer under `[Answer]` and scores 5 for `EXCELLENT`,
/// 1 for `POOR`, prose instead of JSON for `GARBLED`, else 4.
#[derive(Debug, Default)]
struct JudgeModel;

#[async_trait]
impl LlmBackend for JudgeModel {
    fn kind(&self) -> BackendKind {
        BackendKind::Ollama
    }

    fn location(&self) -> String {
        "judge double".into()
    }

    async fn chat(
        &self,
        req: ChatRequest,
        _tokens: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let prompt = req
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let answer = prompt.split("[Answer]").nth(1).unwrap_or_default();
        let content = if answer.contains("GARBLED") {
            "What a lovely answer, I would say five stars".to_string()
        } else {
            let score = if answer.contains("EXCELLENT") {
                5
            } else if answer.contains("POOR") {
                1
            } else {
                4
            };
            json!({"score": score, "reason": "scored by the double"}).to_string()
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

    async fn check_model(&self, _model: &str) -> Result<(), LlmError> {
        Ok(())
    }
}

struct Rig {
    dir: tempfile::TempDir,
    hub: Arc<EventHub>,
    args: CuratorArgs,
    curator: ActorRef<CuratorMsg>,
    _sup: ActorRef<crate::supervisor::SupervisorMsg>,
}

impl Rig {
    async fn new(edit: impl FnOnce(&mut crate::settings::CuratorSettings)) -> Rig {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(repo.join("config/settings.toml")).unwrap();
        let mut settings =
            crate::settings::Settings::parse(&text, &repo.join("config/settings.toml")).unwrap();
        settings.curator.idle_poll_ms = 10;
        settings.curator.heldout_percent = 0;
        edit(&mut settings.curator);
        let live = Arc::new(ArcSwap::from_pointee(settings));
        let codex = Codex::load(&repo.join("config/codex.toml")).unwrap();
        let hub = EventHub::new(4096);
        let models = crate::PERSONAS
            .iter()
            .map(|p| (p.to_string(), "judge:double".to_string()))
            .collect();
        let personas = Personas::new(
            &codex,
            &models,
            Arc::new(JudgeModel),
            SamplingTable::uniform(Sampling::plain(0.0, 1.0, 1, 64)),
            hub.clone(),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        // Unnamed: these tests may run beside others that start the named personas supervisor.
        let (sup, _) = Supervisor::spawn(
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
        while crate::PERSONAS.iter().any(|p| personas.current(p).is_err()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let args = CuratorArgs {
            dir: dir.path().join("curator"),
            settings: live,
            personas,
            hub: hub.clone(),
            trainer: None,
        };
        let (curator, _) = Actor::spawn(None, CuratorActor, args.clone())
            .await
            .unwrap();
        Rig {
            dir,
            hub,
            args,
            curator,
            _sup: sup,
        }
    }

    /// Stops the Curator and starts a new one on the same files, as a daemon restart would.
    async fn restart(&mut self) {
        let _ = self
            .curator
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        let (c, _) = Actor::spawn(None, CuratorActor, self.args.clone())
            .await
            .unwrap();
        self.curator = c;
    }

    async fn curate(&self, task: &TaskState) {
        ractor::call!(self.curator, CuratorMsg::Curate, Box::new(task.clone()))
            .unwrap()
            .unwrap();
    }

    async fn stats(&self) -> CuratorStats {
        ractor::call!(self.curator, CuratorMsg::Stats).unwrap()
    }

    /// Waits until nothing is queued.
    async fn settled(&self) -> CuratorStats {
        for _ in 0..500 {
            let s = self.stats().await;
            if s.queued == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the curator did not settle: {:?}", self.stats().await);
    }

    async fn rate(&self, task: &str, score: u8) -> RateOutcome {
        ractor::call!(self.curator, |reply| CuratorMsg::Rate {
            task: task.into(),
            score,
            comment: Some("from the test".into()),
            reply
        })
        .unwrap()
        .unwrap()
    }

    fn examples(&self, persona: &str, split: Split) -> Vec<Example> {
        let p = self
            .dir
            .path()
            .join("curator")
            .join(persona)
            .join(format!("{}.jsonl", split.as_str()));
        read_lines(&p).unwrap().0
    }

    fn decisions(&self, persona: &str) -> Vec<Decision> {
        let p = self
            .dir
            .path()
            .join("curator")
            .join(persona)
            .join("decisions.jsonl");
        read_lines(&p).unwrap().0
    }

    async fn rejected(&self, persona: &str, reason: &str) -> usize {
        let s = self.stats().await;
        s.personas[persona]
            .rejected
            .get(reason)
            .copied()
            .unwrap_or(0)
    }
}

fn exchange(step: u32, node: Node, persona: &str, answer: &str) -> Exchange {
    Exchange {
        step,
        node,
        persona: persona.into(),
        model: "judge:double".into(),
        generation: 1,
        messages: vec![
            ChatMessage::new(Role::System, format!("You are {persona}.")),
            ChatMessage::new(Role::User, "Task from the Architect: see the request."),
        ],
        answer: answer.into(),
        finish: Finish::Stop,
        // A drafting call offers tools; the others do not.
        tools: (node == Node::Draft)
            .then(|| crate::llm::ToolSpec {
                name: "word_count".into(),
                description: "Counts words.".into(),
                parameters: serde_json::json!({"type": "object"}),
            })
            .into_iter()
            .collect(),
    }
}

/// A done task with one BRICK draft and one ALFRED answer.
fn task(id_seed: u32, text: &str, draft: &str, answer: &str) -> TaskState {
    let mut t = TaskState::new(format!("{id_seed:032x}"), text.into());
    t.status = TaskStatus::Done;
    t.dissonance = Some(0.1);
    t.exchanges = vec![
        exchange(2, Node::Draft, "BRICK", draft),
        exchange(4, Node::Synthesize, "ALFRED", answer),
    ];
    t
}

const DRAFT: &str = "Moths steer by keeping a distant light at a fixed angle; a lantern close by bends that course into a spiral.";
const ANSWER: &str = "Moths navigate by distant lights; a near lantern turns their fixed-angle course into a spiral toward it.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_examples_carry_lineage_and_survive_a_restart_without_being_taken_twice() {
    let mut rig = Rig::new(|_| {}).await;
    let mut events = rig.hub.subscribe();
    let t = task(1, "Why do moths fly to lanterns?", DRAFT, ANSWER);
    rig.curate(&t).await;
    let s = rig.settled().await;
    assert_eq!(s.personas["BRICK"].accepted, 1, "{s:?}");
    assert_eq!(s.personas["ALFRED"].train, 1);
    let brick = rig.examples("BRICK", Split::Train);
    assert_eq!(brick.len(), 1);
    let ex = &brick[0];
    assert_eq!(ex.lineage.key, format!("{}/2/0", t.id));
    assert_eq!(ex.lineage.task, t.id);
    assert_eq!(ex.lineage.node, "draft");
    assert_eq!(ex.lineage.judge.as_ref().map(|j| j.score), Some(4));
    assert_eq!(ex.lineage.hash.len(), 64);
    assert!(ex.lineage.filters.contains(&"near_dedupe".to_string()));
    assert_eq!(ex.messages.last().map(|m| m.role), Some(Role::Assistant));
    assert_eq!(ex.answer(), DRAFT);
    let tools: Vec<&str> = ex.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tools,
        ["word_count"],
        "the tools the draft was offered travel with it"
    );
    let alfred = rig.examples("ALFRED", Split::Train);
    assert!(alfred[0].tools.is_empty());
    let mut accepted = 0;
    while let Ok(p) = events.try_recv() {
        if matches!(p.event, Event::CuratorAccepted { .. }) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 2);

    // The same task handed over again (a replay after a crash), before and after a restart: nothing new.
    rig.curate(&t).await;
    rig.restart().await;
    rig.curate(&t).await;
    let s = rig.settled().await;
    assert_eq!(s.personas["BRICK"].seen, 1);
    assert_eq!(rig.examples("BRICK", Split::Train).len(), 1);
    assert_eq!(rig.decisions("BRICK").len(), 1);
    assert!(std::fs::read_dir(rig.args.dir.join("inbox"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_is_by_content_hash_disjoint_and_stable_across_restarts() {
    let mut rig = Rig::new(|c| c.heldout_percent = 50).await;
    for i in 0..12u32 {
        let t = task(
            100 + i,
            &format!("Question number {i}: tell me about the colour of topic {i}"),
            &format!(
                "Topic {i} has its own colour, which is a detailed and different matter {i} {i}."
            ),
            &format!("The colour of topic {i} is the answer, given plainly for number {i} here."),
        );
        rig.curate(&t).await;
    }
    rig.settled().await;
    let key_split = |rig: &Rig| {
        let mut m = std::collections::BTreeMap::new();
        for split in [Split::Train, Split::Heldout] {
            for ex in rig.examples("BRICK", split) {
                assert!(
                    m.insert(ex.lineage.key.clone(), split).is_none(),
                    "in both splits"
                );
                assert_eq!(ex.lineage.split, split);
                let expect = if super::dedupe::percentile(&ex.lineage.hash) < 50 {
                    Split::Heldout
                } else {
                    Split::Train
                };
                assert_eq!(split, expect);
            }
        }
        m
    };
    let before = key_split(&rig);
    assert_eq!(before.len(), 12);
    assert!(before.values().any(|s| *s == Split::Heldout));
    assert!(before.values().any(|s| *s == Split::Train));
    rig.restart().await;
    rig.settled().await;
    assert_eq!(key_split(&rig), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_near_duplicates_are_rejected_against_train_and_heldout() {
    let rig = Rig::new(|c| c.heldout_percent = 100).await;
    rig.curate(&task(1, "Why do moths fly to lanterns?", DRAFT, ANSWER))
        .await;
    rig.settled().await;
    assert_eq!(rig.examples("BRICK", Split::Heldout).len(), 1);
    // The same words in other case and punctuation: exact; a few words added: near.
    rig.curate(&task(
        2,
        "why do MOTHS fly to lanterns",
        &DRAFT.to_uppercase(),
        &format!("{ANSWER} Truly so."),
    ))
    .await;
    rig.settled().await;
    assert_eq!(rig.rejected("BRICK", "duplicate").await, 1);
    assert_eq!(rig.rejected("ALFRED", "near_duplicate").await, 1);
    let d = rig.decisions("BRICK");
    assert!(d
        .iter()
        .any(|d| d.outcome == "duplicate" && d.detail.contains("/2/0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_and_the_judge_reject_with_their_reason() {
    let rig = Rig::new(|_| {}).await;
    let long = "word ".repeat(2000);
    let mut t = task(
        1,
        "A question with many kinds of answers",
        "too short",
        &long,
    );
    let mut marked = exchange(
        3,
        Node::Critique,
        "ROBIN",
        "Tool error: the sandbox refused, so this answer is unusable for training.",
    );
    marked.messages.push(ChatMessage::new(Role::User, "again"));
    let mut cut = exchange(
        4,
        Node::Research,
        "BABS",
        "A long research note that the token budget cut off in the middle of",
    );
    cut.finish = Finish::Length;
    t.exchanges.push(marked);
    t.exchanges.push(cut);
    rig.curate(&t).await;

    let mut tool = task(2, "Use the tool to add numbers", DRAFT, ANSWER);
    tool.tools_used.push(ToolUse {
        name: "add".into(),
        arguments: json!({}),
        result: "tool error: boom".into(),
        ok: false,
    });
    rig.curate(&tool).await;

    let mut hot = task(
        3,
        "A task that ended in discord",
        "The draft of a discordant task, long enough.",
        "The answer of a discordant task, long enough.",
    );
    hot.dissonance = Some(0.9);
    rig.curate(&hot).await;

    let mut failed = task(
        4,
        "A task that failed",
        "The draft of a failed task, long enough to pass.",
        "x",
    );
    failed.status = TaskStatus::Failed;
    failed.exchanges.truncate(1);
    rig.curate(&failed).await;

    let judged = task(
        5,
        "Judge these two",
        "A POOR draft that the judge scores one point, long enough to pass the filters.",
        "A GARBLED answer that the judge cannot score in JSON, long enough to pass.",
    );
    rig.curate(&judged).await;
    let s = rig.settled().await;

    assert_eq!(rig.rejected("BRICK", "too_short").await, 1, "{s:?}");
    assert_eq!(rig.rejected("ALFRED", "too_long").await, 1);
    assert_eq!(rig.rejected("ROBIN", "marker").await, 1);
    assert_eq!(rig.rejected("BABS", "truncated").await, 1);
    assert_eq!(rig.rejected("BRICK", "tool_failed").await, 1, "{s:?}");
    // The tool-failure filter is about drafts: the same task's answer was judged and kept.
    assert_eq!(s.personas["ALFRED"].accepted, 1);
    assert_eq!(rig.rejected("BRICK", "dissonant").await, 1);
    assert_eq!(rig.rejected("ALFRED", "dissonant").await, 1);
    assert_eq!(rig.rejected("BRICK", "task_failed").await, 1);
    assert_eq!(rig.rejected("BRICK", "judge_low").await, 1);
    assert_eq!(rig.rejected("ALFRED", "judge_unparseable").await, 1);
    let low = rig
        .decisions("BRICK")
        .into_iter()
        .find(|d| d.outcome == "judge_low")
        .unwrap();
    assert_eq!(low.score, Some(1));
    assert!(
        low.example.is_some(),
        "a judge refusal keeps its example for a human to overturn"
    );
}

mod ratings;
