//! The event sequence across lives: `data_dir/events.seq` holds a number N such that no life of this mind has
//! numbered an event above N. A life starts its events at N + 1 and at once writes N + `image.seq_reserve`;
//! the ticker pushes the reservation ahead whenever use comes within half of it. A kill -9 at any instant
//! therefore leaves a number at least as high as every one handed out: the next life continues, with a gap,
//! never repeating one. One small write per half-reservation (500,000 events at the shipped setting), none
//! in `EventHub::publish`.

use std::path::{Path, PathBuf};

use super::ImageError;

/// The reservation file of a data folder.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("events.seq")
}

/// The reserved number, 0 when the file is missing. An unreadable file is an error: starting from 0 could
/// repeat numbers, and the caller decides what else to trust (the newest image's mark).
pub fn read(path: &Path) -> Result<u64, ImageError> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map_err(|e| {
            ImageError::Corrupt(format!("{}: not a sequence number: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(ImageError::io("cannot read", path, e)),
    }
}

/// Records `upto` as reserved, atomically and durably.
pub fn write(path: &Path, upto: u64) -> Result<(), ImageError> {
    crate::fsutil::atomic_write(path, format!("{upto}\n").as_bytes())
        .map_err(|e| ImageError::io("cannot write", path, e))
}

/// Whether the reservation must move ahead: less than half of it is left above `current`.
pub fn needs_more(current: u64, reserved: u64, reserve: u64) -> bool {
    current.saturating_add(reserve / 2) >= reserved
}
