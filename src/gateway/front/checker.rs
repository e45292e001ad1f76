//! The client-to-socket half of ZMTP 3, checked byte by byte: the greeting, each frame header (flags, size,
//! frames per message) and, on the event channel, the subscriptions, which are held until the peer
//! authenticates. What is known good is forwarded at once; bodies are streamed unless a frame must be read whole.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::liveness::{pong_frame, PONG_QUEUE};
use super::{Door, Limits, Refusal, RelayError};
use batos_protocol::wire::EVENTS_AUTH_PREFIX;

/// ZMTP 3 greeting length, in bytes.
const GREETING: usize = 64;
/// Frame flag bits (ZMTP 3): more frames follow, 8-byte size, command frame. Others are reserved (zero).
const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;
const RESERVED: u8 = !(MORE | LONG | COMMAND);

enum State {
    /// Greeting bytes seen so far.
    Greeting(usize),
    /// Collecting a frame header.
    Header,
    /// Passing `left` body bytes of the current frame.
    Body { left: u64 },
}

/// The client-to-socket half of ZMTP 3, checked byte by byte and forwarded as soon as it is known good.
pub(super) struct Checker {
    door: Door,
    limits: Limits,
    state: State,
    header: Vec<u8>,
    /// The current frame's flags, and its raw bytes when it must be read whole (inspected frames).
    flags: u8,
    frame: Option<Vec<u8>>,
    frames_in_message: usize,
    ready: bool,
    authenticated: bool,
    held: Vec<Vec<u8>>,
    /// The peer's ZMTP version from its greeting (major, minor).
    version: (u8, u8),
    /// PONGs owed to the peer's PINGs, for the relay to write (at most `PONG_QUEUE`).
    pongs: Vec<Vec<u8>>,
}

impl Checker {
    pub(super) fn new(door: Door, limits: Limits) -> Self {
        Checker {
            door,
            limits,
            state: State::Greeting(0),
            header: Vec::with_capacity(9),
            flags: 0,
            frame: None,
            frames_in_message: 0,
            ready: false,
            authenticated: false,
            held: Vec::new(),
            version: (0, 0),
            pongs: Vec::new(),
        }
    }

    fn events(&self) -> bool {
        matches!(self.door, Door::Events { .. })
    }

    /// Whether the peer completed its handshake (and, on the event door, authenticated).
    pub(super) fn handshaken(&self) -> bool {
        self.ready && (self.authenticated || !self.events())
    }

    /// Whether the peer's greeting said ZMTP 3.1 or later, which knows PING and PONG.
    pub(super) fn speaks_heartbeats(&self) -> bool {
        self.version >= (3, 1)
    }

