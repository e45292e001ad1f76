//! A worker node's life (`batos node run`): its backend, its node server, its role server, and the link to
//! its home, kept up until the process is told to stop. A home that refuses the node (wrong cookie, or its
//! name in use) ends the process with a clear error; a home that is down or lost is tried again every
//! `reconnect_ms`.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::Actor;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use super::worker::{RoleArgs, RoleServer};
use super::ClusterError;
use crate::settings::Settings;

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
    let selection = crate::llm::select::select(&settings.llm)
        .await
        .map_err(ClusterError::Config)?;
    tracing::info!(event = "llm.backend_selected", backend = %selection.backend.kind(), location = %selection.backend.location(), reason = %selection.reason, "LLM backend selected");
    let server = NodeServer::new(
        0,
        cookie,
        c.node_name.clone(),
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
    let (_role, role_handle) = Actor::spawn(
        None,
        RoleServer,
        RoleArgs {
            backend: selection.backend.clone(),
            node: c.node_name.clone(),
            max_bytes: c.max_frame_bytes,
            dedupe_capacity: c.dedupe_capacity,
        },
    )
    .await
    .map_err(|e| ClusterError::Config(format!("the role server did not start: {e}")))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClusterError::Config(e.to_string()))?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let link = keep_linked(&server, home, &c, &mut rx);
    let ended = tokio::select! {
        _ = stop => Ok(()),
        r = link => r,
        _ = role_handle => Err(ClusterError::Config("the role server stopped".into())),
        _ = server_handle => Err(ClusterError::Config("the node server stopped".into())),
    };
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
                tracing::error!(event = "node.refused", home = %home, node = %c.node_name, "the home refused this node: wrong cookie, TLS on one side only, or a node named `{}` is already there", c.node_name);
                return Err(ClusterError::Refused(format!(
                    "the home at {home} refused node `{}`: wrong cookie (cluster.cookie_file), cluster.tls on one side only, or that name already in use",
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
