//! Unit tests of the cluster organ's parts that need no second process: the wire's bounds and checks, and a
//! role server's one-run-per-call-id promise. The node link itself is tested end to end (tests/e2e/cluster.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::rpc::CallResult;
use ractor::Actor;

use super::wire::{self, Outcome, RoleCall, RoleMsg, RoleReply, Work};
use super::worker::{RoleArgs, RoleServer, Serves};
use crate::llm::{
    BackendKind, ChatRequest, ChatResponse, LlmBackend, LlmError, ModelSpec, Sampling, TokenSink,
};

/// Test double of a model service: counts its calls, each taking `delay`.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicUsize,
    delay: Duration,
}

#[async_trait]
impl LlmBackend for Counting {
    fn kind(&self) -> BackendKind {
        BackendKind::Ollama
    }
    fn location(&self) -> String {
        "counting".into()
    }
    async fn chat(&self, req: ChatRequest, _: Option<TokenSink>) -> Result<ChatResponse, LlmError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        Ok(ChatResponse {
            content: format!("run {n} of {}", req.model),
            ..Default::default()
        })
    }
    async fn embed(&self, _: &str, _: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        Ok(Vec::new())
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

fn request() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: Vec::new(),
        tools: Vec::new(),
        format: None,
        sampling: Sampling::plain(0.0, 1.0, 1, 32),
    }
}

fn call(id: &str) -> Vec<u8> {
    wire::encode(&RoleCall {
        call_id: id.into(),
        work: Work::Think(request()),
    })
    .unwrap()
}

#[tokio::test]
async fn a_retried_call_id_runs_once_whether_it_is_still_running_or_has_ended() {
    let backend = Arc::new(Counting {
        delay: Duration::from_millis(200),
        ..Default::default()
    });
    let (server, _) = Actor::spawn(
        None,
        RoleServer,
        RoleArgs {
            serves: Serves::Think(backend.clone()),
            node: "w1".into(),
            max_bytes: 1 << 20,
            dedupe_capacity: 2,
            refused: None,
        },
    )
    .await
    .unwrap();
    let ask = |bytes: Vec<u8>| {
        let server = server.clone();
        async move {
            match server
                .call(|p| RoleMsg::Call(bytes, p), Some(Duration::from_secs(5)))
                .await
                .unwrap()
            {
                CallResult::Success(r) => r,
                _ => panic!("no answer"),
            }
        }
    };
    // The first attempt and a retry while it runs: one run, one answer for both.
    let (a, b) = tokio::join!(ask(call("c1")), ask(call("c1")));
    assert_eq!(a, b);
    // A retry after it ended: answered from the record.
    let c = ask(call("c1")).await;
    assert_eq!(a, c);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    let reply = wire::decode_reply(&a, 1 << 20, "c1").unwrap();
    let answer = reply.into_chat().unwrap();
    assert_eq!(answer.content, "run 1 of m");
    assert_eq!(answer.host.as_deref(), Some("ollama@w1"));
    // Two more calls push c1 out of a record of two: asked again, it runs again.
    ask(call("c2")).await;
    ask(call("c3")).await;
    ask(call("c1")).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 4);
    // A malformed call is answered with a failure, not a crash.
    let bad = ask(b"not msgpack".to_vec()).await;
    let reply = wire::decode_reply(&bad, 1 << 20, "").unwrap();
    assert!(matches!(reply.outcome, Outcome::Failed { .. }));
    server.stop(None);
}

#[test]
fn a_reply_over_the_bound_for_another_call_or_with_unknown_fields_is_refused() {
    let reply = RoleReply {
        call_id: "c1".into(),
        node: "w1".into(),
        backend: "ollama".into(),
        outcome: Outcome::Answer(ChatResponse {
            content: "x".repeat(1000),
            ..Default::default()
        }),
    };
    let bytes = wire::encode(&reply).unwrap();
    assert!(wire::decode_reply(&bytes, 1 << 20, "c1").is_ok());
    let e = wire::decode_reply(&bytes, 100, "c1").unwrap_err();
    assert!(
        e.to_string().contains("over cluster.max_frame_bytes"),
        "{e}"
    );
    let e = wire::decode_reply(&bytes, 1 << 20, "c2").unwrap_err();
    assert!(
        e.to_string().contains("answered call `c1` to call `c2`"),
        "{e}"
    );
    let mut extra = serde_json::to_value(&reply).unwrap();
    extra["trust_me"] = serde_json::json!(true);
    let bytes = rmp_serde::to_vec_named(&extra).unwrap();
    assert!(wire::decode_reply(&bytes, 1 << 20, "c1").is_err());
    let nameless = RoleReply {
        node: String::new(),
        ..reply
    };
    let bytes = wire::encode(&nameless).unwrap();
    assert!(wire::decode_reply(&bytes, 1 << 20, "c1").is_err());
    assert!(wire::decode_call(&[0u8; 200], 100).is_err());
}

