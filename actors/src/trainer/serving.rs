//! Where a run's adapter is measured and served: the embedded engine in place, or a new model on Ollama.
//!
//! On the embedded backend the serving engine is at hand: it tokenizes the golden set, measures the gate and
//! serves the adapter as `lora:<file>` — the swap is in place. On Ollama the trainer cannot ask the server for
//! token log-probabilities, so it loads its own llama.cpp copy of the base for the run (the GGUF file of
//! `llm.embedded.model_path`, checked against the Ollama model's architecture and width first: an adapter
//! trained on other weights would be garbage), measures the gate there, and builds the accepted adapter into
//! an Ollama model: blob upload (`HEAD`/`POST /api/blobs/sha256:…`), then `POST /api/create` with `from`
//! and one adapter, named `<base>-batos-<first 12 hex of the adapter's digest>`, with the server's status
//! lines relayed as `trainer.publishing`. A persona already on such a model is measured locally with the adapter
//! its name points to, and the next one is again built `from` the base (Ollama stacks no adapters).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ctx::TrainerCtx;
use super::TrainerError;
use crate::events::Event;
use crate::llm::embedded::{EmbeddedBackend, LORA_PREFIX};
use crate::llm::ollama::OllamaBackend;
use crate::llm::ModelSpec;
use crate::settings::Settings;

/// What marks a model the trainer built on Ollama: `<base>` + this + the adapter's short digest.
pub const OLLAMA_TAG: &str = "-batos-";

/// Hex digits of the adapter digest in an Ollama model's name.
const SHORT_DIGEST: usize = 12;

/// The engine a run tokenizes and gates with, and how the persona's current model reads on it.
pub struct Engine {
    /// Tokenizer, chat template, NLL.
    pub llama: Arc<EmbeddedBackend>,
    /// The persona's current model as `llama` names it (the base, or `lora:<file>`).
    pub current: String,
    /// On Ollama: the base model new models are built from.
    pub ollama_base: Option<String>,
    /// On Ollama: the server the persona thinks on (its own host, or the daemon's), where the tuned model is built.
    pub ollama: Option<Arc<OllamaBackend>>,
}

/// The engine for a run of `persona`, whose model is `current`: the embedded engine when it serves the
/// persona, else the Ollama server the persona thinks on (`[personas.<NAME>] ollama_url`, or the daemon's).
pub async fn engine(
    ctx: &TrainerCtx,
    settings: &Settings,
    persona: &str,
    current: &str,
) -> Result<Engine, TrainerError> {
    let host = ctx.hosts.get(persona).cloned();
    if let (Some(llama), None) = (&ctx.engine, &host) {
        return Ok(Engine {
            llama: llama.clone(),
            current: current.to_string(),
            ollama_base: None,
            ollama: None,
        });
    }
    let Some(ollama) = host.or_else(|| ctx.ollama.clone()) else {
        return Err(TrainerError::Unavailable(
            "no backend the trainer can serve an adapter on".into(),
        ));
    };
    let (base, adapter) = match forge_built(current) {
        Some((base, short)) => (
            base.to_string(),
            Some(adapter_by_short(&ctx.adapters, short)?),
        ),
        None => (current.to_string(), None),
    };
    let embedded = settings.llm.embedded.clone();
    if !embedded.model_path.is_file() {
        return Err(TrainerError::Unavailable(format!(
            "fine-tuning a persona served by Ollama needs the base model's GGUF file here (llm.embedded.model_path = {}), to train on and to measure the gate with",
            embedded.model_path.display()
        )));
    }
    let name = base.clone();
    let llama = tokio::task::spawn_blocking(move || EmbeddedBackend::load(&embedded, &name))
        .await
        .map_err(|e| TrainerError::Model(format!("loading the base model died: {e}")))?
        .map_err(|e| TrainerError::Model(format!("the base model for the gate: {e}")))?;
    same_weights(&ollama, &base, &llama).await?;
    let current = match adapter {
        Some(file) => format!("{LORA_PREFIX}{}", file.display()),
        None => base.clone(),
    };
    Ok(Engine {
        llama: Arc::new(llama),
        current,
        ollama_base: Some(base),
        ollama: Some(ollama),
    })
}

