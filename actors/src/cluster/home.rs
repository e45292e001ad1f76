//! The home's side: [`ClusterActor`], the organ that owns the node server, knows which worker nodes are up,
//! and carries persona model calls to them ([`ClusterMsg::Think`]) with a timeout, retries under one call id,
//! and the fallback `[cluster] when_no_node` names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use serde::Serialize;

use super::wire::{self, RoleMsg, ThinkCall};
use crate::events::{Event, EventHub};
use crate::llm::{ChatRequest, ChatResponse, LlmBackend, LlmError};
use crate::settings::{ClusterSettings, Settings, WhenNoNode};

/// The cluster organ's actor.
pub struct ClusterActor;

/// What the cluster organ starts from.
#[derive(Clone)]
pub struct ClusterArgs {
    /// Live settings (`[cluster]` is read at each call; the listen address and cookie at start).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Where `node.joined` and `node.lost` go.
    pub hub: Arc<EventHub>,
    /// This machine's own backend: the fallback when no node serves a call (`when_no_node = "local"`).
    pub local: Arc<dyn LlmBackend>,
    /// The cluster's cookie (read or created at boot, before the tree starts).
    pub cookie: String,
}

/// A worker node as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeInfo {
    /// Its name (`[cluster] node_name` on the worker).
    pub node: String,
    /// Its address.
    pub addr: String,
    /// Model calls sent to it and not yet answered.
    pub in_flight: u64,
    /// Model calls it has answered since it joined.
    pub answered: u64,
}

/// The cluster organ's messages.
#[derive(ractor_cluster::RactorMessage)]
pub enum ClusterMsg {
    /// A persona's model call for a worker node.
    Think(ChatRequest, RpcReplyPort<Result<ChatResponse, LlmError>>),
    /// The worker nodes up now.
    Nodes(RpcReplyPort<Vec<NodeInfo>>),
    /// From the node server: a node's session (its ractor node id, its `name@host`, its address) changed.
    Session {
        /// The node id the home gave the session.
        id: u64,
        /// The name the node gave in its handshake.
        name: String,
        /// Its address.
        addr: String,
        /// What happened.
        change: SessionChange,
    },
    /// A call went to the node with this id.
    Sent {
        /// The node's id.
        node: Option<u64>,
    },
    /// A call to the node with this id ended (answered: it replied).
    Ended {
        /// The node's id.
        node: Option<u64>,
        /// Whether it replied.
        answered: bool,
    },
    /// Fault injection: panic.
    Crash,
}

/// A node session's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// It presented the right cookie.
    Authenticated,
    /// It finished exchanging its process groups: calls can go to it.
    Ready,
    /// Its link closed.
    Closed,
}

