//! Exam results on disk: one JSON file per run, `data_dir/exam/results/<id>.json`, rewritten atomically
//! (fsutil) after every step of the run, so a kill at any instant leaves the last complete step.

use std::path::{Path, PathBuf};

use batos_protocol::exam::{ExamResult, ExamStatus, ExamSummary};

/// Whether `id` is a run id this store issues (32 lowercase hex chars): only those name files.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The results folder.
#[derive(Debug, Clone)]
pub struct ResultStore {
    dir: PathBuf,
}

impl ResultStore {
    /// The store under `exam_dir` (`results/` inside it), created if missing; temp files an interrupted
    /// write left behind are removed.
    pub fn open(exam_dir: &Path) -> std::io::Result<Self> {
        let dir = exam_dir.join("results");
        std::fs::create_dir_all(&dir)?;
        crate::fsutil::clean_stale_temps(&dir);
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `r` atomically and durably.
    pub fn save(&self, r: &ExamResult) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&self.path(&r.summary.id), &bytes)
    }

    /// One run; `Ok(None)` when there is no such file, `Err` when it cannot be read or parsed.
    pub fn load(&self, id: &str) -> Result<Option<ExamResult>, String> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not an exam result: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Every readable result, oldest first. A file that is not one is set aside as `<name>.unreadable`
    /// (logged), so it neither hides the others nor is lost.
    pub fn all(&self) -> Vec<ExamResult> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if !valid_id(id) {
                continue;
            }
            match self.load(id) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(why) => {
                    let aside = self.dir.join(format!("{name}.unreadable"));
                    let moved = std::fs::rename(e.path(), &aside).is_ok();
                    tracing::error!(event = "exam.result_unreadable", file = %e.path().display(), error = %why, set_aside = moved, "exam result set aside");
                }
            }
        }
        out.sort_by(|a, b| a.summary.started_at.total_cmp(&b.summary.started_at));
        out
    }

    /// Every result's summary, oldest first.
    pub fn summaries(&self) -> Vec<ExamSummary> {
        self.all().into_iter().map(|r| r.summary).collect()
    }

    /// Deletes the oldest finished results beyond `keep` (a running one is never deleted).
    pub fn prune(&self, keep: usize) {
        let all = self.summaries();
        let finished: Vec<&ExamSummary> = all
            .iter()
            .filter(|s| s.status != ExamStatus::Running.as_str())
            .collect();
        if finished.len() <= keep {
            return;
        }
        for s in &finished[..finished.len() - keep] {
            if let Err(e) = std::fs::remove_file(self.path(&s.id)) {
                tracing::warn!(event = "exam.prune_failed", exam = %s.id, error = %e, "old exam result not removed");
            }
        }
    }
}