    /// The PONGs owed since the last call, oldest first.
    pub(super) fn take_pongs(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.pongs)
    }

    /// Checks `bytes` and forwards what is good to `out`; an error means: drop the peer.
    pub(super) async fn feed<W: AsyncWrite + Unpin>(
        &mut self,
        mut bytes: &[u8],
        out: &mut W,
    ) -> Result<(), RelayError> {
        while !bytes.is_empty() {
            match self.state {
                State::Greeting(seen) => {
                    let take = (GREETING - seen).min(bytes.len());
                    let chunk = &bytes[..take];
                    for (i, b) in chunk.iter().enumerate() {
                        let at = seen + i;
                        let ok = match at {
                            0 => *b == 0xFF,
                            9 => *b == 0x7F,
                            10 => {
                                self.version.0 = *b;
                                *b >= 3
                            }
                            11 => {
                                self.version.1 = *b;
                                true
                            }
                            _ => true,
                        };
                        if !ok {
                            return Err(Refusal::Greeting.into());
                        }
                    }
                    out.write_all(chunk).await?;
                    bytes = &bytes[take..];
                    self.state = if seen + take == GREETING {
                        State::Header
                    } else {
                        State::Greeting(seen + take)
                    };
                }
                State::Header => {
                    self.header.push(bytes[0]);
                    bytes = &bytes[1..];
                    let flags = self.header[0];
                    // Judge the flags at once: a peer must not park half a header here.
                    if flags & RESERVED != 0 || (flags & COMMAND != 0 && flags & MORE != 0) {
                        return Err(Refusal::Flags(flags).into());
                    }
                    let need = if flags & LONG != 0 { 9 } else { 2 };
                    if self.header.len() < need {
                        continue;
                    }
                    let size = if flags & LONG != 0 {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(&self.header[1..9]);
                        u64::from_be_bytes(be)
                    } else {
                        u64::from(self.header[1])
                    };
                    self.check_header(flags, size)?;
                    let raw = std::mem::take(&mut self.header);
                    self.flags = flags;
                    if self.inspects(flags) {
                        let mut frame = raw;
                        frame.reserve(usize::try_from(size).unwrap_or(0));
                        self.frame = Some(frame);
                    } else {
                        out.write_all(&raw).await?;
                        self.frame = None;
                    }
                    self.state = State::Body { left: size };
                    if size == 0 {
                        self.end_frame(out).await?;
                    }
                }
                State::Body { left } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    let chunk = &bytes[..take];
                    match &mut self.frame {
                        Some(f) => f.extend_from_slice(chunk),
                        None => out.write_all(chunk).await?,
                    }
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = State::Body { left };
                    if left == 0 {
                        self.end_frame(out).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_header(&mut self, flags: u8, size: u64) -> Result<(), Refusal> {
        if flags & RESERVED != 0 || (flags & COMMAND != 0 && flags & MORE != 0) {
            return Err(Refusal::Flags(flags));
        }
        let limit = if flags & COMMAND != 0 || self.events() {
            self.limits.max_control
        } else {
            self.limits.max_frame
        };
        if size > limit {
            return Err(Refusal::FrameTooLarge { size, limit });
        }
        if flags & COMMAND == 0 {
            self.frames_in_message += 1;
            if self.frames_in_message > self.limits.max_frames {
                return Err(Refusal::TooManyFrames(self.limits.max_frames));
            }
        }
        // Before READY only commands are legal.
        if !self.ready && flags & COMMAND == 0 {
            return Err(Refusal::Flags(flags));
        }
        Ok(())
    }

    /// Frames read whole before they are forwarded: commands (to see READY and SUBSCRIBE), and on the event
    /// door every frame (subscriptions).
    fn inspects(&self, flags: u8) -> bool {
        flags & COMMAND != 0 || self.events()
    }

    async fn end_frame<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> Result<(), RelayError> {
        let flags = self.flags;
        self.state = State::Header;
        if flags & COMMAND == 0 && flags & MORE == 0 {
            self.frames_in_message = 0;
        }
        let Some(frame) = self.frame.take() else {
            return Ok(());
        };
        let header_len = if flags & LONG != 0 { 9 } else { 2 };
        let body = &frame[header_len..];
        if flags & COMMAND != 0 {
            let name_len = usize::from(body.first().copied().unwrap_or(0));
            let name = body.get(1..1 + name_len).unwrap_or_default();
            let data = body.get(1 + name_len..).unwrap_or_default();
            match name {
                b"READY" => self.ready = true,
                // Heartbeats are the front's business (liveness.rs): the socket behind knows no command but
                // READY. A PING is answered (a flood beyond the queue is answered once), a PONG only heard.
                b"PING" => {
                    if self.pongs.len() < PONG_QUEUE {
                        self.pongs.push(pong_frame(data));
                    }
                    return Ok(());
                }
                b"PONG" => return Ok(()),
                // ZMTP 3.1 subscription commands: the socket behind greets as 3.0, so a peer that follows the
                // spec never sends them through this front.
                b"SUBSCRIBE" | b"CANCEL" if self.events() => {
                    let _ = data;
                    return Err(Refusal::Unauthenticated("ZMTP 3.1 subscription command").into());
                }
                _ => {}
            }
            out.write_all(&frame).await?;
            return Ok(());
        }
        // A data frame on the event door: a ZMTP 3.0 subscription (0x01 topic) or cancel (0x00 topic).
        if flags & MORE != 0 {
            return Err(Refusal::Unauthenticated("multipart message from a subscriber").into());
        }
        match body.first() {
            Some(1) => {
                let topic = body[1..].to_vec();
                self.subscription_to(out, true, &topic, frame).await
            }
            Some(0) => {
                let topic = body[1..].to_vec();
                self.subscription_to(out, false, &topic, frame).await
            }
            _ => Err(Refusal::Unauthenticated("a subscriber may only (un)subscribe").into()),
        }
    }

    async fn subscription_to<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        subscribe: bool,
        topic: &[u8],
        frame: Vec<u8>,
    ) -> Result<(), RelayError> {
        let Door::Events { token } = &self.door else {
            return Ok(());
        };
        let prefix = EVENTS_AUTH_PREFIX.as_bytes();
        if subscribe && topic.starts_with(prefix) {
            if !constant_time_eq(&topic[prefix.len()..], token.as_bytes()) {
                return Err(Refusal::Unauthenticated("wrong token").into());
            }
            // The auth topic itself is never forwarded: no event carries it.
            if !self.authenticated {
                self.authenticated = true;
                for held in std::mem::take(&mut self.held) {
                    out.write_all(&held).await?;
                }
            }
            return Ok(());
        }
        if self.authenticated {
            out.write_all(&frame).await?;
        } else {
            if self.held.len() >= self.limits.max_held {
                return Err(Refusal::TooManyHeld(self.limits.max_held).into());
            }
            self.held.push(frame);
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads everything `r` yields (for tests of the checker).
#[cfg(test)]
async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v).await;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_frame: 1024,
            max_control: 64,
            max_frames: 3,
            handshake: Duration::from_millis(100),
            max_connections: 4,
            max_pending: 2,
            max_held: 2,
            ping: Duration::from_secs(5),
            silence: Duration::from_secs(15),
        }
    }

    fn greeting() -> Vec<u8> {
        let mut g = vec![0u8; GREETING];
        g[0] = 0xFF;
        g[9] = 0x7F;
        g[10] = 3;
        g[12..16].copy_from_slice(b"NULL");
        g
    }

    fn command(name: &str, data: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        let mut f = vec![COMMAND, body.len() as u8];
        f.extend(body);
        f
    }

    fn frame(more: bool, body: &[u8]) -> Vec<u8> {
        let mut f = vec![if more { MORE } else { 0 }, body.len() as u8];
        f.extend_from_slice(body);
        f
    }

    async fn run(
        door: Door,
        input: &[u8],
        chunk: usize,
    ) -> (Result<(), RelayError>, Vec<u8>, bool) {
        let mut c = Checker::new(door, limits());
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let mut res = Ok(());
        for part in input.chunks(chunk.max(1)) {
            res = c.feed(part, &mut w).await;
            if res.is_err() {
                break;
            }
        }
        drop(w);
        let handshaken = c.handshaken();
        (res, read_all(r).await, handshaken)
    }

    #[tokio::test]
    async fn a_good_peer_passes_byte_for_byte_in_any_chunking() {
        let mut input = greeting();
        input.extend(command("READY", b"\x0bSocket-Type\x00\x00\x00\x03REQ"));
        input.extend(frame(true, b""));
        input.extend(frame(false, &[0x81, 0xa1, b'v', 1]));
        for chunk in [1, 3, 64, 4096] {
            let (r, out, hs) = run(Door::Commands, &input, chunk).await;
            assert!(r.is_ok(), "{r:?}");
            assert!(hs);
            assert_eq!(out, input, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn pings_are_answered_by_the_front_and_never_reach_the_socket() {
        let mut good = greeting();
        good[11] = 1;
        good.extend(command("READY", b""));
        let mut input = good.clone();
        input.extend(command("PING", b"\x00\x64ctx"));
        input.extend(command("PONG", b""));
        for _ in 0..10 {
            input.extend(command("PING", b"\x00\x64"));
        }
        let mut c = Checker::new(Door::Commands, limits());
        let mut out = Vec::new();
        for part in input.chunks(5) {
            c.feed(part, &mut out).await.unwrap();
        }
        assert_eq!(out, good, "heartbeats stay in the front");
        assert!(c.speaks_heartbeats());
        let pongs = c.take_pongs();
        assert_eq!(
            pongs.len(),
            PONG_QUEUE,
            "a flood is answered a bounded number of times"
        );
        assert_eq!(pongs[0], pong_frame(b"\x00\x64ctx"));
        assert!(c.take_pongs().is_empty());
        let mut old = Checker::new(Door::Commands, limits());
        old.feed(&greeting(), &mut Vec::new()).await.unwrap();
        assert!(!old.speaks_heartbeats(), "a ZMTP 3.0 greeting");
    }

    #[tokio::test]
    async fn a_huge_announced_frame_is_refused_before_any_of_it_is_read() {
        let mut input = greeting();
        input.extend(command("READY", b""));
        let mut huge = vec![LONG];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        input.extend(&huge);
        let (r, out, _) = run(Door::Commands, &input, 7).await;
        assert!(matches!(
            r,
            Err(RelayError::Refused(Refusal::FrameTooLarge { size, limit: 1024 })) if size == 1 << 62
        ));
        // Nothing of the bad header went on.
        assert_eq!(out.len(), GREETING + command("READY", b"").len());
    }

    #[tokio::test]
    async fn bad_greetings_flags_and_frame_counts_are_refused() {
        let mut bad = greeting();
        bad[9] = 0;
        assert!(matches!(
            run(Door::Commands, &bad, 64).await.0,
            Err(RelayError::Refused(Refusal::Greeting))
        ));
        let mut old = greeting();
        old[10] = 2;
        assert!(run(Door::Commands, &old, 64).await.0.is_err());
        let mut data_first = greeting();
        data_first.extend(frame(false, b"x"));
        assert!(run(Door::Commands, &data_first, 64).await.0.is_err());
        let mut reserved = greeting();
        reserved.extend(command("READY", b""));
        // Reserved bit plus LONG: refused on the flags byte, without waiting for the 8 size bytes.
        reserved.extend([0x42]);
        assert!(matches!(
            run(Door::Commands, &reserved, 64).await.0,
            Err(RelayError::Refused(Refusal::Flags(0x42)))
        ));
        let mut many = greeting();
        many.extend(command("READY", b""));
        for _ in 0..4 {
            many.extend(frame(true, b"a"));
        }
        assert!(matches!(
            run(Door::Commands, &many, 64).await.0,
            Err(RelayError::Refused(Refusal::TooManyFrames(3)))
        ));
        let mut big_command = greeting();
        big_command.extend(command("READY", &[0u8; 100]));
        assert!(matches!(
            run(Door::Commands, &big_command, 64).await.0,
            Err(RelayError::Refused(Refusal::FrameTooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn subscribers_are_held_until_they_authenticate_and_wrong_tokens_are_dropped() {
        let door = Door::Events {
            token: Arc::from("s3cret"),
        };
        let sub = |t: &str| {
            let mut b = vec![1u8];
            b.extend_from_slice(t.as_bytes());
            frame(false, &b)
        };
        let auth = format!("{EVENTS_AUTH_PREFIX}s3cret");
        let mut input = greeting();
        input.extend(command("READY", b""));
        input.extend(sub("task."));
        input.extend(sub(&auth));
        input.extend(sub(""));
        let (r, out, hs) = run(door.clone(), &input, 5).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(hs, "authenticated");
        let mut expected = greeting();
        expected.extend(command("READY", b""));
        expected.extend(sub("task."));
        expected.extend(sub(""));
        assert_eq!(
            out, expected,
            "held subscription released, auth topic never forwarded"
        );

        let mut unauth = greeting();
        unauth.extend(command("READY", b""));
        unauth.extend(sub(""));
        let (r, out, hs) = run(door.clone(), &unauth, 64).await;
        assert!(r.is_ok());
        assert!(!hs, "no auth yet: the handshake deadline will drop it");
        assert!(
            !out.ends_with(&sub("")),
            "the subscription is held, not forwarded"
        );

        let mut wrong = greeting();
        wrong.extend(command("READY", b""));
        wrong.extend(sub(&format!("{EVENTS_AUTH_PREFIX}guess")));
        assert!(matches!(
            run(door.clone(), &wrong, 64).await.0,
            Err(RelayError::Refused(Refusal::Unauthenticated("wrong token")))
        ));
        let mut flood = greeting();
        flood.extend(command("READY", b""));
        for t in ["a", "b", "c"] {
            flood.extend(sub(t));
        }
        assert!(matches!(
            run(door, &flood, 64).await.0,
            Err(RelayError::Refused(Refusal::TooManyHeld(2)))
        ));
    }
}
