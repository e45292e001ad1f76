//! `batos image save|export`: the living image from the command line, through the daemon. (`batos image
//! import` needs no daemon but the engine's image reader, so it lives in the daemon crate.)

use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use clap::Subcommand;

use crate::client::{Client, ClientConfig};
use crate::conn::Conn;

/// What `batos image` does through the daemon.
// The undocumented fields are `conn` (the flattened connection flags) and `action` (a subcommand): a doc
// comment on either would be printed as help text where clap already prints theirs.
#[allow(missing_docs)]
#[derive(Subcommand)]
pub enum ImageRemote {
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
}

/// Runs one [`ImageRemote`] action.
pub async fn image(action: ImageRemote) -> ExitCode {
    match action {
        ImageRemote::Save { conn } => match conn.resolve() {
            Ok(cfg) => save(cfg).await,
            Err(c) => c,
        },
        ImageRemote::Export { conn, file } => match conn.resolve() {
            Ok(cfg) => export(cfg, &file).await,
            Err(c) => c,
        },
    }
}

/// One line describing an image (`save`, `export`, `status`).
pub fn line(i: &Value) -> String {
    if i.is_null() {
        return "none yet".into();
    }
    format!(
        "generation {} at {} ({} bytes, {} files, memory {}; {} ms, {})",
        i["generation"],
        i["path"].as_str().unwrap_or_default(),
        i["bytes"],
        i["files"],
        match i["memory_rows"].as_u64() {
            Some(n) => format!("{n} rows"),
            None => "not recorded".into(),
        },
        i["duration_ms"],
        i["reason"].as_str().unwrap_or_default(),
    )
}

/// `batos image save`: a new generation now.
pub async fn save(cfg: ClientConfig) -> ExitCode {
    request(cfg, "image_save", json!({})).await
}

/// `batos image export FILE`: one self-contained file, written by the daemon (the path is made absolute here,
/// so it means what it means in the caller's shell).
pub async fn export(cfg: ClientConfig, file: &Path) -> ExitCode {
    let file = match std::path::absolute(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("batos: cannot resolve {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    request(
        cfg,
        "image_export",
        json!({"path": file.display().to_string()}),
    )
    .await
}

async fn request(cfg: ClientConfig, cmd: &str, args: Value) -> ExitCode {
    match Client::new(cfg).request(cmd, args).await {
        Ok(v) => {
            println!("image: {}", line(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("batos: {e}");
            ExitCode::from(1)
        }
    }
}
