//! The wire body of an event: its timestamp and its encoding.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::EventBody;
use crate::wire::PROTOCOL_VERSION;

/// Current Unix time in seconds, to the microsecond. Whole microseconds keep every timestamp exact through
/// serde_json's default (best-effort) float parsing, so checkpoints and task lists read back what was written.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// Encodes an event body (also used for heartbeats, which carry the current seq).
pub fn encode_body(seq: u64, kind: &str, data: Value) -> Vec<u8> {
    let body = EventBody {
        v: PROTOCOL_VERSION,
        seq,
        ts: unix_now(),
        kind: kind.to_string(),
        data,
    };
    rmp_serde::to_vec_named(&body).unwrap_or_default()
}
