//! One run of the trainer for one persona: golden set → tokens → LoRA training (checkpointed, with progress) →
//! adapter file → the gate, measured by the serving engine → the cognitive atomic swap, or a rejection.
//!
//! Nothing is registered before the gate passes: the adapter file is written whole (atomically) under its
//! content hash, and only `swap_model` makes it a persona's model. A run killed mid-training leaves its
//! checkpoint (`data_dir/forge/<PERSONA>/run.ckpt`), and the next start resumes it when the settings and
//! the training set are still the ones it began with (the fingerprint).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ctx::{RunReport, TrainerCtx};
use super::remote::{train_here, RemoteTrainer, TrainJob, Trained};
use super::{LoraSpec, Schedule, Sequence, TrainConfig, TrainerError};
use crate::events::{Event, EventHub};
use crate::llm::embedded::EmbeddedBackend;
use crate::llm::{ChatMessage, Role, ToolSpec};
use crate::settings::TrainerSettings;

/// A persona's earlier models, newest last (what `rollback_model` returns to).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct History {
    previous: Vec<String>,
}

fn history_path(dir: &Path, persona: &str) -> PathBuf {
    dir.join(persona).join("history.json")
}

/// The checkpoint of `persona`'s interrupted run, if any.
pub fn checkpoint_path(dir: &Path, persona: &str) -> PathBuf {
    dir.join(persona).join("run.ckpt")
}

fn read_history(dir: &Path, persona: &str) -> History {
    std::fs::read(history_path(dir, persona))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_history(dir: &Path, persona: &str, h: &History) -> Result<(), TrainerError> {
    let path = history_path(dir, persona);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainerError::Io(e.to_string()))?;
    }
    let bytes = serde_json::to_vec_pretty(h).map_err(|e| TrainerError::Io(e.to_string()))?;
    crate::fsutil::atomic_write(&path, &bytes).map_err(|e| TrainerError::Io(e.to_string()))
}

/// One example of a JSONL set: the chat before the answer, the answer, and the tools the call offered.
type Example = (Vec<ChatMessage>, String, Vec<ToolSpec>);

fn read_examples(path: &Path) -> Result<Vec<Example>, TrainerError> {
    #[derive(Deserialize)]
    struct Line {
        messages: Vec<ChatMessage>,
        #[serde(default)]
        tools: Vec<ToolSpec>,
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainerError::Io(format!("{}: {e}", path.display()))),
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A torn last line (the Curator repairs it at its next start) is skipped, not fatal.
        let Ok(mut l) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        match l.messages.pop() {
            Some(m) if m.role == Role::Assistant && !l.messages.is_empty() => {
                out.push((l.messages, m.content, l.tools))
            }
            _ => continue,
        }
    }
    Ok(out)
}

/// A set as token sequences, and what `max_tokens` cost it.
struct Tokenized {
    seqs: Vec<Sequence>,
    /// Examples whose prompt alone filled `max_tokens`: no answer token was left to learn from.
    skipped: usize,
    /// The longest prompt seen, in tokens.
    longest_prompt: usize,
}

/// Tokens as the engine serves them, cut at `max_tokens`; examples left with no answer token are dropped
/// (and counted, so a too-small `max_tokens` is named rather than silently emptying the set).
fn sequences(
    engine: &EmbeddedBackend,
    examples: &[Example],
    max_tokens: usize,
) -> Result<Tokenized, TrainerError> {
    let mut out = Tokenized {
        seqs: Vec::with_capacity(examples.len()),
        skipped: 0,
        longest_prompt: 0,
    };
    for (messages, answer, tools) in examples {
        let (mut tokens, prompt) = engine
            .training_tokens(messages, answer, tools)
            .map_err(|e| TrainerError::Model(e.to_string()))?;
        out.longest_prompt = out.longest_prompt.max(prompt);
        tokens.truncate(max_tokens);
        let learn: Vec<bool> = (0..tokens.len()).map(|i| i >= prompt).collect();
        let s = Sequence { tokens, learn };
        if s.targets() > 0 {
            out.seqs.push(s);
        } else {
            out.skipped += 1;
        }
    }
    Ok(out)
}

