//! Backend selection: `ollama`, `embedded`, or `auto` (Ollama if it answers within the probe timeout).

use std::sync::Arc;
use std::time::Duration;

use super::embedded::EmbeddedBackend;
use super::ollama::OllamaBackend;
use super::LlmBackend;
use crate::settings::{BackendChoice, LlmSettings};

/// The chosen backend and why.
#[derive(Debug)]
pub struct Selection {
    /// The one backend the personas and memory embeddings use until the daemon restarts (`llm.backend`
    /// is read at start).
    pub backend: Arc<dyn LlmBackend>,
    /// Why it was chosen (logged at start, shown by `status`).
    pub reason: String,
    /// The same backend as its concrete type when it is the embedded one: the forge needs its tokenizer,
    /// chat template and NLL, which no other backend offers.
    pub embedded: Option<Arc<EmbeddedBackend>>,
    /// The same when it is the Ollama one: the forge builds tuned models on it.
    pub ollama: Option<Arc<OllamaBackend>>,
}

/// Chooses and builds the backend the settings ask for.
pub async fn select(s: &LlmSettings) -> Result<Selection, String> {
    let timeout = Duration::from_millis(s.request_timeout_ms);
    let ollama = || OllamaBackend::new(&s.ollama_url, timeout).map_err(|e| e.to_string());
    match s.backend {
        BackendChoice::Ollama => Ok(on_ollama(ollama()?, "llm.backend = \"ollama\"".into())),
        BackendChoice::Embedded => embedded(s, "llm.backend = \"embedded\"".into()).await,
        BackendChoice::Auto => {
            let probe =
                OllamaBackend::new(&s.ollama_url, Duration::from_millis(s.probe_timeout_ms))
                    .map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_millis(s.probe_timeout_ms), probe.health())
                .await
            {
                Ok(Ok(())) => Ok(on_ollama(
                    ollama()?,
                    format!(
                        "llm.backend = \"auto\" and Ollama answered at {}",
                        s.ollama_url
                    ),
                )),
                Ok(Err(e)) => {
                    embedded(
                        s,
                        format!("llm.backend = \"auto\" and Ollama is not usable ({e})"),
                    )
                    .await
                }
                Err(_) => {
                    embedded(
                        s,
                        format!(
                            "llm.backend = \"auto\" and Ollama did not answer at {} within {} ms",
                            s.ollama_url, s.probe_timeout_ms
                        ),
                    )
                    .await
                }
            }
        }
    }
}

fn on_ollama(backend: OllamaBackend, reason: String) -> Selection {
    let backend = Arc::new(backend);
    Selection {
        backend: backend.clone(),
        reason,
        embedded: None,
        ollama: Some(backend),
    }
}

async fn embedded(s: &LlmSettings, reason: String) -> Result<Selection, String> {
    let settings = s.embedded.clone();
    let base = s.embedded.model_name.clone();
    let backend = tokio::task::spawn_blocking(move || EmbeddedBackend::load(&settings, &base))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{reason}, but the embedded backend cannot start: {e}"))?;
    let backend = Arc::new(backend);
    Ok(Selection {
        backend: backend.clone(),
        reason,
        embedded: Some(backend),
        ollama: None,
    })
}
