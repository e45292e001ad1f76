//! Durable task state: one JSON file per task under `data_dir/checkpoints/`, written atomically after
//! every step.
//!
//! Cancel wins: a task's run writes its checkpoints on its own schedule, and a cancel can arrive while it
//! is mid-step. [`CheckpointStore::end`] (the orchestrator's cancel) and [`CheckpointStore::save`] (the run)
//! take one lock, and `end` marks the task; a save after it is refused with [`SaveError::Ended`], so the
//! cancelled checkpoint is the last one ever written and a restart cannot bring the task back.
//!
//! One run at a time: a run writes under a [`Claim`], and a newer claim on the same task revokes the older
//! one. When the orchestrator crashes, ractor kills its old runs at their next `await`, not at once, while
//! the restarted orchestrator already resumes the same tasks: without claims an old run could finish a task
//! (checkpoint, `task.done`) that a new run then finishes again (the chaos suite saw a task end twice).
//! [`CheckpointStore::claim`] reads the checkpoint under the write lock, so the new run either sees the old
//! run's finish (and does not start) or revokes it before it lands (the old run's write is refused and it
//! stops without a word).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::TaskState;

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The task was ended from outside (cancelled or failed by the orchestrator), or a newer run claimed it:
    /// the run that tried to save must stop without publishing anything.
    #[error("the task was ended or taken over while this run was working")]
    Ended,
    /// The file could not be written (disk full, permissions, ...).
    #[error("cannot write the checkpoint: {0}")]
    Io(#[from] std::io::Error),
}

/// A run's right to write one task's checkpoints; a newer [`CheckpointStore::claim`] of the task revokes it.
/// Numbers come from the store, which outlives orchestrator restarts, so no two runs ever share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim(u64);

/// What every write checks, under one lock.
#[derive(Debug, Default)]
struct Marks {
    /// Tasks ended from outside.
    ended: HashSet<String>,
    /// The claim that may write each task's checkpoints (the newest run's).
    owners: HashMap<String, Claim>,
    /// The last claim number handed out.
    claims: u64,
}

/// The checkpoint directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    marks: Arc<Mutex<Marks>>,
}

