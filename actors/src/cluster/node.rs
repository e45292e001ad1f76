//! A worker node's life (`batos node run`): the parts its roles need (a model backend for `think`, a sandbox
//! pool for `tools`), its node server, one role server per role, and the link to its home, kept up until the
//! process is told to stop. A home that refuses the node (wrong cookie, or its name in use) ends the process
//! with a clear error; a home that is down or lost is tried again every `reconnect_ms`.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::Actor;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use super::wire::Role;
use super::worker::{RoleArgs, RoleServer, Serves};
use super::ClusterError;
use crate::settings::Settings;
use crate::tools::sandbox::pool::{PoolArgs, SandboxPool, SANDBOX_NAME};

/// A session step as the worker sees it.
#[derive(Debug)]
enum Link {
    Authenticated,
    Closed,
}

struct Watch(mpsc::UnboundedSender<Link>);

impl NodeEventSubscription for Watch {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, _: NodeServerSessionInformation) {
        let _ = self.0.send(Link::Authenticated);
    }
    fn node_session_disconnected(&self, _: NodeServerSessionInformation) {
        let _ = self.0.send(Link::Closed);
    }
}

/// Runs a worker node until SIGINT/SIGTERM (`Ok`) or until the home refuses it or its role server fails (`Err`).
pub async fn run_worker(settings: &Settings) -> Result<(), ClusterError> {
    let c = settings.cluster.clone();
    let cookie = super::cookie::read(&c.cookie_path(&settings.data_dir))?;
    let home: SocketAddr = c
        .home
        .replacen("localhost:", "127.0.0.1:", 1)
        .parse()
        .map_err(|_| ClusterError::Config(format!("cluster.home `{}` is not IP:PORT", c.home)))?;
    let roles: Vec<Role> = c.roles.iter().filter_map(|r| Role::parse(r)).collect();
    // A fresh instance per process in the handshake name: the home tells a restart of this node from a second
    // process of the same name, and refuses the second.
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let full_name = format!("{}.{}", c.node_name, &instance[..8]);
    let server = NodeServer::new(
        0,
        cookie,
        full_name,
        home.ip().to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(home.ip())
    .with_max_inbound_frame_size(c.max_frame_bytes);
    let (server, server_handle) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Config(format!("the node server did not start: {e}")))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "batos.worker".into(),
            subscription: Box::new(Watch(tx)),
        })
        .map_err(|e| ClusterError::Config(e.to_string()))?;
    let (refused_tx, mut refused_rx) = mpsc::unbounded_channel::<String>();
    let mut parts = Vec::new();
    for role in roles {
        let serves = match role {
            Role::Think => {
                let selection = crate::llm::select::select(&settings.llm)
                    .await
                    .map_err(ClusterError::Config)?;
                tracing::info!(event = "llm.backend_selected", backend = %selection.backend.kind(), location = %selection.backend.location(), reason = %selection.reason, "LLM backend selected");
                Serves::Think(selection.backend)
            }
            Role::Tools => {
                // The worker's own pool, registered under the name `SandboxHandle` finds (as on a home).
                let (pool, pool_handle) = Actor::spawn(
                    Some(SANDBOX_NAME.into()),
                    SandboxPool,
                    PoolArgs {
                        settings: settings.tools.clone(),
                        remote: None,
                    },
                )
                .await
                .map_err(|e| {
                    ClusterError::Config(format!("the sandbox pool did not start: {e}"))
                })?;
                parts.push((pool.get_cell(), pool_handle));
                let t = &settings.tools;
                Serves::Tools {
                    backend: crate::tools::sandbox::backend(t).name().to_string(),
                    timeout: Duration::from_millis(t.timeout_ms) * 2 + Duration::from_secs(5),
                }
            }
            Role::Train => Serves::Train {
                embedded: settings.llm.embedded.clone(),
                dir: settings.data_dir.join("node/train"),
                threads: settings.trainer.threads.max(1),
            },
        };
        let (role_server, role_handle) = Actor::spawn(
            None,
            RoleServer,
            RoleArgs {
                serves,
                node: c.node_name.clone(),
                max_bytes: c.max_frame_bytes,
                dedupe_capacity: c.dedupe_capacity,
                refused: Some(refused_tx.clone()),
            },
        )
        .await
        .map_err(|e| ClusterError::Config(format!("the role server did not start: {e}")))?;
        parts.push((role_server.get_cell(), role_handle));
    }
    if parts.is_empty() {
        return Err(ClusterError::Config(
            "cluster.roles names no role this build serves".into(),
        ));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClusterError::Config(e.to_string()))?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let link = keep_linked(&server, home, &c, &mut rx);
    let handles: Vec<_> = parts.iter_mut().map(|(_, h)| h).collect();
    let part_ended = futures::future::select_all(handles);
    let ended = tokio::select! {
        _ = stop => Ok(()),
        r = link => r,
        Some(why) = refused_rx.recv() => {
            tracing::error!(event = "node.refused", node = %c.node_name, reason = %why, "the home refused this node");
            Err(ClusterError::Refused(why))
        }
        _ = part_ended => Err(ClusterError::Config("a role server or the sandbox pool stopped".into())),
        _ = server_handle => Err(ClusterError::Config("the node server stopped".into())),
    };
    for (cell, _) in &parts {
        cell.stop(Some("worker stopping".into()));
    }
    server.stop(Some("worker stopping".into()));
    tracing::info!(event = "node.stopped", node = %c.node_name, "worker node stopped");
    ended
}