#[tokio::test]
async fn a_role_server_refuses_work_of_another_role_and_hands_a_refusal_to_its_node() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (server, _) = Actor::spawn(
        None,
        RoleServer,
        RoleArgs {
            serves: Serves::Tools {
                backend: "runsc".into(),
                timeout: Duration::from_secs(5),
            },
            node: "w1".into(),
            max_bytes: 1 << 20,
            dedupe_capacity: 4,
            refused: Some(tx),
        },
    )
    .await
    .unwrap();
    let bytes = call("c1");
    let reply = match server
        .call(|p| RoleMsg::Call(bytes, p), Some(Duration::from_secs(5)))
        .await
        .unwrap()
    {
        CallResult::Success(r) => r,
        _ => panic!("no answer"),
    };
    let reply = wire::decode_reply(&reply, 1 << 20, "c1").unwrap();
    assert_eq!(reply.backend, "runsc");
    let e = reply.into_run().unwrap_err().to_string();
    assert!(e.contains("serves tools, not think"), "{e}");
    server
        .cast(RoleMsg::Refused(
            b"a node named `w1` is already joined".to_vec(),
        ))
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(why.contains("already joined"), "{why}");
    server.stop(None);
}

#[test]
fn a_handshake_name_splits_into_the_node_and_its_process_instance() {
    use super::home::split_name;
    assert_eq!(
        split_name("w1.3f09c2ab@127.0.0.1"),
        ("w1".to_string(), "3f09c2ab".to_string())
    );
    assert_eq!(
        split_name("home@127.0.0.1"),
        ("home".to_string(), String::new())
    );
    assert_eq!(split_name(""), (String::new(), String::new()));
}

#[test]
fn a_trained_adapter_crosses_as_bytes_and_a_progress_answer_is_bounded() {
    use crate::trainer::{Outcome as RunOutcome, Progress, Trained};
    let adapter: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let reply = RoleReply {
        call_id: "train-ab".into(),
        node: "t1".into(),
        backend: "candle".into(),
        outcome: Outcome::Trained(Trained {
            outcome: RunOutcome {
                steps: 6,
                resumed_from: 3,
                cancelled: false,
                last_loss: 0.5,
            },
            adapter: Some(adapter.clone()),
        }),
    };
    let bytes = wire::encode(&reply).unwrap();
    // MessagePack `bin`, not an array of small integers (which would take up to twice the size).
    assert!(bytes.len() < adapter.len() + 1024, "{} bytes", bytes.len());
    let back = wire::decode_reply(&bytes, 16 << 20, "train-ab")
        .unwrap()
        .into_trained()
        .unwrap();
    assert_eq!(back.adapter.as_deref(), Some(&adapter[..]));
    assert_eq!(back.outcome.resumed_from, 3);
    // The same reply asked as a model call is refused, not misread.
    let e = wire::decode_reply(&bytes, 16 << 20, "train-ab")
        .unwrap()
        .into_chat()
        .unwrap_err();
    assert!(e.to_string().contains("another role"), "{e}");
    let p = Progress {
        step: 4,
        steps: 6,
        epoch: 2,
        loss: 1.5,
        tokens_per_s: 90.0,
        eta_s: 12.0,
    };
    assert_eq!(
        wire::decode_progress(&wire::encode(&Some(p.clone())).unwrap()),
        Some(p)
    );
    assert_eq!(
        wire::decode_progress(&wire::encode(&None::<Progress>).unwrap()),
        None
    );
    assert_eq!(wire::decode_progress(&[0x90; 2048]), None);
}
