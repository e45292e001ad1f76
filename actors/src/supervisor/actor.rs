//! The supervisor actor: owns its children's specs and applies the OTP restart rules.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use super::{ChildInfo, ChildSpec, Restart, Strategy, SupervisorConfig};
use crate::events::Event;

/// A supervisor. Spawn it with [`SupervisorArgs`]; children start in order during `pre_start`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Supervisor;

/// Start-up arguments.
pub struct SupervisorArgs {
    /// The supervisor's settings.
    pub config: SupervisorConfig,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
}

/// Messages a supervisor handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum SupervisorMsg {
    /// The children, in start order.
    Children(RpcReplyPort<Vec<ChildInfo>>),
    /// Add and start a new child at the end (fails if the id exists).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, String>>),
    /// Start a new generation of an existing child from a new spec and install it in place; the old actor is
    /// detached (not stopped) and returned, so the caller can let it drain. The new spec is used for every
    /// later restart.
    ReplaceChild(ChildSpec, RpcReplyPort<Result<Option<ActorCell>, String>>),
    /// Stop a child and forget its spec.
    TerminateChild(String, RpcReplyPort<bool>),
    /// Internal: try again to restart a child whose restart failed.
    RetryRestart(String, String),
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    restarts: u32,
}

/// Supervisor state.
pub struct SupervisorState {
    config: SupervisorConfig,
    children: Vec<Child>,
    restart_log: VecDeque<Instant>,
    /// Actors no longer managed (replaced generations, terminated children): their exit is reported, not acted on.
    detached: HashMap<ActorId, String>,
}

impl SupervisorState {
    fn path_of(&self, id: &str) -> String {
        format!("{}/{}", self.config.path, id)
    }

    fn index_of(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children
            .iter()
            .position(|c| c.cell.as_ref().map(|x| x.get_id()) == Some(id))
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            config: args.config,
            children: Vec::new(),
            restart_log: VecDeque::new(),
            detached: HashMap::new(),
        };
        for spec in args.children {
            let path = state.path_of(&spec.id);
            match (spec.start)(myself.get_cell()).await {
                Ok(cell) => {
                    state.config.hub.publish(Event::ActorStarted {
                        actor: path,
                        restarts: 0,
                    });
                    state.children.push(Child {
                        spec,
                        cell: Some(cell),
                        restarts: 0,
                    });
                }
                Err(e) => {
                    let reason = format!("child {path} failed to start: {e}");
                    state.config.hub.publish(Event::ActorFailed {
                        actor: path,
                        reason: reason.clone(),
                    });
                    stop_all(&mut state).await;
                    return Err(reason.into());
                }
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        stop_all(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Children(reply) => {
                let infos = state
                    .children
                    .iter()
                    .map(|c| ChildInfo {
                        id: c.spec.id.clone(),
                        restart: c.spec.restart,
                        restarts: c.restarts,
                        is_supervisor: c.spec.is_supervisor,
                        cell: c.cell.clone(),
                    })
                    .collect();
                let _ = reply.send(infos);
            }
            SupervisorMsg::StartChild(spec, reply) => {
                if state.children.iter().any(|c| c.spec.id == spec.id) {
                    let _ = reply.send(Err(format!("child {} already exists", spec.id)));
                    return Ok(());
                }
                let path = state.path_of(&spec.id);
                match (spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        state.config.hub.publish(Event::ActorStarted {
                            actor: path,
                            restarts: 0,
                        });
                        state.children.push(Child {
                            spec,
                            cell: Some(cell.clone()),
                            restarts: 0,
                        });
                        let _ = reply.send(Ok(cell));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("child {path} failed to start: {e}")));
                    }
                }
            }
            SupervisorMsg::ReplaceChild(spec, reply) => {
                let Some(idx) = state.children.iter().position(|c| c.spec.id == spec.id) else {
                    let _ = reply.send(Err(format!("no child {}", spec.id)));
                    return Ok(());
                };
                let path = state.path_of(&spec.id);
                match (spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        let child = &mut state.children[idx];
                        let old = child.cell.replace(cell);
                        child.spec = spec;
                        if let Some(old) = &old {
                            state
                                .detached
                                .insert(old.get_id(), format!("{path} (previous generation)"));
                        }
                        tracing::info!(event = "actor.started", actor = %path, generation = "new", "actor started as a new generation");
                        let _ = reply.send(Ok(old));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!(
                            "new generation of {path} failed to start: {e}"
                        )));
                    }
                }
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let Some(idx) = state.children.iter().position(|c| c.spec.id == id) else {
                    let _ = reply.send(false);
                    return Ok(());
                };
                let child = state.children.remove(idx);
                let path = state.path_of(&id);
                if let Some(cell) = child.cell {
                    stop_child(&state.config, &path, &cell).await;
                }
                let _ = reply.send(true);
            }
            SupervisorMsg::RetryRestart(id, reason) => {
                if let Some(idx) = state
                    .children
                    .iter()
                    .position(|c| c.spec.id == id && c.cell.is_none())
                {
                    restart_group(&myself, state, idx, vec![idx], &reason).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, true, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, false, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(idx) = state.index_of(&cell) else {
            if let Some(what) = state.detached.remove(&cell.get_id()) {
                state.config.hub.publish(Event::ActorStopped {
                    actor: what,
                    reason,
                });
            }
            return Ok(());
        };
        let id = state.children[idx].spec.id.clone();
        let path = state.path_of(&id);
        state.children[idx].cell = None;
        if failure {
            state.config.hub.publish(Event::ActorFailed {
                actor: path.clone(),
                reason: reason.clone(),
            });
        } else {
            state.config.hub.publish(Event::ActorStopped {
                actor: path.clone(),
                reason: reason.clone(),
            });
        }
        let restart = match state.children[idx].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failure,
            Restart::Temporary => false,
        };
        if !restart {
            // A temporary child, or a transient one that ended normally, is done: forget it.
            state.children.remove(idx);
            return Ok(());
        }
        let group: Vec<usize> = match state.config.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..state.children.len()).collect(),
            Strategy::RestForOne => (idx..state.children.len()).collect(),
        };
        restart_group(&myself, state, idx, group, &format!("{path}: {reason}")).await
    }
}

