//! `batos tui`: the Entropic UI in the terminal (issue 18). It speaks only wire protocol v1, through the
//! protocol crate and the client: it follows the daemon's state by the snapshot + sequence-number procedure
//! of `docs/protocol.md` §11 (the client's [`Watcher`]: gaps and restarts re-sync, three missed heartbeats
//! mean disconnected), and sends commands like any other client.
//!
//! ```text
//!  Watcher task ──Feed (snapshot | event | down | up)──▶ ┐
//!  key thread   ──crossterm events───────────────────────▶ ├─▶ App (app.rs: pure state) ──render (ui.rs)──▶ terminal
//!  command tasks ──(Then, reply)──────────────────────────▶ ┘        │
//!  ticker (250 ms: animation, flashes; every 8th: refresh)          └─ Req ──▶ a command task each
//! ```
//!
//! Nothing blocks the drawing loop: each command runs in its own task and its reply comes back as a message;
//! `App` never touches a socket or the clock, so the snapshot tests draw exactly what a person sees.

pub mod app;
pub mod exam;
pub mod keys;
mod rows;
pub mod screens;
pub mod ui;
pub mod widgets;

#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::Duration;

use batos_protocol::StateView;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::{ClientConfig, WatchItem, Watcher};
use crate::session::Session;
use app::{App, Req, Then};

/// How often the TUI redraws for animation.
const TICK: Duration = Duration::from_millis(250);
/// Ticks between refreshes of the shown screen's replies.
const REFRESH_TICKS: u64 = 8;

/// What reaches the drawing loop.
enum Msg {
    /// The watcher's state after a (re)sync.
    Snapshot(Box<StateView>, u64, String),
    /// Anything else the watcher saw.
    Watch(WatchItem),
    /// A key, a resize.
    Term(TermEvent),
    /// A command's reply.
    Reply(Then, Result<Value, String>),
}

/// Runs one command on the TUI's one command socket; its reply comes back as a message.
fn send(session: &Session, tx: &mpsc::UnboundedSender<Msg>, r: Req) {
    let (session, tx) = (session.clone(), tx.clone());
    tokio::spawn(async move {
        let reply = session
            .request(&r.cmd, r.args)
            .await
            .map_err(|e| e.to_string());
        let _ = tx.send(Msg::Reply(r.then, reply));
    });
}

/// Applies one message to the state; answers the requests it calls for.
fn handle(app: &mut App, msg: Msg) -> Vec<Req> {
    match msg {
        Msg::Snapshot(state, seq, reason) => {
            app.resynced(*state, seq, &reason);
            app.refresh()
        }
        Msg::Watch(WatchItem::Event(ev)) => app.event(&ev),
        Msg::Watch(WatchItem::Disconnected) => {
            app.disconnected();
            Vec::new()
        }
        Msg::Watch(WatchItem::Reconnected) => {
            app.reconnected();
            Vec::new()
        }
        Msg::Watch(WatchItem::Resynced { .. }) => Vec::new(),
        Msg::Term(TermEvent::Key(k)) if k.kind == KeyEventKind::Press => keys::key(app, k),
        Msg::Term(_) => Vec::new(),
        Msg::Reply(then, r) => app.reply(&then, r),
    }
}

/// Runs the TUI until `q`; exit 1 when the terminal cannot be driven.
pub async fn run(cfg: ClientConfig, readonly: bool) -> ExitCode {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let watch_tx = tx.clone();
    // One command socket for the TUI's whole run: commands, refreshes and the watcher's snapshots.
    let session = Session::start(cfg);
    let watch_session = session.clone();
    let watcher = tokio::spawn(async move {
        let mut w = Watcher::sharing(watch_session);
        loop {
            let item = w.next().await;
            let msg = match item {
                // The watcher's state may already hold events buffered during the snapshot (they follow as
                // items too): it is sent with the watcher's own seq, and the App skips events at or below it.
                WatchItem::Resynced { reason, .. } => {
                    Msg::Snapshot(Box::new(w.state().clone()), w.seq(), reason)
                }
                other => Msg::Watch(other),
            };
            if watch_tx.send(msg).is_err() {
                return;
            }
        }
    });
    // crossterm's blocking reads, on a thread of their own.
    let key_tx = tx.clone();
    std::thread::spawn(move || loop {
        match event::poll(TICK) {
            Ok(true) => match event::read() {
                Ok(ev) => {
                    if key_tx.send(Msg::Term(ev)).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {
                if key_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("batos tui: needs a terminal: {e}");
            return ExitCode::from(1);
        }
    };
    let mut app = App::new(readonly);
    let mut tick = tokio::time::interval(TICK);
    for r in app.refresh() {
        send(&session, &tx, r);
    }
    let outcome = loop {
        if let Err(e) = terminal.draw(|f| ui::render(f, &app)) {
            break Err(e);
        }
        let mut reqs = tokio::select! {
            _ = tick.tick() => {
                app.tick();
                app.now = Some(batos_protocol::unix_now());
                if app.ticks.is_multiple_of(REFRESH_TICKS) { app.refresh() } else { Vec::new() }
            }
            msg = rx.recv() => match msg {
                None => break Ok(()),
                Some(m) => handle(&mut app, m),
            }
        };
        // Everything else already waiting (a burst of streamed tokens) before the next frame.
        while let Ok(m) = rx.try_recv() {
            reqs.extend(handle(&mut app, m));
        }
        // One request per refresh, however many events asked for it.
        let mut seen = Vec::new();
        for r in reqs {
            if !seen.contains(&r) {
                seen.push(r.clone());
                send(&session, &tx, r);
            }
        }
        if app.quit {
            break Ok(());
        }
    };
    ratatui::restore();
    watcher.abort();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batos tui: the terminal failed: {e}");
            ExitCode::from(1)
        }
    }
}
