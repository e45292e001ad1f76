//! CurveZMQ (RFC 26) at the front door: the peer's encryption ends here, and what goes on behind is the
//! clear-text ZMTP the rest of the front already checks.
//!
//! Why here: the `zeromq` crate behind the front has no CURVE, and every libzmq client (pyzmq included) speaks
//! it with a key pair and the server's public key. The front already owns the TCP connection, so it terminates
//! the mechanism and hands the [`super::relay`] a clear-text peer through an in-memory pipe — as if the peer
//! had spoken ZMTP's NULL mechanism — and the frame, size and subscription checks stay one piece of code:
//!
//! ```text
//!  peer ──TCP, CURVE──▶ session: greeting, HELLO → WELCOME, INITIATE (cookie, vouch, allowed key) → READY
//!                       MESSAGE boxes opened (nonces strictly rising) ──pipe, NULL ZMTP──▶ relay ─▶ socket
//!        ◀──────────── each frame from the socket boxed as a MESSAGE (our nonces from 1) ◀──────────────
//! ```
//!
//! The greeting goes in steps, as libzmq's does: signature and major version at once, the rest once the
//! peer's mechanism is known, since each side must announce the same one. The minor version passed on is the
//! socket's, so a subscriber frames its subscriptions as the socket behind expects (ZMTP 3.0 or 3.1). With
//! `curve = "on"` a NULL peer is passed through unchanged after the greeting; with `"required"` it is dropped.
//!
//! Byte layouts are RFC 26's as libzmq 4.3 puts them on the wire: a box is NaCl's `crypto_box` (X25519,
//! XSalsa20-Poly1305; the MAC first, so 16 bytes longer than its plaintext), the cookie a `crypto_secretbox`
//! under a key made for this connection; short nonces count from 1 in each direction and must strictly rise;
//! a data frame is a MESSAGE command carried in a plain frame (outer flags 0 or LONG only) whose first boxed
//! byte holds MORE (bit 0) and COMMAND (bit 1). Heartbeats (PING, PONG) are boxed commands like any other;
//! the relay behind answers and sends them (liveness.rs), for CURVE and clear-text peers alike.
//!
//! Refusals follow the front's rule — drop, never explain — except the one RFC 26 asks a server to explain:
//! a client key not among the allowed ones gets an ERROR "400" (libzmq reports it as an authentication
//! failure) before the drop.

use std::sync::Arc;

