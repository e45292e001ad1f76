//! One way to reach an organ.
//!
//! Every organ is an actor registered under a global name, and every organ is reached the same way: through
//! its typed handle. The ten organs the tree supervises by name (memory, codex, orchestrator, the ToolForge,
//! the Curator, the trainer, the Motivator, the image, the exam, the life) share one generic handle,
//! [`Handle<O>`], where `O` is the organ's actor type and says what the handle needs to know ([`Organ`]: its
//! message type, its refusal type, its label and registered name, its timeout, its crash message). Each
//! organ adds only its own methods (`impl Handle<CuratorActor> { fn curate .. }`) and names the type
//! (`CuratorHandle`). `SupervisorHandle` (named at run time), `SandboxHandle` and `PersonaHandle::think` (one
//! live persona actor) are built on the same two functions:
//!
//! - [`find`] looks the organ up by name *at call time*, so a handle stays valid across restarts of the
//!   actor behind it (a restarted actor has a new `ActorRef`, the same name);
//! - [`ask`] sends one request and waits for the answer within a timeout, mapping the three ways a call can
//!   fail to one typed [`AskError`].
//!
//! An organ's own refusals are its own error type (`MemError`, `CodexCmdError`, `OrchError`, ...), each
//! saying its protocol error code ([`WireError`]); a call through a handle fails with one
//! [`OrganError<E>`]: `Refused(E)` or `Unreachable(AskError)`, so the "no answer" case is written once, and
//! the gateway turns either into the code it means. No raw message enum, no `where_is` and no `CallResult`
//! match appears outside the handles.
//!
//! ```text
//!   gateway / another organ ──handle.method(..)──▶ find(name) ──▶ ask(actor, msg, timeout)
//!                                   ▲                                   │
//!                                   └── Result<T, OrganError<E>> ◀──────┘ Success | Timeout | SenderError
//! ```

use std::marker::PhantomData;
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

/// An organ as its handle knows it: the message type its actor takes, how errors name it, the global name it
/// registers under, where its call timeout comes from, and the message that makes it panic. Implemented by
/// each organ's actor type, so `Handle<CuratorActor>` is the Curator's handle and nothing else can be sent
/// through it.
pub trait Organ: 'static {
    /// The messages the organ's actor takes.
    type Msg: ractor::Message;
    /// The organ's own refusals (bad input, conflicts, storage): what it answers when it did answer.
    type Error: WireError + Send + 'static;
    /// How errors name the organ (`curator`, `memory`, ...).
    const LABEL: &'static str;
    /// The global name its actor registers under.
    const NAME: &'static str;

    /// The call timeout in force, in ms, read from the live settings at each call (so a reload takes effect
    /// at once). Most organs answer within `gateway.actor_call_timeout_ms`.
    fn timeout_ms(s: &Settings) -> u64 {
        s.gateway.actor_call_timeout_ms
    }

    /// The fault-injection message that makes the actor panic.
    fn crash() -> Self::Msg;
}

/// The one way to reach organ `O`: by name at call time, within the timeout the live settings give now.
/// Each organ adds its own methods in an `impl Handle<ItsActor>` block beside its messages, and names the type
/// (`pub type CuratorHandle = Handle<CuratorActor>`).
pub struct Handle<O> {
    settings: Arc<ArcSwap<Settings>>,
    organ: PhantomData<fn() -> O>,
}

impl<O> Clone for Handle<O> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            organ: PhantomData,
        }
    }
}

impl<O: Organ> std::fmt::Debug for Handle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({})", O::LABEL)
    }
}

impl<O: Organ> Handle<O> {
    /// A handle reading its timeout from `settings`.
    pub fn new(settings: Arc<ArcSwap<Settings>>) -> Self {
        Self {
            settings,
            organ: PhantomData,
        }
    }

    /// The call timeout in force now.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(O::timeout_ms(&self.settings.load()))
    }

    /// The live settings the handle reads.
    pub fn settings(&self) -> &Arc<ArcSwap<Settings>> {
        &self.settings
    }

    /// One request, within the timeout in force; for answers that cannot be refused.
    pub async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> O::Msg,
    ) -> Result<T, AskError> {
        self.ask_within(self.timeout(), build).await
    }

    /// One request within `timeout` (a call that may take longer than the organ's usual timeout).
    pub async fn ask_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<T>) -> O::Msg,
    ) -> Result<T, AskError> {
        ask_named(O::LABEL, O::NAME, build, timeout).await
    }

    /// One request whose answer is the organ's verdict: a refusal comes back as [`OrganError::Refused`], no
    /// answer as [`OrganError::Unreachable`].
    pub async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<Result<T, O::Error>>) -> O::Msg,
    ) -> Result<T, OrganError<O::Error>> {
        self.call_within(self.timeout(), build).await
    }

    /// [`Self::call`] within `timeout`.
    pub async fn call_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<Result<T, O::Error>>) -> O::Msg,
    ) -> Result<T, OrganError<O::Error>> {
        self.ask_within(timeout, build)
            .await?
            .map_err(OrganError::Refused)
    }

    /// A message that needs no answer.
    pub fn tell(&self, msg: O::Msg) -> Result<(), AskError> {
        tell(O::LABEL, O::NAME, msg)
    }

    /// Fault injection: makes the organ's actor panic (its supervisor restarts it).
    pub fn crash(&self) -> Result<(), AskError> {
        self.tell(O::crash())
    }
}

/// How a call to an organ failed: the organ refused (its own error, with its own protocol code), or it gave
/// no answer (`unavailable`, worth a retry). One type for every organ, so no organ error repeats the
/// "unreachable" case and every caller tells the two apart the same way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrganError<E> {
    /// The organ answered with a refusal.
    #[error(transparent)]
    Refused(E),
    /// The organ did not answer.
    #[error(transparent)]
    Unreachable(#[from] AskError),
}

impl<E: WireError> WireError for OrganError<E> {
    fn code(&self) -> ErrorCode {
        match self {
            OrganError::Refused(e) => e.code(),
            OrganError::Unreachable(a) => a.code(),
        }
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

    #[derive(ractor_cluster::RactorMessage)]
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
