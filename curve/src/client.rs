//! The client's side of CurveZMQ, for clients whose ZMTP library has none (the `zeromq` crate behind `batos`'s
//! CLI and TUI): a [`Tunnel`] the library connects to in clear text over a private Unix socket, which speaks
//! CURVE to the daemon over TCP.
//!
//! ```text
//!  zeromq socket ──ipc://<private dir>/N.sock, NULL ZMTP──▶ tunnel session ──TCP, CURVE (RFC 26)──▶ daemon
//!                 greeting, READY ◀── the daemon's metadata     HELLO → WELCOME → INITIATE (our metadata) → READY
//!                 frames ──────────▶ boxed as MESSAGEs (our nonces rising from 3) ──▶
//!                 ◀────────────────── opened MESSAGEs (the daemon's nonces must rise) ◀──
//! ```
//!
//! The socket lives in a folder only this user can enter (0700, removed with the tunnel), so no other local
//! user can ride the session. Each connection the library makes is a new CURVE session with a fresh transient
//! key pair; the long-term pair is the client's own ([`crate::KeyPair`]), the server's public key comes from
//! its `server.key`. A daemon that does not know the client's key answers ERROR, which the session logs and
//! ends (the library then sees its connection close, as after any refusal).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crypto_box::aead::{Aead, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use rand_core::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::{
    array, mechanism, nonce, read_frame, write_frame, FrameError, KeyPair, BOX_COMMAND, BOX_MORE,
    COMMAND, GREETING, KEY_BYTES, MECHANISM, MESSAGE_OVERHEAD, MORE, SIGNATURE_AND_MAJOR,
};

/// Largest frame the tunnel passes either way, in bytes (the daemon's own limit is lower).
const MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Why a tunnel could not start or a session failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The endpoint is not `tcp://HOST:PORT`.
    #[error("CURVE needs a tcp:// endpoint (got {0})")]
    Endpoint(String),
    /// The private folder or socket could not be made.
    #[error("cannot start the CURVE tunnel: {0}")]
    Start(std::io::Error),
    /// A frame broke ZMTP's rules.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The daemon refused the handshake (its reason, e.g. `400`: our key is not among its allowed ones).
    #[error("the daemon refused this client's CURVE key ({0}); copy its public key into the daemon's data_dir/curve/clients/")]
    Refused(String),
    /// A CURVE rule broken by the other side.
    #[error("CURVE: {0}")]
    Broken(&'static str),
}

impl From<std::io::Error> for TunnelError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e).into()
    }
}

/// A running tunnel: local `ipc://` endpoints for the daemon's command and event endpoints. Dropping it (the
/// last clone of the `Arc` a client holds) stops accepting and removes the private folder.
pub struct Tunnel {
    dir: tempfile::TempDir,
    locals: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tunnel({})", self.dir.path().display())
    }
}

impl Tunnel {
    /// Starts a tunnel (on the current tokio runtime) for each of `remotes` (`tcp://HOST:PORT`), as `keys`
    /// to the server whose long-term public key is `server`; returns it and the local endpoint of each.
    pub fn start(
        remotes: &[&str],
        keys: Arc<KeyPair>,
        server: [u8; KEY_BYTES],
    ) -> Result<(Self, Vec<String>), TunnelError> {
        let dir = tempfile::Builder::new()
            .prefix("batos-curve-")
            .tempdir()
            .map_err(TunnelError::Start)?;
        let mut tasks = Vec::new();
        let mut locals = Vec::new();
        for (i, remote) in remotes.iter().enumerate() {
            let addr = remote
                .strip_prefix("tcp://")
                .ok_or_else(|| TunnelError::Endpoint(remote.to_string()))?
                .to_string();
            let path = dir.path().join(format!("{i}.sock"));
            let listener = UnixListener::bind(&path).map_err(TunnelError::Start)?;
            locals.push(format!("ipc://{}", path.display()));
            let keys = keys.clone();
            tasks.push(tokio::spawn(accept(listener, addr, keys, server)));
        }
        Ok((
            Tunnel {
                dir,
                locals: locals.clone(),
                tasks,
            },
            locals,
        ))
    }

    /// The local endpoint of the `i`-th remote given to [`Tunnel::start`].
    pub fn local(&self, i: usize) -> Option<&str> {
        self.locals.get(i).map(String::as_str)
    }

    /// The private folder the local sockets are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept(listener: UnixListener, addr: String, keys: Arc<KeyPair>, server: [u8; KEY_BYTES]) {
    while let Ok((local, _)) = listener.accept().await {
        let (addr, keys) = (addr.clone(), keys.clone());
        tokio::spawn(async move {
            if let Err(e) = session(local, &addr, &keys, server).await {
                tracing::warn!(event = "client.curve_session_failed", endpoint = %addr, error = %e, "CURVE session ended");
            }
        });
    }
}