use crypto_box::aead::generic_array::GenericArray;
use crypto_box::aead::{Aead, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use crypto_secretbox::{KeyInit, XSalsa20Poly1305};
use rand_core::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use batos_curve::{
    array, mechanism, nonce, read_frame, write_frame, AS_SERVER, BOX_COMMAND, BOX_MORE, COMMAND,
    GREETING, KEY_BYTES, LONG, MAC, MECHANISM, MESSAGE_OVERHEAD, MORE, SIGNATURE_AND_MAJOR,
};

use super::keys::ServerKeys;
use super::{Limits, Refusal, RelayError};

/// Fixed sizes of RFC 26's commands, in bytes.
const HELLO_BYTES: usize = 200;
const INITIATE_MIN_BYTES: usize = 257;

fn broken(why: &'static str) -> RelayError {
    Refusal::Curve(why).into()
}

/// One peer on a door with CURVE on: `client` is the TCP connection, `plain` the pipe to the relay.
/// `required`: a NULL peer is dropped instead of passed through.
pub(super) async fn session<C, P>(
    client: C,
    plain: P,
    keys: Arc<ServerKeys>,
    required: bool,
    limits: &Limits,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    P: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Frames are read a header byte at a time: buffered, that is one read call per batch of frames, not three
    // per frame.
    let (cr, mut cw) = tokio::io::split(client);
    let (pr, mut pw) = tokio::io::split(plain);
    let (mut cr, mut pr) = (BufReader::new(cr), BufReader::new(pr));
    cw.write_all(&SIGNATURE_AND_MAJOR).await?;
    // Judged as it arrives, like the clear-text checker: a peer whose first byte is not a greeting's is dropped
    // at once, not after it has sent (or stalled short of) 64 bytes.
    let mut greeting = [0u8; GREETING];
    cr.read_exact(&mut greeting[..1]).await?;
    if greeting[0] != 0xFF {
        return Err(Refusal::Greeting.into());
    }
    cr.read_exact(&mut greeting[1..SIGNATURE_AND_MAJOR.len()])
        .await?;
    if greeting[9] & 1 == 0 || greeting[10] < 3 {
        return Err(Refusal::Greeting.into());
    }
    cr.read_exact(&mut greeting[SIGNATURE_AND_MAJOR.len()..])
        .await?;
    let asked = &greeting[MECHANISM];
    if asked == mechanism(b"NULL") {
        if required {
            return Err(Refusal::Mechanism("NULL while CURVE is required").into());
        }
        // Clear text, as without CURVE: the socket's greeting (past what was sent already), then bytes as is.
        pw.write_all(&greeting).await?;
        let mut theirs = [0u8; GREETING];
        pr.read_exact(&mut theirs).await?;
        cw.write_all(&theirs[SIGNATURE_AND_MAJOR.len()..]).await?;
        tokio::select! {
            r = tokio::io::copy(&mut cr, &mut pw) => { r?; }
            r = tokio::io::copy(&mut pr, &mut cw) => { r?; }
        }
        return Ok(());
    }
    if asked != mechanism(b"CURVE") {
        return Err(Refusal::Mechanism("neither NULL nor CURVE").into());
    }
    let mut null = greeting;
    null[MECHANISM].copy_from_slice(&mechanism(b"NULL"));
    null[AS_SERVER] = 0;
    pw.write_all(&null).await?;
    let mut theirs = [0u8; GREETING];
    pr.read_exact(&mut theirs).await?;
    theirs[MECHANISM].copy_from_slice(&mechanism(b"CURVE"));
    theirs[AS_SERVER] = 1;
    cw.write_all(&theirs[SIGNATURE_AND_MAJOR.len()..]).await?;

    let Handshake {
        session,
        peer_nonce,
        metadata,
    } = handshake(&mut cr, &mut cw, &keys, limits).await?;
    // Behind, the peer is a NULL peer with its own metadata (socket type, identity).
    write_frame(&mut pw, COMMAND, &[b"\x05READY", &metadata]).await?;
    let ready = read_frame(&mut pr, None)
        .await?
        .ok_or_else(|| broken("the socket closed during the handshake"))?;
    let Some(socket_metadata) = ready.1.strip_prefix(b"\x05READY") else {
        return Err(broken("the socket did not answer READY"));
    };
    let mut ours: u64 = 1;
    let boxed = session
        .encrypt(
            &nonce(b"CurveZMQREADY---", &ours.to_be_bytes()),
            socket_metadata,
        )
        .map_err(|_| broken("READY could not be boxed"))?;
    write_frame(
        &mut cw,
        COMMAND,
        &[b"\x05READY", &ours.to_be_bytes(), &boxed],
    )
    .await?;
    ours += 1;

    // Both directions at once, in this task: frames from behind (the socket's, and the relay's heartbeats: PING
    // and PONG pass this session as any command does) are boxed with our nonce as they come.
    let max_in = limits.max_frame.max(limits.max_control) + MESSAGE_OVERHEAD;
    let session = &session;
    let inbound = async move {
        let mut peer_nonce = peer_nonce;
        while let Some((flags, m)) = read_frame(&mut cr, Some(max_in)).await? {
            if flags & !LONG != 0 {
                return Err(Refusal::Flags(flags).into());
            }
            if m.len() < MESSAGE_OVERHEAD as usize || &m[..8] != b"\x07MESSAGE" {
                return Err(broken("a frame that is not a MESSAGE"));
            }
            let n = u64::from_be_bytes(m[8..16].try_into().unwrap_or_default());
            if n <= peer_nonce {
                return Err(broken("a MESSAGE nonce that does not rise (a replay)"));
            }
            peer_nonce = n;
            let p = session
                .decrypt(&nonce(b"CurveZMQMESSAGEC", &m[8..16]), &m[16..])
                .map_err(|_| broken("a MESSAGE box that does not open"))?;
            let Some((&inner, data)) = p.split_first() else {
                return Err(broken("an empty MESSAGE box"));
            };
            if inner & !(BOX_MORE | BOX_COMMAND) != 0 {
                return Err(Refusal::Flags(inner).into());
            }
            let mut out = 0;
            if inner & BOX_MORE != 0 {
                out |= MORE;
            }
            if inner & BOX_COMMAND != 0 {
                out |= COMMAND;
            }
            write_frame(&mut pw, out, &[data]).await?;
        }
        Ok::<(), RelayError>(())
    };
    let outbound = async move {
        let mut plain = Vec::new();
        while let Some((flags, body)) = read_frame(&mut pr, None).await? {
            plain.clear();
            plain.push(
                if flags & MORE != 0 { BOX_MORE } else { 0 }
                    | if flags & COMMAND != 0 { BOX_COMMAND } else { 0 },
            );
            plain.extend_from_slice(&body);
            let boxed = session
                .encrypt(
                    &nonce(b"CurveZMQMESSAGES", &ours.to_be_bytes()),
                    plain.as_slice(),
                )
                .map_err(|_| broken("a MESSAGE could not be boxed"))?;
            write_frame(&mut cw, 0, &[b"\x07MESSAGE", &ours.to_be_bytes(), &boxed]).await?;
            ours += 1;
        }
        Ok::<(), RelayError>(())
    };
    // Whichever direction ends first ends the peer.
    tokio::select! {
        r = inbound => r,
        r = outbound => r,
    }
}

/// What a completed handshake leaves: the session's precomputed box (C', s'), the peer's last short nonce,
/// and the metadata the peer sent (for the socket behind).
struct Handshake {
    session: SalsaBox,
    peer_nonce: u64,
    metadata: Vec<u8>,
}

/// HELLO → WELCOME, INITIATE → (READY, sent by the caller once the socket behind is ready).
async fn handshake<R, W>(
    cr: &mut R,
    cw: &mut W,
    keys: &ServerKeys,
    limits: &Limits,
) -> Result<Handshake, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = INITIATE_MIN_BYTES as u64 + limits.max_control;
    let (_, hello) = read_frame(cr, Some(max))
        .await?
        .ok_or_else(|| broken("closed before HELLO"))?;
    if hello.len() != HELLO_BYTES
        || &hello[..8] != b"\x05HELLO\x01\x00"
        || hello[8..80].iter().any(|b| *b != 0)
    {
        return Err(broken("not a HELLO"));
    }
    let client_transient = PublicKey::from(array::<KEY_BYTES>(&hello[80..112]));
    let hello_nonce = u64::from_be_bytes(array::<8>(&hello[112..120]));
    let zeros = SalsaBox::new(&client_transient, &keys.secret)
        .decrypt(&nonce(b"CurveZMQHELLO---", &hello[112..120]), &hello[120..])
        .map_err(|_| broken("a HELLO box that does not open"))?;
    if zeros.len() != 64 || zeros.iter().any(|b| *b != 0) {
        return Err(broken("a HELLO signature that is not 64 zero bytes"));
    }

    // WELCOME: our transient key and a cookie only this connection's key opens.
    let transient = SecretKey::generate(&mut OsRng);
    let mut cookie_key = [0u8; KEY_BYTES];
    OsRng.fill_bytes(&mut cookie_key);
    let mut cookie_nonce = [0u8; 16];
    OsRng.fill_bytes(&mut cookie_nonce);
    let mut cookie_plain = client_transient.as_bytes().to_vec();
    cookie_plain.extend_from_slice(&transient.to_bytes());
    let cookie_box = XSalsa20Poly1305::new(GenericArray::from_slice(&cookie_key))
        .encrypt(&nonce(b"COOKIE--", &cookie_nonce), cookie_plain.as_slice())
        .map_err(|_| broken("the cookie could not be boxed"))?;
    let mut cookie = cookie_nonce.to_vec();
    cookie.extend_from_slice(&cookie_box);
    let mut welcome_plain = transient.public_key().as_bytes().to_vec();
    welcome_plain.extend_from_slice(&cookie);
    let mut welcome_nonce = [0u8; 16];
    OsRng.fill_bytes(&mut welcome_nonce);
    let welcome = SalsaBox::new(&client_transient, &keys.secret)
        .encrypt(
            &nonce(b"WELCOME-", &welcome_nonce),
            welcome_plain.as_slice(),
        )
        .map_err(|_| broken("WELCOME could not be boxed"))?;
    write_frame(cw, COMMAND, &[b"\x07WELCOME", &welcome_nonce, &welcome]).await?;

    // INITIATE: our cookie back, the client's long-term key vouching for its transient one, its metadata.
    let (_, initiate) = read_frame(cr, Some(max))
        .await?
        .ok_or_else(|| broken("closed before INITIATE"))?;
    if initiate.len() < INITIATE_MIN_BYTES || &initiate[..9] != b"\x08INITIATE" {
        return Err(broken("not an INITIATE"));
    }
    if initiate[9..105] != cookie[..] {
        return Err(broken("an INITIATE with another connection's cookie"));
    }
    let initiate_nonce = u64::from_be_bytes(array::<8>(&initiate[105..113]));
    if initiate_nonce <= hello_nonce {
        return Err(broken("an INITIATE nonce that does not rise"));
    }
    let session = SalsaBox::new(&client_transient, &transient);
    let body = session
        .decrypt(
            &nonce(b"CurveZMQINITIATE", &initiate[105..113]),
            &initiate[113..],
        )
        .map_err(|_| broken("an INITIATE box that does not open"))?;
    // C (32), vouch nonce (16), vouch box (C' and S: 64 + MAC), metadata.
    let vouch_end = KEY_BYTES + 16 + 2 * KEY_BYTES + MAC;
    if body.len() < vouch_end {
        return Err(broken("an INITIATE too short for its vouch"));
    }
    let client_key = array::<KEY_BYTES>(&body[..KEY_BYTES]);
    let vouch = SalsaBox::new(&PublicKey::from(client_key), &transient)
        .decrypt(
            &nonce(b"VOUCH---", &body[KEY_BYTES..KEY_BYTES + 16]),
            &body[KEY_BYTES + 16..vouch_end],
        )
        .map_err(|_| broken("a vouch that does not open"))?;
    if vouch[..KEY_BYTES] != client_transient.as_bytes()[..]
        || vouch[KEY_BYTES..] != keys.public.as_bytes()[..]
    {
        return Err(broken("a vouch for other keys"));
    }
    let metadata = body[vouch_end..].to_vec();
    check_metadata(&metadata)?;
    if !keys.allows(&client_key) {
        // RFC 26: tell the client why (libzmq reports an authentication failure), then drop it.
        let _ = write_frame(cw, COMMAND, &[b"\x05ERROR\x03400"]).await;
        return Err(Refusal::UnknownClientKey.into());
    }
    Ok(Handshake {
        session,
        peer_nonce: initiate_nonce,
        metadata,
    })
}

