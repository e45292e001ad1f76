//! Erlang/OTP supervision on ractor.
//!
//! ractor reports child starts, stops and panics to the parent as `SupervisionEvent`s but restarts nothing by
//! itself. [`Supervisor`] adds the OTP rules: strategies (one_for_one, one_for_all, rest_for_one), restart
//! types (permanent, transient, temporary), restart intensity within a period after which the supervisor
//! stops its children and escalates by failing, ordered start and reverse-order stop. Every start, failure,
//! restart and escalation is one structured tracing event and one `actor.*` event on the bus.
//!
//! `ractor-supervisor` 0.2 was evaluated and not used: it offers the same strategies but no way to read the
//! live tree with per-child restart counts, no hook to publish our events, and no "replace this child with a
//! new generation, let the old one drain" operation, which the cognitive atomic swap needs.

mod actor;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};
use serde::{Deserialize, Serialize};

pub use actor::{Supervisor, SupervisorArgs, SupervisorMsg};

use crate::ask::{ask, ask_named, AskError};
use crate::events::EventHub;

/// Which children restart when one fails.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// Every child: the others are stopped (reverse order), then all start again in order.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after a failure (panic or error), not after a normal stop.
    Transient,
    /// Never.
    Temporary,
}

/// A boxed child-start future.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;
/// Starts a child linked to the given supervisor cell.
pub type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among its siblings; the last segment of its tree path.
    pub id: String,
    /// When it is restarted: always, only after a failure, or never (OTP permanent/transient/temporary).
    pub restart: Restart,
    /// Whether the child is itself a [`Supervisor`] (for the status tree).
    pub is_supervisor: bool,
    /// Spawns the child.
    pub start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("is_supervisor", &self.is_supervisor)
            .finish()
    }
}

impl ChildSpec {
    /// A worker child: `make` builds the actor and its arguments afresh for every (re)start, so a restart
    /// begins from clean state. `name` registers the actor globally (for `ractor::registry::where_is`).
    pub fn worker<A, F>(
        id: impl Into<String>,
        restart: Restart,
        name: Option<String>,
        make: F,
    ) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        ChildSpec {
            id: id.into(),
            restart,
            is_supervisor: false,
            start: Arc::new(move |sup: ActorCell| {
                let make = make.clone();
                let name = name.clone();
                Box::pin(async move {
                    let (actor, args) = make();
                    A::spawn_linked(name, actor, args, sup)
                        .await
                        .map(|(r, _)| r.get_cell())
                })
            }),
        }
    }

    /// A child that is itself a supervisor over `children`.
    pub fn supervisor(
        id: impl Into<String>,
        restart: Restart,
        config: SupervisorConfig,
        children: Vec<ChildSpec>,
    ) -> Self {
        let config = Arc::new(config);
        let children = Arc::new(children);
        ChildSpec {
            id: id.into(),
            restart,
            is_supervisor: true,
            start: Arc::new(move |sup: ActorCell| {
                let args = SupervisorArgs {
                    config: (*config).clone(),
                    children: (*children).clone(),
                };
                let name = config.name.clone();
                Box::pin(async move {
                    Supervisor::spawn_linked(name, Supervisor, args, sup)
                        .await
                        .map(|(r, _)| r.get_cell())
                })
            }),
        }
    }
}

/// A supervisor's own settings.
#[derive(Clone)]
pub struct SupervisorConfig {
    /// Tree path, e.g. `root/personas`.
    pub path: String,
    /// Global ractor name, so other organs can find this supervisor with `where_is`.
    pub name: Option<String>,
    /// Which siblings restart with a failed child (one_for_one, one_for_all, rest_for_one).
    pub strategy: Strategy,
    /// More restarts than this within `period` and the supervisor stops its children and escalates.
    pub intensity: u32,
    /// Sliding window the restarts are counted over (`supervision.period_ms`).
    pub period: Duration,
    /// Grace period for each child to stop before it is killed.
    pub shutdown_timeout: Duration,
    /// Pause before retrying a child whose restart itself failed.
    pub restart_backoff: Duration,
    /// Where `actor.*` events go.
    pub hub: Arc<EventHub>,
}