/// `(base, short digest)` when `model` is a name the trainer gives (`<base>-batos-<12 hex>`, perhaps with a
/// `:tag` a user added after it); `None` for any other name, which is then a base model.
fn forge_built(model: &str) -> Option<(&str, &str)> {
    let (base, rest) = model.rsplit_once(OLLAMA_TAG)?;
    let short = rest.split(':').next().unwrap_or(rest);
    (!base.is_empty()
        && short.len() == SHORT_DIGEST
        && short
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some((base, short))
}

/// The adapter file whose digest starts with `short` (a model the trainer built earlier).
fn adapter_by_short(dir: &Path, short: &str) -> Result<PathBuf, TrainerError> {
    let found = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.extension().is_some_and(|x| x == "gguf")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(short))
        })
    });
    found.ok_or_else(|| {
        TrainerError::Unavailable(format!(
            "the persona's model was built from adapter {short}…, which is no longer in {}",
            dir.display()
        ))
    })
}

/// Refuses to train on a GGUF file that is not the Ollama model's weights, as far as `/api/show` tells.
async fn same_weights(
    ollama: &OllamaBackend,
    base: &str,
    llama: &EmbeddedBackend,
) -> Result<(), TrainerError> {
    let info = ollama
        .model_info(base)
        .await
        .map_err(|e| TrainerError::Unavailable(e.to_string()))?;
    let arch = info["general.architecture"].as_str().unwrap_or_default();
    let width = info[format!("{arch}.embedding_length")].as_u64();
    if arch != "llama" || width.is_some_and(|w| w != llama.n_embd() as u64) {
        return Err(TrainerError::Invalid(format!(
            "Ollama's `{base}` ({arch}, width {}) is not the GGUF file the trainer trains on (llama, width {}): set llm.embedded.model_path to the same weights",
            width.map_or("?".into(), |w| w.to_string()),
            llama.n_embd()
        )));
    }
    Ok(())
}

/// Makes the accepted adapter `file` servable; returns the model name the persona swaps to.
pub async fn publish(
    ctx: &TrainerCtx,
    engine: &Engine,
    persona: &str,
    file: &Path,
    digest: &str,
) -> Result<String, TrainerError> {
    let (Some(base), Some(ollama)) = (&engine.ollama_base, &engine.ollama) else {
        return Ok(format!("{LORA_PREFIX}{}", file.display()));
    };
    let name = format!(
        "{base}{OLLAMA_TAG}{}",
        &digest[..SHORT_DIGEST.min(digest.len())]
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let spec = ModelSpec {
        name: name.clone(),
        base: base.clone(),
        adapter: Some(file.to_path_buf()),
    };
    let create = ollama.create_model_streamed(&spec, Some(tx));
    tokio::pin!(create);
    let result = loop {
        tokio::select! {
            r = &mut create => break r,
            Some(status) = rx.recv() => {
                ctx.hub.publish(Event::TrainerPublishing {
                    persona: persona.to_string(),
                    model: name.clone(),
                    status,
                });
            }
        }
    };
    while let Ok(status) = rx.try_recv() {
        ctx.hub.publish(Event::TrainerPublishing {
            persona: persona.to_string(),
            model: name.clone(),
            status,
        });
    }
    result.map_err(|e| TrainerError::Unavailable(e.to_string()))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::forge_built;

    #[test]
    fn only_names_the_forge_gives_point_to_an_adapter() {
        assert_eq!(
            forge_built("smollm2:135m-batos-0123456789ab"),
            Some(("smollm2:135m", "0123456789ab"))
        );
        assert_eq!(
            forge_built("llama3-batos-0123456789ab:latest"),
            Some(("llama3", "0123456789ab"))
        );
        for plain in [
            "smollm2:135m",
            "x-batos-",
            "x-batos-0123",
            "x-batos-0123456789AB",
            "-batos-0123456789ab",
        ] {
            assert_eq!(forge_built(plain), None, "{plain}");
        }
    }
}
