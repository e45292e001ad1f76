//! The envelope of a living image: what makes a file an image, says which format its payload is in, and proves
//! the payload whole.
//!
//! ```text
//! offset 0   "BATOSIMG"                     magic (8 bytes)
//!        8   format                         u32 little-endian: read first, so a newer format is refused unread
//!       12   header length                  u32 little-endian
//!       16   header                         JSON: writer, created_at, generation, payload_bytes, sha256
//!       16+h payload                        payload_bytes bytes whose SHA-256 is `sha256`
//! ```
//!
//! A truncated file fails the length check, a flipped byte the checksum (or the magic, or the header); each is
//! [`ImageError::Corrupt`] with what was wrong. Nothing is trusted before it is checked: the header length is
//! bounded before it is read, the payload length is compared with the file's before the payload is hashed.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ImageError, FORMAT};

/// The first bytes of every image.
pub const MAGIC: &[u8; 8] = b"BATOSIMG";

/// The longest header accepted (it holds five short fields).
const MAX_HEADER: usize = 4096;

/// Bytes before the header: magic, format, header length.
const PREFIX: usize = 16;

/// The envelope's header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The batos version that wrote the image.
    pub writer: String,
    /// Unix seconds.
    pub created_at: f64,
    /// The image's generation.
    pub generation: u64,
    /// Length of the payload.
    pub payload_bytes: u64,
    /// SHA-256 of the payload, lowercase hex.
    pub sha256: String,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The envelope before `payload` (magic, format, header) for an image in `format`; the file is this, then
/// the payload.
pub fn envelope(
    format: u32,
    writer: &str,
    created_at: f64,
    generation: u64,
    payload: &[u8],
) -> Result<Vec<u8>, ImageError> {
    let header = Header {
        writer: writer.to_string(),
        created_at,
        generation,
        payload_bytes: payload.len() as u64,
        sha256: sha256_hex(payload),
    };
    let h = serde_json::to_vec(&header).map_err(|e| ImageError::Io(e.to_string()))?;
    let mut out = Vec::with_capacity(PREFIX + h.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    Ok(out)
}

/// The whole image file for `payload` in `format` (tests and fixtures; saves write the parts).
pub fn encode(
    format: u32,
    writer: &str,
    created_at: f64,
    generation: u64,
    payload: &[u8],
) -> Result<Vec<u8>, ImageError> {
    let mut out = envelope(format, writer, created_at, generation, payload)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// Whether the file at `path` starts like a living image (an export replaces only such a file).
pub fn looks_like_image(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| &magic == MAGIC)
}

/// Checks an image file's bytes: magic, format, header, length, checksum. Answers the format, the header and
/// the payload's byte range.
pub fn decode(
    path: &Path,
    bytes: &[u8],
) -> Result<(u32, Header, std::ops::Range<usize>), ImageError> {
    let corrupt = |why: String| ImageError::Corrupt(format!("{}: {why}", path.display()));
    if bytes.len() < PREFIX {
        return Err(corrupt(format!(
            "{} bytes, shorter than an image's envelope",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("not a batos living image (bad magic)".into()));
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let format = word(8);
    if format > FORMAT {
        return Err(ImageError::Newer {
            path: path.display().to_string(),
            format,
            supported: FORMAT,
            writer: env!("CARGO_PKG_VERSION").to_string(),
        });
    }
    if format == 0 {
        return Err(corrupt("format 0 does not exist".into()));
    }
    let hlen = word(12) as usize;
    if hlen > MAX_HEADER || PREFIX + hlen > bytes.len() {
        return Err(corrupt(format!(
            "header of {hlen} bytes does not fit (file of {} bytes)",
            bytes.len()
        )));
    }
    let header: Header = serde_json::from_slice(&bytes[PREFIX..PREFIX + hlen])
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    let start = PREFIX + hlen;
    let have = (bytes.len() - start) as u64;
    if have != header.payload_bytes {
        return Err(corrupt(format!(
            "payload is {have} bytes but the header says {} (truncated or appended to)",
            header.payload_bytes
        )));
    }
    let sum = sha256_hex(&bytes[start..]);
    if sum != header.sha256 {
        return Err(corrupt(format!(
            "checksum mismatch: payload hashes to {sum}, header says {}",
            header.sha256
        )));
    }
    Ok((format, header, start..bytes.len()))
}

/// Reads and checks an image file (see [`decode`]).
pub fn read(path: &Path) -> Result<(u32, Header, Vec<u8>), ImageError> {
    let mut bytes = std::fs::read(path).map_err(|e| ImageError::io("cannot read", path, e))?;
    let (format, header, range) = decode(path, &bytes)?;
    bytes.drain(..range.start);
    Ok((format, header, bytes))
}
