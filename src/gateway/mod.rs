//! The ZeroMQ gateway (wire protocol v1): a ROUTER command socket and a PUB event socket, owned by a
//! supervised actor. Requests run concurrently; replies go back through a cloneable send half.

mod commands;
pub mod dedupe;
pub mod front;
pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use zeromq::prelude::*;
use zeromq::{PubSocket, RouterSocket, ZmqMessage};

use batos_actors::codex::CodexHandle;
use batos_actors::curator::CuratorHandle;
use batos_actors::events::{encode_body, EventHub};
use batos_actors::exam::ExamHandle;
use batos_actors::image::ImageHandle;
use batos_actors::life::LifeHandle;
use batos_actors::memory::MemoryHandle;
use batos_actors::motivator::MotivatorHandle;
use batos_actors::orchestrator::OrchestratorHandle;
use batos_actors::personas::Personas;
use batos_actors::settings::{CurveMode, Settings};
use batos_actors::supervisor::SupervisorHandle;
use batos_actors::tools::forge::ForgeHandle;
use batos_actors::tools::ToolRegistry;
use batos_actors::trainer::TrainerHandle;

pub use commands::process;
use dedupe::Dedupe;

/// Global name of the gateway actor.
pub const GATEWAY_NAME: &str = "gateway";

/// Which LLM backend serves the personas, and why it was chosen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendInfo {
    /// `ollama` or `embedded`.
    pub kind: String,
    /// URL or model path.
    pub location: String,
    /// Why this backend.
    pub reason: String,
}

/// Everything a command may touch.
pub struct Organs {
    /// Live settings, read at each use (request size, organ call timeout, `debug.fault_injection`, ...).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Event hub: the PUB loop's source, and `seq`/`snapshot` for `ping`, `status` and `snapshot`.
    pub hub: Arc<EventHub>,
    /// Persona registry.
    pub personas: Arc<Personas>,
    /// Tool registry.
    pub tools: Arc<ToolRegistry>,
    /// The gateway secret.
    pub token: String,
    /// Unique per daemon process, so clients notice a restart even when seq numbers look plausible.
    pub instance: String,
    /// When boot built this, for `uptime_s` in `status` and heartbeats.
    pub started: Instant,
    /// LLM backend in use.
    pub backend: BackendInfo,
    /// Request dedupe table (outlives gateway restarts).
    pub dedupe: Dedupe,
    /// The organs' handles: the only way commands reach them.
    pub handles: Handles,
}

/// One typed handle per organ the gateway commands reach.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Tasks.
    pub orchestrator: OrchestratorHandle,
    /// Amendments and the settings file.
    pub codex: CodexHandle,
    /// Long-term memory: `memory_*` commands and `debug_crash memory`.
    pub memory: MemoryHandle,
    /// The ToolForge: `forge_tool` and `debug_crash toolforge`.
    pub forge: ForgeHandle,
    /// The Curator: `rate_task`, `curator_stats`, `curator_export`, `debug_crash curator`.
    pub curator: CuratorHandle,
    /// The trainer: `trainer_run`, `trainer_cancel`, `trainer_status`, `rollback_model`, `debug_crash trainer`.
    pub trainer: TrainerHandle,
    /// The Motivator: `list_goals`, `motivator_pause`, `motivator_resume`, `status`, `debug_crash motivator`.
    pub motivator: MotivatorHandle,
    /// The living image: `image_save`, `image_export`, `status`, `debug_crash image`.
    pub image: ImageHandle,
    /// The exam: `exam_run`, `exam_get`, `exam_history`, `exam_cancel`, `debug_crash exam`.
    pub exam: ExamHandle,
    /// A life: `life_run`, `life_get`, `life_list`, `life_cancel`, `debug_crash life`.
    pub life: LifeHandle,
    /// Worker nodes (`status`): `None` unless this daemon is a home node (`[cluster] enabled`).
    pub cluster: Option<batos_actors::cluster::ClusterHandle>,
    /// The root of the supervision tree (for `status`).
    pub root: SupervisorHandle,
}

