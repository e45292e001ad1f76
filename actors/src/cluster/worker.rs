//! The worker's side of a role: [`RoleServer`], the actor a worker node puts in its role's process group
//! ([`Role::group`]) for the home to call, one per role served. It runs each call on the worker's own parts —
//! a model call on its backend, a sandbox run in its own pool — once per call id: a retry of a call still
//! running joins it, a retry of a call that ended gets the same reply again (the last `dedupe_capacity`
//! ended calls are remembered, oldest forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc::UnboundedSender;

use super::wire::{self, Outcome, Role, RoleMsg, RoleReply, Work};
use crate::llm::{LlmBackend, LlmError};
use crate::tools::sandbox::pool::SandboxHandle;

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
}

impl Serves {
    /// The role it serves.
    pub fn role(&self) -> Role {
        match self {
            Serves::Think(_) => Role::Think,
            Serves::Tools { .. } => Role::Tools,
        }
    }

    fn backend(&self) -> String {
        match self {
            Serves::Think(b) => b.kind().to_string(),
            Serves::Tools { backend, .. } => backend.clone(),
        }
    }

    async fn run(self, work: Work) -> Result<Outcome, LlmError> {
        match (self, work) {
            (Serves::Think(b), Work::Think(req)) => b.chat(req, None).await.map(Outcome::Answer),
            (Serves::Tools { timeout, .. }, Work::Sandbox(req)) => SandboxHandle
                .run(req, timeout)
                .await
                .map(Outcome::Ran)
                .map_err(|e| LlmError::Backend(e.to_string())),
            (serves, work) => Err(LlmError::InvalidRequest(format!(
                "this server serves {}, not {}",
                serves.role().name(),
                work.role().name()
            ))),
        }
    }
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
    /// Running: the callers waiting for it (a retry adds one).
    Running(Vec<RpcReplyPort<Vec<u8>>>),
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
            RoleMsg::Done(id, reply) => state.done(id, reply),
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
            Some(Call::Running(waiting)) => waiting.push(port),
            None => {
                self.calls
                    .insert(call.call_id.clone(), Call::Running(vec![port]));
                let serves = self.args.serves.clone();
                let me = myself.clone();
                let (node, kind) = (self.args.node.clone(), serves.backend());
                tokio::spawn(async move {
                    let id = call.call_id.clone();
                    // The call runs in its own task so a panic in the backend is an answer, not a hang.
                    let result = match tokio::spawn(serves.run(call.work)).await {
                        Ok(r) => r,
                        Err(e) => Err(LlmError::Backend(format!("the call panicked: {e}"))),
                    };
                    let reply = encode_reply(&id, &node, &kind, result);
                    let _ = me.cast(RoleMsg::Done(id, reply));
                });
            }
        }
    }

    fn done(&mut self, id: String, reply: Vec<u8>) {
        if let Some(Call::Running(waiting)) = self.calls.remove(&id) {
            for port in waiting {
                let _ = port.send(reply.clone());
            }
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
