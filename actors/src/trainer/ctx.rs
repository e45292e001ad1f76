//! What a training run carries and what it ends with: [`TrainerCtx`] (the rest of the system as a run sees
//! it) and [`RunReport`]. Below the pipeline and the two steps it hands work to (the exam gate, serving on
//! Ollama), which all read them.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::curator::CuratorHandle;
use crate::events::EventHub;
use crate::llm::embedded::EmbeddedBackend;
use crate::llm::ollama::OllamaBackend;
use crate::personas::Personas;
use crate::settings::Settings;

/// What a run needs from the rest of the system.
#[derive(Clone)]
pub struct TrainerCtx {
    /// Live settings (`[trainer]` is read at the start of each run).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Events (`trainer.*`, `model.tuned`) and the count of running tasks a run waits on.
    pub hub: Arc<EventHub>,
    /// The swap.
    pub personas: Arc<Personas>,
    /// The golden sets.
    pub curator: CuratorHandle,
    /// The serving engine: tokenizer, chat template and the gate's NLL. `None` on the Ollama backend.
    pub engine: Option<Arc<EmbeddedBackend>>,
    /// The Ollama server when it serves the personas: tuned models are built on it (`serving`).
    pub ollama: Option<Arc<OllamaBackend>>,
    /// Personas that think on an Ollama host of their own (`[personas.<NAME>] ollama_url`): their tuned models
    /// are built there, whatever the daemon's backend.
    pub hosts: std::collections::HashMap<String, Arc<OllamaBackend>>,
    /// `data_dir/forge`: checkpoints and each persona's model history.
    pub dir: PathBuf,
    /// `data_dir/adapters`: adapters by content hash, with their manifests.
    pub adapters: PathBuf,
    /// The exam gate (`trainer.exam_gate`); `None` where no exam organ runs (unit tests).
    pub exam: Option<Arc<dyn crate::ports::ExamGate>>,
    /// Worker nodes serving `train`, asked first (`[cluster] remote_training` on a home); `None` trains here.
    pub remote: Option<Arc<dyn super::remote::RemoteTrainer>>,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// The persona.
    pub persona: String,
    /// `tuned` (swapped), `rejected` (the gate said no), or `cancelled`.
    pub outcome: String,
    /// The new model (`lora:<file>`) when tuned.
    pub model: Option<String>,
    /// Held-out mean NLL per answer token under the persona's model before the run, and with the adapter.
    pub heldout_before: f64,
    /// See `heldout_before`.
    pub heldout_after: f64,
    /// The same on the shipped general set (the regression check).
    pub general_before: f64,
    /// See `general_before`.
    pub general_after: f64,
    /// Optimizer steps done (a resumed run counts the steps before the restart).
    pub steps: usize,
    /// The step the run resumed from (0 when fresh).
    pub resumed_from: usize,
    /// Why the gate said no, or empty.
    pub reason: String,
    /// The exam gate's share right (percent) with the persona's model, and with the adapter swapped in,
    /// when the exam gate ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exam_before: Option<f64>,
    /// See `exam_before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exam_after: Option<f64>,
}