/// One node of the live supervision tree (the `status` command's `tree`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TreeNode {
    /// Child id (`root` for the root).
    pub id: String,
    /// Tree path from the root, `/`-separated (e.g. `root/personas/BRICK`); `actor.*` events name it.
    pub path: String,
    /// `running`, `starting`, `stopping`, `stopped` or `restarting` (between a failure and its restart).
    pub status: String,
    /// Restarts of this child under its current supervisor.
    pub restarts: u32,
    /// Its restart type under its supervisor; `None` only for the root.
    pub restart: Option<Restart>,
    /// Children, for supervisors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TreeNode>,
}

/// What a supervisor says about one child.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Child id, unique among its siblings (the last segment of its tree path).
    pub id: String,
    /// Its restart type (permanent, transient, temporary).
    pub restart: Restart,
    /// Restarts by this supervisor incarnation; a new generation installed by a swap keeps the count.
    pub restarts: u32,
    /// Whether it is a supervisor.
    pub is_supervisor: bool,
    /// Its cell, when alive.
    pub cell: Option<ActorCell>,
}

/// Why a supervisor operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SupervisorError {
    /// The supervisor did not answer.
    #[error(transparent)]
    Unreachable(#[from] AskError),
    /// The supervisor refused (unknown or duplicate child id, or the child failed to start).
    #[error("{0}")]
    Refused(String),
}

/// The one way to reach a named supervisor from outside this module.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    organ: &'static str,
    name: String,
}

impl SupervisorHandle {
    /// The supervisor registered as `name`; `organ` names it in errors.
    pub fn named(organ: &'static str, name: impl Into<String>) -> Self {
        Self {
            organ,
            name: name.into(),
        }
    }

    /// The name the supervisor is registered under (the root of the tree [`Self::tree`] reads).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a new generation of an existing child from `spec` and installs it in place; the old actor is
    /// detached (not stopped) and returned, so the caller can let it drain.
    pub async fn replace_child(
        &self,
        spec: ChildSpec,
        timeout: Duration,
    ) -> Result<Option<ActorCell>, SupervisorError> {
        ask_named(
            self.organ,
            &self.name,
            |r| SupervisorMsg::ReplaceChild(spec, r),
            timeout,
        )
        .await?
        .map_err(SupervisorError::Refused)
    }

    /// The live tree under this supervisor, `path` being its own tree path; `None` while it restarts.
    pub async fn tree(&self, path: &str, timeout: Duration) -> Option<TreeNode> {
        let root = crate::ask::find::<SupervisorMsg>(self.organ, &self.name)
            .ok()?
            .get_cell();
        Some(tree(&root, path, timeout).await)
    }
}

/// Reads the live tree under `root` (a supervisor cell), asking each supervisor for its children.
pub async fn tree(root: &ActorCell, root_path: &str, timeout: Duration) -> TreeNode {
    let mut node = TreeNode {
        id: root_path
            .rsplit('/')
            .next()
            .unwrap_or(root_path)
            .to_string(),
        path: root_path.to_string(),
        status: status_of(Some(root)),
        restarts: 0,
        restart: None,
        children: Vec::new(),
    };
    fill(&mut node, root, timeout).await;
    node
}

fn fill<'a>(
    node: &'a mut TreeNode,
    sup: &'a ActorCell,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let sup_ref: ractor::ActorRef<SupervisorMsg> = sup.clone().into();
        let Ok(children) = ask("supervisor", &sup_ref, SupervisorMsg::Children, timeout).await
        else {
            return;
        };
        for c in children {
            let mut child = TreeNode {
                id: c.id.clone(),
                path: format!("{}/{}", node.path, c.id),
                status: status_of(c.cell.as_ref()),
                restarts: c.restarts,
                restart: Some(c.restart),
                children: Vec::new(),
            };
            if let (true, Some(cell)) = (c.is_supervisor, c.cell.as_ref()) {
                fill(&mut child, cell, timeout).await;
            }
            node.children.push(child);
        }
    })
}

fn status_of(cell: Option<&ActorCell>) -> String {
    use ractor::ActorStatus as S;
    match cell.map(|c| c.get_status()) {
        None => "restarting".into(),
        Some(S::Unstarted) | Some(S::Starting) => "starting".into(),
        Some(S::Running) | Some(S::Upgrading) => "running".into(),
        Some(S::Draining) | Some(S::Stopping) => "stopping".into(),
        Some(S::Stopped) => "stopped".into(),
    }
}

#[cfg(test)]
mod tests;
