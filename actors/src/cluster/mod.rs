//! Beyond one machine: worker nodes that serve a role for the home (issue 30; README, "Beyond one machine").
//!
//! The home node is the daemon as it always was — gateway, orchestrator, codex, memory, Curator, Motivator,
//! image — plus this organ. A worker node (`batos node run --config worker.toml`) is a second process, on this
//! machine or another, with its own settings and its own parts. It serves one or more roles (`[cluster]
//! roles`): `think`, persona model calls on its own model backend (a larger model, its own Ollama or GPU), and
//! `tools`, sandboxed tool runs in its own sandbox pool (its own runsc or Docker, its own `[tools]` limits).
//!
//! ```text
//!   persona actor ──backend.chat──▶ RemoteBackend ──ClusterHandle::think──┐
//!   tool call / forge test ──SandboxHandle──▶ pool ──RemoteSandbox::run───┤
//!                                                                         ▼
//!                                   ClusterActor (home, supervised) ── pg "batos.role.<role>"
//!                                   ractor_cluster node link (cookie) ◀──┘ call id, timeout, retries
//!                                        │
//!                                        ▼
//!                RoleServer (worker, one per role) ──▶ its backend or its sandbox pool ──▶ reply (bounded, checked)
//! ```
//!
//! Why it is shaped so:
//!
//! - **Handles do not change.** A persona still thinks through its `LlmBackend`; for a persona listed in
//!   `[cluster] remote_personas` that backend is a [`RemoteBackend`], which asks this organ. A tool still runs
//!   through `SandboxHandle`; with `remote_tools` the home's pool asks this organ first (its
//!   `RemoteSandbox` port) and runs a call itself only when no node serves `tools`. No organ can tell a remote
//!   role from a local one, and a step record says where its model call ran (`ollama@w1`).
//! - **ractor_cluster carries the calls, batos carries the guarantees.** The node link (`ractor_cluster`:
//!   a magic-cookie handshake, process groups kept in step across nodes) supervises nothing across nodes
//!   and loses a call in flight when a link drops. So the home's organ — supervised like any other — gives
//!   every call an id, a timeout (`call_timeout_ms`) and up to `retries` more attempts: the same node again
//!   while it is up (it answers a repeated id from its record, [`worker`]), another node when it is lost.
//!   A call is therefore run at most once per node for one request ([`call`]).
//! - **One name, one process.** A worker's handshake name carries a fresh instance id per process
//!   (`w1.3f09c2ab@…`), so ractor_cluster never merges two processes; the home refuses a second process of a
//!   name already joined, tells its role servers why (the worker exits 2 with `node.refused`), and closes
//!   its link. A restarted worker (a new instance) is admitted once the old one's link has closed.
//! - **Nothing from a worker is trusted beyond its reply.** Frames over `max_frame_bytes` are cut off by the
//!   node server; a reply is read with serde (`deny_unknown_fields`), must answer the call asked, and names
//!   its node within 64 bytes ([`wire`]). Only `Vec<u8>` crosses the link as a message field, whose
//!   conversion cannot panic on a peer's bytes.
//! - **The cookie is a private file.** A home creates `<data_dir>/cluster.cookie` (mode 0600) on its first
//!   start; a node refuses to start on a cookie file others can read ([`cookie`]). A node with the wrong
//!   cookie is refused by the home with a `cluster.refused` log line, and the worker exits with an error.
//!   With `tls = true` the link is mutual TLS ([`tls`]): each node presents a certificate the cluster's CA
//!   signed; without it both ends are held to loopback addresses by the settings check.
//! - **No node, no hang.** With no node serving a call's role, it runs on the home (its own backend, its own
//!   sandbox pool: `when_no_node = "local"`) or fails at once naming the role (`"unavailable"`).
//!
//! Events: `node.joined` when a worker's session is ready, `node.lost` when it closes; `status` lists the
//! nodes with their roles and calls in flight and answered.

mod call;
mod cookie;
mod home;
mod node;
mod tls;
mod wire;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use batos_protocol::ErrorCode;
use ractor::RpcReplyPort;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

pub use cookie::{ensure as ensure_cookie, read as read_cookie};
pub use home::{ClusterActor, ClusterArgs, ClusterMsg, NodeInfo};
pub use node::run_worker;
pub use wire::Role;

use crate::ask::{AskError, Handle, Organ, WireError};
use crate::llm::{
    BackendKind, ChatRequest, ChatResponse, LlmBackend, LlmError, ModelSpec, TokenSink,
};
use crate::settings::Settings;
use crate::tools::sandbox::pool::RemoteSandbox;
use crate::tools::sandbox::{Output, SandboxError};
use crate::trainer::{Progress, RemoteTrainer, TrainJob, Trained, TrainerError};

/// The name the cluster organ registers under.
pub const CLUSTER_NAME: &str = "cluster";

/// Why a node could not start or join.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ClusterError {
    /// The cookie file is missing, unreadable, empty or not private.
    #[error("cluster cookie {0}")]
    Cookie(String),
    /// The settings or the node's own parts did not let it start.
    #[error("{0}")]
    Config(String),
    /// The home refused this node.
    #[error("{0}")]
    Refused(String),
}

impl WireError for ClusterError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

impl Organ for ClusterActor {
    type Msg = ClusterMsg;
    type Error = ClusterError;
    const LABEL: &'static str = "cluster";
    const NAME: &'static str = CLUSTER_NAME;

