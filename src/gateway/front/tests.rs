//! The front door's own tests: CURVE refusals before the socket, eviction, and two-way liveness against a
//! real `zeromq` socket behind.

use super::*;

#[tokio::test]
async fn with_curve_required_a_clear_text_peer_is_dropped_before_the_socket_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(ServerKeys::load_or_create(&dir.path().join("curve")).unwrap());
    let backend = dir.path().join("gw.sock");
    let behind = tokio::net::UnixListener::bind(&backend).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = behind.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_frame: 1 << 20,
        max_control: 4096,
        max_frames: 4,
        handshake: Duration::from_secs(5),
        max_connections: 8,
        max_pending: 8,
        max_held: 8,
        ping: Duration::from_secs(5),
        silence: Duration::from_secs(15),
    };
    let front = tokio::spawn(serve(
        listener,
        backend,
        Door::Commands,
        limits,
        Some(Curve {
            keys,
            required: true,
        }),
    ));
    let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut start = [0u8; 11];
    peer.read_exact(&mut start).await.unwrap();
    assert_eq!(start, [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3]);
    let mut null = [0u8; 64];
    null[..11].copy_from_slice(&start);
    null[11] = 1;
    null[12..16].copy_from_slice(b"NULL");
    peer.write_all(&null).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut rest))
        .await
        .expect("the peer was not dropped")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more is said to a refused peer");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the socket behind never saw it"
    );
    front.abort();
}

#[test]
fn pending_peers_beyond_the_cap_evict_the_oldest() {
    let p = Pending::default();
    let (a, mut ra) = p.admit(2);
    let (_b, mut rb) = p.admit(2);
    assert!(ra.try_recv().is_err());
    let (_c, _rc) = p.admit(2);
    assert!(ra.try_recv().is_ok(), "the oldest was evicted");
    assert!(rb.try_recv().is_err());
    p.leave(a);
    assert_eq!(p.queue.lock().unwrap().len(), 2);
}

/// A front on a free loopback port guarding a real `zeromq` ROUTER behind, with liveness periods in ms.
async fn front_with_router(
    dir: &std::path::Path,
    ping_ms: u64,
    silence_ms: u64,
    max_connections: usize,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
    zeromq::RouterSocket,
) {
    use zeromq::Socket;
    let backend = dir.join("gw.sock");
    let mut router = zeromq::RouterSocket::new();
    router
        .bind(&format!("ipc://{}", backend.display()))
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_frame: 1 << 20,
        max_control: 4096,
        max_frames: 4,
        handshake: Duration::from_secs(5),
        max_connections,
        max_pending: 8,
        max_held: 8,
        ping: Duration::from_millis(ping_ms),
        silence: Duration::from_millis(silence_ms),
    };
    let front = tokio::spawn(serve(listener, backend, Door::Commands, limits, None));
    (addr, front, router)
}

/// Connects as a DEALER speaking ZMTP 3.`minor` and completes the handshake (the socket's greeting and
/// READY read).
async fn dealer(addr: std::net::SocketAddr, minor: u8) -> tokio::net::TcpStream {
    let mut peer = hello(addr, minor).await;
    let mut theirs = [0u8; 64];
    peer.read_exact(&mut theirs).await.unwrap();
    let (flags, body) = read_frame(&mut peer).await.unwrap();
    assert_eq!(flags, 0x04);
    assert!(body.starts_with(b"\x05READY"));
    peer
}

/// Connects and sends a DEALER's greeting (ZMTP 3.`minor`, NULL) and READY; reads nothing.
async fn hello(addr: std::net::SocketAddr, minor: u8) -> tokio::net::TcpStream {
    let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 64];
    greeting[0] = 0xFF;
    greeting[9] = 0x7F;
    greeting[10] = 3;
    greeting[11] = minor;
    greeting[12..16].copy_from_slice(b"NULL");
    peer.write_all(&greeting).await.unwrap();
    let mut ready = vec![0x04, 0, 5];
    ready.extend_from_slice(b"READY");
    ready.extend_from_slice(&[11]);
    ready.extend_from_slice(b"Socket-Type");
    ready.extend_from_slice(&6u32.to_be_bytes());
    ready.extend_from_slice(b"DEALER");
    ready[1] = (ready.len() - 2) as u8;
    peer.write_all(&ready).await.unwrap();
    peer
}