/// A ZMTP metadata block: (name length, name, 4-byte value length, value)* with nothing left over, and a
/// socket type among its properties.
fn check_metadata(mut m: &[u8]) -> Result<(), RelayError> {
    let mut socket_type = false;
    while let Some((&len, rest)) = m.split_first() {
        let len = usize::from(len);
        let (Some(name), Some(size)) = (rest.get(..len), rest.get(len..len + 4)) else {
            return Err(broken("malformed metadata"));
        };
        let size = u32::from_be_bytes(array::<4>(size)) as usize;
        let Some(next) = rest.get(len + 4 + size..) else {
            return Err(broken("malformed metadata"));
        };
        socket_type |= name.eq_ignore_ascii_case(b"Socket-Type");
        m = next;
    }
    if !socket_type {
        return Err(broken("metadata without a Socket-Type"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_to_its_end_and_needs_a_socket_type() {
        let mut m = vec![11];
        m.extend_from_slice(b"Socket-Type");
        m.extend_from_slice(&3u32.to_be_bytes());
        m.extend_from_slice(b"REQ");
        m.push(8);
        m.extend_from_slice(b"Identity");
        m.extend_from_slice(&0u32.to_be_bytes());
        assert!(check_metadata(&m).is_ok());
        assert!(check_metadata(&m[..m.len() - 1]).is_err(), "cut short");
        assert!(check_metadata(&m[16..]).is_err(), "no socket type");
        let mut lying = m.clone();
        lying[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(check_metadata(&lying).is_err(), "a length past the end");
    }
}