/// Mean NLL per flagged token as the serving engine computes it under `model` (the gate's measure; 0 for no
/// flagged token).
pub async fn served_nll(
    engine: &EmbeddedBackend,
    model: &str,
    data: &[Sequence],
) -> Result<f64, TrainerError> {
    let (mut sum, mut n) = (0.0, 0);
    for s in data {
        let (l, k) = engine
            .sequence_nll(model, s.tokens.clone(), s.learn.clone())
            .await
            .map_err(|e| TrainerError::Model(e.to_string()))?;
        sum += l;
        n += k;
    }
    Ok(if n == 0 { 0.0 } else { sum / n as f64 })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets the run's cancel flag when dropped: a killed job's blocking trainer stops at its next step.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until no task is queued or running (training takes every core), or the run is cancelled.
async fn wait_idle(hub: &EventHub, cancel: &AtomicBool, poll: Duration) -> bool {
    while hub.running_tasks() > 0 {
        if cancel.load(Ordering::SeqCst) {
            return false;
        }
        tokio::time::sleep(poll).await;
    }
    !cancel.load(Ordering::SeqCst)
}

fn config(s: &TrainerSettings) -> Result<(LoraSpec, TrainConfig), TrainerError> {
    let schedule = match s.schedule.as_str() {
        "cosine" => Schedule::Cosine,
        "constant" => Schedule::Constant,
        other => {
            return Err(TrainerError::Invalid(format!(
                "trainer.schedule `{other}` is neither `cosine` nor `constant`"
            )))
        }
    };
    Ok((
        LoraSpec {
            targets: s.targets.clone(),
            rank: s.rank,
            alpha: s.alpha,
            dropout: s.dropout,
            seed: s.seed,
        },
        TrainConfig {
            steps: s.steps,
            batch: s.batch,
            lr: s.lr,
            warmup_steps: s.warmup_steps,
            schedule,
            weight_decay: s.weight_decay,
            seed: s.seed,
            checkpoint_every: s.checkpoint_every,
            pack_tokens: s.pack_tokens,
            share_prefix: s.share_prefix,
        },
    ))
}

/// The gate's decision on measured NLLs: `None` to swap, or why not.
pub fn gate(r: &RunReport, s: &TrainerSettings) -> Option<String> {
    let improvement = (r.heldout_before - r.heldout_after) / r.heldout_before.max(1e-9);
    let regression = (r.general_after - r.general_before) / r.general_before.max(1e-9);
    if improvement.is_nan() || improvement < s.min_improvement {
        return Some(format!(
            "held-out NLL improved by {:.1} %, less than trainer.min_improvement {:.1} %",
            improvement * 100.0,
            s.min_improvement * 100.0
        ));
    }
    if regression > s.max_regression {
        return Some(format!(
            "the general set worsened by {:.1} %, more than trainer.max_regression {:.1} %",
            regression * 100.0,
            s.max_regression * 100.0
        ));
    }
    None
}

/// Runs the trainer for `persona`. `force` skips the wait for idle; `cancel` stops it between steps (the
/// checkpoint is kept).
pub async fn run(
    ctx: TrainerCtx,
    persona: String,
    force: bool,
    cancel: Arc<AtomicBool>,
) -> Result<RunReport, TrainerError> {
    let settings = ctx.settings.load_full();
    let s = settings.trainer.clone();
    let current = ctx
        .personas
        .current(&persona)
        .map_err(|e| TrainerError::Invalid(e.to_string()))?
        .model
        .clone();
    let (spec, cfg) = config(&s)?;
    let mut report = RunReport {
        persona: persona.clone(),
        outcome: "cancelled".into(),
        model: None,
        heldout_before: 0.0,
        heldout_after: 0.0,
        general_before: 0.0,
        general_after: 0.0,
        steps: 0,
        resumed_from: 0,
        reason: String::new(),
        exam_before: None,
        exam_after: None,
    };
    if !force && !wait_idle(&ctx.hub, &cancel, Duration::from_millis(s.idle_poll_ms)).await {
        return Ok(report);
    }
    let served = super::serving::engine(&ctx, &settings, &persona, &current).await?;
    let engine = served.llama.clone();
    let export = ctx
        .curator
        .export(persona.clone())
        .await
        .map_err(|e| TrainerError::Unavailable(format!("no golden set: {e}")))?;
    let train_set = sequences(&engine, &read_examples(&export.train)?, s.max_tokens)?;
    let heldout = sequences(&engine, &read_examples(&export.heldout)?, s.max_tokens)?;
    let skipped = train_set.skipped + heldout.skipped;
    let too_long = if skipped == 0 {
        String::new()
    } else {
        let longest = train_set.longest_prompt.max(heldout.longest_prompt);
        tracing::warn!(event = "trainer.skipped", persona = %persona, skipped, longest_prompt = longest, max_tokens = s.max_tokens, "examples whose prompt fills trainer.max_tokens were skipped");
        format!(
            " ({skipped} more have a prompt that fills trainer.max_tokens = {}; the longest is {longest} tokens)",
            s.max_tokens
        )
    };
    let (train_set, heldout) = (train_set.seqs, heldout.seqs);
    let mut cfg = cfg;
    cfg.steps = super::train::bounded_steps(s.steps, s.max_epochs, train_set.len(), s.batch);
    if train_set.is_empty() || heldout.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{persona} has {} training and {} held-out examples{too_long}; the trainer needs both",
            train_set.len(),
            heldout.len()
        )));
    }
    let general_file = settings.trainer.general_set.clone();
    // Without it the gate could not see a regression: a missing set stops the run rather than pass silently.
    if !general_file.is_file() {
        return Err(TrainerError::Invalid(format!(
            "the general set {} (trainer.general_set) is missing",
            general_file.display()
        )));
    }
    let general = sequences(&engine, &read_examples(&general_file)?, s.max_tokens)?.seqs;
    // Train on the weights the engine serves (the 8-bit copy of a Q4_1 model, `serve_weights`), so the
    // adapter is fitted to the model it will be applied to and the gate measures.
    let model_path = engine.serving_path().to_path_buf();
    let mut h = Sha256::new();
    h.update(format!("{s:?}|{}|", settings.llm.embedded.model_sha256).as_bytes());
    for seq in &train_set {
        h.update(
            seq.tokens
                .iter()
                .flat_map(|t| t.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }
    let fingerprint = hex(&h.finalize());
    let ckpt = checkpoint_path(&ctx.dir, &persona);
    if let Some(parent) = ckpt.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainerError::Io(e.to_string()))?;
    }
    tracing::info!(event = "trainer.started", persona = %persona, train = train_set.len(), heldout = heldout.len(), steps = cfg.steps, max_steps = s.steps, max_epochs = s.max_epochs, "training a LoRA adapter");
    // The training thread outlives this future if the job is killed (the trainer crashed): it must stop too, or
    // the restarted trainer would train the same persona twice over one checkpoint.
    let _stop_on_drop = StopOnDrop(cancel.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<super::Progress>();
    let base_sha256 = match settings.llm.embedded.model_sha256.clone() {
        sha if !sha.is_empty() => sha,
        _ => crate::llm::embedded::file_sha256(&settings.llm.embedded.model_path)
            .map_err(|e| TrainerError::Io(e.to_string()))?,
    };
    let job = TrainJob {
        base_sha256,
        serve_weights: settings.llm.embedded.serve_weights,
        spec,
        cfg,
        data: train_set,
        fingerprint: fingerprint.clone(),
    };
    let work = train_somewhere(
        ctx.remote.clone(),
        job,
        model_path,
        ckpt.clone(),
        s.threads,
        cancel.clone(),
        tx,
    );
    let publish = |p: super::Progress| {
        ctx.hub.publish(Event::TrainerProgress {
            persona: persona.clone(),
            step: p.step,
            steps: p.steps,
            epoch: p.epoch,
            loss: p.loss,
            tokens_per_s: p.tokens_per_s,
            eta_s: p.eta_s,
        });
    };
    // Progress until the work ends — not until every sender is gone: a worker's call task may hold one a while
    // after its answer came.
    tokio::pin!(work);
    let trained = loop {
        tokio::select! {
            r = &mut work => break r,
            Some(p) = rx.recv() => publish(p),
        }
    };
    while let Ok(p) = rx.try_recv() {
        publish(p);
    }
    let Trained {
        outcome: out,
        adapter: bytes,
    } = trained?;
    report.steps = out.steps;
    report.resumed_from = out.resumed_from;
    let Some(bytes) = bytes else {
        return Ok(report);
    };
    let digest = hex(&Sha256::digest(&bytes));
    std::fs::create_dir_all(&ctx.adapters).map_err(|e| TrainerError::Io(e.to_string()))?;
    let file = ctx.adapters.join(format!("{digest}.gguf"));
    crate::fsutil::atomic_write(&file, &bytes).map_err(|e| TrainerError::Io(e.to_string()))?;
    let candidate = format!("{}{}", crate::llm::embedded::LORA_PREFIX, file.display());
    report.heldout_before = served_nll(&engine, &served.current, &heldout).await?;
    report.heldout_after = served_nll(&engine, &candidate, &heldout).await?;
    report.general_before = served_nll(&engine, &served.current, &general).await?;
    report.general_after = served_nll(&engine, &candidate, &general).await?;
    let manifest = serde_json::json!({
        "persona": persona, "base_model": settings.llm.embedded.model_sha256, "dataset": fingerprint,
        "settings": format!("{s:?}"), "steps": out.steps, "last_loss": out.last_loss,
        "heldout_before": report.heldout_before, "heldout_after": report.heldout_after,
        "general_before": report.general_before, "general_after": report.general_after,
    });
    crate::fsutil::atomic_write(
        &ctx.adapters.join(format!("{digest}.json")),
        manifest.to_string().as_bytes(),
    )
    .map_err(|e| TrainerError::Io(e.to_string()))?;
    // The run is over either way: a restart must not resume it.
    let _ = std::fs::remove_file(&ckpt);
    if let Some(reason) = gate(&report, &s) {
        return Ok(rejected(&ctx, report, reason));
    }
    let candidate = super::serving::publish(&ctx, &served, &persona, &file, &digest).await?;
    if let Some(reason) =
        super::exam_gate::exam_gate(&ctx, &s, &mut report, &current, &candidate).await?
    {
        return Ok(rejected(&ctx, report, reason));
    }
    // With the exam gate the candidate is swapped in already; a swap to the model in place is a no-op.
    if ctx.personas.current(&persona).map(|h| h.model.clone()).ok() != Some(candidate.clone()) {
        ctx.personas
            .swap_model(&persona, &candidate)
            .await
            .map_err(|e| {
                TrainerError::Model(format!("the gate passed but the swap failed: {e}"))
            })?;
    }
    let mut history = read_history(&ctx.dir, &persona);
    history.previous.push(current);
    let keep = s.keep_generations.max(1);
    if history.previous.len() > keep {
        let drop = history.previous.len() - keep;
        history.previous.drain(..drop);
    }
    write_history(&ctx.dir, &persona, &history)?;
    let _ = std::fs::remove_file(super::exam_gate::trial_path(&ctx.dir, &persona));
    report.outcome = "tuned".into();
    report.model = Some(candidate.clone());
    ctx.hub.publish(Event::ModelTuned {
        persona: persona.clone(),
        model: candidate,
        heldout_before: report.heldout_before,
        heldout_after: report.heldout_after,
        general_before: report.general_before,
        general_after: report.general_after,
        exam_before: report.exam_before,
        exam_after: report.exam_after,
    });
    Ok(report)
}