/// One short frame from the front: (flags, body); `None` at end of stream.
async fn read_frame(peer: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    peer.read_exact(&mut head).await.ok()?;
    assert_eq!(head[0] & 0x02, 0, "only short frames in these tests");
    let mut body = vec![0u8; usize::from(head[1])];
    peer.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

#[tokio::test]
async fn a_silent_zmtp_3_1_peer_is_pinged_then_dropped_and_its_slot_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, front, _router) = front_with_router(dir.path(), 100, 600, 1).await;
    // The front's clock for this peer cannot start before the peer exists; the frame below restarts it, but a
    // loaded machine may read that frame after the test's clock has moved on, so only this bound is certain.
    let shook = Instant::now();
    let mut peer = dealer(addr, 1).await;
    // The only slot is taken: a second peer is dropped once it has shaken hands.
    let mut second = hello(addr, 0).await;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut seen))
        .await
        .expect("a peer beyond max_connections was kept")
        .ok();
    let mut byte = [0u8; 1];
    // A frame from the peer starts the clock (any byte past the handshake counts as life).
    peer.write_all(&[0x01, 0, 0x00, 1, b'x']).await.unwrap();
    let (flags, ping) = read_frame(&mut peer).await.expect("a PING");
    assert_eq!(flags, 0x04);
    assert_eq!(&ping[..5], b"\x04PING");
    assert_eq!(
        &ping[5..7],
        &6u16.to_be_bytes(),
        "TTL: the timeout in deciseconds"
    );
    assert!(
        shook.elapsed() >= Duration::from_millis(100),
        "pinged before the interval"
    );
    // Not answered: the front hangs up within the timeout (and a tick).
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut rest))
        .await
        .expect("the silent peer was not dropped")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing after the PING: {rest:?}");
    assert!(shook.elapsed() >= Duration::from_millis(600));
    // Its slot is free again: a newcomer is kept (a 3.0 peer, never timed out for quiet).
    let mut third = dealer(addr, 0).await;
    let r = tokio::time::timeout(Duration::from_millis(800), third.read(&mut byte)).await;
    assert!(
        r.is_err(),
        "the freed slot was not given to a newcomer: {r:?}"
    );
    front.abort();
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_and_its_own_pings_get_pongs() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, front, _router) = front_with_router(dir.path(), 100, 600, 8).await;
    let mut peer = dealer(addr, 1).await;
    // Its own PING (TTL 0x0064, context "hi") is answered by the front with the context echoed.
    peer.write_all(b"\x04\x09\x04PING\x00\x64hi").await.unwrap();
    let (flags, pong) = read_frame(&mut peer).await.expect("a PONG");
    assert_eq!((flags, pong.as_slice()), (0x04, &b"\x04PONGhi"[..]));
    // Then it answers every PING for three timeouts.
    let until = Instant::now() + Duration::from_millis(1800);
    let mut pings = 0;
    while Instant::now() < until {
        let (_, f) = tokio::time::timeout(Duration::from_secs(2), read_frame(&mut peer))
            .await
            .expect("the front went quiet")
            .expect("an answering peer was dropped");
        assert!(f.starts_with(b"\x04PING"), "{f:?}");
        pings += 1;
        peer.write_all(b"\x04\x05\x04PONG").await.unwrap();
    }
    assert!(
        pings >= 3,
        "pinged {pings} times in 1.8 s at 100 ms of quiet"
    );
    front.abort();
}

#[tokio::test]
async fn a_zmtp_3_0_peer_is_never_pinged_nor_timed_out_for_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, front, _router) = front_with_router(dir.path(), 100, 300, 8).await;
    let mut peer = dealer(addr, 0).await;
    peer.write_all(&[0x01, 0, 0x00, 1, b'x']).await.unwrap();
    let mut byte = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(1200), peer.read(&mut byte)).await;
    assert!(
        r.is_err(),
        "a 3.0 peer heard something or was dropped: {r:?}"
    );
    front.abort();
}