/// Connects to the home and stays connected: `Err` only when the home refuses this node.
async fn keep_linked(
    server: &ractor::ActorRef<NodeServerMessage>,
    home: SocketAddr,
    c: &crate::settings::ClusterSettings,
    rx: &mut mpsc::UnboundedReceiver<Link>,
) -> Result<(), ClusterError> {
    let pause = Duration::from_millis(c.reconnect_ms);
    let tls = if c.tls {
        Some(super::tls::connector(c, home)?)
    } else {
        None
    };
    loop {
        let linked = match &tls {
            Some((connector, name)) => {
                ractor_cluster::client_connect_enc(server, home, connector.clone(), name.clone())
                    .await
            }
            None => ractor_cluster::client_connect(server, home).await,
        };
        if let Err(ractor_cluster::ClientConnectErr::Encryption(e)) = &linked {
            tracing::error!(event = "node.refused", home = %home, node = %c.node_name, error = %e, "the TLS handshake with the home failed");
            return Err(ClusterError::Refused(format!(
                "the TLS handshake with the home at {home} failed ({e}): is cluster.tls on at the home, and are both \
                 certificates signed by cluster.tls_ca, the home's naming {}?",
                home.ip()
            )));
        }
        if let Err(e) = linked {
            tracing::warn!(event = "node.home_unreachable", home = %home, error = %e, retry_ms = c.reconnect_ms, "cannot reach the home node; trying again");
            tokio::time::sleep(pause).await;
            continue;
        }
        match rx.recv().await {
            Some(Link::Authenticated) => {
                tracing::info!(event = "node.joined_home", home = %home, node = %c.node_name, "joined the home node");
            }
            Some(Link::Closed) => {
                tracing::error!(event = "node.refused", home = %home, node = %c.node_name, "the home refused this node: wrong cookie, or TLS on one side only");
                return Err(ClusterError::Refused(format!(
                    "the home at {home} refused node `{}`: wrong cookie (cluster.cookie_file), or cluster.tls on one side only",
                    c.node_name
                )));
            }
            None => return Err(ClusterError::Config("the node server stopped".into())),
        }
        // Linked: wait for the link to close, then reach for the home again.
        loop {
            match rx.recv().await {
                Some(Link::Closed) => break,
                Some(Link::Authenticated) => {}
                None => return Err(ClusterError::Config("the node server stopped".into())),
            }
        }
        tracing::warn!(event = "node.home_lost", home = %home, retry_ms = c.reconnect_ms, "lost the home node; reconnecting");
        tokio::time::sleep(pause).await;
    }
}
