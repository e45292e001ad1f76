//! Raw ZMTP 3 bytes for tests that play a hostile peer at the TCP level.

/// The `IP:PORT` behind a `tcp://` endpoint.
pub fn addr(endpoint: &str) -> String {
    endpoint.trim_start_matches("tcp://").to_string()
}

/// A ZMTP 3.0 greeting for the NULL mechanism, as a client.
pub fn greeting() -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// A READY command for a DEALER.
pub fn ready() -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"DEALER");
    let mut f = vec![0x04, body.len() as u8];
    f.extend(body);
    f
}
