//! The `batos` command: run the daemon, or talk to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use batos::boot::{self, BootError};
use batos::client::{Client, ClientConfig, ClientError};
use batos_actors::settings::{LoadedSettings, LogFormat};

/// BAT OS: a self-improving society of LLM personas, hosted as supervised actors.
#[derive(Parser)]
#[command(name = "batos", version, about)]
struct Cli {
    /// Log format (overrides `[log] format` in settings).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

/// What `batos image` does.
#[derive(Subcommand)]
enum ImageCmd {
    /// Save a new generation in data_dir/image/ now.
    Save {
        #[command(flatten)]
        conn: Conn,
    },
    /// Write one self-contained image (memory rows and adapters included) to FILE; the daemon writes it.
    Export {
        #[command(flatten)]
        conn: Conn,
        /// Where (made absolute against this shell's folder).
        file: std::path::PathBuf,
    },
    /// Create a new mind from an image: its data folder, settings.toml and codex.toml (no daemon needed).
    Import {
        /// The image file.
        file: std::path::PathBuf,
        /// The new data folder (absent or empty).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Where settings.toml and codex.toml go (default: DATA_DIR/config).
        #[arg(long)]
        config_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground until SIGINT/SIGTERM (exit 0) or the root supervisor gives up.
    Run {
        /// Settings file (or `BATOS_CONFIG`, which scripts/batos sets).
        #[arg(long, env = "BATOS_CONFIG", default_value = "config/settings.toml")]
        config: PathBuf,
    },
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
    /// The UnslothForge: train a persona (with a progress bar), cancel, or show what runs.
    Forge {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: batos::forge_cli::ForgeAction,
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
        action: batos::goals_cli::MotivatorAction,
    },
    /// The exam: ask a question set through the household (and the bare model beside it), list the runs,
    /// show one, draw the history, cancel the running one.
    Exam {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: batos::exam_cli::ExamAction,
    },
    /// A life: a curriculum fed to the household while every loop runs, measured by the exam; lives side by
    /// side (ablations) in a report with each loop's share of the gain.
    Life {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: batos::life_cli::LifeAction,
    },
    /// The living image: save a generation, export one self-contained file, import one into a new mind.
    Image {
        #[command(subcommand)]
        action: ImageCmd,
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

/// How to reach the daemon.
#[derive(Args, Clone)]
struct Conn {
    /// Settings file (endpoints, timeouts, data_dir for the token), or `BATOS_CONFIG`, which scripts/batos
    /// sets to its checkout's file.
    #[arg(
        long,
        global = true,
        env = "BATOS_CONFIG",
        default_value = "config/settings.toml"
    )]
    config: PathBuf,
    /// Command endpoint (overrides settings).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Event endpoint (overrides settings).
    #[arg(long, global = true)]
    events: Option<String>,
    /// Gateway token (default: <data_dir>/gateway.token).
    #[arg(long, global = true, env = "BATOS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Conn {
    /// The client's settings from the settings file plus these flags. The token comes from `--token` (or
    /// `BATOS_TOKEN`), else `<data_dir>/gateway.token`.
    fn resolve(&self) -> Result<ClientConfig, ExitCode> {
        let loaded = LoadedSettings::load(&self.config).map_err(|e| {
            eprintln!("batos: {e}");
            ExitCode::from(2)
        })?;
        let s = loaded.settings;
        let token = self.token.clone().filter(|t| !t.is_empty()).or_else(|| {
            std::fs::read_to_string(s.data_dir.join("gateway.token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        Ok(ClientConfig {
            endpoint: self.endpoint.clone().unwrap_or(s.gateway.command_endpoint),
            events: self.events.clone().unwrap_or(s.gateway.event_endpoint),
            token,
            timeout: std::time::Duration::from_millis(s.client.timeout_ms),
            retries: s.client.retries,
            poll: std::time::Duration::from_millis(s.client.poll_ms),
            heartbeat: std::time::Duration::from_millis(s.gateway.heartbeat_ms),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("batos: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Cmd::Run { config } => run_daemon(config, cli.log_format).await,
            Cmd::Send { conn, text } => match conn.resolve() {
                Ok(cfg) => batos::send_cli::send(cfg, text).await,
                Err(c) => c,
            },
            Cmd::Watch { conn } => match conn.resolve() {
                Ok(cfg) => batos::send_cli::watch(cfg).await,
                Err(c) => c,
            },
            Cmd::Tui { conn, readonly } => match conn.resolve() {
                Ok(cfg) => batos::tui::run(cfg, readonly).await,
                Err(c) => c,
            },
            Cmd::Status { conn, json } => match conn.resolve() {
                Ok(cfg) => status(cfg, json).await,
                Err(c) => c,
            },
            Cmd::Ping { conn } => match conn.resolve() {
                Ok(cfg) => ping(cfg).await,
                Err(c) => c,
            },
            Cmd::Rate {
                conn,
                task,
                score,
                comment,
            } => match conn.resolve() {
                Ok(cfg) => rate(cfg, task, score, comment).await,
                Err(c) => c,
            },
            Cmd::Curator { conn, persona } => match conn.resolve() {
                Ok(cfg) => curator(cfg, persona).await,
                Err(c) => c,
            },
            Cmd::Forge { conn, action } => match conn.resolve() {
                Ok(cfg) => batos::forge_cli::forge(cfg, action).await,
                Err(c) => c,
            },
            Cmd::Rollback { conn, persona } => match conn.resolve() {
                Ok(cfg) => batos::forge_cli::rollback(cfg, persona).await,
                Err(c) => c,
            },
            Cmd::Goals { conn, json } => match conn.resolve() {
                Ok(cfg) => batos::goals_cli::goals(cfg, json).await,
                Err(c) => c,
            },
            Cmd::Motivator { conn, action } => match conn.resolve() {
                Ok(cfg) => batos::goals_cli::motivator(cfg, action).await,
                Err(c) => c,
            },
            Cmd::Exam { conn, action } => match conn.resolve() {
                Ok(cfg) => batos::exam_cli::exam(cfg, action).await,
                Err(c) => c,
            },
            Cmd::Life { conn, action } => match conn.resolve() {
                Ok(cfg) => batos::life_cli::life(cfg, action).await,
                Err(c) => c,
            },
            Cmd::Image { action } => match action {
                ImageCmd::Save { conn } => match conn.resolve() {
                    Ok(cfg) => batos::image_cli::save(cfg).await,
                    Err(c) => c,
                },
                ImageCmd::Export { conn, file } => match conn.resolve() {
                    Ok(cfg) => batos::image_cli::export(cfg, &file).await,
                    Err(c) => c,
                },
                ImageCmd::Import {
                    file,
                    data_dir,
                    config_dir,
                } => batos::image_cli::import(&file, &data_dir, config_dir).await,
            },
            Cmd::Call { conn, cmd, args } => match conn.resolve() {
                Ok(cfg) => call(cfg, &cmd, &args).await,
                Err(c) => c,
            },
        }
    })
}

async fn run_daemon(config: PathBuf, format: Option<LogFormatArg>) -> ExitCode {
    let loaded = match LoadedSettings::load(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("batos: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Pretty) => LogFormat::Pretty,
        None => loaded.settings.log.format,
    };
    let log = batos::logging::init(format, &loaded.settings.log.level);
    match boot::run(loaded, log).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(BootError::Config(e)) => {
            tracing::error!(event = "daemon.config_error", error = %format!("{e:#}"), "cannot start");
            eprintln!("batos: {e:#}");
            ExitCode::from(2)
        }
        Err(BootError::Runtime(e)) => {
            tracing::error!(event = "daemon.failed", error = %format!("{e:#}"), "batos failed");
            eprintln!("batos: {e:#}");
            ExitCode::from(1)
        }
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
                batos::goals_cli::state_line(&v["motivator"])
            );
            println!("image: {}", batos::image_cli::line(&v["image"]["last"]));
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