/// The peer's metadata from its READY command (`\x05READY` + metadata).
fn ready_metadata(frame: Option<(u8, Vec<u8>)>) -> Result<Vec<u8>, TunnelError> {
    match frame {
        Some((flags, body)) if flags & COMMAND != 0 => body
            .strip_prefix(b"\x05READY")
            .map(<[u8]>::to_vec)
            .ok_or(TunnelError::Broken("the local socket did not say READY")),
        _ => Err(TunnelError::Broken("the local socket did not say READY")),
    }
}

/// One connection of the local library: NULL ZMTP to it, CURVE to the daemon.
async fn session(
    local: UnixStream,
    addr: &str,
    keys: &KeyPair,
    server: [u8; KEY_BYTES],
) -> Result<(), TunnelError> {
    let (lr, mut lw) = tokio::io::split(local);
    let mut lr = BufReader::new(lr);
    // The library's greeting and READY (its socket type and identity go to the daemon in INITIATE).
    let mut theirs = [0u8; GREETING];
    lr.read_exact(&mut theirs).await?;
    let mut ours = theirs;
    ours[MECHANISM].copy_from_slice(&mechanism(b"NULL"));
    ours[10..12].copy_from_slice(&[3, 0]);
    lw.write_all(&ours).await?;
    let local_metadata = ready_metadata(read_frame(&mut lr, Some(MAX_FRAME)).await?)?;

    let remote = TcpStream::connect(addr).await?;
    let _ = remote.set_nodelay(true);
    let (rr, mut rw) = tokio::io::split(remote);
    let mut rr = BufReader::new(rr);
    let (session, daemon_metadata, mut their_nonce) =
        handshake(&mut rr, &mut rw, keys, server, &local_metadata).await?;
    write_frame(&mut lw, COMMAND, &[b"\x05READY", &daemon_metadata]).await?;

    let session = Arc::new(session);
    let up = {
        let session = session.clone();
        async move {
            // HELLO took nonce 1, INITIATE 2.
            let mut n: u64 = 3;
            while let Some((flags, body)) = read_frame(&mut lr, Some(MAX_FRAME)).await? {
                let mut plain = Vec::with_capacity(body.len() + 1);
                plain.push(
                    if flags & MORE != 0 { BOX_MORE } else { 0 }
                        | if flags & COMMAND != 0 { BOX_COMMAND } else { 0 },
                );
                plain.extend_from_slice(&body);
                let boxed = session
                    .encrypt(
                        &nonce(b"CurveZMQMESSAGEC", &n.to_be_bytes()),
                        plain.as_slice(),
                    )
                    .map_err(|_| TunnelError::Broken("a MESSAGE could not be boxed"))?;
                write_frame(&mut rw, 0, &[b"\x07MESSAGE", &n.to_be_bytes(), &boxed]).await?;
                n += 1;
            }
            Ok::<(), TunnelError>(())
        }
    };
    let down = async move {
        while let Some((_, m)) = read_frame(&mut rr, Some(MAX_FRAME + MESSAGE_OVERHEAD)).await? {
            if m.len() < MESSAGE_OVERHEAD as usize || &m[..8] != b"\x07MESSAGE" {
                return Err(TunnelError::Broken("a frame that is not a MESSAGE"));
            }
            let n = u64::from_be_bytes(array::<8>(&m[8..16]));
            if n <= their_nonce {
                return Err(TunnelError::Broken("a MESSAGE nonce that does not rise"));
            }
            their_nonce = n;
            let p = session
                .decrypt(&nonce(b"CurveZMQMESSAGES", &m[8..16]), &m[16..])
                .map_err(|_| TunnelError::Broken("a MESSAGE box that does not open"))?;
            let Some((&inner, data)) = p.split_first() else {
                return Err(TunnelError::Broken("an empty MESSAGE box"));
            };
            let flags = if inner & BOX_MORE != 0 { MORE } else { 0 }
                | if inner & BOX_COMMAND != 0 { COMMAND } else { 0 };
            write_frame(&mut lw, flags, &[data]).await?;
        }
        Ok::<(), TunnelError>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// RFC 26 as the client: greeting, HELLO, WELCOME, INITIATE, READY. Returns the session's box (C', S'), the
/// daemon's metadata and its last short nonce.
async fn handshake<R, W>(
    rr: &mut R,
    rw: &mut W,
    keys: &KeyPair,
    server: [u8; KEY_BYTES],
    metadata: &[u8],
) -> Result<(SalsaBox, Vec<u8>, u64), TunnelError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut greeting = [0u8; GREETING];
    greeting[..SIGNATURE_AND_MAJOR.len()].copy_from_slice(&SIGNATURE_AND_MAJOR);
    // Minor version 0: the daemon's front pings only 3.1 peers, and this session relays to a library that
    // would take a PING for a protocol error.
    greeting[MECHANISM].copy_from_slice(&mechanism(b"CURVE"));
    rw.write_all(&greeting).await?;
    let mut theirs = [0u8; GREETING];
    rr.read_exact(&mut theirs).await?;
    if theirs[0] != 0xFF || theirs[10] < 3 || theirs[MECHANISM] != mechanism(b"CURVE") {
        return Err(TunnelError::Broken(
            "the daemon does not speak CURVE here (gateway.curve off?)",
        ));
    }
    let server = PublicKey::from(server);
    let transient = SecretKey::generate(&mut OsRng);
    let hello_box = SalsaBox::new(&server, &transient)
        .encrypt(
            &nonce(b"CurveZMQHELLO---", &1u64.to_be_bytes()),
            &[0u8; 64][..],
        )
        .map_err(|_| TunnelError::Broken("HELLO could not be boxed"))?;
    write_frame(
        rw,
        COMMAND,
        &[
            b"\x05HELLO\x01\x00",
            &[0u8; 72],
            transient.public_key().as_bytes(),
            &1u64.to_be_bytes(),
            &hello_box,
        ],
    )
    .await?;
    let welcome = command(rr).await?;
    let Some(w) = welcome.strip_prefix(b"\x07WELCOME") else {
        return Err(TunnelError::Broken("no WELCOME"));
    };
    if w.len() != 16 + 144 {
        return Err(TunnelError::Broken("a WELCOME of the wrong size"));
    }
    let plain = SalsaBox::new(&server, &transient)
        .decrypt(&nonce(b"WELCOME-", &w[..16]), &w[16..])
        .map_err(|_| TunnelError::Broken("a WELCOME box that does not open"))?;
    let server_transient = PublicKey::from(array::<KEY_BYTES>(&plain[..KEY_BYTES]));
    let cookie = &plain[KEY_BYTES..];
    let mut vouch_nonce = [0u8; 16];
    OsRng.fill_bytes(&mut vouch_nonce);
    let mut vouched = transient.public_key().as_bytes().to_vec();
    vouched.extend_from_slice(server.as_bytes());
    let vouch = SalsaBox::new(&server_transient, &keys.secret)
        .encrypt(&nonce(b"VOUCH---", &vouch_nonce), vouched.as_slice())
        .map_err(|_| TunnelError::Broken("the vouch could not be boxed"))?;
    let mut initiate = keys.public.as_bytes().to_vec();
    initiate.extend_from_slice(&vouch_nonce);
    initiate.extend_from_slice(&vouch);
    initiate.extend_from_slice(metadata);
    let session = SalsaBox::new(&server_transient, &transient);
    let boxed = session
        .encrypt(
            &nonce(b"CurveZMQINITIATE", &2u64.to_be_bytes()),
            initiate.as_slice(),
        )
        .map_err(|_| TunnelError::Broken("INITIATE could not be boxed"))?;
    write_frame(
        rw,
        COMMAND,
        &[b"\x08INITIATE", cookie, &2u64.to_be_bytes(), &boxed],
    )
    .await?;
    let ready = command(rr).await?;
    if let Some(reason) = ready.strip_prefix(b"\x05ERROR") {
        let reason = reason.get(1..).unwrap_or_default();
        return Err(TunnelError::Refused(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    let Some(r) = ready.strip_prefix(b"\x05READY").filter(|r| r.len() >= 8) else {
        return Err(TunnelError::Broken("no READY"));
    };
    let their_nonce = u64::from_be_bytes(array::<8>(&r[..8]));
    let metadata = session
        .decrypt(&nonce(b"CurveZMQREADY---", &r[..8]), &r[8..])
        .map_err(|_| TunnelError::Broken("a READY box that does not open"))?;
    Ok((session, metadata, their_nonce))
}

/// The next command frame's body from the daemon during the handshake.
async fn command<R: AsyncRead + Unpin>(rr: &mut R) -> Result<Vec<u8>, TunnelError> {
    match read_frame(rr, Some(4096)).await? {
        Some((flags, body)) if flags & COMMAND != 0 => Ok(body),
        Some(_) => Err(TunnelError::Broken("a data frame during the handshake")),
        None => Err(TunnelError::Broken(
            "the daemon closed the connection during the handshake",
        )),
    }
}

/// The path a key file named `name` has in `dir`.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}
