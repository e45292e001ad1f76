//! The sandbox pool actor: keeps `pool_size` sandboxes pre-started so a call pays only for its own work.
//! Each sandbox serves exactly one call and is destroyed; the pool refills in the background.
//!
//! On a home node with `[cluster] remote_tools`, a run goes first to a worker node serving `tools` through
//! the [`RemoteSandbox`] port (the cluster organ plugs in at boot; the port lives here, with the one organ
//! that asks it, so the tools organ imports nothing above it): the worker runs it in its own pool, and only
//! when no node serves the role does the run come back here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{Backend, Limits, Output, Prepared, SandboxError};
use crate::ask::ask_named;
use crate::settings::ToolsSettings;

/// Global name of the pool actor.
pub const SANDBOX_NAME: &str = "sandbox";

/// The pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxPool;

/// Sandbox runs on other machines, as the pool sees them (implemented by the cluster organ's handle).
#[async_trait::async_trait]
pub trait RemoteSandbox: Send + Sync {
    /// Runs `request` on a worker node serving `tools`: `Some` with its result (a worker's failure, or no node
    /// with `when_no_node = "unavailable"`, is an `Err`), `None` when no node serves the role and the run
    /// belongs here.
    async fn run(&self, request: Value) -> Option<Result<Output, SandboxError>>;
}

/// Start-up arguments.
#[derive(Clone)]
pub struct PoolArgs {
    /// Tool settings (backend, limits, pool size).
    pub settings: ToolsSettings,
    /// Where runs go first, on a home node with `[cluster] remote_tools`; `None` runs everything here.
    pub remote: Option<Arc<dyn RemoteSandbox>>,
}

/// Messages the pool handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum PoolMsg {
    /// Run one request in a fresh sandbox (on a worker node first, with a remote set).
    Run(Box<Value>, RpcReplyPort<Result<Output, SandboxError>>),
    /// Run one request here: no worker node serves `tools` (sent by the pool to itself).
    RunHere(Box<Value>, RpcReplyPort<Result<Output, SandboxError>>),
    /// From a refill task.
    Refilled(Result<Box<dyn Prepared>, SandboxError>),
    /// Whether sandboxes can run here, and why not.
    Available(RpcReplyPort<Result<String, SandboxError>>),
    /// Fault injection: panic.
    Crash,
}

/// Pool state.
pub struct PoolState {
    backend: Arc<dyn Backend>,
    limits: Limits,
    size: usize,
    warm: VecDeque<Box<dyn Prepared>>,
    refilling: usize,
    failures: u32,
    unavailable: Option<SandboxError>,
    backoff: Duration,
    /// One permit per sandbox allowed to run a call at once (`tools.max_sandboxes`).
    running: Arc<Semaphore>,
    /// Worker nodes serving `tools`, tried first.
    remote: Option<Arc<dyn RemoteSandbox>>,
}

impl PoolState {
    fn refill(&mut self, me: &ActorRef<PoolMsg>) {
        while self.warm.len() + self.refilling < self.size {
            self.refilling += 1;
            let (backend, limits, me) = (self.backend.clone(), self.limits.clone(), me.clone());
            // Back off after failures so a broken runtime does not spin.
            let delay = self.backoff * self.failures.min(10);
            // A plain tokio task: it only prepares a sandbox and casts it back; a failure is a message.
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let r = backend.prepare(&limits).await;
                let _ = me.cast(PoolMsg::Refilled(r));
            });
        }
    }
}