/// How many times a run asks a worker again after its run there stopped for a cancel not its own.
const REMOTE_ASKS: usize = 3;

/// The training part of a run: on a worker node serving `train` when the home has one (`remote`), else here
/// on `threads` threads over `weights`. Progress goes to `tx` until it ends.
async fn train_somewhere(
    remote: Option<Arc<dyn RemoteTrainer>>,
    job: TrainJob,
    weights: PathBuf,
    ckpt: PathBuf,
    threads: usize,
    cancel: Arc<AtomicBool>,
    tx: tokio::sync::mpsc::UnboundedSender<super::Progress>,
) -> Result<Trained, TrainerError> {
    if let Some(remote) = remote {
        tracing::info!(event = "trainer.remote", fingerprint = %job.fingerprint, "asking a worker node serving train");
        let mut last = None;
        // A run stopped by another's cancel (the life before a crash of this trainer, whose run the worker was
        // still ending when this one joined it) is asked for again: it resumes from its checkpoint there.
        for _ in 0..REMOTE_ASKS {
            match remote.train(job.clone(), tx.clone(), cancel.clone()).await {
                Some(Ok(t)) if t.outcome.cancelled && !cancel.load(Ordering::SeqCst) => {
                    tracing::info!(
                        event = "trainer.remote_again",
                        step = t.outcome.steps,
                        "the worker's run stopped for an earlier cancel; asking again"
                    );
                    last = Some(Ok(t));
                }
                Some(r) => return r,
                None => break,
            }
        }
        if let Some(r) = last {
            return r;
        }
        tracing::info!(
            event = "trainer.local",
            "no worker node serves train; training here"
        );
    }
    tokio::task::spawn_blocking(move || {
        train_here(&weights, &job, &ckpt, threads, &cancel, |p| {
            let _ = tx.send(p.clone());
        })
    })
    .await
    .map_err(|e| TrainerError::Model(format!("the training thread died: {e}")))?
}

/// Ends a run refused by a gate: the report says why, and `trainer.rejected` carries its figures.
fn rejected(ctx: &TrainerCtx, mut report: RunReport, reason: String) -> RunReport {
    report.outcome = "rejected".into();
    report.reason = reason;
    ctx.hub.publish(Event::TrainerRejected {
        persona: report.persona.clone(),
        heldout_before: report.heldout_before,
        heldout_after: report.heldout_after,
        general_before: report.general_before,
        general_after: report.general_after,
        reason: report.reason.clone(),
        exam_before: report.exam_before,
        exam_after: report.exam_after,
    });
    report
}

/// Returns `persona` to the model it had before its last tuned swap.
pub async fn rollback(ctx: &TrainerCtx, persona: &str) -> Result<(String, String), TrainerError> {
    let mut history = read_history(&ctx.dir, persona);
    let Some(previous) = history.previous.pop() else {
        return Err(TrainerError::Invalid(format!(
            "{persona} has no earlier model to return to"
        )));
    };
    let out = ctx
        .personas
        .swap_model(persona, &previous)
        .await
        .map_err(|e| TrainerError::Model(format!("the rollback swap failed: {e}")))?;
    write_history(&ctx.dir, persona, &history)?;
    Ok((out.from, out.to))
}
