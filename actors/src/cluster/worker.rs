//! The worker's side of a role: [`RoleServer`], the actor a worker node puts in its role's process group
//! ([`Role::group`]) for the home to call, one per role served. It runs each call on the worker's own parts —
//! a model call on its backend, a sandbox run in its own pool — once per call id: a retry of a call still
//! running joins it, a retry of a call that ended gets the same reply again (the last `dedupe_capacity`
//! ended calls are remembered, oldest forgotten first).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use super::wire::{self, Outcome, Role, RoleMsg, RoleReply, Work};
use crate::llm::{LlmBackend, LlmError};
use crate::settings::EmbeddedSettings;
use crate::tools::sandbox::pool::SandboxHandle;
use crate::trainer::{train_here, Progress, TrainJob, Trained};

/// The role server actor.
pub struct RoleServer;

/// What a role server runs its calls on.
#[derive(Debug, Clone)]
pub enum Serves {
    /// `think`: the worker's model backend.
    Think(Arc<dyn LlmBackend>),
    /// `tools`: the worker's own sandbox pool (registered on the worker as the home's is).
    Tools {
        /// The sandbox backend's name (`runsc`, `docker`), for the reply.
        backend: String,
        /// How long one run may take, waiting for a sandbox included.
        timeout: Duration,
    },
    /// `train`: this machine's CPU over its own copy of the base model.
    Train {
        /// The worker's `[llm.embedded]`: where its copy of the base model is (the job says which it must be).
        embedded: EmbeddedSettings,
        /// Where runs' checkpoints live, by fingerprint.
        dir: PathBuf,
        /// Training threads (`[trainer] threads`).
        threads: usize,
    },
}

/// What a running call shares with the server: its cancel flag and its last progress.
#[derive(Debug, Clone)]
pub struct Live {
    cancel: Arc<AtomicBool>,
    progress: watch::Sender<Option<Progress>>,
}

impl Serves {
    /// The role it serves.
    pub fn role(&self) -> Role {
        match self {
            Serves::Think(_) => Role::Think,
            Serves::Tools { .. } => Role::Tools,
            Serves::Train { .. } => Role::Train,
        }
    }

    fn backend(&self) -> String {
        match self {
            Serves::Think(b) => b.kind().to_string(),
            Serves::Tools { backend, .. } => backend.clone(),
            Serves::Train { .. } => "candle".into(),
        }
    }

    async fn run(self, work: Work, live: Live) -> Result<Outcome, LlmError> {
        match (self, work) {
            (Serves::Think(b), Work::Think(req)) => b.chat(req, None).await.map(Outcome::Answer),
            (Serves::Tools { timeout, .. }, Work::Sandbox(req)) => SandboxHandle
                .run(req, timeout)
                .await
                .map(Outcome::Ran)
                .map_err(|e| LlmError::Backend(e.to_string())),
            (
                Serves::Train {
                    embedded,
                    dir,
                    threads,
                },
                Work::Train(job),
            ) => tokio::task::spawn_blocking(move || train(*job, embedded, dir, threads, live))
                .await
                .map_err(|e| LlmError::Backend(format!("the training thread died: {e}")))?
                .map(Outcome::Trained),
            (serves, work) => Err(LlmError::InvalidRequest(format!(
                "this server serves {}, not {}",
                serves.role().name(),
                work.role().name()
            ))),
        }
    }
}

/// A training job on this worker, blocking: its weights checked against the job's, its checkpoint under its
/// fingerprint (kept on cancel, removed once it ends), its progress into `live`.
fn train(
    job: TrainJob,
    embedded: EmbeddedSettings,
    dir: PathBuf,
    threads: usize,
    live: Live,
) -> Result<Trained, LlmError> {
    let fp = &job.fingerprint;
    if fp.is_empty() || fp.len() > 128 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LlmError::InvalidRequest(
            "a training job's fingerprint must be hex".into(),
        ));
    }
    let mine = EmbeddedSettings {
        model_sha256: job.base_sha256.clone(),
        serve_weights: job.serve_weights,
        ..embedded
    };
    let weights = crate::llm::embedded::training_weights(&mine).map_err(|e| {
        LlmError::InvalidRequest(format!(
            "this worker has not the home's base model (llm.embedded.model_path must be the file of SHA-256 {}): {e}",
            job.base_sha256
        ))
    })?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| LlmError::Backend(format!("{}: {e}", dir.display())))?;
    let ckpt = dir.join(format!("{fp}.ckpt"));
    tracing::info!(event = "node.training", fingerprint = %fp, steps = job.cfg.steps, examples = job.data.len(), threads, "training for the home");
    let trained = train_here(&weights, &job, &ckpt, threads, &live.cancel, |p| {
        live.progress.send_replace(Some(p.clone()));
    })
    .map_err(|e| LlmError::Backend(e.to_string()))?;
    if !trained.outcome.cancelled {
        let _ = std::fs::remove_file(&ckpt);
    }
    Ok(trained)
}

/// What a role server starts from.
#[derive(Debug, Clone)]
pub struct RoleArgs {
    /// What it runs calls on (and so its role).
    pub serves: Serves,
    /// The worker's node name (every reply carries it).
    pub node: String,
    /// Largest call accepted, in bytes.
    pub max_bytes: u64,
    /// Ended calls remembered by id.
    pub dedupe_capacity: usize,
    /// Where a refusal from the home goes (the worker's run loop, which stops the node).
    pub refused: Option<UnboundedSender<String>>,
}

/// A call the server knows.
enum Call {
    /// Running: the callers waiting for it (a retry adds one), and what it shares.
    Running(Vec<RpcReplyPort<Vec<u8>>>, Live),
    /// Ended: its reply, for a late retry.
    Ended(Vec<u8>),
}

