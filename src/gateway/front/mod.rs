//! The front door: a listener of our own in front of each zeromq socket, so no peer's bytes reach the
//! socket until they are known to be harmless.
//!
//! Why: the pure-Rust `zeromq` crate reserves the size a frame header *announces* before reading it, so one
//! unauthenticated 80-byte message announcing 2^62 bytes aborts the process; it has no handshake timeout, no
//! connection cap and no authentication of subscribers. The crate is otherwise good (REQ, DEALER, PUB, pyzmq
//! interop), so instead of replacing it, the sockets bind on a private Unix socket under `data_dir` (0700)
//! and this front, on the public TCP endpoint, relays to them after checking the client's half of ZMTP 3:
//!
//! ```text
//!  peer ──TCP──▶ front: greeting ─▶ frame headers (flags, size ≤ limit, frames/message ≤ limit)
//!                       handshake within handshake_timeout_ms; pending peers capped, oldest evicted;
//!                       established peers capped; events: the auth subscription before any other
//!        ◀──────────── bytes from the socket pass back unchanged
//!  front ──Unix socket (data_dir/gw-*.sock)──▶ zeromq ROUTER / PUB
//! ```
//!
//! A refused peer is disconnected, never answered: the socket behind never saw it. Bodies are streamed, not
//! buffered, on the command door; the event door buffers its peers' frames (only tiny subscriptions are
//! legal there) to read them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use batos_actors::settings::GatewaySettings;

mod checker;
pub mod curve;
pub mod keys;
mod liveness;

use checker::Checker;
use keys::ServerKeys;
use liveness::{ping_frame, Boundaries, Heard, PONG_QUEUE};

/// CurveZMQ on a door (`gateway.curve` on or required): the server's keys, and whether NULL peers are refused.
#[derive(Clone)]
pub struct Curve {
    /// The server's key pair and the allowed clients' folder.
    pub keys: Arc<ServerKeys>,
    /// `gateway.curve = "required"`: a peer that does not ask for CURVE is dropped.
    pub required: bool,
}

/// Bytes the in-memory pipe between a CURVE session and its relay holds each way.
const CURVE_PIPE_BYTES: usize = 64 * 1024;

/// Which socket a front guards, and what it must check beyond framing.
#[derive(Debug, Clone)]
pub enum Door {
    /// The command socket (ROUTER): framing and sizes.
    Commands,
    /// The event socket (PUB): peers must subscribe to `EVENTS_AUTH_PREFIX + token` first; every other
    /// subscription is held until then, and a peer that does not within the handshake time is dropped.
    Events {
        /// The gateway secret.
        token: Arc<str>,
    },
}

/// The limits a front enforces; from `[gateway]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest data frame on the command door, in bytes. Between `max_request_bytes` and this, the request
    /// still reaches the gateway and gets a clear `bad_request`; above it the peer is dropped unread.
    pub max_frame: u64,
    /// Largest command frame (ZMTP READY, SUBSCRIBE) and, on the event door, any frame, in bytes.
    pub max_control: u64,
    /// Most frames in one message.
    pub max_frames: usize,
    /// Time from TCP accept to a complete handshake (greeting, READY, and on the event door the auth
    /// subscription).
    pub handshake: Duration,
    /// Most peers past their handshake, per door.
    pub max_connections: usize,
    /// Most peers still in their handshake, per door; a new one beyond this evicts the oldest.
    pub max_pending: usize,
    /// Subscriptions held per event peer until it authenticates.
    pub max_held: usize,
    /// Quiet time after which a ZMTP 3.1 peer is pinged; the TCP keepalive period of every peer.
    pub ping: Duration,
    /// Quiet time after which a ZMTP 3.1 peer is dropped; how long any peer may leave a write to it stalled.
    pub silence: Duration,
}

impl Limits {
    /// The limits configured in `[gateway]`.
    pub fn from_settings(g: &GatewaySettings) -> Self {
        Limits {
            max_frame: g.front_max_frame_bytes,
            max_control: g.front_max_control_bytes,
            max_frames: g.front_max_frames,
            handshake: Duration::from_millis(g.handshake_timeout_ms),
            max_connections: g.max_connections,
            max_pending: g.max_pending_connections,
            max_held: g.front_max_held_subscriptions,
            ping: Duration::from_millis(g.peer_ping_ms),
            silence: Duration::from_millis(g.peer_timeout_ms),
        }
    }
}

