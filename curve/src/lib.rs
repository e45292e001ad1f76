//! CurveZMQ (RFC 26) pieces the daemon's gateway and its own clients share: ZMTP 3 frames read and written
//! whole, RFC 26's nonces, ZeroMQ's certificate files with Z85 keys (RFC 32), and — for the `batos` CLI and
//! TUI, whose `zeromq` crate has no CURVE — the client's [`tunnel`].
//!
//! The server side is the daemon's front door (`src/gateway/front/curve.rs`); the client side is here, so a
//! client built without the engine speaks it too. Both use the same boxes (NaCl's `crypto_box`: X25519 and
//! XSalsa20-Poly1305, the MAC first) from a maintained crate; nothing here is hand-written cryptography, only
//! RFC 26's layout of the bytes around it.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
mod files;

pub use client::{key_file, Tunnel, TunnelError};
pub use files::{certificate, decode, encode, field, read_small, KeyError, KeyPair};

use crypto_box::aead::generic_array::GenericArray;
use crypto_box::aead::AeadCore;
use crypto_box::SalsaBox;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of a Curve25519 key.
pub const KEY_BYTES: usize = 32;
/// ZMTP 3 greeting length, in bytes.
pub const GREETING: usize = 64;
/// What goes first in a greeting: the signature (libzmq's padding) and major version 3.
pub const SIGNATURE_AND_MAJOR: [u8; 11] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3];
/// Where a greeting names its mechanism (20 bytes, NUL-padded), and the as-server byte after it.
pub const MECHANISM: std::ops::Range<usize> = 12..32;
/// The as-server byte of a greeting.
pub const AS_SERVER: usize = 32;
/// ZMTP frame flag: more frames of this message follow.
pub const MORE: u8 = 0x01;
/// ZMTP frame flag: an 8-byte size follows (else 1 byte).
pub const LONG: u8 = 0x02;
/// ZMTP frame flag: a command frame.
pub const COMMAND: u8 = 0x04;
/// Flag inside a MESSAGE box: more frames follow.
pub const BOX_MORE: u8 = 0x01;
/// Flag inside a MESSAGE box: the frame is a command.
pub const BOX_COMMAND: u8 = 0x02;
/// A box's MAC, in bytes.
pub const MAC: usize = 16;
/// A MESSAGE's bytes beyond its data: name (8), short nonce (8), MAC (16), flags (1).
pub const MESSAGE_OVERHEAD: u64 = 33;

/// A 24-byte nonce for `crypto_box`.
pub type Nonce = GenericArray<u8, <SalsaBox as AeadCore>::NonceSize>;

/// A 24-byte nonce: RFC 26's prefix for the command, then the counter or random tail.
pub fn nonce(prefix: &[u8], tail: &[u8]) -> Nonce {
    let mut n = [0u8; 24];
    n[..prefix.len()].copy_from_slice(prefix);
    n[prefix.len()..].copy_from_slice(tail);
    GenericArray::clone_from_slice(&n)
}

/// A mechanism name as the greeting carries it.
pub fn mechanism(name: &[u8]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[..name.len()].copy_from_slice(name);
    m
}

/// The first `N` bytes of `b` as an array (the caller has checked the length).
pub fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut k = [0u8; N];
    k.copy_from_slice(&b[..N]);
    k
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reserved flag bits set.
    #[error("malformed frame flags {0:#04x}")]
    Flags(u8),
    /// The frame announced more than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit that applied.
        limit: u64,
    },
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One ZMTP frame: its flags and body; `None` at a clean end of stream before a frame. A frame announcing
/// more than `max` bytes is refused unread.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: Option<u64>,
) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut flags = [0u8; 1];
    match r.read_exact(&mut flags).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = flags[0];
    if flags & !(MORE | LONG | COMMAND) != 0 {
        return Err(FrameError::Flags(flags));
    }
    let size = if flags & LONG != 0 {
        let mut be = [0u8; 8];
        r.read_exact(&mut be).await?;
        u64::from_be_bytes(be)
    } else {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).await?;
        u64::from(b[0])
    };
    if let Some(limit) = max.filter(|m| size > *m) {
        return Err(FrameError::TooLarge { size, limit });
    }
    let size = usize::try_from(size).map_err(|_| FrameError::TooLarge {
        size,
        limit: usize::MAX as u64,
    })?;
    let mut body = vec![0u8; size];
    r.read_exact(&mut body).await?;
    Ok(Some((flags, body)))
}

/// Writes one frame of `parts` joined, with `flags` (LONG added when the body needs it).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    flags: u8,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 9);
    if len > usize::from(u8::MAX) {
        out.push(flags | LONG);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(len as u8);
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    w.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_carry_their_prefix_and_tail() {
        let n = nonce(b"CurveZMQMESSAGES", &7u64.to_be_bytes());
        assert_eq!(&n[..16], b"CurveZMQMESSAGES");
        assert_eq!(&n[16..], &7u64.to_be_bytes());
    }

    #[tokio::test]
    async fn frames_round_trip_short_and_long_and_a_huge_announcement_is_refused_unread() {
        let mut wire = Vec::new();
        write_frame(&mut wire, COMMAND, &[b"\x05READY", b"x"])
            .await
            .unwrap();
        write_frame(&mut wire, MORE, &[&[7u8; 300]]).await.unwrap();
        let mut r = wire.as_slice();
        assert_eq!(
            read_frame(&mut r, None).await.unwrap(),
            Some((COMMAND, b"\x05READYx".to_vec()))
        );
        let (flags, body) = read_frame(&mut r, None).await.unwrap().unwrap();
        assert_eq!((flags, body.len()), (MORE | LONG, 300));
        assert!(read_frame(&mut r, None).await.unwrap().is_none());
        let mut huge = vec![LONG];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(matches!(
            read_frame(&mut huge.as_slice(), Some(1024)).await,
            Err(FrameError::TooLarge { limit: 1024, .. })
        ));
    }
}
