//! The worker's side of a role: [`RoleServer`], the actor a worker node puts in [`THINK_GROUP`] for the home
//! to call. It runs each model call on the worker's own backend, once per call id: a retry of a call still
//! running joins it, a retry of a call that ended gets the same reply again (the last `dedupe_capacity`
//! ended calls are remembered, oldest forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::wire::{self, Outcome, RoleMsg, ThinkReply};
use crate::llm::{LlmBackend, LlmError};

/// The role server actor.
pub struct RoleServer;

/// What a role server starts from.
#[derive(Debug, Clone)]
pub struct RoleArgs {
    /// The worker's backend.
    pub backend: Arc<dyn LlmBackend>,
    /// The worker's node name (every reply carries it).
    pub node: String,
    /// Largest call accepted, in bytes.
    pub max_bytes: u64,
    /// Ended calls remembered by id.
    pub dedupe_capacity: usize,
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
        ractor::pg::join(wire::THINK_GROUP.to_string(), vec![myself.get_cell()]);
        tracing::info!(event = "node.role_serving", role = "think", node = %args.node, "serving persona model calls");
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
            RoleMsg::Think(bytes, port) => state.think(&myself, &bytes, port),
            RoleMsg::Done(id, reply) => state.done(id, reply),
        }
        Ok(())
    }
}

impl RoleState {
    fn think(&mut self, myself: &ActorRef<RoleMsg>, bytes: &[u8], port: RpcReplyPort<Vec<u8>>) {
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
                let backend = self.args.backend.clone();
                let me = myself.clone();
                let (node, kind) = (self.args.node.clone(), backend.kind().to_string());
                tokio::spawn(async move {
                    let id = call.call_id.clone();
                    // The call runs in its own task so a panic in the backend is an answer, not a hang.
                    let result =
                        match tokio::spawn(async move { backend.chat(call.request, None).await })
                            .await
                        {
                            Ok(r) => r,
                            Err(e) => {
                                Err(LlmError::Backend(format!("the model call panicked: {e}")))
                            }
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

    fn reply(&self, id: &str, result: Result<crate::llm::ChatResponse, LlmError>) -> Vec<u8> {
        encode_reply(
            id,
            &self.args.node,
            &self.args.backend.kind().to_string(),
            result,
        )
    }
}

fn encode_reply(
    id: &str,
    node: &str,
    backend: &str,
    result: Result<crate::llm::ChatResponse, LlmError>,
) -> Vec<u8> {
    let reply = ThinkReply {
        call_id: id.to_string(),
        node: node.to_string(),
        backend: backend.to_string(),
        outcome: wire::outcome(result),
    };
    wire::encode(&reply).unwrap_or_else(|e| {
        // An answer that cannot be encoded is a failure the home can read.
        let failed = ThinkReply {
            outcome: Outcome::Failed {
                message: e.to_string(),
                timeout: false,
            },
            ..reply
        };
        wire::encode(&failed).unwrap_or_default()
    })
}