    /// Every attempt of a call (a retry may first wait one call timeout for a node to serve), and the pauses
    /// between them.
    fn timeout_ms(s: &Settings) -> u64 {
        let c = &s.cluster;
        let first = c.call_timeout_ms;
        let retry = 2 * c.call_timeout_ms + c.retry_backoff_ms;
        first + retry * u64::from(c.retries) + s.gateway.actor_call_timeout_ms
    }

    fn crash() -> ClusterMsg {
        ClusterMsg::Crash
    }
}

/// The cluster organ's handle.
pub type ClusterHandle = Handle<ClusterActor>;

impl Handle<ClusterActor> {
    /// A persona's model call, carried to a worker node (or as `when_no_node` says).
    pub async fn think(&self, req: ChatRequest) -> Result<ChatResponse, LlmError> {
        match self
            .outwaiting_restarts(self.timeout(), |p| ClusterMsg::Think(req.clone(), p))
            .await
        {
            Ok(result) => result,
            Err(e) => Err(LlmError::Unreachable {
                url: "cluster organ".into(),
                detail: e.to_string(),
            }),
        }
    }

    /// A sandbox run, carried to a worker node serving `tools`; `None` when it belongs to this machine's pool.
    pub async fn sandbox(&self, request: Value) -> Option<Result<Output, SandboxError>> {
        self.outwaiting_restarts(self.timeout(), |p| {
            ClusterMsg::Sandbox(Box::new(request.clone()), p)
        })
        .await
        .unwrap_or_else(|e| Some(Err(SandboxError::Unreachable(e))))
    }

    /// The training part of a run, carried to a worker node serving `train`; `None` when it belongs here.
    pub async fn train(
        &self,
        job: TrainJob,
        progress: UnboundedSender<Progress>,
        cancel: Arc<AtomicBool>,
    ) -> Option<Result<Trained, TrainerError>> {
        let c = self.settings().load().cluster.clone();
        // Every attempt may run its whole time, and a retry may first wait a call timeout for a node.
        let attempts = u64::from(c.retries) + 1;
        let within = Duration::from_millis(
            (c.train_timeout_ms + c.call_timeout_ms + c.retry_backoff_ms) * attempts,
        );
        let job = Box::new(job);
        self.outwaiting_restarts(within, |p| {
            ClusterMsg::Train(job.clone(), progress.clone(), cancel.clone(), p)
        })
        .await
        .unwrap_or_else(|e| Some(Err(TrainerError::Unavailable(e.to_string()))))
    }

    /// Asks the organ, outwaiting a restart of it (up to one `call_timeout_ms`, asking again every
    /// `retry_backoff_ms`): the organ's crash is weather a task must not fail for. A call already taken is
    /// answered by its own task, crash or not.
    async fn outwaiting_restarts<T: Send + 'static>(
        &self,
        within: Duration,
        msg: impl Fn(RpcReplyPort<T>) -> ClusterMsg,
    ) -> Result<T, AskError> {
        let c = self.settings().load().cluster.clone();
        let deadline = std::time::Instant::now() + Duration::from_millis(c.call_timeout_ms);
        loop {
            match self.ask_within(within, &msg).await {
                Err(AskError::Restarting { .. } | AskError::Stopped { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(c.retry_backoff_ms.max(1))).await;
                }
                other => return other,
            }
        }
    }

    /// The worker nodes up now.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, AskError> {
        self.ask_within(
            Duration::from_millis(self.settings().load().gateway.actor_call_timeout_ms),
            ClusterMsg::Nodes,
        )
        .await
    }
}

#[async_trait]
impl RemoteTrainer for Handle<ClusterActor> {
    async fn train(
        &self,
        job: TrainJob,
        progress: UnboundedSender<Progress>,
        cancel: Arc<AtomicBool>,
    ) -> Option<Result<Trained, TrainerError>> {
        Handle::<ClusterActor>::train(self, job, progress, cancel).await
    }
}

#[async_trait]
impl RemoteSandbox for Handle<ClusterActor> {
    async fn run(&self, request: Value) -> Option<Result<Output, SandboxError>> {
        self.sandbox(request).await
    }
}

/// The backend of a persona whose calls go to worker nodes: `chat` through the cluster organ; embeddings,
/// models and health from this machine's own backend (memory and the trainer stay home).
#[derive(Debug)]
pub struct RemoteBackend {
    cluster: ClusterHandle,
    local: Arc<dyn LlmBackend>,
}

impl RemoteBackend {
    /// Calls through `cluster`, falling back on `local` for everything but chat.
    pub fn new(cluster: ClusterHandle, local: Arc<dyn LlmBackend>) -> Self {
        Self { cluster, local }
    }
}

#[async_trait]
impl LlmBackend for RemoteBackend {
    fn kind(&self) -> BackendKind {
        self.local.kind()
    }
    fn location(&self) -> String {
        format!(
            "worker nodes serving think (else {})",
            self.local.location()
        )
    }
    /// Answers arrive whole: a worker's tokens are not streamed back over the link.
    async fn chat(
        &self,
        req: ChatRequest,
        _tokens: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        self.cluster.think(req).await
    }
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.local.embed(model, inputs).await
    }
    async fn create_model(&self, spec: &ModelSpec) -> Result<(), LlmError> {
        self.local.create_model(spec).await
    }
    async fn health(&self) -> Result<(), LlmError> {
        self.local.health().await
    }
    async fn check_model(&self, model: &str) -> Result<(), LlmError> {
        self.local.check_model(model).await
    }
}
