//! The `[trainer]` table: LoRA fine-tuning of a persona on its golden set (README, "The trainer"), its gates
//! and its bounds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[trainer]` (read at the start of each run, except `enabled`, read at start).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainerSettings {
    /// Whether the trainer runs at all (read at start).
    pub enabled: bool,
    /// Threads a run trains with.
    pub threads: usize,
    /// Projections that get a LoRA pair (`attn_q`, `attn_k`, `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`,
    /// `ffn_down`).
    pub targets: Vec<String>,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha; the update is scaled by alpha / rank.
    pub alpha: f32,
    /// Dropout on the LoRA path's input while training (0..1).
    pub dropout: f32,
    /// Peak learning rate.
    pub lr: f64,
    /// Optimizer steps per run, at most (see `max_epochs`).
    pub steps: usize,
    /// Passes over the training set a run may make, at most (0 = no bound): a run makes
    /// `min(steps, ceil(max_epochs × examples / batch))` steps, so a small set is not learned by heart.
    /// Absent from a settings file written before it: no bound, as then.
    #[serde(default)]
    pub max_epochs: f64,
    /// Sequences per step.
    pub batch: usize,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// `cosine` or `constant` after warm-up.
    pub schedule: String,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Tokens per sequence (prompt and answer); longer examples are cut.
    pub max_tokens: usize,
    /// Most tokens in one forward pass: a step's sequences are packed into passes of at most this many.
    pub pack_tokens: usize,
    /// Fewest leading tokens a pass's sequences must share for that prefix to be computed once (0: never).
    pub share_prefix: usize,
    /// Seed of the LoRA initialisation and the data order.
    pub seed: u64,
    /// A checkpoint every this many steps (a killed run resumes from the last one).
    pub checkpoint_every: usize,
    /// Least relative drop of held-out NLL per token (0.02 = 2 %) for the adapter to be swapped in.
    pub min_improvement: f64,
    /// Largest relative rise of the general set's NLL per token the adapter may cause.
    pub max_regression: f64,
    /// The general regression set (JSON lines in the Curator's chat format); relative to the settings file.
    pub general_set: PathBuf,
    /// A queued run waits while tasks run, looking again this often (ms).
    pub idle_poll_ms: u64,
    /// Earlier models kept per persona for `rollback_model`.
    pub keep_generations: usize,
    /// Whether the Curator's trigger starts a run (live). Off, the trigger is recorded and announced
    /// (`curator.trigger`, not delivered) and nothing trains; `trainer_run` still does (a life's
    /// `--ablate trainer`).
    #[serde(default = "super::schema::yes")]
    pub auto_train: bool,
    /// The exam gate's question set (JSON lines, relative to the settings file; empty: no exam gate). An
    /// adapter that passed the NLL gate is tried on it: the set is asked with the persona's current model,
    /// then with the adapter swapped in; when the share right falls by more than `exam_tolerance` points the
    /// persona is swapped back and the run is `trainer.rejected` with both figures.
    #[serde(default)]
    pub exam_gate: PathBuf,
    /// Points (0..=100) the exam gate's share right may fall before an adapter is refused.
    #[serde(default = "default_exam_tolerance")]
    pub exam_tolerance: f64,
    /// How long (ms) the exam gate waits for the exam organ when another exam is running, and for each of
    /// its two runs.
    #[serde(default = "default_exam_gate_wait_ms")]
    pub exam_gate_wait_ms: u64,
}

fn default_exam_tolerance() -> f64 {
    5.0
}

fn default_exam_gate_wait_ms() -> u64 {
    900_000
}
