//! One command socket for as long as a client runs, shared by every request it makes at once.
//!
//! A `Client` (the REQ client) is one REQ socket: one request at a time, strictly. The TUI has many in flight
//! (each screen's refresh, the person's commands, the watcher's snapshots); one REQ socket each would mean a
//! TCP connection, a handshake and a daemon-side peer per request. A [`Session`] holds one DEALER socket in a
//! task of its own and matches replies to requests by id (every wire v1 reply carries its request's id):
//!
//! ```text
//!  request(cmd) ──Job{id, body, oneshot}──▶ session task ──[empty, body]──▶ DEALER ══TCP══▶ daemon
//!        ◀──────── reply by id ◀────────── pending{id → attempt, deadline} ◀──[empty, reply]──
//!  a deadline passes: Lazy Pirate — the socket is dropped, a new one made, every pending request resent
//!  with its own id (the daemon's dedupe runs each once); after `retries` resends a request gets NoReply
//! ```
//!
//! A reply whose id nobody waits for (a late answer to a request that gave up) is dropped.

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeromq::prelude::*;
use zeromq::{DealerSocket, SocketOptions, ZmqMessage};

use batos_protocol::Reply;

use crate::config::{ClientConfig, ClientError};

/// One request handed to the session task.
struct Job {
    id: String,
    body: Vec<u8>,
    reply: oneshot::Sender<Result<Value, ClientError>>,
}

/// A request on the wire, waiting for its reply.
struct Pending {
    body: Vec<u8>,
    reply: oneshot::Sender<Result<Value, ClientError>>,
    /// Attempts made so far (the first send is attempt 1).
    attempts: u32,
    deadline: Instant,
}

/// A handle on the session's one socket; cheap to clone, every clone shares the socket. The task ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct Session {
    cfg: ClientConfig,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Session {
    /// Starts the session task (on the current tokio runtime); the socket connects at the first request.
    pub fn start(cfg: ClientConfig) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(cfg.clone(), rx));
        Session { cfg, jobs }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Sends one command and returns its result; requests from any number of tasks may wait at once.
    pub async fn request(&self, cmd: &str, args: Value) -> Result<Value, ClientError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let body = self.cfg.encode(&id, cmd, args)?;
        let (reply, answer) = oneshot::channel();
        let closed = || ClientError::Protocol("the command session has ended".into());
        self.jobs
            .send(Job { id, body, reply })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn connect(cfg: &ClientConfig) -> Option<DealerSocket> {
    let mut opts = SocketOptions::default();
    opts.connect_timeout(cfg.timeout);
    let mut s = DealerSocket::with_options(opts);
    match tokio::time::timeout(cfg.timeout, s.connect(cfg.command_route())).await {
        Ok(Ok(())) => Some(s),
        _ => None,
    }
}

/// Sends `body` as a DEALER does to a ROUTER that answers REQ peers: an empty delimiter, then the body.
async fn send(socket: &mut Option<DealerSocket>, body: &[u8]) {
    let Some(s) = socket.as_mut() else { return };
    let mut msg = ZmqMessage::from(Vec::<u8>::new());
    msg.push_back(body.to_vec().into());
    if s.send(msg).await.is_err() {
        // Broken: the deadline resends on a new socket.
        *socket = None;
    }
}

async fn recv(socket: &mut Option<DealerSocket>) -> Option<ZmqMessage> {
    match socket.as_mut() {
        Some(s) => s.recv().await.ok(),
        None => std::future::pending().await,
    }
}

