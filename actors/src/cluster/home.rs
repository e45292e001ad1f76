//! The home's side: [`ClusterActor`], the organ that owns the node server, knows which worker nodes are up
//! (and refuses a second node of a name in use), and carries calls to them — persona model calls
//! ([`ClusterMsg::Think`]) and sandbox runs ([`ClusterMsg::Sandbox`]) — with a timeout, retries under one
//! call id ([`super::call`]), and the fallback `[cluster] when_no_node` names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::call::{self, Admitted};
use super::wire::{Role, RoleMsg, Work};
use crate::events::{Event, EventHub};
use crate::llm::{ChatRequest, ChatResponse, LlmBackend, LlmError};
use crate::settings::{Settings, WhenNoNode};
use crate::tools::sandbox::{Output, SandboxError};
use crate::trainer::{Progress, TrainJob, Trained, TrainerError};

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
    /// The roles it serves (`think`, `tools`), as its role servers registered them.
    pub roles: Vec<String>,
    /// Calls sent to it and not yet answered.
    pub in_flight: u64,
    /// Calls it has answered since it joined.
    pub answered: u64,
    /// Calls to it that timed out or lost it since it joined (its health: each was asked again).
    pub failed: u64,
    /// Seconds since it joined.
    pub up_s: f64,
    /// When it joined.
    #[serde(skip)]
    pub joined: Option<std::time::Instant>,
    /// The worker process's instance (a fresh one per start): the same name from another process is refused.
    #[serde(skip)]
    pub instance: String,
}

