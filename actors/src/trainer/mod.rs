//! The trainer (issue 15): LoRA fine-tuning of a persona's model on the CPU, from the Curator's golden
//! dataset, gated by held-out loss, swapped in through the cognitive atomic swap, rolled back on demand.
//!
//! The organ: one actor ([`TrainerActor`]) holding a queue of personas to train, filled by the Curator's
//! trigger (the [`TrainerHook`] port) or by `trainer_run`; one run at a time as a supervised job
//! (`pipeline::run`), which waits until no task runs (training takes every core) unless forced, trains with
//! `trainer.threads` threads, reports `trainer.progress` after every step, writes the adapter under its content
//! hash, asks the serving engine for held-out and general-set NLL with and without it, and swaps the persona
//! to it (`lora:<file>`, or on Ollama a model built from the base and the adapter) only when
//! `trainer.min_improvement` and `trainer.max_regression` hold (`model.tuned`; otherwise `trainer.rejected` and
//! nothing changes). `trainer_cancel` stops a run between steps, keeping its
//! checkpoint; a daemon killed mid-run takes the run up again at start. `rollback_model` returns a persona to
//! the model it had before its last tuned swap (the last `trainer.keep_generations` are kept).
//!
//! The seeds call this organ the UnslothForge; it is named for what it does (`trainer`, `[trainer]`,
//! `trainer_*` commands and events; the old `unsloth`, `[forge]` and `forge_*` names are read for one release
//! and logged as deprecated), and Unsloth itself trains only on a GPU, and PyTorch from PyPI is a 3 GB CUDA build: the default engine is a trainer in Rust on candle, over the same GGUF file llama.cpp serves.
//!
//! ```text
//!   golden set (curator_export)          same GGUF file
//!        │  tokens: the embedded engine's        │ dequantized to f32, frozen
//!        │  tokenizer + chat template            ▼
//!        └──────────▶ Sequence ──────▶ LlamaLora (candle) ──▶ masked NLL ──▶ AdamW ──▶ LoRA pairs
//!                                            │ every N steps: checkpoint (GGUF, atomic)
//!                                            ▼
//!                              adapter GGUF (llama.cpp's format) ──▶ served as `lora:<file>`
//! ```
//!
//! The pieces, by job:
//!
//! - `llama`: the llama architecture with LoRA pairs on chosen projections; only differentiable ops, so a
//!   gradient reaches every pair (candle's fused kernels have no backward pass);
//! - `train`: masked next-token loss on the answer tokens, AdamW with saved moments, warm-up then cosine or
//!   constant rate, seeded data order, checkpoints, progress and cancel;
//! - `adapter`: the adapter file llama.cpp loads and the checkpoint file, both GGUF, both written atomically;
//! - `ctx`: what a run carries (`TrainerCtx`) and what it ends with (`RunReport`);
//! - `pipeline`: one run, from golden set to swap or rejection, and the rollback; `exam_gate`: the exam's
//!   verdict on a trial swap;
//! - `serving`: which engine tokenizes and gates (the embedded one, or on Ollama a local copy of the base) and
//!   how an accepted adapter becomes servable (`lora:<file>` in place, or a model built on the Ollama server);
//! - `actor`, `messages`: the queue and its commands.
//!
//! Why the trainer is trusted: `tests::*` on a tiny synthetic llama (loss falls, gradients reach every LoRA
//! tensor and no frozen one, resume continues exactly, files round-trip), and `actors/tests/trainer.rs` on the
//! shipped model (candle's logits match llama.cpp's on the same tokens, base and with the exported adapter).

mod actor;
pub mod adapter;
mod ctx;
mod exam_gate;
pub mod fused;
pub mod llama;
mod messages;
pub mod pipeline;
pub mod remote;
pub mod serving;
pub mod train;

#[cfg(test)]
mod tests;

pub use adapter::{adapter_bytes, read_adapter, Adapter};
pub use llama::{LlamaConfig, LlamaLora, LoraSpec, TARGETS};
pub use train::{mean_nll, train, Outcome, Progress, Schedule, Sequence, TrainConfig};

pub use actor::{TrainerActor, TRAINER_NAME};
pub use ctx::{RunReport, TrainerCtx};
pub use messages::{TrainerArgs, TrainerMsg, TrainerStatus};
pub use remote::{train_here, RemoteTrainer, TrainJob, Trained};

use async_trait::async_trait;
use batos_protocol::ErrorCode;

use crate::ask::{Handle, Organ, OrganError, WireError};
use crate::ports::{Export, TrainerHook};

/// What can go wrong while fine-tuning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainerError {
    /// The model or a file the trainer reads is not what it needs (architecture, metadata, shapes).
    #[error("model: {0}")]
    Model(String),
    /// A request or setting is out of range.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A file could not be written or read.
    #[error("io: {0}")]
    Io(String),
    /// The persona is already being trained or waits in the queue.
    #[error("busy: {0}")]
    Busy(String),
    /// Something the trainer needs is not there (the embedded backend, the Curator).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl WireError for TrainerError {
    fn code(&self) -> ErrorCode {
        match self {
            TrainerError::Invalid(_) => ErrorCode::BadRequest,
            TrainerError::Busy(_) => ErrorCode::Conflict,
            TrainerError::Unavailable(_) => ErrorCode::Unavailable,
            TrainerError::Model(_) | TrainerError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// The one way to reach the trainer. Timeouts come from `gateway.actor_call_timeout_ms`.
pub type TrainerHandle = Handle<TrainerActor>;

impl Organ for TrainerActor {
    type Msg = TrainerMsg;
    type Error = TrainerError;
    const LABEL: &'static str = "trainer";
    const NAME: &'static str = TRAINER_NAME;

    fn crash() -> TrainerMsg {
        TrainerMsg::Crash
    }
}

impl Handle<TrainerActor> {
    /// Whether the Curator's trigger may start a run (`trainer.auto_train`, live).
    fn auto_train(&self) -> bool {
        self.settings().load().trainer.auto_train
    }

    /// Queues `persona` for training; its place in line (1 = running next or now).
    pub async fn train(
        &self,
        persona: String,
        force: bool,
    ) -> Result<usize, OrganError<TrainerError>> {
        self.call(|reply| TrainerMsg::Train {
            persona,
            force,
            reply,
        })
        .await
    }

    /// Stops the run of `persona` (any run when `None`) and drops it from the queue.
    pub async fn cancel(&self, persona: Option<String>) -> Result<bool, OrganError<TrainerError>> {
        Ok(self
            .ask(|reply| TrainerMsg::Cancel { persona, reply })
            .await?)
    }

    /// What runs and what waits.
    pub async fn status(&self) -> Result<TrainerStatus, OrganError<TrainerError>> {
        Ok(self.ask(TrainerMsg::Status).await?)
    }

    /// Returns `persona` to its model before the last tuned swap: `(from, to)`.
    pub async fn rollback(
        &self,
        persona: String,
    ) -> Result<(String, String), OrganError<TrainerError>> {
        self.call(|reply| TrainerMsg::Rollback { persona, reply })
            .await
    }
}

#[async_trait]
impl TrainerHook for TrainerHandle {
    async fn train(&self, persona: &str, _export: &Export) -> Result<String, String> {
        if !self.auto_train() {
            return Err("trainer.auto_train is off: nothing is trained from the trigger".into());
        }
        TrainerHandle::train(self, persona.to_string(), false)
            .await
            .map(|place| format!("queued for training (place {place})"))
            .map_err(|e| e.to_string())
    }
}
