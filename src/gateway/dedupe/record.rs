//! The journal's record format: encoding one reply, reading a journal back (stopping at the first torn or
//! corrupt record), and the small helpers the table shares with it.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BODY_HEADER, MAGIC, RECORD_HEADER};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// FNV-1a, 32 bits: catches a record whose length arrived but whose bytes did not.
pub(super) fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Bytes of the journal record of `reply` to `id` (what counts against the byte cap).
pub(super) fn record_size(id: &str, reply: &[u8]) -> u64 {
    (RECORD_HEADER + BODY_HEADER + id.len() + reply.len()) as u64
}

/// Appends the record of `reply` to `id` to `buf`; `false` (and `buf` unchanged) when it cannot be encoded
/// (an id over 65 535 bytes or a body over 4 GiB).
pub(super) fn encode_record(buf: &mut Vec<u8>, unix_ms: u64, id: &str, reply: &[u8]) -> bool {
    let Ok(id_len) = u16::try_from(id.len()) else {
        return false;
    };
    let Ok(body_len) = u32::try_from(BODY_HEADER + id.len() + reply.len()) else {
        return false;
    };
    let start = buf.len();
    buf.reserve(RECORD_HEADER + BODY_HEADER + id.len() + reply.len());
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&unix_ms.to_le_bytes());
    buf.extend_from_slice(&id_len.to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(reply);
    let sum = checksum(&buf[start + RECORD_HEADER..]);
    buf[start + 4..start + RECORD_HEADER].copy_from_slice(&sum.to_le_bytes());
    true
}

/// One record read back from the journal.
pub(super) struct Loaded {
    pub(super) unix_ms: u64,
    pub(super) id: String,
    pub(super) reply: Vec<u8>,
}

/// The whole records of a journal (which starts with [`MAGIC`]), and how many bytes of it they and the magic
/// cover: reading stops at the first record that is incomplete or fails its checksum.
pub(super) fn parse(bytes: &[u8]) -> (Vec<Loaded>, usize) {
    let mut out = Vec::new();
    let mut pos = MAGIC.len();
    while pos < bytes.len() {
        let Some((record, used)) = parse_one(&bytes[pos..]) else {
            break;
        };
        out.push(record);
        pos += used;
    }
    (out, pos.min(bytes.len()))
}

/// The record at the start of `b` and its length in bytes.
pub(super) fn parse_one(b: &[u8]) -> Option<(Loaded, usize)> {
    let len = usize::try_from(u32::from_le_bytes(b.get(0..4)?.try_into().ok()?)).ok()?;
    let sum = u32::from_le_bytes(b.get(4..RECORD_HEADER)?.try_into().ok()?);
    let body = b.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    if checksum(body) != sum {
        return None;
    }
    let unix_ms = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let id_len = usize::from(u16::from_le_bytes(
        body.get(8..BODY_HEADER)?.try_into().ok()?,
    ));
    let id = std::str::from_utf8(body.get(BODY_HEADER..BODY_HEADER + id_len)?).ok()?;
    let reply = body.get(BODY_HEADER + id_len..)?.to_vec();
    Some((
        Loaded {
            unix_ms,
            id: id.to_string(),
            reply,
        },
        RECORD_HEADER + len,
    ))
}