impl Actor for SandboxPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let backend = super::backend(&args.settings);
        let unavailable = backend.check().await.err();
        match &unavailable {
            Some(e) => {
                tracing::warn!(event = "sandbox.unavailable", backend = backend.name(), reason = %e, "tools cannot be created or run until this is fixed")
            }
            None => tracing::info!(
                event = "sandbox.ready",
                backend = backend.name(),
                pool = args.settings.pool_size,
                "tool sandbox ready"
            ),
        }
        let mut state = PoolState {
            backend,
            limits: Limits::from_settings(&args.settings),
            size: args.settings.pool_size,
            warm: VecDeque::new(),
            refilling: 0,
            failures: 0,
            unavailable,
            backoff: Duration::from_millis(args.settings.pool_backoff_ms),
            running: Arc::new(Semaphore::new(args.settings.max_sandboxes.max(1))),
            remote: args.remote.clone(),
        };
        if state.unavailable.is_none() {
            state.refill(&myself);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Run(request, reply) if state.remote.is_some() => {
                let (remote, me) = (state.remote.clone(), myself.clone());
                // Its own task: a remote run waits on the node link while the pool keeps serving.
                tokio::spawn(async move {
                    let Some(remote) = remote else { return };
                    match remote.run((*request).clone()).await {
                        Some(r) => {
                            let _ = reply.send(r);
                        }
                        None => {
                            if let Err(e) = me.cast(PoolMsg::RunHere(request, reply)) {
                                tracing::warn!(event = "sandbox.lost_run", error = %e, "the pool stopped before a run could come back to it");
                            }
                        }
                    }
                });
            }
            PoolMsg::Run(request, reply) | PoolMsg::RunHere(request, reply) => {
                if let Some(e) = &state.unavailable {
                    let _ = reply.send(Err(e.clone()));
                    return Ok(());
                }
                let warm = state.warm.pop_front();
                let (backend, limits) = (state.backend.clone(), state.limits.clone());
                let running = state.running.clone();
                // A plain tokio task, not a job: a run owns a live sandbox (a runsc container) whose cleanup
                // must happen even if the pool restarts meanwhile; a panic in it drops the reply port, so the
                // caller gets `Stopped` at once.
                tokio::spawn(async move {
                    // The daemon-wide cap: wait for a slot at most as long as a call may run.
                    let Ok(Ok(_slot)) =
                        tokio::time::timeout(limits.timeout, running.acquire_owned()).await
                    else {
                        let _ = reply.send(Err(SandboxError::Failed(format!(
                            "busy: tools.max_sandboxes sandboxes stayed in use for {} ms",
                            limits.timeout.as_millis()
                        ))));
                        return;
                    };
                    let sandbox = match warm {
                        Some(s) => Ok(s),
                        None => backend.prepare(&limits).await,
                    };
                    let r = match sandbox {
                        Ok(s) => s.run(&request, &limits).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                });
                state.refill(&myself);
            }
            PoolMsg::Refilled(r) => {
                state.refilling = state.refilling.saturating_sub(1);
                match r {
                    Ok(s) => {
                        state.failures = 0;
                        if state.warm.len() < state.size {
                            state.warm.push_back(s);
                        }
                    }
                    Err(e) => {
                        state.failures += 1;
                        tracing::warn!(event = "sandbox.prestart_failed", error = %e, failures = state.failures, "could not pre-start a sandbox");
                    }
                }
                state.refill(&myself);
            }
            PoolMsg::Available(reply) => {
                let _ = reply.send(match &state.unavailable {
                    Some(e) => Err(e.clone()),
                    None => Ok(state.backend.name().to_string()),
                });
            }
            PoolMsg::Crash => panic!("debug_crash requested for sandbox"),
        }
        Ok(())
    }
}

/// The one way to reach the sandbox pool (registered as [`SANDBOX_NAME`]): found by name at each call, so it
/// stays valid across the pool's restarts. It holds nothing, so any organ may make one.
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxHandle;

impl SandboxHandle {
    /// Runs one request in a fresh sandbox; `timeout` covers waiting for a sandbox and the run itself.
    pub async fn run(&self, request: Value, timeout: Duration) -> Result<Output, SandboxError> {
        ask_named(
            "sandbox pool",
            SANDBOX_NAME,
            |r| PoolMsg::Run(Box::new(request), r),
            timeout,
        )
        .await?
    }

    /// The backend's name when sandboxes can run here, or why not (as found at the pool's start).
    pub async fn available(&self, timeout: Duration) -> Result<String, SandboxError> {
        ask_named("sandbox pool", SANDBOX_NAME, PoolMsg::Available, timeout).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose backend cannot run says why through its handle, and a run is answered with the same
    /// reason at once (no sandbox is tried).
    #[tokio::test]
    async fn a_pool_without_its_backend_says_why_through_the_handle() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/settings.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut settings = crate::settings::Settings::parse(&text, &path)
            .unwrap()
            .tools;
        settings.backend = crate::settings::SandboxChoice::Runsc;
        settings.runsc_path = "/nonexistent/runsc".into();
        settings.pool_size = 1;
        let (pool, _h) = SandboxPool::spawn(
            Some(SANDBOX_NAME.into()),
            SandboxPool,
            PoolArgs {
                settings,
                remote: None,
            },
        )
        .await
        .unwrap();
        let t = Duration::from_secs(5);
        let why = SandboxHandle.available(t).await.unwrap_err().to_string();
        assert!(why.contains("/nonexistent/runsc"), "{why}");
        let run = SandboxHandle
            .run(serde_json::json!({"op": "check"}), t)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(run, why);
        pool.stop(None);
    }
}
