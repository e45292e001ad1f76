//! Durable task state: one JSON file per task under `data_dir/checkpoints/`, written atomically after
//! every step.

use std::path::{Path, PathBuf};

use super::TaskState;

/// The checkpoint directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes a task's state (temp + fsync + rename + fsync dir).
    pub fn save(&self, task: &TaskState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(task).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&self.path(&task.id), &bytes)
    }

    /// One task's last checkpoint; `None` when it has none or it cannot be read.
    pub fn load(&self, id: &str) -> Option<TaskState> {
        let bytes = std::fs::read(self.path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes a task's checkpoint.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
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
}
