//! `batos-client`: the `batos` commands that talk to a running daemon, in a binary built without the engine
//! (`cargo install --path client`). Same flags, same output, same exit codes as `batos <command>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use batos_client::cli::Command;
use batos_client::image_cli::ImageRemote;

/// Talk to a running BAT OS daemon: tasks, events, the terminal UI, the exam, lives, training, the image.
#[derive(Parser)]
#[command(name = "batos-client", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The living image: save a generation, or export one self-contained file (`batos image import` needs
    /// the daemon's binary).
    Image {
        #[command(subcommand)]
        action: ImageRemote,
    },
    #[command(flatten)]
    Client(Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    batos_client::cli::block_on("batos-client", async move {
        match cli.command {
            Cmd::Image { action } => batos_client::image_cli::image(action).await,
            Cmd::Client(command) => batos_client::cli::run(command).await,
        }
    })
}
