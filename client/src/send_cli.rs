//! `batos send` and `batos watch`: a task followed to its answer, and the event stream as lines.

use std::io::Write;
use std::process::ExitCode;

use batos_protocol::{Event, EventBody};
use serde_json::json;

use crate::client::{format_event, Client, ClientConfig, ClientError, WatchItem, Watcher};

fn fail(e: ClientError) -> ExitCode {
    eprintln!("batos: {e}");
    ExitCode::from(1)
}

/// `batos watch`: every event as a line, re-syncing on gaps and reporting disconnects.
pub async fn watch(cfg: ClientConfig) -> ExitCode {
    let mut w = Watcher::new(cfg);
    let mut out = std::io::stdout();
    loop {
        let line = match w.next().await {
            WatchItem::Event(ev) => format_event(&ev),
            WatchItem::Resynced { seq, reason } => format!("resynced at seq {seq} ({reason})"),
            WatchItem::Disconnected => "disconnected".to_string(),
            WatchItem::Reconnected => "reconnected".to_string(),
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

/// Prints one event of the task being sent; returns the exit code when the task is over.
fn show(ev: &EventBody, id: &str, streaming: &mut bool) -> Option<ExitCode> {
    let typed = Event::from_body(ev)?;
    let end_stream = |s: &mut bool| {
        if *s {
            println!();
            *s = false;
        }
    };
    match typed {
        Event::TaskToken { id: t, text, .. } if t == id => {
            print!("{text}");
            let _ = std::io::stdout().flush();
            *streaming = true;
        }
        Event::TaskStep {
            id: t,
            step,
            node,
            persona,
            model,
            dissonance,
            duration_ms,
            ..
        } if t == id => {
            end_stream(streaming);
            let d = dissonance
                .map(|d| format!(" dissonance={d:.2}"))
                .unwrap_or_default();
            eprintln!("· step {step}: {node} by {persona} ({model}){d} in {duration_ms} ms");
        }
        Event::TaskDone { id: t, result } if t == id => {
            end_stream(streaming);
            println!("{result}");
            return Some(ExitCode::SUCCESS);
        }
        Event::TaskFailed { id: t, error } if t == id => {
            end_stream(streaming);
            eprintln!("batos: task failed: {error}");
            return Some(ExitCode::from(1));
        }
        Event::TaskCancelled { id: t } if t == id => {
            end_stream(streaming);
            eprintln!("batos: task cancelled");
            return Some(ExitCode::from(1));
        }
        Event::TaskPaused { id: t, reason } if t == id => {
            end_stream(streaming);
            eprintln!("batos: task {t} paused for the Architect: {reason}");
            eprintln!("       approve/reject its amendment or resume it (resume_task), then `batos watch`.");
            return Some(ExitCode::SUCCESS);
        }
        _ => {}
    }
    None
}

/// `batos send TEXT`: submits a task and prints its steps and streamed text until it ends.
pub async fn send(cfg: ClientConfig, text: String) -> ExitCode {
    use zeromq::prelude::*;
    // Subscribe before submitting so no event of the task can be missed; polling covers lost events.
    let (mut sub, subscribed) = crate::client::subscriber_or_polling(&cfg, &["task."]).await;
    let poll = cfg.poll;
    let mut client = Client::new(cfg);
    let id = match client.request("submit_task", json!({"text": text})).await {
        Ok(v) => match v["id"].as_str() {
            Some(id) => id.to_string(),
            None => {
                return fail(ClientError::Protocol(
                    "submit_task answered without an id".into(),
                ))
            }
        },
        Err(e) => return fail(e),
    };
    eprintln!("task {id} submitted");
    let mut streaming = false;
    let mut ticker = tokio::time::interval(poll);
    ticker.tick().await;
    loop {
        tokio::select! {
            m = sub.recv(), if subscribed => {
                if let Some(ev) = m.ok().and_then(crate::client::event_body) {
                    if let Some(code) = show(&ev, &id, &mut streaming) {
                        return code;
                    }
                }
            }
            _ = ticker.tick() => {
                match client.request("get_task", json!({"id": id})).await {
                    Ok(t) => match t["status"].as_str() {
                        Some("done") => {
                            if streaming { println!(); }
                            println!("{}", t["result"].as_str().unwrap_or_default());
                            return ExitCode::SUCCESS;
                        }
                        Some("failed") => {
                            eprintln!("batos: task failed: {}", t["error"].as_str().unwrap_or_default());
                            return ExitCode::from(1);
                        }
                        Some("cancelled") => {
                            eprintln!("batos: task cancelled");
                            return ExitCode::from(1);
                        }
                        Some("paused") => {
                            eprintln!("batos: task {id} paused for the Architect");
                            return ExitCode::SUCCESS;
                        }
                        _ => {}
                    },
                    Err(e) => return fail(e),
                }
            }
        }
    }
}
