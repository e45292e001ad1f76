//! The UnslothForge (issue 15): LoRA fine-tuning of a persona's model on the CPU, from the Curator's golden
//! dataset, gated by held-out loss, swapped in through the cognitive atomic swap.
//!
//! The organ keeps its seed name, but Unsloth itself trains only on a GPU, and PyTorch from PyPI is a 3 GB
//! CUDA build: the default engine is a trainer in Rust on candle, over the same GGUF file llama.cpp serves.
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
//! - `adapter`: the adapter file llama.cpp loads and the checkpoint file, both GGUF, both written atomically.
//!
//! Why the trainer is trusted: `tests::*` on a tiny synthetic llama (loss falls, gradients reach every LoRA
//! tensor and no frozen one, resume continues exactly, files round-trip), and `actors/tests/unsloth.rs` on the
//! shipped model (candle's logits match llama.cpp's on the same tokens, base and with the exported adapter).

pub mod adapter;
pub mod llama;
pub mod train;

#[cfg(test)]
mod tests;

pub use adapter::{adapter_bytes, read_adapter, Adapter};
pub use llama::{LlamaConfig, LlamaLora, LoraSpec, TARGETS};
pub use train::{mean_nll, train, Outcome, Progress, Schedule, Sequence, TrainConfig};

/// What can go wrong while fine-tuning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnslothError {
    /// The model or a file the trainer reads is not what it needs (architecture, metadata, shapes).
    #[error("model: {0}")]
    Model(String),
    /// A request or setting is out of range.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A file could not be written or read.
    #[error("io: {0}")]
    Io(String),
}
