//! One remote call, whatever its role: to a serving node (the same node again while it is up, another when it
//! is lost), at most `1 + retries` attempts, one call id throughout. What a call does with no node at all is
//! its caller's business (`when_no_node`): here it is `Ok(None)`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorId, ActorRef, MessagingErr};
use tokio::sync::mpsc::UnboundedSender;

use super::home::ClusterMsg;
use super::wire::{self, Role, RoleCall, RoleMsg, RoleReply, Work};
use crate::llm::LlmError;
use crate::settings::ClusterSettings;
use crate::trainer::Progress;

/// A long call the home keeps an eye on while it runs (a training run): its progress is asked for every
/// `poll` and passed on, and once `cancel` is set the worker is told to stop.
pub struct Watch {
    /// Where progress goes (`trainer.progress` at the pipeline).
    pub progress: UnboundedSender<Progress>,
    /// Set by the trainer's cancel (or its run's end).
    pub cancel: Arc<AtomicBool>,
    /// Between questions.
    pub poll: Duration,
}

/// The node ids the home has admitted (ready, not refused): shared by the organ, which changes it, and the
/// calls in flight, which read it at each attempt.
pub type Admitted = Arc<ArcSwap<BTreeSet<u64>>>;

/// The members of `role`'s group on admitted nodes, in a stable order.
fn serving(role: Role, admitted: &Admitted) -> Vec<ActorCell> {
    let admitted = admitted.load();
    let mut cells: Vec<ActorCell> = ractor::pg::get_members(&role.group())
        .into_iter()
        .filter(|c| node_of(c.get_id()).is_some_and(|n| admitted.contains(&n)))
        .collect();
    cells.sort_by_key(|c| c.get_id().to_string());
    cells
}

/// The serving members, once there is at least one, polling every `poll` for at most `wait`.
async fn serving_within(
    role: Role,
    admitted: &Admitted,
    wait: Duration,
    poll: Duration,
) -> Vec<ActorCell> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let members = serving(role, admitted);
        if !members.is_empty() || tokio::time::Instant::now() >= deadline {
            return members;
        }
        tokio::time::sleep(poll).await;
    }
}

/// The node id of a remote actor; `None` for a local one.
pub fn node_of(id: ActorId) -> Option<u64> {
    match id {
        ActorId::Remote { node_id, .. } => Some(node_id),
        ActorId::Local(_) => None,
    }
}

/// The roles node `node` serves now (from its role servers in the process groups).
pub fn roles_of(node: u64) -> Vec<String> {
    Role::ALL
        .into_iter()
        .filter(|r| {
            ractor::pg::get_members(&r.group())
                .iter()
                .any(|c| node_of(c.get_id()) == Some(node))
        })
        .map(|r| r.name().to_string())
        .collect()
}

/// Runs `work` on a node serving its role: `Ok(Some)` with the node's checked reply, `Ok(None)` when no node
/// serves the role, `Err` when every attempt timed out or lost its node, or the reply was not to be trusted.
/// `call_id` names the call (a fresh one when `None`); `watch` follows a long call while it runs.
pub async fn remote_call(
    me: &ActorRef<ClusterMsg>,
    work: Work,
    c: &ClusterSettings,
    start: usize,
    admitted: &Admitted,
    call_id: Option<String>,
    watch: Option<&Watch>,
) -> Result<Option<RoleReply>, LlmError> {
    let role = work.role();
    let call_id = call_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let bytes = wire::encode(&RoleCall {
        call_id: call_id.clone(),
        work,
    })?;
    let timeout = Duration::from_millis(c.call_timeout_ms);
    let attempt_ms = if role == Role::Train {
        c.train_timeout_ms
    } else {
        c.call_timeout_ms
    };
    let mut preferred: Option<ActorId> = None;
    let mut last: Option<LlmError> = None;
    for attempt in 0..=c.retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(c.retry_backoff_ms)).await;
        }
        // A retry waits (up to one call's timeout) for a node to serve: a lost link is usually back within a
        // reconnect; the first attempt does not wait, so a home without nodes answers at once.
        let members = if attempt == 0 {
            serving(role, admitted)
        } else {
            let poll = Duration::from_millis(c.retry_backoff_ms.max(1));
            serving_within(role, admitted, timeout, poll).await
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
        let call = actor.call(
            |p| RoleMsg::Call(payload, p),
            Some(Duration::from_millis(attempt_ms)),
        );
        let sent = match watch {
            Some(w) => watching(call, &actor, &call_id, w).await,
            None => call.await,
        };
        let answered = matches!(sent, Ok(CallResult::Success(_)));
        let _ = me.cast(ClusterMsg::Ended { node, answered });
        match sent {
            Ok(CallResult::Success(reply)) => {
                return wire::decode_reply(&reply, c.max_frame_bytes, &call_id).map(Some);
            }
            Ok(CallResult::Timeout) => {
                tracing::warn!(event = "cluster.call_timeout", role = role.name(), call_id = %call_id, attempt, ms = attempt_ms, "a worker node did not answer in time; asking again under the same id");
                last = Some(LlmError::Timeout(attempt_ms));
            }
            Ok(CallResult::SenderError) | Err(_) => {
                tracing::warn!(event = "cluster.call_lost", role = role.name(), call_id = %call_id, attempt, "a worker node was lost during a call; trying again");
                preferred = None;
                last = Some(LlmError::Unreachable {
                    url: format!("cluster role {}", role.name()),
                    detail: "the worker node was lost during the call".into(),
                });
            }
        }
    }
    match last {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Waits for `call` while asking `actor` how the call `id` goes every `w.poll`: new progress is passed on, and
/// a set cancel flag is passed to the worker (once).
async fn watching<F>(call: F, actor: &ActorRef<RoleMsg>, id: &str, w: &Watch) -> F::Output
where
    F: std::future::Future<Output = Result<CallResult<Vec<u8>>, MessagingErr<RoleMsg>>>,
{
    tokio::pin!(call);
    let mut last_step = None;
    let mut told = false;
    loop {
        tokio::select! {
            r = &mut call => return r,
            _ = tokio::time::sleep(w.poll) => {
                if w.cancel.load(Ordering::SeqCst) && !told {
                    told = actor.cast(RoleMsg::Cancel(id.as_bytes().to_vec())).is_ok();
                }
                let asked = actor
                    .call(|p| RoleMsg::Progress(id.as_bytes().to_vec(), p), Some(w.poll))
                    .await;
                if let Ok(CallResult::Success(bytes)) = asked {
                    if let Some(p) = wire::decode_progress(&bytes) {
                        if last_step != Some(p.step) {
                            last_step = Some(p.step);
                            let _ = w.progress.send(p);
                        }
                    }
                }
            }
        }
    }
}

/// The error of a call no node serves, with `when_no_node = "unavailable"`.
pub fn no_node(role: Role) -> String {
    format!(
        "no worker node serves {} (cluster.when_no_node = \"unavailable\")",
        role.name()
    )
}