/// Why a peer was dropped (logged, never sent).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    /// Not a ZMTP 3 greeting.
    #[error("not a ZMTP 3 greeting")]
    Greeting,
    /// Reserved flag bits set, or a command frame with MORE.
    #[error("malformed frame flags {0:#04x}")]
    Flags(u8),
    /// A frame announced more than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Announced size.
        size: u64,
        /// The limit that applied.
        limit: u64,
    },
    /// Too many frames in one message.
    #[error("more than {0} frames in one message")]
    TooManyFrames(usize),
    /// The handshake did not complete in time.
    #[error("no complete handshake within {0} ms")]
    HandshakeTimeout(u128),
    /// A subscriber sent a wrong token, or something other than subscriptions.
    #[error("event peer not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// Too many subscriptions held before authentication.
    #[error("more than {0} subscriptions before authenticating")]
    TooManyHeld(usize),
    /// Evicted while still in its handshake, to make room for a newer peer.
    #[error("evicted while pending (max_pending_connections reached)")]
    Evicted,
    /// A security mechanism this door does not serve.
    #[error("mechanism refused: {0}")]
    Mechanism(&'static str),
    /// A CURVE rule broken (a box that does not open, a replayed nonce, a command out of place).
    #[error("CURVE: {0}")]
    Curve(&'static str),
    /// A ZMTP 3.1 peer answered nothing, not even a PING, for its timeout.
    #[error("silent for {0} ms (no frame, no PONG)")]
    Silent(u128),
    /// A write to the peer made no progress for the timeout: it stopped reading.
    #[error("took no bytes for {0} ms")]
    Stalled(u128),
    /// A CURVE client whose long-term key is not in the allowed folder.
    #[error("CURVE: the client's key is not among the allowed keys")]
    UnknownClientKey,
}

/// Peers in their handshake, oldest first: the ones to evict when a new peer needs room.
#[derive(Default)]
struct Pending {
    next: AtomicU64,
    queue: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl Pending {
    /// Registers a new pending peer, evicting the oldest when `max` are pending already.
    fn admit(&self, max: usize) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while q.len() >= max.max(1) {
            if let Some((_, evict)) = q.pop_front() {
                let _ = evict.send(());
            }
        }
        q.push_back((id, tx));
        (id, rx)
    }

    fn leave(&self, id: u64) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|(i, _)| *i != id);
    }
}

/// Accepts peers on `listener` and relays each, once checked, to the Unix socket `backend`. Runs until
/// dropped (aborting it closes the listener and every relayed connection).
pub async fn serve(
    listener: TcpListener,
    backend: PathBuf,
    door: Door,
    limits: Limits,
    curve: Option<Curve>,
) {
    let pending = Arc::new(Pending::default());
    let established = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut peers = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    let _ = stream.set_nodelay(true);
                    keep_alive(&stream, &limits);
                    let (id, evicted) = pending.admit(limits.max_pending);
                    let ctx = (backend.clone(), door.clone(), limits.clone());
                    let (pending, established) = (pending.clone(), established.clone());
                    let curve = curve.clone();
                    peers.spawn(async move {
                        let leave = || pending.leave(id);
                        let r = match curve {
                            None => {
                                let (from, to) = stream.into_split();
                                relay(from, to, &ctx.0, &ctx.1, &ctx.2, evicted, &established, leave).await
                            }
                            // The session ends the peer's encryption; the relay checks the clear text behind it.
                            Some(c) => {
                                let (outer, inner) = tokio::io::duplex(CURVE_PIPE_BYTES);
                                let (from, to) = tokio::io::split(outer);
                                tokio::select! {
                                    r = curve::session(stream, inner, c.keys, c.required, &ctx.2) => r,
                                    r = relay(from, to, &ctx.0, &ctx.1, &ctx.2, evicted, &established, leave) => r,
                                }
                            }
                        };
                        pending.leave(id);
                        match r {
                            Ok(()) => {}
                            // A peer that went away without closing: worth a line at info.
                            Err(e @ RelayError::Refused(Refusal::Silent(_) | Refusal::Stalled(_))) => {
                                tracing::info!(event = "gateway.peer_gone", reason = %e, "peer dropped by the front: no sign of life");
                            }
                            Err(e) => {
                                tracing::debug!(event = "gateway.peer_refused", reason = %e, "peer dropped by the front");
                            }
                        }
                    });
                }
                // Out of file descriptors (EMFILE/ENFILE) or a transient error: wait instead of spinning.
                Err(e) => {
                    tracing::warn!(event = "gateway.accept_failed", error = %e, backoff_ms = backoff.as_millis() as u64, "cannot accept; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            // Reap finished peers so the set does not grow with history.
            Some(_) = peers.join_next(), if !peers.is_empty() => {}
        }
    }
}

/// TCP keepalive on a peer's connection: after `ping` of quiet, probes every `ping`, three unanswered end it.
/// What finds a ZMTP 3.0 peer whose host vanished (they cannot be pinged: liveness.rs).
fn keep_alive(stream: &tokio::net::TcpStream, limits: &Limits) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(limits.ping)
        .with_interval(limits.ping)
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(event = "gateway.keepalive_failed", error = %e, "cannot set TCP keepalive");
    }
}

