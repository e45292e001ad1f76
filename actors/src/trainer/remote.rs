//! Training on another machine (issue 30, role `train`): the part of a run that takes the CPU for minutes —
//! loading the frozen weights, the optimizer loop, its checkpoints — as a [`TrainJob`] a worker node can run,
//! and the [`RemoteTrainer`] port the pipeline asks first (the cluster organ plugs in at boot, on a home with
//! `[cluster] remote_training`). Everything else of a run stays home: the golden set, tokenizing, the gate's
//! measurements, the adapter's file and the swap.
//!
//! The job names the base model by its SHA-256 and how it is served (`serve_weights`): a worker trains on
//! its own copy of the same file, checked, so the adapter fits the weights the home serves. Its checkpoint
//! lives on the worker under the job's fingerprint, so a worker killed mid-run resumes exactly where its last
//! checkpoint was, as a home does.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::adapter::adapter_bytes;
use super::llama::{LlamaLora, LoraSpec};
use super::train::{train, Outcome, Progress, Sequence, TrainConfig};
use super::TrainerError;
use crate::settings::ServeWeights;

/// One run's training, as it crosses to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    /// SHA-256 (hex) of the base model file.
    pub base_sha256: String,
    /// Which weights of it are served, and so trained on.
    pub serve_weights: ServeWeights,
    /// The LoRA pairs to lay on it.
    pub spec: LoraSpec,
    /// The run's hyper-parameters, its step count already bounded.
    pub cfg: TrainConfig,
    /// The training sequences, tokenized at home.
    pub data: Vec<Sequence>,
    /// The run's fingerprint (settings, base, data): names its checkpoint, and the call, so a retried or
    /// restarted run of the same data joins the one in flight or resumes from its checkpoint.
    pub fingerprint: String,
}

/// What the training part of a run ends with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Trained {
    /// Steps, resume point, cancel, last loss.
    pub outcome: Outcome,
    /// The adapter file's bytes (llama.cpp's GGUF), unless the run was cancelled.
    #[serde(with = "serde_bytes")]
    pub adapter: Option<Vec<u8>>,
}

/// Training on worker nodes, as the pipeline sees it (implemented by the cluster organ's handle).
#[async_trait]
pub trait RemoteTrainer: Send + Sync {
    /// Runs `job` on a worker node serving `train`, its progress into `progress`, stopping (checkpoint kept)
    /// once `cancel` is set: `Some` with its result, `None` when no node serves the role and the job belongs
    /// here.
    async fn train(
        &self,
        job: TrainJob,
        progress: UnboundedSender<Progress>,
        cancel: Arc<AtomicBool>,
    ) -> Option<Result<Trained, TrainerError>>;
}

/// Runs a job on this machine, blocking: `threads` rayon threads over the weights in `weights`, resuming from
/// and writing `checkpoint`. The home's pipeline and a worker serving `train` both train through here.
pub fn train_here(
    weights: &Path,
    job: &TrainJob,
    checkpoint: &Path,
    threads: usize,
    cancel: &AtomicBool,
    on_progress: impl FnMut(&Progress) + Send,
) -> Result<Trained, TrainerError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| TrainerError::Model(e.to_string()))?;
    pool.install(|| {
        let mut file = std::fs::File::open(weights)
            .map_err(|e| TrainerError::Io(format!("{}: {e}", weights.display())))?;
        let model = LlamaLora::load(&mut file, job.spec.clone())?;
        let outcome = train(
            &model,
            &job.data,
            &job.cfg,
            Some(checkpoint),
            &job.fingerprint,
            cancel,
            on_progress,
        )?;
        let adapter = if outcome.cancelled {
            None
        } else {
            Some(adapter_bytes(&model)?)
        };
        Ok(Trained { outcome, adapter })
    })
}
