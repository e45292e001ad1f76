//! The commands that talk to a running daemon — everything `batos` does except `run` and `image import` —
//! as one clap [`Command`] enum and its [`run`]. The daemon's binary flattens [`Command`] into its own, and
//! `batos-client` (this crate's binary, built without the engine) is the same commands alone.

use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{Client, ClientConfig, ClientError};
use crate::conn::Conn;

/// A command for a running daemon.
// The undocumented fields are `conn` (the flattened connection flags) and `action` (a subcommand): a doc
// comment on either would be printed as help text where clap already prints theirs.
#[allow(missing_docs)]
#[derive(Subcommand)]
pub enum Command {
    /// Submit a task, stream its progress, print the answer.
    Send {
        #[command(flatten)]
        conn: Conn,
        /// What to ask.
        text: String,
    },
    /// Print events as they happen (re-syncs on gaps, reports disconnects).
    Watch {
        #[command(flatten)]
        conn: Conn,
    },
    /// The terminal UI: personas thinking, tasks, tools, amendments, the Inspector, the tree, training.
    Tui {
        #[command(flatten)]
        conn: Conn,
        /// Show everything, change nothing.
        #[arg(long)]
        readonly: bool,
    },
    /// Show the supervision tree, restart counts and models.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Check the daemon answers.
    Ping {
        #[command(flatten)]
        conn: Conn,
    },
    /// Rate a task 1 (worst) to 5 (best): the Curator's datasets follow a human's rating over its judge.
    Rate {
        #[command(flatten)]
        conn: Conn,
        /// The task id (as `send` and `list_tasks` show it).
        task: String,
        /// 1 to 5.
        score: u8,
        /// Why (optional).
        comment: Option<String>,
    },
    /// The Curator's datasets: counts per persona, or where one persona's files are.
    Curator {
        #[command(flatten)]
        conn: Conn,
        /// A persona (ALFRED, BABS, BRICK, ROBIN): print its dataset files; none: the counts.
        persona: Option<String>,
    },
    /// The trainer: train a persona (with a progress bar), cancel, or show what runs.
    Trainer {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: crate::trainer_cli::TrainerAction,
    },
    /// `batos forge`, the trainer's name before issue 29: still accepted for one release, with a note.
    #[command(hide = true)]
    Forge {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: crate::trainer_cli::TrainerAction,
    },
    /// Return a persona to its model before its last tuned swap.
    Rollback {
        #[command(flatten)]
        conn: Conn,
        /// ALFRED, BABS, BRICK or ROBIN.
        persona: String,
    },
    /// The Motivator's goals: open ones (by priority) and recent ones, with their trigger and outcome.
    Goals {
        #[command(flatten)]
        conn: Conn,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Pause or resume the Motivator (durably: a restart keeps it paused).
    Motivator {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: crate::goals_cli::MotivatorAction,
    },
    /// The exam: ask a question set through the household (and the bare model beside it), list the runs,
    /// show one, draw the history, cancel the running one.
    Exam {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: crate::exam_cli::ExamAction,
    },
    /// A life: a curriculum fed to the household while every loop runs, measured by the exam; lives side by
    /// side (ablations) in a report with each loop's share of the gain.
    Life {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: crate::life_cli::LifeAction,
    },
    /// Send any protocol command (see docs/protocol.md) and print its JSON reply.
    Call {
        #[command(flatten)]
        conn: Conn,
        /// Command name, e.g. `update_persona` or `debug_crash`.
        cmd: String,
        /// Arguments as one JSON object, e.g. '{"actor":"BRICK"}'.
        #[arg(default_value = "{}")]
        args: String,
    },
}

/// Runs `work` to its end on a multi-threaded tokio runtime (both binaries' `main`); a runtime that cannot
/// start is exit code 1, with why on stderr under `program`'s name.
pub fn block_on(program: &str, work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs one client command to its end; the exit code is the command's (0 done, 1 failed, 2 bad input).
pub async fn run(command: Command) -> ExitCode {
    match command {
        Command::Send { conn, text } => match conn.resolve() {
            Ok(cfg) => crate::send_cli::send(cfg, text).await,
            Err(c) => c,
        },
        Command::Watch { conn } => match conn.resolve() {
            Ok(cfg) => crate::send_cli::watch(cfg).await,
            Err(c) => c,
        },
        Command::Tui { conn, readonly } => match conn.resolve() {
            Ok(cfg) => crate::tui::run(cfg, readonly).await,
            Err(c) => c,
        },
        Command::Status { conn, json } => match conn.resolve() {
            Ok(cfg) => status(cfg, json).await,
            Err(c) => c,
        },
        Command::Ping { conn } => match conn.resolve() {
            Ok(cfg) => ping(cfg).await,
            Err(c) => c,
        },
        Command::Rate {
            conn,
            task,
            score,
            comment,
        } => match conn.resolve() {
            Ok(cfg) => rate(cfg, task, score, comment).await,
            Err(c) => c,
        },
        Command::Curator { conn, persona } => match conn.resolve() {
            Ok(cfg) => curator(cfg, persona).await,
            Err(c) => c,
        },
        Command::Trainer { conn, action } => match conn.resolve() {
            Ok(cfg) => crate::trainer_cli::trainer(cfg, action).await,
            Err(c) => c,
        },
        Command::Forge { conn, action } => match conn.resolve() {
            Ok(cfg) => {
                eprintln!("batos: `batos forge` is deprecated (one release): use `batos trainer`");
                crate::trainer_cli::trainer(cfg, action).await
            }
            Err(c) => c,
        },
        Command::Rollback { conn, persona } => match conn.resolve() {
            Ok(cfg) => crate::trainer_cli::rollback(cfg, persona).await,
            Err(c) => c,
        },
        Command::Goals { conn, json } => match conn.resolve() {
            Ok(cfg) => crate::goals_cli::goals(cfg, json).await,
            Err(c) => c,
        },
        Command::Motivator { conn, action } => match conn.resolve() {
            Ok(cfg) => crate::goals_cli::motivator(cfg, action).await,
            Err(c) => c,
        },
        Command::Exam { conn, action } => match conn.resolve() {
            Ok(cfg) => crate::exam_cli::exam(cfg, action).await,
            Err(c) => c,
        },
        Command::Life { conn, action } => match conn.resolve() {
            Ok(cfg) => crate::life_cli::life(cfg, action).await,
            Err(c) => c,
        },
        Command::Call { conn, cmd, args } => match conn.resolve() {
            Ok(cfg) => call(cfg, &cmd, &args).await,
            Err(c) => c,
        },
    }
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("batos: {e}");
    ExitCode::from(1)
}

async fn ping(cfg: ClientConfig) -> ExitCode {
    let mut c = Client::new(cfg);
    let t = Instant::now();
    match c.request("ping", json!({})).await {
        Ok(v) => {
            println!(
                "pong from batos {} (protocol {}) in {:.1} ms",
                v["version"].as_str().unwrap_or("?"),
                v["protocol"],
                t.elapsed().as_secs_f64() * 1000.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn call(cfg: ClientConfig, cmd: &str, args: &str) -> ExitCode {
    let args: Value = match serde_json::from_str(args) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            eprintln!(
                "batos: the arguments must be one JSON object, e.g. '{{\"actor\":\"BRICK\"}}'"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("batos: the arguments are not valid JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let mut c = Client::new(cfg);
    match c.request(cmd, args).await {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn rate(cfg: ClientConfig, task: String, score: u8, comment: Option<String>) -> ExitCode {
    let mut args = json!({"id": task, "score": score});
    if let Some(c) = comment {
        args["comment"] = json!(c);
    }
    match Client::new(cfg).request("rate_task", args).await {
        Ok(v) => {
            println!(
                "rated {} {}: {} example(s) removed, {} admitted, {} still waiting for the curator",
                v["task"].as_str().unwrap_or("?"),
                v["score"],
                v["removed"],
                v["admitted"],
                v["pending"]
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn curator(cfg: ClientConfig, persona: Option<String>) -> ExitCode {
    let mut c = Client::new(cfg);
    let reply = match &persona {
        Some(p) => c.request("curator_export", json!({"persona": p})).await,
        None => c.request("curator_stats", json!({})).await,
    };
    let v = match reply {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if persona.is_some() {
        println!(
            "{}: {} training example(s) in {}\n{} held-out in {}\ndecisions: {}",
            v["persona"].as_str().unwrap_or("?"),
            v["train_examples"],
            v["train"].as_str().unwrap_or("?"),
            v["heldout_examples"],
            v["heldout"].as_str().unwrap_or("?"),
            v["decisions"].as_str().unwrap_or("?")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<8} {:>6} {:>8} {:>6} {:>8} {:>9}  rejected",
        "persona", "seen", "accepted", "train", "held-out", "new/trig"
    );
    if let Some(m) = v["personas"].as_object() {
        for (name, p) in m {
            let rejected = p["rejected"]
                .as_object()
                .map(|r| {
                    r.iter()
                        .map(|(k, n)| format!("{k}={n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            println!(
                "{:<8} {:>6} {:>8} {:>6} {:>8} {:>5}/{:<3}  {}",
                name,
                p["seen"],
                p["accepted"],
                p["train"],
                p["heldout"],
                p["new_since_trigger"],
                p["triggers"],
                rejected
            );
        }
    }
    println!(
        "queued: {}{}",
        v["queued"],
        if v["judging"] == json!(true) {
            " (judging)"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

fn print_tree(node: &Value, depth: usize) {
    println!(
        "{:indent$}{:<width$} {:<10} restarts={}",
        "",
        node["id"].as_str().unwrap_or("?"),
        node["status"].as_str().unwrap_or("?"),
        node["restarts"],
        indent = depth * 2,
        width = 24usize.saturating_sub(depth * 2)
    );
    if let Some(children) = node["children"].as_array() {
        for c in children {
            print_tree(c, depth + 1);
        }
    }
}

async fn status(cfg: ClientConfig, raw: bool) -> ExitCode {
    let mut c = Client::new(cfg);
    match c.request("status", json!({})).await {
        Ok(v) => {
            if raw {
                println!("{v}");
                return ExitCode::SUCCESS;
            }
            println!(
                "backend: {} ({}) — {}",
                v["backend"]["kind"].as_str().unwrap_or("?"),
                v["backend"]["location"].as_str().unwrap_or("?"),
                v["backend"]["reason"].as_str().unwrap_or("")
            );
            println!(
                "uptime: {:.0} s   events: {}   escalations: {}",
                v["uptime_s"].as_f64().unwrap_or(0.0),
                v["seq"],
                v["escalations"]
            );
            println!("tasks: {}", v["tasks"]);
            println!(
                "motivator: {}",
                crate::goals_cli::state_line(&v["motivator"])
            );
            println!("image: {}", crate::image_cli::line(&v["image"]["last"]));
            println!("\nsupervision tree:");
            print_tree(&v["tree"], 1);
            println!("\npersonas:");
            if let Some(p) = v["personas"].as_object() {
                for (name, info) in p {
                    println!(
                        "  {name:<8} model={} backend={} generation={}",
                        info["model"], info["backend"], info["generation"]
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