/// The organ's state.
pub struct ClusterState {
    args: ClusterArgs,
    server: ActorRef<NodeServerMessage>,
    nodes: BTreeMap<u64, NodeInfo>,
    /// Sessions that presented the right cookie (a session closed before that was refused).
    authenticated: std::collections::BTreeSet<u64>,
    /// Round-robin position over the serving nodes.
    next: usize,
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        let c = args.settings.load().cluster.clone();
        let addr: SocketAddr = c.listen.replacen("localhost:", "127.0.0.1:", 1).parse()?;
        let encryption = if c.tls {
            Some(ractor_cluster::IncomingEncryptionMode::Tls(
                super::tls::acceptor(&c)?,
            ))
        } else {
            None
        };
        let server = NodeServer::new(
            addr.port(),
            args.cookie.clone(),
            c.node_name.clone(),
            addr.ip().to_string(),
            encryption,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(addr.ip())
        .with_max_inbound_frame_size(c.max_frame_bytes);
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "batos.cluster".into(),
            subscription: Box::new(Sessions(myself.clone())),
        })?;
        tracing::info!(event = "cluster.listening", listen = %addr, node = %c.node_name, tls = c.tls, "home node listening for worker nodes");
        Ok(ClusterState {
            args,
            server,
            nodes: BTreeMap::new(),
            authenticated: Default::default(),
            next: 0,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<ClusterMsg>,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        // The node server holds the listening port: it goes with its owner, so a restart can bind again.
        state.server.stop(Some("cluster organ stopped".into()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Think(req, port) => state.think(&myself, req, port),
            ClusterMsg::Nodes(port) => {
                let _ = port.send(state.nodes.values().cloned().collect());
            }
            ClusterMsg::Session {
                id,
                name,
                addr,
                change,
            } => state.session(id, name, addr, change),
            ClusterMsg::Sent { node } => {
                if let Some(n) = node.and_then(|id| state.nodes.get_mut(&id)) {
                    n.in_flight += 1;
                }
            }
            ClusterMsg::Ended { node, answered } => {
                if let Some(n) = node.and_then(|id| state.nodes.get_mut(&id)) {
                    n.in_flight = n.in_flight.saturating_sub(1);
                    n.answered += u64::from(answered);
                }
            }
            ClusterMsg::Crash => panic!("fault injection: cluster organ crashed on request"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ClusterMsg>,
        evt: SupervisionEvent,
        _: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        // Only the node server is linked here: without it no node can reach the home, so fail and be restarted.
        match evt {
            SupervisionEvent::ActorFailed(_, e) => {
                Err(format!("the node server failed: {e}").into())
            }
            SupervisionEvent::ActorTerminated(_, _, why) => {
                Err(format!("the node server stopped: {why:?}").into())
            }
            _ => Ok(()),
        }
    }
}

impl ClusterState {
    fn session(&mut self, id: u64, name: String, addr: String, change: SessionChange) {
        // `name@host` as the handshake carries it: the node's own name is the part before the `@`.
        let node = name.split('@').next().unwrap_or_default().to_string();
        if change == SessionChange::Authenticated {
            self.authenticated.insert(id);
        } else if change == SessionChange::Ready {
            self.nodes.insert(
                id,
                NodeInfo {
                    node: node.clone(),
                    addr: addr.clone(),
                    in_flight: 0,
                    answered: 0,
                },
            );
            tracing::info!(event = "node.joined", node = %node, addr = %addr, "a worker node joined");
            self.args.hub.publish(Event::NodeJoined { node, addr });
        } else if self.nodes.remove(&id).is_some() {
            self.authenticated.remove(&id);
            tracing::warn!(event = "node.lost", node = %node, addr = %addr, "a worker node was lost; its calls in flight are retried");
            self.args.hub.publish(Event::NodeLost { node, addr });
        } else if !self.authenticated.remove(&id) {
            tracing::warn!(event = "cluster.refused", addr = %addr, name = %name, "a node connected and did not authenticate: wrong cookie, or its name is already in use (a node without TLS, or with a certificate the CA did not sign, is refused before this, in ractor_cluster's own log)");
        }
    }

    fn think(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        req: ChatRequest,
        port: RpcReplyPort<Result<ChatResponse, LlmError>>,
    ) {
        let c = self.args.settings.load().cluster.clone();
        let local = self.args.local.clone();
        let me = myself.clone();
        let start = self.next;
        self.next = self.next.wrapping_add(1);
        // The call waits in its own task: the organ keeps taking calls and node events meanwhile.
        tokio::spawn(async move {
            let result = remote_call(&me, req, &c, start, local).await;
            let _ = port.send(result);
        });
    }
}

/// The serving members of the `think` group on other nodes, in a stable order.
fn serving() -> Vec<ActorCell> {
    let mut cells: Vec<ActorCell> = ractor::pg::get_members(&wire::THINK_GROUP.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .collect();
    cells.sort_by_key(|c| c.get_id().to_string());
    cells
}

/// The serving members, once there is at least one, polling every `poll` for at most `wait`.
async fn serving_within(wait: Duration, poll: Duration) -> Vec<ActorCell> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let members = serving();
        if !members.is_empty() || tokio::time::Instant::now() >= deadline {
            return members;
        }
        tokio::time::sleep(poll).await;
    }
}

fn node_of(id: ActorId) -> Option<u64> {
    match id {
        ActorId::Remote { node_id, .. } => Some(node_id),
        ActorId::Local(_) => None,
    }
}

/// One persona call: to a serving node (the same node again while it is up, another when it is lost), at
/// most `1 + retries` attempts, one call id throughout; with no node, what `when_no_node` says.
async fn remote_call(
    me: &ActorRef<ClusterMsg>,
    req: ChatRequest,
    c: &ClusterSettings,
    start: usize,
    local: Arc<dyn LlmBackend>,
) -> Result<ChatResponse, LlmError> {
    let call_id = uuid::Uuid::new_v4().simple().to_string();
    let bytes = wire::encode(&ThinkCall {
        call_id: call_id.clone(),
        request: req.clone(),
    })?;
    let timeout = Duration::from_millis(c.call_timeout_ms);
    let mut preferred: Option<ActorId> = None;
    let mut last: Option<LlmError> = None;
    for attempt in 0..=c.retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(c.retry_backoff_ms)).await;
        }
        // A retry waits (up to one call's timeout) for a node to serve: a lost link is usually back within a
        // reconnect; the first attempt does not wait, so a home without nodes answers at once.
        let members = if attempt == 0 {
            serving()
        } else {
            serving_within(timeout, Duration::from_millis(c.retry_backoff_ms.max(1))).await
        };
        let Some(target) = preferred
            .and_then(|p| members.iter().find(|m| m.get_id() == p).cloned())
            .or_else(|| {
                members
                    .get((start + attempt as usize) % members.len().max(1))
                    .cloned()
            })
        else {
            if attempt == 0 {
                break;
            }
            continue;
        };
        preferred = Some(target.get_id());
        let node = node_of(target.get_id());
        let actor: ActorRef<RoleMsg> = target.into();
        let payload = bytes.clone();
        let _ = me.cast(ClusterMsg::Sent { node });
        let sent = actor
            .call(|p| RoleMsg::Think(payload, p), Some(timeout))
            .await;
        let answered = matches!(sent, Ok(CallResult::Success(_)));
        let _ = me.cast(ClusterMsg::Ended { node, answered });
        match sent {
            Ok(CallResult::Success(reply)) => {
                return wire::decode_reply(&reply, c.max_frame_bytes, &call_id)?.into_result();
            }
            Ok(CallResult::Timeout) => {
                tracing::warn!(event = "cluster.call_timeout", call_id = %call_id, attempt, ms = c.call_timeout_ms, "a worker node did not answer in time; asking again under the same id");
                last = Some(LlmError::Timeout(c.call_timeout_ms));
            }
            Ok(CallResult::SenderError) | Err(_) => {
                tracing::warn!(event = "cluster.call_lost", call_id = %call_id, attempt, "a worker node was lost during a call; trying again");
                preferred = None;
                last = Some(LlmError::Unreachable {
                    url: "cluster role think".into(),
                    detail: "the worker node was lost during the call".into(),
                });
            }
        }
    }
    match (last, c.when_no_node) {
        (Some(e), _) => Err(e),
        (None, WhenNoNode::Local) => local.chat(req, None).await,
        (None, WhenNoNode::Unavailable) => Err(LlmError::Unreachable {
            url: "cluster role think".into(),
            detail: "no worker node serves think (cluster.when_no_node = \"unavailable\")".into(),
        }),
    }
}

/// Forwards the node server's session events to the organ (the callbacks must not block).
struct Sessions(ActorRef<ClusterMsg>);

impl Sessions {
    fn tell(&self, ses: &NodeServerSessionInformation, change: SessionChange) {
        let name = ses
            .peer_name
            .as_ref()
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let _ = self.0.cast(ClusterMsg::Session {
            id: ses.node_id,
            name,
            addr: ses.peer_addr.clone(),
            change,
        });
    }
}

impl NodeEventSubscription for Sessions {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.tell(&ses, SessionChange::Authenticated);
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        self.tell(&ses, SessionChange::Ready);
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.tell(&ses, SessionChange::Closed);
    }
}