/// The gateway actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gateway;

/// Messages the gateway handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum GatewayMsg {
    /// Fault injection: panic.
    Crash,
}

/// Aborts a background loop when the gateway goes away, closing its socket.
struct Loop(tokio::task::JoinHandle<()>);

impl Drop for Loop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Gateway state: its two socket loops.
pub struct GatewayState {
    _loops: Vec<Loop>,
    /// The HTTP door's closer: dropped with the state, it ends the door's streams and waiting completions.
    _http: Option<http::Opened>,
}

/// The private sockets behind the front door, in data_dir, named per gateway incarnation: a restarted
/// gateway must not share a path with its predecessor, whose socket unlinks its file whenever it finishes
/// closing — possibly after the successor has bound. Files of earlier incarnations are removed here.
/// (Names stay short: a Unix socket path has at most 107 bytes.)
fn private_paths(data_dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    static INCARNATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = INCARNATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("gw-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    (
        data_dir.join(format!("gw-{n}-commands.sock")),
        data_dir.join(format!("gw-{n}-events.sock")),
    )
}

/// Binds a zeromq socket on a Unix socket at `path` (replacing a stale file: data_dir is locked, so any file
/// there is a previous life's), retrying for a while: after a gateway restart the old socket may still close.
async fn bind_private<S: Socket>(
    sock: &mut S,
    path: &std::path::Path,
    patience: Duration,
) -> Result<(), ActorProcessingErr> {
    let endpoint = format!("ipc://{}", path.display());
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < patience {
        let _ = std::fs::remove_file(path);
        match sock.bind(&endpoint).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("cannot bind {endpoint}: {last}").into())
}

