//! The codex actor: owns the loaded codex and hands it to whoever asks.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::Codex;

/// The codex organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct CodexActor;

/// Start-up arguments.
#[derive(Debug, Clone)]
pub struct CodexArgs {
    /// `config/codex.toml`.
    pub path: PathBuf,
}

/// Messages the codex actor handles.
pub enum CodexMsg {
    /// The codex currently in force.
    Get(RpcReplyPort<Arc<Codex>>),
    /// Fault injection: panic.
    Crash,
}

/// State: the codex in force.
pub struct CodexState {
    codex: Arc<Codex>,
}

impl Actor for CodexActor {
    type Msg = CodexMsg;
    type State = CodexState;
    type Arguments = CodexArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<CodexMsg>,
        args: CodexArgs,
    ) -> Result<CodexState, ActorProcessingErr> {
        let codex = Codex::load(&args.path)?;
        Ok(CodexState {
            codex: Arc::new(codex),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<CodexMsg>,
        msg: CodexMsg,
        state: &mut CodexState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CodexMsg::Get(reply) => {
                let _ = reply.send(state.codex.clone());
            }
            CodexMsg::Crash => panic!("debug_crash requested for codex"),
        }
        Ok(())
    }
}