/// Records one restart against the intensity; `Err` when the supervisor must give up.
fn charge_restart(state: &mut SupervisorState, reason: &str) -> Result<(), String> {
    let now = Instant::now();
    state.restart_log.push_back(now);
    while let Some(t) = state.restart_log.front() {
        if now.duration_since(*t) > state.config.period {
            state.restart_log.pop_front();
        } else {
            break;
        }
    }
    if state.restart_log.len() as u32 > state.config.intensity {
        return Err(format!(
            "{} gave up: more than {} restarts in {} ms (last: {reason})",
            state.config.path,
            state.config.intensity,
            state.config.period.as_millis()
        ));
    }
    Ok(())
}

/// Stops the running members of `group` (reverse order) and starts them all again (in order).
async fn restart_group(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    failed: usize,
    group: Vec<usize>,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    if let Err(give_up) = charge_restart(state, reason) {
        state.config.hub.publish(Event::ActorEscalated {
            supervisor: state.config.path.clone(),
            reason: give_up.clone(),
        });
        stop_all(state).await;
        return Err(give_up.into());
    }
    for &i in group.iter().rev() {
        if i == failed {
            continue;
        }
        if let Some(cell) = state.children[i].cell.take() {
            let path = state.path_of(&state.children[i].spec.id);
            stop_child(&state.config, &path, &cell).await;
        }
    }
    // Temporary siblings stopped by a group restart are not restarted (OTP): forget them.
    let (members, dropped): (Vec<usize>, Vec<usize>) = group
        .iter()
        .partition(|&&i| i == failed || state.children[i].spec.restart != Restart::Temporary);
    let members: Vec<String> = members
        .iter()
        .map(|&i| state.children[i].spec.id.clone())
        .collect();
    let dropped: Vec<String> = dropped
        .iter()
        .map(|&i| state.children[i].spec.id.clone())
        .collect();
    state.children.retain(|c| !dropped.contains(&c.spec.id));
    for id in members {
        let Some(i) = state.children.iter().position(|c| c.spec.id == id) else {
            continue;
        };
        let path = state.path_of(&id);
        let start = state.children[i].spec.start.clone();
        match start(myself.get_cell()).await {
            Ok(cell) => {
                let c = &mut state.children[i];
                c.cell = Some(cell);
                c.restarts += 1;
                state.config.hub.publish(Event::ActorRestarted {
                    actor: path,
                    restarts: c.restarts,
                    reason: reason.to_string(),
                });
            }
            Err(e) => {
                let why = format!("restart of {path} failed: {e}");
                state.config.hub.publish(Event::ActorFailed {
                    actor: path.clone(),
                    reason: why.clone(),
                });
                // Retry after a pause, through the mailbox, so the retry is charged against the intensity too.
                let me = myself.clone();
                let backoff = state.config.restart_backoff;
                // A plain tokio task: a timer that casts one message.
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    let _ = me.cast(SupervisorMsg::RetryRestart(id, why));
                });
            }
        }
    }
    Ok(())
}

async fn stop_child(config: &SupervisorConfig, path: &str, cell: &ActorCell) {
    let reason = "stopped by supervisor".to_string();
    if cell
        .stop_and_wait(Some(reason.clone()), Some(config.shutdown_timeout))
        .await
        .is_err()
    {
        tracing::warn!(event = "actor.killed", actor = %path, "child did not stop in time; killed");
        let _ = cell.kill_and_wait(Some(config.shutdown_timeout)).await;
    }
    config.hub.publish(Event::ActorStopped {
        actor: path.to_string(),
        reason,
    });
}

/// Stops every child, last started first.
async fn stop_all(state: &mut SupervisorState) {
    for i in (0..state.children.len()).rev() {
        if let Some(cell) = state.children[i].cell.take() {
            let path = state.path_of(&state.children[i].spec.id);
            stop_child(&state.config, &path, &cell).await;
        }
    }
}