async fn run(cfg: ClientConfig, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut socket: Option<DealerSocket> = None;
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let attempts = cfg.retries + 1;
    loop {
        let next = pending.values().map(|p| p.deadline).min();
        tokio::select! {
            job = jobs.recv() => {
                let Some(Job { id, body, reply }) = job else { return };
                if socket.is_none() {
                    socket = connect(&cfg).await;
                }
                send(&mut socket, &body).await;
                let deadline = Instant::now() + cfg.timeout;
                pending.insert(id, Pending { body, reply, attempts: 1, deadline });
            }
            msg = recv(&mut socket) => {
                let Some(msg) = msg else {
                    socket = None;
                    continue;
                };
                let frame = msg.into_vec().pop().unwrap_or_default();
                let Ok(reply) = rmp_serde::from_slice::<Reply>(&frame) else { continue };
                if let Some(p) = pending.remove(&reply.id) {
                    let _ = p.reply.send(reply.into_result().map_err(ClientError::Server));
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &expired {
                    if pending.get(id).is_some_and(|p| p.attempts >= attempts) {
                        if let Some(p) = pending.remove(id) {
                            let _ = p.reply.send(Err(ClientError::NoReply {
                                endpoint: cfg.endpoint.clone(),
                                attempts,
                                timeout_ms: u64::try_from(cfg.timeout.as_millis()).unwrap_or(u64::MAX),
                            }));
                        }
                    }
                }
                if pending.is_empty() {
                    continue;
                }
                // Lazy Pirate: a fresh socket, and every request still waiting sent again on it (a reply
                // already on its way on the old one is lost with it; the resend gets it from the dedupe).
                socket = connect(&cfg).await;
                let deadline = Instant::now() + cfg.timeout;
                for (id, p) in pending.iter_mut() {
                    if expired.contains(id) {
                        p.attempts += 1;
                    }
                    p.deadline = deadline;
                }
                let bodies: Vec<Vec<u8>> = pending.values().map(|p| p.body.clone()).collect();
                for body in bodies {
                    send(&mut socket, &body).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use batos_protocol::Request;
    use serde_json::json;
    use std::time::Duration;
    use zeromq::RouterSocket;

    /// A ROUTER on a free loopback port standing in for the daemon's command socket (the unit under test is
    /// the client's socket handling, not the daemon).
    async fn router() -> (RouterSocket, ClientConfig) {
        let mut r = RouterSocket::new();
        let ep = r.bind("tcp://127.0.0.1:0").await.unwrap();
        let cfg = ClientConfig {
            endpoint: ep.to_string(),
            events: String::new(),
            token: Some("t".into()),
            timeout: Duration::from_millis(300),
            retries: 2,
            poll: Duration::from_millis(100),
            heartbeat: Duration::from_millis(100),
            tunnel: None,
        };
        (r, cfg)
    }

    /// One request off the router: (peer identity, request).
    async fn next(r: &mut RouterSocket) -> (Vec<u8>, Request) {
        let frames = r.recv().await.unwrap().into_vec();
        assert_eq!(frames.len(), 3, "identity, empty delimiter, body");
        assert!(frames[1].is_empty());
        (
            frames[0].to_vec(),
            rmp_serde::from_slice(&frames[2]).unwrap(),
        )
    }

    async fn answer(r: &mut RouterSocket, peer: Vec<u8>, req: &Request) {
        let body =
            rmp_serde::to_vec_named(&Reply::ok(req.id.clone(), json!({"cmd": req.cmd}))).unwrap();
        let mut msg = ZmqMessage::from(peer);
        msg.push_back(Vec::<u8>::new().into());
        msg.push_back(body.into());
        r.send(msg).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_socket_and_each_gets_its_own_reply() {
        let (mut r, cfg) = router().await;
        let s = Session::start(cfg);
        let asks: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|cmd| {
                let s = s.clone();
                tokio::spawn(async move { s.request(cmd, json!({})).await })
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next(&mut r).await);
        }
        let peers: std::collections::HashSet<_> = got.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(peers.len(), 1, "one socket for every request");
        // Answered in reverse order: each waiter still gets its own.
        for (peer, req) in got.iter().rev() {
            answer(&mut r, peer.clone(), req).await;
        }
        for (ask, cmd) in asks.into_iter().zip(["a", "b", "c", "d"]) {
            assert_eq!(ask.await.unwrap().unwrap()["cmd"], cmd);
        }
        // A later request rides the same connection.
        let later = tokio::spawn({
            let s = s.clone();
            async move { s.request("e", json!({})).await }
        });
        let (peer, req) = next(&mut r).await;
        assert!(
            peers.contains(&peer),
            "a new connection for a later request"
        );
        answer(&mut r, peer, &req).await;
        assert_eq!(later.await.unwrap().unwrap()["cmd"], "e");
    }

    #[tokio::test]
    async fn an_unanswered_request_is_resent_with_its_id_on_a_new_socket_then_given_up() {
        let (mut r, cfg) = router().await;
        let s = Session::start(cfg);
        let ask = tokio::spawn({
            let s = s.clone();
            async move { s.request("slow", json!({})).await }
        });
        let (first_peer, first) = next(&mut r).await;
        let (second_peer, second) = next(&mut r).await;
        assert_eq!(
            second.id, first.id,
            "a resend keeps its id (the daemon runs it once)"
        );
        assert_ne!(second_peer, first_peer, "Lazy Pirate: a fresh socket");
        let (_, third) = next(&mut r).await;
        assert_eq!(third.id, first.id);
        let e = ask.await.unwrap().unwrap_err();
        assert!(matches!(e, ClientError::NoReply { attempts: 3, .. }), "{e}");
        // The session lives on: the next request is answered.
        let ok = tokio::spawn(async move { s.request("ping", json!({})).await });
        let (peer, req) = next(&mut r).await;
        answer(&mut r, peer, &req).await;
        assert_eq!(ok.await.unwrap().unwrap()["cmd"], "ping");
    }
}
