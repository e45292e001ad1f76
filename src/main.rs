//! The `batos` command: run the daemon, or talk to it (the talking is `batos-client`'s, flattened in here).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use batos::boot::{self, BootError};
use batos_actors::settings::{LoadedSettings, LogFormat};
use batos_client::cli::Command as ClientCommand;
use batos_client::image_cli::ImageRemote;

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
    #[command(flatten)]
    Remote(ImageRemote),
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

/// What `batos node` does.
#[derive(Subcommand)]
enum NodeCmd {
    /// Join the home at `[cluster] home` and serve `[cluster] roles` until SIGINT/SIGTERM (exit 0); exit 2
    /// when the settings or the cookie are wrong or the home refuses the node.
    Run {
        /// The worker's settings file: its own `[llm]` backend, and `[cluster]` naming the home and the cookie.
        #[arg(long, env = "BATOS_CONFIG", default_value = "config/settings.toml")]
        config: PathBuf,
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
    /// A worker node: serves persona model calls for a home daemon (`[cluster]` in its settings file).
    Node {
        #[command(subcommand)]
        action: NodeCmd,
    },
    /// The living image: save a generation, export one self-contained file, import one into a new mind.
    Image {
        #[command(subcommand)]
        action: ImageCmd,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    batos_client::cli::block_on("batos", async move {
        match cli.command {
            Cmd::Run { config } => run_daemon(config, cli.log_format).await,
            Cmd::Node {
                action: NodeCmd::Run { config },
            } => run_node(config, cli.log_format).await,
            Cmd::Image { action } => match action {
                ImageCmd::Remote(remote) => batos_client::image_cli::image(remote).await,
                ImageCmd::Import {
                    file,
                    data_dir,
                    config_dir,
                } => batos::image_cli::import(&file, &data_dir, config_dir).await,
            },
            Cmd::Client(command) => batos_client::cli::run(command).await,
        }
    })
}

/// Loads the settings file and starts logging as it (or `--log-format`) says; `Err` is the exit code.
fn load(
    config: &std::path::Path,
    format: Option<LogFormatArg>,
) -> Result<(LoadedSettings, batos::logging::LogHandle), ExitCode> {
    let loaded = LoadedSettings::load(config).map_err(|e| {
        eprintln!("batos: {e}");
        ExitCode::from(2)
    })?;
    let format = match format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Pretty) => LogFormat::Pretty,
        None => loaded.settings.log.format,
    };
    let log = batos::logging::init(format, &loaded.settings.log.level);
    Ok((loaded, log))
}

async fn run_node(config: PathBuf, format: Option<LogFormatArg>) -> ExitCode {
    let (loaded, _log) = match load(&config, format) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match batos_actors::cluster::run_worker(&loaded.settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(event = "node.failed", error = %e, "the worker node stopped");
            eprintln!("batos: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_daemon(config: PathBuf, format: Option<LogFormatArg>) -> ExitCode {
    let (loaded, log) = match load(&config, format) {
        Ok(l) => l,
        Err(code) => return code,
    };
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
