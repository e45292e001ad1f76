//! The gateway client library: Lazy Pirate requests over REQ, and a [`Watcher`] that follows the event
//! channel with snapshot + seq (zguide "Clone"), heartbeat liveness and restart detection. It depends on
//! `batos-protocol` alone; the settings file is read by [`crate::conn::Conn`], which hands over a
//! [`ClientConfig`].

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zeromq::prelude::*;
use zeromq::{ReqSocket, SocketOptions, SubSocket, ZmqMessage};

// The client speaks only the protocol crate: nothing of the organs is needed to talk to batos.
use batos_protocol::{events_auth_topic, Event, EventBody, Reply, StateView};

pub use crate::config::{ClientConfig, ClientError};

/// A subscriber to the event channel for `topics` (prefixes; `""` is every event), authenticated with the
/// token: its first subscription is [`events_auth_topic`], without which the daemon forwards none of the
/// others and disconnects it after `gateway.handshake_timeout_ms`.
pub async fn subscriber(cfg: &ClientConfig, topics: &[&str]) -> Result<SubSocket, ClientError> {
    let mut opts = SocketOptions::default();
    opts.connect_timeout(cfg.timeout);
    let mut s = SubSocket::with_options(opts);
    let token = cfg.token.as_deref().ok_or_else(|| {
        ClientError::Protocol(
            "the event channel needs the gateway token (--token or data_dir/gateway.token)".into(),
        )
    })?;
    let subscribe_failed =
        |e: zeromq::ZmqError| ClientError::Protocol(format!("cannot subscribe: {e}"));
    s.subscribe(&events_auth_topic(token))
        .await
        .map_err(subscribe_failed)?;
    for t in topics {
        s.subscribe(t).await.map_err(subscribe_failed)?;
    }
    match tokio::time::timeout(cfg.timeout, s.connect(cfg.event_route())).await {
        Ok(Ok(())) => Ok(s),
        Ok(Err(e)) => Err(ClientError::Protocol(format!(
            "cannot connect to {}: {e}",
            cfg.events
        ))),
        Err(_) => Err(ClientError::NoReply {
            endpoint: cfg.events.clone(),
            attempts: 1,
            timeout_ms: u64::try_from(cfg.timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// [`subscriber`] for a command that also polls: when the event channel cannot be reached it goes on by
/// polling alone, with an unconnected socket and `false` (do not read it).
pub async fn subscriber_or_polling(cfg: &ClientConfig, topics: &[&str]) -> (SubSocket, bool) {
    match subscriber(cfg, topics).await {
        Ok(s) => (s, true),
        Err(_) => (SubSocket::new(), false),
    }
}

/// The event body of a message from the event channel (frame 2; frame 1 is the topic), if it is one.
pub fn event_body(msg: ZmqMessage) -> Option<EventBody> {
    msg.into_vec()
        .get(1)
        .and_then(|b| rmp_serde::from_slice::<EventBody>(b).ok())
}

/// A command client using the Lazy Pirate pattern: poll with a timeout; on timeout drop the socket, open a
/// new one and resend with the same id, up to `retries` times.
pub struct Client {
    cfg: ClientConfig,
    socket: Option<ReqSocket>,
}

impl Client {
    /// [`Client::request`], with the reply read as `T`: a reply of another shape is a protocol error naming
    /// the command.
    pub async fn request_as<T: serde::de::DeserializeOwned>(
        &mut self,
        cmd: &str,
        args: Value,
    ) -> Result<T, ClientError> {
        let v = self.request(cmd, args).await?;
        serde_json::from_value(v)
            .map_err(|e| ClientError::Protocol(format!("{cmd} answered oddly: {e}")))
    }

    /// A client; connects lazily.
    pub fn new(cfg: ClientConfig) -> Self {
        Self { cfg, socket: None }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    async fn connect(&self) -> Option<ReqSocket> {
        let mut opts = SocketOptions::default();
        opts.connect_timeout(self.cfg.timeout);
        let mut s = ReqSocket::with_options(opts);
        match tokio::time::timeout(self.cfg.timeout, s.connect(self.cfg.command_route())).await {
            Ok(Ok(())) => Some(s),
            _ => None,
        }
    }

    /// Sends one command and returns its result.
    pub async fn request(&mut self, cmd: &str, args: Value) -> Result<Value, ClientError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.request_with_id(&id, cmd, args).await
    }

    /// Sends one command with a caller-chosen id (a retry of a logical request reuses its id).
    pub async fn request_with_id(
        &mut self,
        id: &str,
        cmd: &str,
        args: Value,
    ) -> Result<Value, ClientError> {
        let body = self.cfg.encode(id, cmd, args)?;
        let attempts = self.cfg.retries + 1;
        for _ in 0..attempts {
            let started = Instant::now();
            if self.socket.is_none() {
                self.socket = self.connect().await;
            }
            let Some(sock) = self.socket.as_mut() else {
                // Connecting used up (part of) this attempt's time; wait out the rest so attempts are paced.
                if let Some(rest) = self.cfg.timeout.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
                continue;
            };
            if sock.send(ZmqMessage::from(body.clone())).await.is_err() {
                self.socket = None;
                continue;
            }
            let left = self
                .cfg
                .timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            match tokio::time::timeout(left, sock.recv()).await {
                Ok(Ok(msg)) => {
                    let frame = msg.into_vec().pop().unwrap_or_default();
                    let reply: Reply = rmp_serde::from_slice(&frame)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    if reply.id != id && !reply.id.is_empty() {
                        // A late reply to an earlier request on a reused socket: start over on a fresh one.
                        self.socket = None;
                        continue;
                    }
                    return reply.into_result().map_err(ClientError::Server);
                }
                // Timed out or broken: a REQ socket cannot be reused after that (Lazy Pirate).
                _ => self.socket = None,
            }
        }
        Err(ClientError::NoReply {
            endpoint: self.cfg.endpoint.clone(),
            attempts,
            timeout_ms: self.cfg.timeout.as_millis() as u64,
        })
    }
}

/// What a [`Watcher`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// An event, applied to the state.
    Event(EventBody),
    /// The state was (re)loaded from a snapshot at this seq.
    Resynced {
        /// Seq of the snapshot: the state reflects exactly the events `1..=seq`.
        seq: u64,
        /// Why, in words: `initial`, a seq gap, a heartbeat ahead of the last event, a reconnect, or a
        /// daemon restart.
        reason: String,
    },
    /// No heartbeat for 3 periods.
    Disconnected,
    /// Traffic again after a disconnect.
    Reconnected,
}

/// Follows the event channel and keeps a [`StateView`] identical to the daemon's.
pub struct Watcher {
    client: Client,
    /// Where snapshots are asked for when the watcher shares its owner's command socket.
    session: Option<crate::session::Session>,
    sub: Option<SubSocket>,
    state: StateView,
    last_seq: u64,
    instance: Option<String>,
    down: bool,
    synced: bool,
    resync_reason: String,
    buffered: Vec<EventBody>,
    pending: std::collections::VecDeque<WatchItem>,
    drop_next: bool,
}

impl Watcher {
    /// A watcher; call [`Watcher::next`] to drive it.
    pub fn new(cfg: ClientConfig) -> Self {
        Self {
            client: Client::new(cfg),
            session: None,
            sub: None,
            state: StateView::default(),
            last_seq: 0,
            instance: None,
            down: false,
            synced: false,
            resync_reason: "initial".into(),
            buffered: Vec::new(),
            pending: Default::default(),
            drop_next: false,
        }
    }

    /// A watcher that asks for its snapshots on `session`'s socket instead of a REQ socket of its own, so a
    /// program that also sends commands (the TUI) keeps one command connection.
    pub fn sharing(session: crate::session::Session) -> Self {
        let mut w = Self::new(session.config().clone());
        w.session = Some(session);
        w
    }

    /// The state rebuilt from the last snapshot plus the events applied since; equal to the daemon's
    /// at [`Watcher::seq`].
    pub fn state(&self) -> &StateView {
        &self.state
    }

    /// The last applied seq.
    pub fn seq(&self) -> u64 {
        self.last_seq
    }

    /// Test hook: silently lose the next event, as a slow subscriber would, to exercise gap recovery.
    pub fn drop_next_event(&mut self) {
        self.drop_next = true;
    }

    async fn subscribe(&mut self) -> bool {
        match subscriber(&self.client.cfg, &[""]).await {
            Ok(s) => {
                self.sub = Some(s);
                true
            }
            Err(_) => false,
        }
    }

    async fn resync(&mut self, reason: &str) -> Result<(), ClientError> {
        let snap = match &self.session {
            Some(s) => s.request("snapshot", json!({})).await?,
            None => self.client.request("snapshot", json!({})).await?,
        };
        let seq = snap.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let state: StateView =
            serde_json::from_value(snap.get("state").cloned().unwrap_or(Value::Null))
                .map_err(|e| ClientError::Protocol(format!("bad snapshot: {e}")))?;
        self.instance = snap
            .get("instance")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.state = state;
        self.last_seq = seq;
        self.synced = true;
        self.pending.push_back(WatchItem::Resynced {
            seq,
            reason: reason.to_string(),
        });
        // Events that arrived while the snapshot was taken: keep only the newer ones.
        let buffered = std::mem::take(&mut self.buffered);
        for ev in buffered {
            self.accept(ev);
        }
        Ok(())
    }

    fn accept(&mut self, ev: EventBody) {
        if ev.seq <= self.last_seq {
            return;
        }
        if ev.seq != self.last_seq + 1 {
            // A gap: re-sync; keep this event for after the snapshot.
            let reason = format!("gap: expected seq {} but got {}", self.last_seq + 1, ev.seq);
            self.mark_unsynced(&reason);
            self.buffered.push(ev);
            return;
        }
        if let Some(typed) = Event::from_body(&ev) {
            self.state.apply(&typed);
        }
        self.last_seq = ev.seq;
        self.pending.push_back(WatchItem::Event(ev));
    }

    /// The next thing that happened. Runs until the daemon is reachable; never gives up.
    pub async fn next(&mut self) -> WatchItem {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            // 1. A socket. Once connected, a SUB socket reconnects by itself; only the first connect can fail.
            if self.sub.is_none() {
                if self.subscribe().await {
                    continue;
                }
                if !self.down {
                    self.down = true;
                    return WatchItem::Disconnected;
                }
                tokio::time::sleep(self.client.cfg.heartbeat).await;
                continue;
            }
            // 2. A consistent state: snapshot, then the buffered newer events.
            if !self.synced {
                let reason = std::mem::take(&mut self.resync_reason);
                match self.resync(&reason).await {
                    Ok(()) => {
                        if self.down {
                            self.down = false;
                            self.pending.push_front(WatchItem::Reconnected);
                        }
                    }
                    Err(_) => {
                        self.resync_reason = reason;
                        self.sub = None;
                        if !self.down {
                            self.down = true;
                            return WatchItem::Disconnected;
                        }
                    }
                }
                continue;
            }
            // 3. Traffic, with heartbeat liveness.
            let liveness = self.client.cfg.heartbeat * 3;
            let Some(sub) = self.sub.as_mut() else {
                continue;
            };
            match tokio::time::timeout(liveness, sub.recv()).await {
                Err(_) => {
                    if !self.down {
                        self.down = true;
                        return WatchItem::Disconnected;
                    }
                }
                Ok(Err(_)) => {}
                Ok(Ok(msg)) => {
                    let Some(ev) = event_body(msg) else { continue };
                    if self.down {
                        // Back: what happened meanwhile is unknown, so re-sync before applying anything.
                        self.down = false;
                        self.mark_unsynced("reconnected");
                        self.pending.push_back(WatchItem::Reconnected);
                        if ev.kind != "heartbeat" {
                            self.buffered.push(ev);
                        }
                        continue;
                    }
                    if ev.kind == "heartbeat" {
                        let instance = ev
                            .data
                            .get("instance")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        if instance.is_some() && instance != self.instance {
                            self.mark_unsynced("the daemon restarted");
                        } else if ev.seq > self.last_seq {
                            self.mark_unsynced(&format!(
                                "heartbeat at seq {} but last event seen was {}",
                                ev.seq, self.last_seq
                            ));
                        }
                        continue;
                    }
                    if self.drop_next {
                        self.drop_next = false;
                        continue;
                    }
                    self.accept(ev);
                }
            }
        }
    }

    fn mark_unsynced(&mut self, reason: &str) {
        self.synced = false;
        self.resync_reason = reason.to_string();
    }
}

/// Formats an event for `batos watch`.
pub fn format_event(ev: &EventBody) -> String {
    format!("[{}] {} {}", ev.seq, ev.kind, ev.data)
}
