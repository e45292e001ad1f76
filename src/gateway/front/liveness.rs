//! Two-way liveness at the front door: the daemon asks each quiet peer whether it is still there, and a peer
//! that does not answer is dropped and its connection slot freed.
//!
//! ZMTP 3.1 (RFC 37) gives both sides PING (with a TTL: "drop me if I go silent this long") and PONG; libzmq
//! answers a PING in its I/O thread whatever its socket does, so a PONG proves the peer's process runs, not
//! only that its host's kernel still holds the connection. The `zeromq` crate behind the front greets as
//! ZMTP 3.0 and refuses every command but READY, so the front speaks heartbeats itself on the socket's
//! behalf:
//!
//! ```text
//!  peer ──PING──▶ checker: absorbed, a PONG queued ──▶ written to the peer at the next frame boundary
//!  peer ──PONG──▶ checker: absorbed (any byte from the peer counts as life)
//!  quiet ≥ peer_ping_ms  ──▶ PING (TTL = peer_timeout_ms), at a frame boundary of the socket's stream
//!  quiet ≥ peer_timeout_ms, or a write to the peer stalled that long ──▶ dropped
//! ```
//!
//! Only peers whose greeting says ZMTP ≥ 3.1 are pinged or timed out for silence: a 3.0 peer (batos's own
//! CLI and TUI, through the `zeromq` crate) would take a PING for a protocol error, and a subscriber is
//! rightly silent for hours. Those are covered by TCP keepalive (set on every accepted connection, probing
//! after `peer_ping_ms`), which finds a vanished host, and by the write stall rule, which finds a peer that
//! stopped reading.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// ZMTP 3 greeting length, in bytes.
const GREETING: usize = 64;
const LONG: u8 = 0x02;
/// ZMTP command frame flag.
pub(super) const COMMAND: u8 = 0x04;
/// The most context bytes a PING carries (RFC 37), echoed in the PONG.
const MAX_CONTEXT: usize = 16;
/// Answers queued for one peer; PINGs beyond these while the stream is mid-frame are not answered twice.
pub(super) const PONG_QUEUE: usize = 4;

/// A PING command frame asking the peer to drop us after `ttl` without traffic (RFC 37: deciseconds).
pub(super) fn ping_frame(ttl: Duration) -> Vec<u8> {
    let deci = u16::try_from(ttl.as_millis() / 100).unwrap_or(u16::MAX);
    let mut f = vec![COMMAND, 7, 4];
    f.extend_from_slice(b"PING");
    f.extend_from_slice(&deci.to_be_bytes());
    f
}

/// The PONG command frame answering a PING whose data (after the name) is `ping_data`: TTL, then context.
pub(super) fn pong_frame(ping_data: &[u8]) -> Vec<u8> {
    let context = ping_data.get(2..).unwrap_or_default();
    let context = &context[..context.len().min(MAX_CONTEXT)];
    // 5 + 16 < 256: always a short frame.
    let mut f = vec![COMMAND, (5 + context.len()) as u8, 4];
    f.extend_from_slice(b"PONG");
    f.extend_from_slice(context);
    f
}

/// Where frames begin in the socket-to-peer stream, so a heartbeat is never written inside a frame.
#[derive(Debug)]
pub(super) struct Boundaries {
    greeting_left: usize,
    header: [u8; 9],
    header_len: usize,
    body_left: u64,
    frames: u64,
}

impl Default for Boundaries {
    fn default() -> Self {
        Boundaries {
            greeting_left: GREETING,
            header: [0; 9],
            header_len: 0,
            body_left: 0,
            frames: 0,
        }
    }
}