/// Binds the front door's TCP listener on a public endpoint, retrying likewise.
async fn bind_public(
    endpoint: &str,
    patience: Duration,
) -> Result<TcpListener, ActorProcessingErr> {
    let addr = batos_actors::settings::tcp_endpoint(endpoint)?;
    let started = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if started.elapsed() >= patience => {
                return Err(format!("cannot bind {endpoint}: {e}").into())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = Arc<Organs>;

    async fn pre_start(
        &self,
        _myself: ActorRef<GatewayMsg>,
        organs: Arc<Organs>,
    ) -> Result<GatewayState, ActorProcessingErr> {
        let s = organs.settings.load_full();
        let patience = Duration::from_millis(s.supervision.shutdown_timeout_ms);
        let limits = front::Limits::from_settings(&s.gateway);
        // The sockets listen privately (a Unix socket in data_dir, 0700); the public TCP endpoints belong to
        // the front door, which relays only peers that pass its checks.
        let (cmd_path, ev_path) = private_paths(&s.data_dir);
        let mut router = RouterSocket::new();
        bind_private(&mut router, &cmd_path, patience).await?;
        let mut publisher = PubSocket::new();
        bind_private(&mut publisher, &ev_path, patience).await?;
        let commands_front = bind_public(&s.gateway.command_endpoint, patience).await?;
        let events_front = bind_public(&s.gateway.event_endpoint, patience).await?;
        let curve = match s.gateway.curve {
            CurveMode::Off => None,
            mode => {
                let keys = front::keys::ServerKeys::load_or_create(&s.data_dir.join("curve"))
                    .map_err(|e| format!("the gateway's CURVE keys: {e}"))?;
                tracing::info!(event = "gateway.curve", mode = ?mode, public_key = %keys.public_z85(), clients = %keys.clients_dir().display(), "CurveZMQ on the gateway");
                Some(front::Curve {
                    keys: Arc::new(keys),
                    required: mode == CurveMode::Required,
                })
            }
        };
        tracing::info!(event = "gateway.listening", command = %s.gateway.command_endpoint, events = %s.gateway.event_endpoint, "gateway listening");
        let token: Arc<str> = Arc::from(organs.token.as_str());
        // The HTTP door, when asked for: bound here, so a port in use fails the gateway's start as loudly as
        // the ZeroMQ endpoints do.
        let mut http_door = None;
        if s.http.enabled {
            let addr = s.http.addr()?;
            let listener = bind_public(&format!("tcp://{addr}"), patience).await?;
            http_door = Some(http::open(listener, organs.clone()));
        }
        let mut loops = vec![
            Loop(tokio::spawn(front::serve(
                commands_front,
                cmd_path,
                front::Door::Commands,
                limits.clone(),
                curve.clone(),
            ))),
            Loop(tokio::spawn(front::serve(
                events_front,
                ev_path,
                front::Door::Events { token },
                limits,
                curve,
            ))),
            Loop(tokio::spawn(command_loop(router, organs.clone()))),
            Loop(tokio::spawn(event_loop(publisher, organs))),
        ];
        let mut opened = None;
        if let Some((door, serve)) = http_door {
            loops.push(Loop(tokio::spawn(serve)));
            opened = Some(door);
        }
        Ok(GatewayState {
            _loops: loops,
            _http: opened,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        _state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Crash => panic!("debug_crash requested for gateway"),
        }
    }
}

/// Receives requests and runs each in its own task, bounded by `max_inflight_commands`.
async fn command_loop(router: RouterSocket, organs: Arc<Organs>) {
    let (sender, mut receiver) = router.split();
    let limit = Arc::new(Semaphore::new(
        organs.settings.load().gateway.max_inflight_commands,
    ));
    loop {
        let msg = match receiver.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(event = "gateway.recv_error", error = %e, "command socket receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut frames = msg.into_vec();
        // [identity, envelope..., body]: mirror the envelope so REQ (empty delimiter) and DEALER both work.
        if frames.len() < 2 {
            continue;
        }
        let body = frames.pop().unwrap_or_default();
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let organs = organs.clone();
        let mut sender = sender.clone();
        tokio::spawn(async move {
            let reply = process(&organs, &body).await;
            frames.push(Bytes::from(reply.as_ref().clone()));
            if let Ok(m) = ZmqMessage::try_from(frames) {
                let patience = Duration::from_millis(organs.settings.load().client.timeout_ms);
                match tokio::time::timeout(patience, sender.send(m)).await {
                    Ok(Ok(())) => {}
                    // The client went away (Lazy Pirate reconnects with a new identity): nothing to do.
                    Ok(Err(e)) => {
                        tracing::debug!(event = "gateway.reply_dropped", error = %e, "reply not delivered")
                    }
                    Err(_) => tracing::warn!(
                        event = "gateway.reply_dropped",
                        "client not reading; reply dropped"
                    ),
                }
            }
            drop(permit);
        });
    }
}

/// Publishes every bus event as `[kind, body]`, and a heartbeat carrying the last published seq.
async fn event_loop(mut publisher: PubSocket, organs: Arc<Organs>) {
    let mut rx = organs.hub.subscribe();
    let period = Duration::from_millis(organs.settings.load().gateway.heartbeat_ms);
    let mut beat = tokio::time::interval(period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only events actually sent count: a heartbeat must never claim a seq the wire has not carried yet.
    let mut last_sent = organs.hub.current_seq();
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(p) => {
                    let mut m = ZmqMessage::from(p.event.kind());
                    m.push_back(Bytes::from(p.body.clone()));
                    let _ = publisher.send(m).await;
                    last_sent = p.seq;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(event = "gateway.events_dropped", count = n, "event queue overflowed; subscribers will re-sync");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                let data = json!({"instance": organs.instance, "uptime_s": organs.started.elapsed().as_secs()});
                let mut m = ZmqMessage::from("heartbeat");
                m.push_back(Bytes::from(encode_body(last_sent, "heartbeat", data)));
                let _ = publisher.send(m).await;
            }
        }
    }
}
