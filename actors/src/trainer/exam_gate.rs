//! The trainer's exam gate: an adapter that passed the NLL gate is tried on `trainer.exam_gate`'s questions with
//! the persona swapped to it, and swapped back when the share right falls; a trial a stop interrupted is undone at
//! the next start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ctx::{RunReport, TrainerCtx};
use super::TrainerError;
use crate::settings::TrainerSettings;

/// A persona tried on the exam gate with a candidate: the model it goes back to when the trial does not end
/// (a daemon killed mid-trial is swapped back at the next start, [`recover_trials`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trial {
    previous: String,
    candidate: String,
}

pub(super) fn trial_path(dir: &Path, persona: &str) -> PathBuf {
    dir.join(persona).join("trial.json")
}

/// Swaps back every persona whose exam-gate trial a stop interrupted; answers what was swapped back.
pub async fn recover_trials(ctx: &TrainerCtx) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&ctx.dir) else {
        return out;
    };
    for e in entries.flatten() {
        let persona = e.file_name().to_string_lossy().into_owned();
        let path = trial_path(&ctx.dir, &persona);
        let Some(trial) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Trial>(&b).ok())
        else {
            continue;
        };
        match ctx.personas.swap_model(&persona, &trial.previous).await {
            Ok(_) => {
                tracing::warn!(event = "trainer.trial_undone", persona = %persona, candidate = %trial.candidate, model = %trial.previous, "an exam-gate trial a stop interrupted was undone");
                let _ = std::fs::remove_file(&path);
                out.push((persona, trial.previous));
            }
            Err(e) => {
                tracing::error!(event = "trainer.trial_undo_failed", persona = %persona, error = %e, "an interrupted exam-gate trial could not be undone yet")
            }
        }
    }
    out
}

/// The exam gate: the gate set asked with `current`, then with `candidate` swapped in. `None` when the
/// candidate may stay (it is swapped in, and the trial marker is left for the caller to clear once the
/// history is written); why not when it fell by more than `trainer.exam_tolerance` (the persona is swapped
/// back). No gate set configured or no exam organ: `None`, nothing swapped.
pub(super) async fn exam_gate(
    ctx: &TrainerCtx,
    s: &TrainerSettings,
    report: &mut RunReport,
    current: &str,
    candidate: &str,
) -> Result<Option<String>, TrainerError> {
    let (Some(gate), false) = (ctx.exam.as_ref(), s.exam_gate.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let persona = report.persona.clone();
    let set = std::fs::read_to_string(&s.exam_gate).map_err(|e| {
        TrainerError::Invalid(format!(
            "the exam gate's set {} (trainer.exam_gate) cannot be read: {e}",
            s.exam_gate.display()
        ))
    })?;
    let wait = Duration::from_millis(s.exam_gate_wait_ms);
    let before = gate
        .score(format!("gate {persona} before"), set.clone(), wait)
        .await
        .map_err(|e| TrainerError::Unavailable(format!("the exam gate: {e}")))?;
    report.exam_before = Some(before);
    let trial = Trial {
        previous: current.to_string(),
        candidate: candidate.to_string(),
    };
    let marker = trial_path(&ctx.dir, &persona);
    let bytes = serde_json::to_vec(&trial).map_err(|e| TrainerError::Io(e.to_string()))?;
    crate::fsutil::atomic_write(&marker, &bytes).map_err(|e| TrainerError::Io(e.to_string()))?;
    let swap_back = || async {
        let r = ctx.personas.swap_model(&persona, current).await;
        let _ = std::fs::remove_file(&marker);
        r.map(|_| ()).map_err(|e| {
            TrainerError::Model(format!("swapping back after the exam gate failed: {e}"))
        })
    };
    if let Err(e) = ctx.personas.swap_model(&persona, candidate).await {
        let _ = std::fs::remove_file(&marker);
        return Err(TrainerError::Model(format!(
            "the NLL gate passed but the trial swap failed: {e}"
        )));
    }
    let after = match gate.score(format!("gate {persona} after"), set, wait).await {
        Ok(x) => x,
        Err(e) => {
            swap_back().await?;
            return Err(TrainerError::Unavailable(format!("the exam gate: {e}")));
        }
    };
    report.exam_after = Some(after);
    tracing::info!(event = "trainer.exam_gate", persona = %persona, before, after, tolerance = s.exam_tolerance, "exam gate measured");
    if after < before - s.exam_tolerance {
        swap_back().await?;
        return Ok(Some(format!(
            "the exam gate fell from {before:.1} % to {after:.1} % right, more than trainer.exam_tolerance {:.1} points",
            s.exam_tolerance
        )));
    }
    Ok(None)
}
