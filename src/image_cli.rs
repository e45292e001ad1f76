//! `batos image import`: a new mind from an image file, written by the engine's image reader with no daemon
//! running (`save` and `export` go through the daemon: `batos_client::image_cli`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
