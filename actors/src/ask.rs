//! One way to reach an organ.
//!
//! Every organ is an actor registered under a global name, and every organ is reached the same way: through
//! its typed handle (`MemoryHandle`, `CodexHandle`, `OrchestratorHandle`, `ForgeHandle`, `SandboxHandle`,
//! `SupervisorHandle`, and `PersonaHandle::think` for one live persona actor). A handle is built on the two
//! functions here:
//!
//! - [`find`] looks the organ up by name *at call time*, so a handle stays valid across restarts of the
//!   actor behind it (a restarted actor has a new `ActorRef`, the same name);
//! - [`ask`] sends one request and waits for the answer within a timeout, mapping the three ways a call can
//!   fail to one typed [`AskError`].
//!
//! An organ's own refusals are its own error type (`MemError`, `CodexCmdError`, `OrchError`, ...), each with
//! an `Unreachable(AskError)` variant, so a caller matches one enum and the gateway turns each variant into
//! the protocol error code it means ([`WireError`]). No raw message enum, no `where_is` and no
//! `CallResult` match appears outside the handles.
//!
//! ```text
//!   gateway / another organ ──handle.method(..)──▶ find(name) ──▶ ask(actor, msg, timeout)
//!                                   ▲                                   │
//!                                   └── Result<T, OrganError> ◀─────────┘ Success | Timeout | SenderError
//! ```

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use batos_protocol::{ErrorBody, ErrorCode};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::settings::Settings;

/// Why a call to an organ got no answer. The organ's own refusals are not here: they are its error type.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AskError {
    /// No actor is registered under the organ's name: it is between a failure and its restart.
    #[error("{organ} is restarting; retry shortly")]
    Restarting {
        /// The organ as its handle labels it in messages (e.g. `orchestrator`, `root supervisor`).
        organ: &'static str,
    },
    /// The organ did not answer within the timeout (the request may still be carried out).
    #[error("{organ} did not answer within {ms} ms")]
    Timeout {
        /// The organ as its handle labels it in messages.
        organ: &'static str,
        /// The timeout that passed, in milliseconds.
        ms: u64,
    },
    /// The organ stopped (crashed or was stopped) before answering; the request is lost with it.
    #[error("{organ} stopped while answering; retry shortly")]
    Stopped {
        /// The organ as its handle labels it in messages.
        organ: &'static str,
    },
}

/// Looks up an organ's actor by its global name.
pub fn find<M: ractor::Message>(organ: &'static str, name: &str) -> Result<ActorRef<M>, AskError> {
    ractor::registry::where_is(name)
        .map(Into::into)
        .ok_or(AskError::Restarting { organ })
}

/// Sends one request built by `build` to `actor` and waits at most `timeout` for its answer.
pub async fn ask<M, T>(
    organ: &'static str,
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, AskError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(AskError::Timeout {
            organ,
            ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
        Ok(CallResult::SenderError) | Err(_) => Err(AskError::Stopped { organ }),
    }
}

/// [`find`] then [`ask`]: one request to the organ registered as `name`.
pub async fn ask_named<M, T>(
    organ: &'static str,
    name: &str,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, AskError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    let actor = find::<M>(organ, name)?;
    ask(organ, &actor, build, timeout).await
}

/// Sends a message that needs no answer (fault injection, notifications). `Err` when the organ is not running.
pub fn tell<M: ractor::Message>(organ: &'static str, name: &str, msg: M) -> Result<(), AskError> {
    find::<M>(organ, name)?
        .cast(msg)
        .map_err(|_| AskError::Stopped { organ })
}

/// What every organ handle holds: which organ, under which global name, and where its call timeout comes
/// from. The timeout is read from the live settings at each call, so a reload takes effect at once.
#[derive(Clone)]
pub struct OrganRef {
    organ: &'static str,
    name: &'static str,
    settings: Arc<ArcSwap<Settings>>,
    timeout_ms: fn(&Settings) -> u64,
}

impl std::fmt::Debug for OrganRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrganRef({})", self.organ)
    }
}

impl OrganRef {
    /// The organ called `organ` in errors, registered as `name`, with its call timeout (ms) read by
    /// `timeout_ms` from the live settings.
    pub fn new(
        organ: &'static str,
        name: &'static str,
        settings: Arc<ArcSwap<Settings>>,
        timeout_ms: fn(&Settings) -> u64,
    ) -> Self {
        Self {
            organ,
            name,
            settings,
            timeout_ms,
        }
    }

    /// The call timeout in force now.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis((self.timeout_ms)(&self.settings.load()))
    }

    /// The live settings the handle reads.
    pub fn settings(&self) -> &Arc<ArcSwap<Settings>> {
        &self.settings
    }

    /// One request to the organ, within the timeout in force.
    pub async fn ask<M, T>(&self, build: impl FnOnce(RpcReplyPort<T>) -> M) -> Result<T, AskError>
    where
        M: ractor::Message,
        T: Send + 'static,
    {
        ask_named(self.organ, self.name, build, self.timeout()).await
    }

    /// A message that needs no answer.
    pub fn tell<M: ractor::Message>(&self, msg: M) -> Result<(), AskError> {
        tell(self.organ, self.name, msg)
    }
}

/// An error that has a protocol error code: what the gateway answers when a command fails with it.
pub trait WireError: std::fmt::Display {
    /// The protocol code this error means.
    fn code(&self) -> ErrorCode;

    /// The error as a reply body: its code and its message.
    fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

impl WireError for AskError {
    /// Every way of getting no answer is worth a retry: `unavailable`.
    fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    struct Echo;

    enum EchoMsg {
        Echo(u32, RpcReplyPort<u32>),
        Ignore(RpcReplyPort<u32>),
        Panic(RpcReplyPort<u32>),
    }

    impl Actor for Echo {
        type Msg = EchoMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<EchoMsg>,
            msg: EchoMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                EchoMsg::Echo(n, r) => {
                    let _ = r.send(n);
                }
                // Keep the port alive past the caller's timeout.
                EchoMsg::Ignore(r) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(r);
                }
                EchoMsg::Panic(_r) => panic!("asked to panic"),
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_way_of_failing_is_its_own_error() {
        let t = Duration::from_millis(100);
        assert_eq!(
            ask_named::<EchoMsg, u32>("echo", "ask-test-echo", |r| EchoMsg::Echo(1, r), t).await,
            Err(AskError::Restarting { organ: "echo" })
        );
        let (actor, handle) = Actor::spawn(Some("ask-test-echo".into()), Echo, ())
            .await
            .unwrap();
        assert_eq!(
            ask_named("echo", "ask-test-echo", |r| EchoMsg::Echo(7, r), t).await,
            Ok(7)
        );
        assert_eq!(
            ask("echo", &actor, EchoMsg::Ignore, t).await,
            Err(AskError::Timeout {
                organ: "echo",
                ms: 100
            })
        );
        assert_eq!(
            ask("echo", &actor, EchoMsg::Panic, Duration::from_secs(5)).await,
            Err(AskError::Stopped { organ: "echo" })
        );
        let _ = handle.await;
        assert_eq!(
            tell("echo", "ask-test-echo", EchoMsg::Ignore(dummy_port())),
            Err(AskError::Restarting { organ: "echo" })
        );
        assert_eq!(
            AskError::Stopped { organ: "x" }.to_body().code,
            ErrorCode::Unavailable
        );
    }

    fn dummy_port() -> RpcReplyPort<u32> {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        tx.into()
    }
}