impl CheckpointStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            marks: Arc::default(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn write(&self, task: &TaskState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(task).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&self.path(&task.id), &bytes)
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a task's state (temp + fsync + rename + fsync dir), unless the task was ended from outside. For
    /// the orchestrator's own writes (a new task, a decision on a paused one, a finished task's hand-over
    /// flags); a run writes with [`save_claimed`](Self::save_claimed).
    pub fn save(&self, task: &TaskState) -> Result<(), SaveError> {
        let marks = self.marks();
        if marks.ended.contains(&task.id) {
            return Err(SaveError::Ended);
        }
        Ok(self.write(task)?)
    }

    /// Makes the caller the one run that may write `id`'s checkpoints, revoking any earlier claim, and returns
    /// the checkpoint as it is at that moment (`None` when there is none or it cannot be read): a run starts
    /// from it, and does not start at all when it is already final.
    pub fn claim(&self, id: &str) -> (Claim, Option<TaskState>) {
        let mut marks = self.marks();
        marks.claims += 1;
        let claim = Claim(marks.claims);
        marks.owners.insert(id.to_string(), claim);
        (claim, self.load(id))
    }

    /// Like [`save`](Self::save), and refused with [`SaveError::Ended`] once a newer claim took the task.
    pub fn save_claimed(&self, task: &TaskState, claim: Claim) -> Result<(), SaveError> {
        let marks = self.marks();
        if marks.ended.contains(&task.id) || marks.owners.get(&task.id) != Some(&claim) {
            return Err(SaveError::Ended);
        }
        Ok(self.write(task)?)
    }

    /// Writes a task's final state decided from outside (a cancel); every later [`save`](Self::save) of it
    /// is refused. The mark is set even when the write fails, so a racing run still stops.
    pub fn end(&self, task: &TaskState) -> std::io::Result<()> {
        let mut marks = self.marks();
        marks.ended.insert(task.id.clone());
        self.write(task)
    }

    /// One task's last checkpoint; `None` when it has none or it cannot be read.
    pub fn load(&self, id: &str) -> Option<TaskState> {
        let bytes = std::fs::read(self.path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes a task's checkpoint.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        let mut marks = self.marks();
        marks.ended.remove(id);
        marks.owners.remove(id);
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable checkpoint. An unreadable one is renamed to `*.corrupt` and reported, never fatal.
    pub fn load_all(&self) -> Vec<TaskState> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TaskState>(&b).map_err(|e| e.to_string()))
            {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::error!(event = "checkpoint.corrupt", path = %p.display(), error = %e, "unreadable checkpoint set aside");
                    let _ = std::fs::rename(&p, p.with_extension("corrupt"));
                }
            }
        }
        out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(dir.path()).unwrap();
        let t = TaskState::new("a".into(), "hello".into());
        s.save(&t).unwrap();
        std::fs::write(dir.path().join("b.json"), b"{not json").unwrap();
        let all = s.load_all();
        assert_eq!(all, vec![t]);
        assert!(dir.path().join("b.corrupt").exists());
    }

    #[test]
    fn a_cancel_is_the_last_checkpoint_a_racing_run_cannot_overwrite_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(dir.path()).unwrap();
        let mut t = TaskState::new("c".into(), "race".into());
        t.status = super::super::TaskStatus::Running;
        s.save(&t).unwrap();
        let mut cancelled = t.clone();
        cancelled.status = super::super::TaskStatus::Cancelled;
        s.end(&cancelled).unwrap();
        // The run, mid-step when the cancel came, finishes its step and tries to record it.
        t.steps.push(super::super::StepRecord {
            step: 1,
            node: super::super::Node::Route,
            persona: "ALFRED".into(),
            model: "m".into(),
            backend: "ollama".into(),
            dissonance: None,
            duration_ms: 1,
            summary: String::new(),
            finish: None,
            tokens: 0,
        });
        assert!(matches!(s.save(&t), Err(SaveError::Ended)));
        assert_eq!(
            s.load("c").unwrap().status,
            super::super::TaskStatus::Cancelled
        );
        // Forgetting the task (pruning) forgets the mark too.
        s.remove("c").unwrap();
        s.save(&t).unwrap();
    }

    #[test]
    fn a_newer_claim_revokes_the_older_runs_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(dir.path()).unwrap();
        let mut t = TaskState::new("r".into(), "two lives".into());
        s.save(&t).unwrap();
        let (old, _) = s.claim("r");
        t.status = super::super::TaskStatus::Running;
        s.save_claimed(&t, old).unwrap();
        // The orchestrator restarts and resumes the task while the old run is still finishing its step.
        let (new, seen) = s.claim("r");
        assert_eq!(seen.unwrap().status, super::super::TaskStatus::Running);
        let mut done = t.clone();
        done.status = super::super::TaskStatus::Done;
        assert!(matches!(s.save_claimed(&done, old), Err(SaveError::Ended)));
        assert_eq!(
            s.load("r").unwrap().status,
            super::super::TaskStatus::Running
        );
        s.save_claimed(&done, new).unwrap();
        // A claim taken after a run finished sees the finish, so no second run starts.
        let (_, seen) = s.claim("r");
        assert_eq!(seen.unwrap().status, super::super::TaskStatus::Done);
    }

    #[test]
    fn a_write_that_cannot_happen_is_an_error_not_a_silence() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(&dir.path().join("cp")).unwrap();
        // Even root cannot write below a file.
        std::fs::remove_dir(dir.path().join("cp")).unwrap();
        std::fs::write(dir.path().join("cp"), b"not a dir").unwrap();
        let t = TaskState::new("d".into(), "x".into());
        assert!(matches!(s.save(&t), Err(SaveError::Io(_))));
    }
}
