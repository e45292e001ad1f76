//! `batos image save|export|import`: the living image from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::{Client, ClientConfig};

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

/// `batos image import FILE --data-dir DIR [--config-dir C]`: a new mind from an image (no daemon needed).
pub async fn import(file: &Path, data_dir: &Path, config_dir: Option<PathBuf>) -> ExitCode {
    let config_dir = config_dir.unwrap_or_else(|| data_dir.join("config"));
    match batos_actors::image::import(file, data_dir, &config_dir).await {
        Ok(r) => {
            println!(
                "imported generation {} into {}: {} files, memory {}, adapters for {}",
                r.image.generation,
                r.data_dir.display(),
                r.files,
                match r.memory_rows {
                    Some(n) => format!("{n} rows"),
                    None => "empty (the image carried no rows)".into(),
                },
                if r.adapters.is_empty() {
                    "no persona".to_string()
                } else {
                    r.adapters.join(", ")
                }
            );
            if !r.base_model_found {
                println!(
                    "the base model is not on this machine: copy it and set llm.embedded.model_path in {}",
                    r.settings.display()
                );
            }
            println!(
                "its gateway endpoints are the exported mind's: change them in {} if that one still runs here",
                r.settings.display()
            );
            println!("run it with: batos run --config {}", r.settings.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("batos: {e}");
            ExitCode::from(match e {
                batos_actors::image::ImageError::Invalid(_) => 2,
                _ => 1,
            })
        }
    }
}
