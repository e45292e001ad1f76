//! `batos goals` and `batos motivator pause|resume`: the Motivator from the command line.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::{Client, ClientConfig, ClientError};

/// What `batos motivator` does.
#[derive(clap::Subcommand, Clone)]
pub enum MotivatorAction {
    /// No goal is made or started until `resume` (a running goal finishes).
    Pause,
    /// Goals again.
    Resume,
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("batos: {e}");
    ExitCode::from(1)
}

/// The Motivator's state in one line (`status` and `goals` print it); `off` when it does not run.
pub fn state_line(m: &Value) -> String {
    if m.is_null() {
        return "off (motivator.enabled = false) or restarting".into();
    }
    let paused = m["paused"]
        .as_str()
        .map(|by| format!("paused by {by}"))
        .unwrap_or_else(|| "active".into());
    format!(
        "{paused}; {} waiting, {} running, {} goals in the last hour; tokens today {} of {}; idle {:.0} s",
        m["queued"],
        m["running"],
        m["goals_last_hour"],
        m["tokens_today"],
        m["daily_tokens"],
        m["idle_s"].as_f64().unwrap_or(0.0)
    )
}

/// `batos goals`.
pub async fn goals(cfg: ClientConfig, raw: bool) -> ExitCode {
    let v = match Client::new(cfg).request("list_goals", json!({})).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if raw {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    println!("motivator: {}", state_line(&v["state"]));
    let goals = v["goals"].as_array().cloned().unwrap_or_default();
    if goals.is_empty() {
        println!("no goals yet");
    }
    for g in goals {
        let s = |k: &str| g[k].as_str().unwrap_or_default().to_string();
        println!(
            "\n{} [{}] {} for {} (priority {}, {} tokens)",
            s("id"),
            s("status"),
            s("trigger"),
            s("persona"),
            g["priority"],
            g["tokens"]
        );
        if !s("text").is_empty() {
            println!("  goal:    {}", s("text"));
        }
        println!("  why:     {}", s("reason"));
        if let Some(t) = g["task"].as_str() {
            println!("  task:    {t}");
        }
        if let Some(o) = g["outcome"].as_str() {
            println!("  outcome: {}", batos_protocol::truncate(o, 300));
        }
    }
    ExitCode::SUCCESS
}

/// `batos motivator pause|resume`.
pub async fn motivator(cfg: ClientConfig, action: MotivatorAction) -> ExitCode {
    let cmd = match action {
        MotivatorAction::Pause => "motivator_pause",
        MotivatorAction::Resume => "motivator_resume",
    };
    match Client::new(cfg).request(cmd, json!({})).await {
        Ok(v) => {
            println!("motivator: {}", state_line(&v));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