impl Boundaries {
    /// Follows `bytes`, the next bytes the socket sent toward the peer.
    pub(super) fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.greeting_left > 0 {
                let take = self.greeting_left.min(bytes.len());
                self.greeting_left -= take;
                bytes = &bytes[take..];
            } else if self.body_left > 0 {
                let take = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.body_left -= take as u64;
                bytes = &bytes[take..];
            } else {
                self.header[self.header_len] = bytes[0];
                self.header_len += 1;
                bytes = &bytes[1..];
                let need = if self.header[0] & LONG != 0 { 9 } else { 2 };
                if self.header_len == need {
                    self.body_left = if need == 9 {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(&self.header[1..9]);
                        u64::from_be_bytes(be)
                    } else {
                        u64::from(self.header[1])
                    };
                    self.header_len = 0;
                    self.frames += 1;
                }
            }
        }
    }

    /// Between two frames, after the socket's greeting and its first command (READY): a whole frame may be
    /// written to the peer here.
    pub(super) fn between_frames(&self) -> bool {
        self.greeting_left == 0 && self.header_len == 0 && self.body_left == 0 && self.frames >= 1
    }
}

/// What the two halves of one relay share: when the peer was last heard and whether it may be pinged.
#[derive(Debug)]
pub(super) struct Heard {
    start: Instant,
    /// Milliseconds after `start` the peer last sent a byte past its handshake; `u64::MAX` until then.
    last_ms: AtomicU64,
    /// The peer's greeting said ZMTP ≥ 3.1.
    pingable: AtomicBool,
}

impl Heard {
    pub(super) fn new() -> Self {
        Heard {
            start: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            pingable: AtomicBool::new(false),
        }
    }

    /// The peer said something (after its handshake).
    pub(super) fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn set_pingable(&self, yes: bool) {
        self.pingable.store(yes, Ordering::Relaxed);
    }

    /// How long the peer has been quiet, if it is pingable and past its handshake; and the mark of the
    /// last time it was heard (a PING is sent once per mark).
    pub(super) fn quiet(&self) -> Option<(Duration, u64)> {
        if !self.pingable.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        let now = self.start.elapsed();
        Some((now.saturating_sub(Duration::from_millis(last)), last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_follow_short_and_long_frames_split_anywhere() {
        let mut stream = vec![0xFFu8; 64];
        stream.extend_from_slice(&[COMMAND, 3, b'a', b'b', b'c']);
        stream.extend_from_slice(&[LONG | 1, 0, 0, 0, 0, 0, 0, 1, 2]);
        stream.extend_from_slice(&[7u8; 258]);
        stream.extend_from_slice(&[0, 0]);
        // Every split of the stream into two reads lands on the same boundaries.
        for cut in 0..stream.len() {
            let mut b = Boundaries::default();
            b.advance(&stream[..cut]);
            let at = b.between_frames();
            let expected = [69, 69 + 9 + 258].contains(&cut);
            assert_eq!(at, expected, "cut at {cut}");
            b.advance(&stream[cut..]);
            assert!(b.between_frames());
            assert_eq!(b.frames, 3);
        }
    }

    #[test]
    fn a_pong_echoes_at_most_sixteen_bytes_of_context() {
        let mut ping = vec![0, 30];
        ping.extend_from_slice(&[9u8; 20]);
        let pong = pong_frame(&ping);
        assert_eq!(&pong[..7], &[COMMAND, 21, 4, b'P', b'O', b'N', b'G']);
        assert_eq!(&pong[7..], &[9u8; 16]);
        assert_eq!(pong_frame(&[]), vec![COMMAND, 5, 4, b'P', b'O', b'N', b'G']);
        assert_eq!(
            ping_frame(Duration::from_millis(15_000)),
            vec![COMMAND, 7, 4, b'P', b'I', b'N', b'G', 0, 150]
        );
    }

    #[test]
    fn a_peer_is_quiet_only_once_heard_and_only_when_pingable() {
        let h = Heard::new();
        h.now();
        assert!(h.quiet().is_none(), "a 3.0 peer is never timed out");
        h.set_pingable(true);
        let (quiet, mark) = h.quiet().unwrap();
        assert!(quiet < Duration::from_secs(5));
        h.now();
        assert!(h.quiet().unwrap().1 >= mark);
        let fresh = Heard::new();
        fresh.set_pingable(true);
        assert!(fresh.quiet().is_none(), "not before its handshake");
    }
}
