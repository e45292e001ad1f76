//! Durable task state: one JSON file per task under `data_dir/checkpoints/`, written atomically after
//! every step.
//!
//! Cancel wins: a task's run writes its checkpoints on its own schedule, and a cancel can arrive while it
//! is mid-step. [`CheckpointStore::end`] (the orchestrator's cancel) and [`CheckpointStore::save`] (the run)
//! take one lock, and `end` marks the task; a save after it is refused with [`SaveError::Ended`], so the
//! cancelled checkpoint is the last one ever written and a restart cannot bring the task back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::TaskState;

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The task was ended from outside (cancelled): the run that tried to save must stop.
    #[error("the task was ended while this run was working")]
    Ended,
    /// The file could not be written (disk full, permissions, ...).
    #[error("cannot write the checkpoint: {0}")]
    Io(#[from] std::io::Error),
}

/// The checkpoint directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    /// Tasks ended from outside; guarded by the lock every write takes.
    ended: Arc<Mutex<HashSet<String>>>,
}

impl CheckpointStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ended: Arc::default(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn write(&self, task: &TaskState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(task).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&self.path(&task.id), &bytes)
    }

    /// Writes a task's state (temp + fsync + rename + fsync dir), unless the task was ended from outside.
    pub fn save(&self, task: &TaskState) -> Result<(), SaveError> {
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.contains(&task.id) {
            return Err(SaveError::Ended);
        }
        Ok(self.write(task)?)
    }

    /// Writes a task's final state decided from outside (a cancel); every later [`save`](Self::save) of it
    /// is refused. The mark is set even when the write fails, so a racing run still stops.
    pub fn end(&self, task: &TaskState) -> std::io::Result<()> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.insert(task.id.clone());
        self.write(task)
    }

    /// One task's last checkpoint; `None` when it has none or it cannot be read.
    pub fn load(&self, id: &str) -> Option<TaskState> {
        let bytes = std::fs::read(self.path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes a task's checkpoint.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
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