/// The server's record of calls.
pub struct RoleState {
    args: RoleArgs,
    calls: HashMap<String, Call>,
    ended: VecDeque<String>,
}

impl Actor for RoleServer {
    type Msg = RoleMsg;
    type State = RoleState;
    type Arguments = RoleArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RoleMsg>,
        args: RoleArgs,
    ) -> Result<RoleState, ActorProcessingErr> {
        let role = args.serves.role();
        ractor::pg::join(role.group(), vec![myself.get_cell()]);
        tracing::info!(event = "node.role_serving", role = role.name(), node = %args.node, backend = %args.serves.backend(), "serving the home's calls for this role");
        Ok(RoleState {
            args,
            calls: HashMap::new(),
            ended: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RoleMsg>,
        msg: RoleMsg,
        state: &mut RoleState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoleMsg::Call(bytes, port) => state.call(&myself, &bytes, port),
            RoleMsg::Done(id, reply) => state.done(id, reply, true),
            RoleMsg::Forget(id, reply) => state.done(id, reply, false),
            RoleMsg::Progress(id, port) => {
                let id = String::from_utf8_lossy(&id);
                let last = match state.calls.get(id.as_ref()) {
                    Some(Call::Running(_, live)) => live.progress.borrow().clone(),
                    _ => None,
                };
                let _ = port.send(wire::encode(&last).unwrap_or_default());
            }
            RoleMsg::Cancel(id) => {
                let id = String::from_utf8_lossy(&id);
                if let Some(Call::Running(_, live)) = state.calls.get(id.as_ref()) {
                    tracing::info!(event = "node.call_cancelled", call_id = %id, "the home cancelled a running call");
                    live.cancel.store(true, Ordering::SeqCst);
                }
            }
            RoleMsg::Refused(why) => {
                let why = batos_protocol::truncate(&String::from_utf8_lossy(&why), 512).to_string();
                if let Some(tx) = &state.args.refused {
                    let _ = tx.send(why);
                }
            }
        }
        Ok(())
    }
}

impl RoleState {
    fn call(&mut self, myself: &ActorRef<RoleMsg>, bytes: &[u8], port: RpcReplyPort<Vec<u8>>) {
        let call = match wire::decode_call(bytes, self.args.max_bytes) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(event = "node.bad_call", error = %why, "refused a malformed call");
                let reply = self.reply("", Err(LlmError::InvalidRequest(why)));
                let _ = port.send(reply);
                return;
            }
        };
        match self.calls.get_mut(&call.call_id) {
            Some(Call::Ended(reply)) => {
                tracing::info!(event = "node.call_deduped", call_id = %call.call_id, "answered a retried call from its record");
                let _ = port.send(reply.clone());
            }
            Some(Call::Running(waiting, live)) => {
                // Someone wants it again: a cancel not yet acted on is withdrawn.
                live.cancel.store(false, Ordering::SeqCst);
                waiting.push(port);
            }
            None => {
                let live = Live {
                    cancel: Arc::new(AtomicBool::new(false)),
                    progress: watch::channel(None).0,
                };
                self.calls.insert(
                    call.call_id.clone(),
                    Call::Running(vec![port], live.clone()),
                );
                let serves = self.args.serves.clone();
                let me = myself.clone();
                let (node, kind) = (self.args.node.clone(), serves.backend());
                tokio::spawn(async move {
                    let id = call.call_id.clone();
                    // The call runs in its own task so a panic in the backend is an answer, not a hang.
                    let result = match tokio::spawn(serves.run(call.work, live)).await {
                        Ok(r) => r,
                        Err(e) => Err(LlmError::Backend(format!("the call panicked: {e}"))),
                    };
                    let cancelled =
                        matches!(&result, Ok(Outcome::Trained(t)) if t.outcome.cancelled);
                    let reply = encode_reply(&id, &node, &kind, result);
                    let _ = me.cast(if cancelled {
                        RoleMsg::Forget(id, reply)
                    } else {
                        RoleMsg::Done(id, reply)
                    });
                });
            }
        }
    }

    /// A call ended: its waiting callers get `reply`, which is remembered for a retry when `keep`.
    fn done(&mut self, id: String, reply: Vec<u8>, keep: bool) {
        if let Some(Call::Running(waiting, _)) = self.calls.remove(&id) {
            for port in waiting {
                let _ = port.send(reply.clone());
            }
        }
        if !keep {
            return;
        }
        self.calls.insert(id.clone(), Call::Ended(reply));
        self.ended.push_back(id);
        while self.ended.len() > self.args.dedupe_capacity {
            if let Some(old) = self.ended.pop_front() {
                self.calls.remove(&old);
            }
        }
    }

    fn reply(&self, id: &str, result: Result<Outcome, LlmError>) -> Vec<u8> {
        encode_reply(id, &self.args.node, &self.args.serves.backend(), result)
    }
}

fn encode_reply(id: &str, node: &str, backend: &str, result: Result<Outcome, LlmError>) -> Vec<u8> {
    let reply = RoleReply {
        call_id: id.to_string(),
        node: node.to_string(),
        backend: backend.to_string(),
        outcome: wire::outcome(result),
    };
    wire::encode(&reply).unwrap_or_else(|e| {
        // An answer that cannot be encoded is a failure the home can read.
        let failed = RoleReply {
            outcome: Outcome::Failed {
                message: e.to_string(),
                timeout: false,
            },
            ..reply
        };
        wire::encode(&failed).unwrap_or_default()
    })
}