/// One peer: check its bytes on the way in, pass the socket's bytes back unchanged, with heartbeats
/// (liveness.rs) written between the socket's frames.
#[allow(clippy::too_many_arguments)]
async fn relay<R, W>(
    mut from_client: R,
    mut to_client: W,
    backend: &PathBuf,
    door: &Door,
    limits: &Limits,
    mut evicted: oneshot::Receiver<()>,
    established: &Arc<Semaphore>,
    on_handshake: impl FnOnce(),
) -> Result<(), RelayError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let deadline = Instant::now() + limits.handshake;
    // The greeting's first bytes arrive before anything is connected behind: an idle TCP connection costs
    // one descriptor, not three.
    let mut first = [0u8; 1];
    let n = tokio::select! {
        r = tokio::time::timeout_at(deadline, from_client.read(&mut first)) => match r {
            Ok(r) => r?,
            Err(_) => return Err(Refusal::HandshakeTimeout(limits.handshake.as_millis()).into()),
        },
        _ = &mut evicted => return Err(Refusal::Evicted.into()),
    };
    if n == 0 {
        return Ok(());
    }
    if first[0] != 0xFF {
        return Err(Refusal::Greeting.into());
    }
    let upstream = UnixStream::connect(backend).await?;
    let (mut from_socket, to_socket) = upstream.into_split();
    let mut checker = Checker::new(door.clone(), limits.clone());
    let heard = Heard::new();
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(PONG_QUEUE);
    let inbound = async {
        let mut to_socket = to_socket;
        let mut permit = None;
        let mut on_handshake = Some(on_handshake);
        checker.feed(&first[..1], &mut to_socket).await?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = if checker.handshaken() {
                if permit.is_none() {
                    if let Some(f) = on_handshake.take() {
                        f();
                    }
                    permit = Some(
                        established
                            .clone()
                            .try_acquire_owned()
                            .map_err(|_| RelayError::Full)?,
                    );
                }
                from_client.read(&mut buf).await?
            } else {
                tokio::select! {
                    r = tokio::time::timeout_at(deadline, from_client.read(&mut buf)) => match r {
                        Ok(r) => r?,
                        Err(_) => return Err(Refusal::HandshakeTimeout(limits.handshake.as_millis()).into()),
                    },
                    _ = &mut evicted => return Err(Refusal::Evicted.into()),
                }
            };
            if n == 0 {
                return Ok::<(), RelayError>(());
            }
            checker.feed(&buf[..n], &mut to_socket).await?;
            if checker.handshaken() {
                heard.set_pingable(checker.speaks_heartbeats());
                heard.now();
            }
            for pong in checker.take_pongs() {
                // A full queue means PONGs are owed already; the peer learns we live from those.
                let _ = pong_tx.try_send(pong);
            }
        }
    };
    let outbound = async {
        let mut frames = Boundaries::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut tick = tokio::time::interval(limits.ping / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pinged_for = None;
        loop {
            tokio::select! {
                n = from_socket.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok::<(), RelayError>(());
                    }
                    frames.advance(&buf[..n]);
                    write_or_stall(&mut to_client, &buf[..n], limits.silence).await?;
                }
                Some(pong) = pong_rx.recv(), if frames.between_frames() => {
                    write_or_stall(&mut to_client, &pong, limits.silence).await?;
                }
                _ = tick.tick(), if frames.between_frames() => {
                    let Some((quiet, mark)) = heard.quiet() else { continue };
                    if quiet >= limits.silence {
                        return Err(Refusal::Silent(quiet.as_millis()).into());
                    }
                    if quiet >= limits.ping && pinged_for != Some(mark) {
                        pinged_for = Some(mark);
                        write_or_stall(&mut to_client, &ping_frame(limits.silence), limits.silence).await?;
                    }
                }
            }
        }
    };
    // Whichever side ends first ends the peer: both halves are dropped here.
    tokio::select! {
        r = inbound => r,
        r = outbound => r,
    }
}

/// Writes all of `bytes` to the peer, or fails once a write has made no progress for `limit`.
async fn write_or_stall<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), RelayError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = tokio::time::timeout(limit, w.write(rest))
            .await
            .map_err(|_| Refusal::Stalled(limit.as_millis()))??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        rest = &rest[n..];
    }
    Ok(())
}

/// Why a relay ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The peer broke a rule.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Reading or writing failed (the peer or the socket went away).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// `max_connections` peers are established already.
    #[error("max_connections reached")]
    Full,
}

impl From<batos_curve::FrameError> for RelayError {
    fn from(e: batos_curve::FrameError) -> Self {
        match e {
            batos_curve::FrameError::Flags(f) => Refusal::Flags(f).into(),
            batos_curve::FrameError::TooLarge { size, limit } => {
                Refusal::FrameTooLarge { size, limit }.into()
            }
            batos_curve::FrameError::Io(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests;
