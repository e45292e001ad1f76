//! `batos trainer …` and `batos rollback`: the trainer from the command line, with a progress bar for a
//! training run.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::{Client, ClientConfig, ClientError};

/// What `batos trainer` does.
#[derive(clap::Subcommand, Clone)]
pub enum TrainerAction {
    /// Train a persona's LoRA adapter on its golden set and follow the run to its end (swap or rejection).
    /// (`train`, its name before issue 29, is accepted too.)
    #[command(alias = "train")]
    Run {
        /// ALFRED, BABS, BRICK or ROBIN.
        persona: String,
        /// Start now, even while tasks run (training takes every core).
        #[arg(long)]
        force: bool,
    },
    /// Stop a run (its checkpoint is kept) or drop a queued persona; no persona: whatever runs.
    Cancel {
        /// The persona.
        persona: Option<String>,
    },
    /// What runs, what waits, how the last runs ended.
    Status,
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("batos: {e}");
    ExitCode::from(1)
}

/// Runs `action`.
pub async fn trainer(cfg: ClientConfig, action: TrainerAction) -> ExitCode {
    match action {
        TrainerAction::Run { persona, force } => train(cfg, persona, force).await,
        TrainerAction::Cancel { persona } => {
            let args = persona.map_or_else(|| json!({}), |p| json!({"persona": p}));
            match Client::new(cfg).request("trainer_cancel", args).await {
                Ok(v) if v["cancelled"] == true => {
                    println!("stopped (a running run keeps its checkpoint)");
                    ExitCode::SUCCESS
                }
                Ok(_) => {
                    println!("nothing was running or queued");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TrainerAction::Status => {
            match Client::new(cfg).request("trainer_status", json!({})).await {
                Ok(v) => {
                    match v["running"].as_str() {
                        Some(p) => println!(
                            "training {p} for {:.0} s",
                            v["running_for_s"].as_f64().unwrap_or(0.0)
                        ),
                        None => println!("no run"),
                    }
                    let queued: Vec<&str> = v["queued"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if !queued.is_empty() {
                        println!("queued: {}", queued.join(", "));
                    }
                    for r in v["last"].as_array().into_iter().flatten() {
                        println!("{}", report(r));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// `batos rollback PERSONA`.
pub async fn rollback(cfg: ClientConfig, persona: String) -> ExitCode {
    match Client::new(cfg)
        .request("rollback_model", json!({"persona": persona}))
        .await
    {
        Ok(v) => {
            println!(
                "{}: {} → {}",
                v["persona"].as_str().unwrap_or("?"),
                v["from"].as_str().unwrap_or("?"),
                v["to"].as_str().unwrap_or("?")
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn report(r: &Value) -> String {
    format!(
        "{} {}: held-out NLL {:.3} → {:.3}, general {:.3} → {:.3}, {} step(s){}",
        r["persona"].as_str().unwrap_or("?"),
        r["outcome"].as_str().unwrap_or("?"),
        r["heldout_before"].as_f64().unwrap_or(0.0),
        r["heldout_after"].as_f64().unwrap_or(0.0),
        r["general_before"].as_f64().unwrap_or(0.0),
        r["general_after"].as_f64().unwrap_or(0.0),
        r["steps"],
        r["reason"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    )
}

/// A one-line bar: `[#######.............] step 7/20 loss 2.314 26 tok/s eta 41 s`.
fn bar(d: &Value) -> String {
    let (step, steps) = (
        d["step"].as_u64().unwrap_or(0),
        d["steps"].as_u64().unwrap_or(1).max(1),
    );
    let width = 24;
    let filled = (step * width / steps) as usize;
    format!(
        "[{}{}] step {step}/{steps} epoch {} loss {:.3} {:.0} tok/s eta {:.0} s",
        "#".repeat(filled),
        ".".repeat(width as usize - filled),
        d["epoch"],
        d["loss"].as_f64().unwrap_or(0.0),
        d["tokens_per_s"].as_f64().unwrap_or(0.0),
        d["eta_s"].as_f64().unwrap_or(0.0)
    )
}

/// The run's event `m`, shown: progress redrawn in place, a verdict printed. `Some(exit code)` once the run
/// has ended (a tuned model, the gate's refusal, a failure); `None` for anything else.
fn shown(m: zeromq::ZmqMessage, persona: &str) -> Option<ExitCode> {
    let ev = crate::client::event_body(m)?;
    if ev.data["persona"].as_str() != Some(persona) {
        return None;
    }
    match ev.kind.as_str() {
        "trainer.progress" => {
            eprint!("\r{}", bar(&ev.data));
            let _ = std::io::stderr().flush();
            None
        }
        "trainer.publishing" => {
            eprint!(
                "\r\x1b[2Kbuilding {} on Ollama: {}",
                ev.data["model"].as_str().unwrap_or("?"),
                ev.data["status"].as_str().unwrap_or("?")
            );
            let _ = std::io::stderr().flush();
            None
        }
        "model.tuned" => {
            eprintln!();
            println!(
                "{persona} now thinks with {} (held-out NLL {:.3} → {:.3})",
                ev.data["model"].as_str().unwrap_or("?"),
                ev.data["heldout_before"].as_f64().unwrap_or(0.0),
                ev.data["heldout_after"].as_f64().unwrap_or(0.0)
            );
            Some(ExitCode::SUCCESS)
        }
        "trainer.rejected" => {
            eprintln!();
            println!(
                "the gate kept {persona}'s model: {}",
                ev.data["reason"].as_str().unwrap_or("?")
            );
            Some(ExitCode::SUCCESS)
        }
        "trainer.failed" => {
            eprintln!();
            eprintln!(
                "batos: training {persona} failed: {}",
                ev.data["error"].as_str().unwrap_or("?")
            );
            Some(ExitCode::from(1))
        }
        _ => None,
    }
}

async fn train(cfg: ClientConfig, persona: String, force: bool) -> ExitCode {
    use zeromq::prelude::*;
    // Subscribed before the request, so no event of the run can be missed; polling covers lost events.
    let (mut sub, subscribed) =
        crate::client::subscriber_or_polling(&cfg, &["trainer.", "model.tuned"]).await;
    let poll = cfg.poll;
    let mut client = Client::new(cfg);
    match client
        .request("trainer_run", json!({"persona": persona, "force": force}))
        .await
    {
        Ok(v) => eprintln!("{persona} queued (place {})", v["place"]),
        Err(e) => return fail(e),
    }
    let mut ticker = tokio::time::interval(poll * 4);
    ticker.tick().await;
    let mut seen_running = false;
    loop {
        tokio::select! {
            m = sub.recv(), if subscribed => {
                if let Some(code) = m.ok().and_then(|m| shown(m, &persona)) {
                    return code;
                }
            }
            _ = ticker.tick() => {
                // Lost events: the run's report in trainer_status says how it ended.
                let Ok(v) = client.request("trainer_status", json!({})).await else { continue };
                let running = v["running"].as_str() == Some(persona.as_str())
                    || v["queued"].as_array().is_some_and(|q| q.iter().any(|p| p == persona.as_str()));
                if running {
                    seen_running = true;
                } else if seen_running {
                    // The verdict's event may still be on its way (the run ended between two polls): it
                    // says the same in the same words as when it comes first, so it gets a moment.
                    let deadline = tokio::time::Instant::now() + poll;
                    if subscribed {
                        while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, sub.recv()).await {
                            if let Some(code) = shown(m, &persona) {
                                return code;
                            }
                        }
                    }
                    eprintln!();
                    if let Some(r) = v["last"].as_array().and_then(|l| l.iter().rev().find(|r| r["persona"] == persona.as_str())) {
                        println!("{}", report(r));
                        return ExitCode::SUCCESS;
                    }
                    eprintln!("batos: the run of {persona} ended without a report (see the daemon's log)");
                    return ExitCode::from(1);
                }
            }
        }
    }
}