/// The cluster organ's messages.
#[derive(ractor_cluster::RactorMessage)]
pub enum ClusterMsg {
    /// A persona's model call for a worker node.
    Think(ChatRequest, RpcReplyPort<Result<ChatResponse, LlmError>>),
    /// A sandbox run for a worker node serving `tools`: `None` when none does and the run belongs to the
    /// home's own pool.
    Sandbox(
        Box<Value>,
        RpcReplyPort<Option<Result<Output, SandboxError>>>,
    ),
    /// The training part of a trainer run for a worker node serving `train`, its progress into the sender,
    /// stopped once the flag is set: `None` when no node serves it and it belongs to this machine.
    Train(
        Box<TrainJob>,
        UnboundedSender<Progress>,
        Arc<AtomicBool>,
        RpcReplyPort<Option<Result<Trained, TrainerError>>>,
    ),
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
        /// The session's actor (stopping it closes the link).
        session: ActorRef<NodeSessionMessage>,
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
    /// The nodes calls may go to (those in `nodes`), for the calls' own tasks.
    admitted: Admitted,
    /// Sessions that presented the right cookie (a session closed before that was refused).
    authenticated: std::collections::BTreeSet<u64>,
    /// Sessions refused for a name in use, until they close.
    refused: std::collections::BTreeSet<u64>,
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
            admitted: Admitted::default(),
            authenticated: Default::default(),
            refused: Default::default(),
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
            ClusterMsg::Sandbox(req, port) => state.sandbox(&myself, *req, port),
            ClusterMsg::Train(job, progress, cancel, port) => {
                state.train(&myself, *job, progress, cancel, port)
            }
            ClusterMsg::Nodes(port) => {
                let nodes = state
                    .nodes
                    .iter()
                    .map(|(id, n)| NodeInfo {
                        roles: call::roles_of(*id),
                        up_s: n.joined.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                        ..n.clone()
                    })
                    .collect();
                let _ = port.send(nodes);
            }
            ClusterMsg::Session {
                id,
                name,
                addr,
                change,
                session,
            } => state.session(id, name, addr, change, session),
            ClusterMsg::Sent { node } => {
                if let Some(n) = node.and_then(|id| state.nodes.get_mut(&id)) {
                    n.in_flight += 1;
                }
            }
            ClusterMsg::Ended { node, answered } => {
                if let Some(n) = node.and_then(|id| state.nodes.get_mut(&id)) {
                    n.in_flight = n.in_flight.saturating_sub(1);
                    n.answered += u64::from(answered);
                    n.failed += u64::from(!answered);
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
    fn session(
        &mut self,
        id: u64,
        name: String,
        addr: String,
        change: SessionChange,
        session: ActorRef<NodeSessionMessage>,
    ) {
        let (node, instance) = split_name(&name);
        if change == SessionChange::Authenticated {
            self.authenticated.insert(id);
        } else if change == SessionChange::Ready {
            if let Some(held) = self
                .nodes
                .values()
                .find(|n| n.node == node && n.instance != instance)
            {
                self.refuse(id, &node, &addr, &held.addr.clone(), session);
                return;
            }
            self.nodes.insert(
                id,
                NodeInfo {
                    node: node.clone(),
                    addr: addr.clone(),
                    roles: Vec::new(),
                    in_flight: 0,
                    answered: 0,
                    failed: 0,
                    up_s: 0.0,
                    joined: Some(std::time::Instant::now()),
                    instance,
                },
            );
            self.admit();
            tracing::info!(event = "node.joined", node = %node, addr = %addr, "a worker node joined");
            self.args.hub.publish(Event::NodeJoined { node, addr });
        } else if self.nodes.remove(&id).is_some() {
            self.authenticated.remove(&id);
            self.admit();
            tracing::warn!(event = "node.lost", node = %node, addr = %addr, "a worker node was lost; its calls in flight are retried");
            self.args.hub.publish(Event::NodeLost { node, addr });
        } else if self.refused.remove(&id) {
            self.authenticated.remove(&id);
        } else if !self.authenticated.remove(&id) {
            tracing::warn!(event = "cluster.refused", addr = %addr, name = %name, "a node connected and did not authenticate: wrong cookie (a node without TLS, or with a certificate the CA did not sign, is refused before this, in ractor_cluster's own log)");
        }
    }

    /// Refuses a node whose name another process holds: it is told why (its role servers hear it and the
    /// worker stops), then its link is closed. Calls never go to it meanwhile (it is not admitted).
    fn refuse(
        &mut self,
        id: u64,
        node: &str,
        addr: &str,
        held_by: &str,
        session: ActorRef<NodeSessionMessage>,
    ) {
        self.refused.insert(id);
        let why = format!(
            "the home refused this node: a node named `{node}` is already joined (from {held_by}); give each worker its own cluster.node_name"
        );
        tracing::warn!(event = "cluster.refused", node = %node, addr = %addr, held_by = %held_by, "refused a worker node: its name is already in use");
        let grace = Duration::from_millis(self.args.settings.load().cluster.retry_backoff_ms);
        tokio::spawn(async move {
            // Its role servers appear in the process groups as its state is exchanged: tell each, then close.
            let deadline = tokio::time::Instant::now() + grace;
            loop {
                let told: Vec<ActorRef<RoleMsg>> = Role::ALL
                    .into_iter()
                    .flat_map(|r| ractor::pg::get_members(&r.group()))
                    .filter(|c| call::node_of(c.get_id()) == Some(id))
                    .map(Into::into)
                    .collect();
                for server in &told {
                    let _ = server.cast(RoleMsg::Refused(why.clone().into_bytes()));
                }
                if !told.is_empty() || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(grace).await;
            session.stop(Some("node name in use".into()));
        });
    }

    /// Publishes the admitted node ids to the calls.
    fn admit(&self) {
        self.admitted
            .store(Arc::new(self.nodes.keys().copied().collect()));
    }

    fn think(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        req: ChatRequest,
        port: RpcReplyPort<Result<ChatResponse, LlmError>>,
    ) {
        let c = self.args.settings.load().cluster.clone();
        let local = self.args.local.clone();
        let (me, admitted, start) = (myself.clone(), self.admitted.clone(), self.turn());
        // The call waits in its own task: the organ keeps taking calls and node events meanwhile.
        tokio::spawn(async move {
            let result = match call::remote_call(
                &me,
                Work::Think(req.clone()),
                &c,
                start,
                &admitted,
                None,
                None,
            )
            .await
            {
                Ok(Some(reply)) => reply.into_chat(),
                Ok(None) => match c.when_no_node {
                    WhenNoNode::Local => local.chat(req, None).await,
                    WhenNoNode::Unavailable => Err(LlmError::Unreachable {
                        url: "cluster role think".into(),
                        detail: call::no_node(Role::Think),
                    }),
                },
                Err(e) => Err(e),
            };
            let _ = port.send(result);
        });
    }

    fn sandbox(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        req: Value,
        port: RpcReplyPort<Option<Result<Output, SandboxError>>>,
    ) {
        let c = self.args.settings.load().cluster.clone();
        let (me, admitted, start) = (myself.clone(), self.admitted.clone(), self.turn());
        tokio::spawn(async move {
            let result =
                match call::remote_call(&me, Work::Sandbox(req), &c, start, &admitted, None, None)
                    .await
                {
                    Ok(Some(reply)) => Some(
                        reply
                            .into_run()
                            .map_err(|e| SandboxError::Failed(e.to_string())),
                    ),
                    Ok(None) => match c.when_no_node {
                        WhenNoNode::Local => None,
                        WhenNoNode::Unavailable => {
                            Some(Err(SandboxError::Unavailable(call::no_node(Role::Tools))))
                        }
                    },
                    Err(e) => Some(Err(SandboxError::Failed(e.to_string()))),
                };
            let _ = port.send(result);
        });
    }

    fn train(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        job: TrainJob,
        progress: UnboundedSender<Progress>,
        cancel: Arc<AtomicBool>,
        port: RpcReplyPort<Option<Result<Trained, TrainerError>>>,
    ) {
        let c = self.args.settings.load().cluster.clone();
        let (me, admitted, start) = (myself.clone(), self.admitted.clone(), self.turn());
        // One id per fingerprint: a run retried, or taken up again after a restart of the home, joins the run in
        // flight on its node or resumes from that node's checkpoint.
        let id = format!("train-{}", job.fingerprint);
        let watch = call::Watch {
            progress,
            cancel,
            poll: Duration::from_millis(c.progress_poll_ms),
        };
        tokio::spawn(async move {
            let work = Work::Train(Box::new(job));
            let result =
                match call::remote_call(&me, work, &c, start, &admitted, Some(id), Some(&watch))
                    .await
                {
                    Ok(Some(reply)) => Some(reply.into_trained().map_err(|e| {
                        TrainerError::Unavailable(format!("training on a worker node: {e}"))
                    })),
                    Ok(None) => match c.when_no_node {
                        WhenNoNode::Local => None,
                        WhenNoNode::Unavailable => {
                            Some(Err(TrainerError::Unavailable(call::no_node(Role::Train))))
                        }
                    },
                    Err(e) => Some(Err(TrainerError::Unavailable(format!(
                        "training on a worker node: {e}"
                    )))),
                };
            let _ = port.send(result);
        });
    }

    /// The next round-robin position.
    fn turn(&mut self) -> usize {
        let start = self.next;
        self.next = self.next.wrapping_add(1);
        start
    }
}

/// A node's handshake name, `name.instance@host`, as its batos name and its process's instance.
pub(super) fn split_name(full: &str) -> (String, String) {
    let name = full.split('@').next().unwrap_or_default();
    match name.split_once('.') {
        Some((node, instance)) => (node.to_string(), instance.to_string()),
        None => (name.to_string(), String::new()),
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
            session: ses.actor.clone(),
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
