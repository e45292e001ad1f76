//! Exam results on disk: one JSON file per run, `data_dir/exam/results/<id>.json`, rewritten atomically after
//! every step of the run, so a kill at any instant leaves the last complete step (a [`RecordDir`]).

use std::path::Path;

use batos_protocol::exam::{ExamResult, ExamStatus, ExamSummary};

pub use crate::records::valid_id;
use crate::records::RecordDir;

/// The results folder.
#[derive(Debug, Clone)]
pub struct ResultStore(RecordDir);

impl ResultStore {
    /// The store under `exam_dir` (`results/` inside it), created if missing.
    pub fn open(exam_dir: &Path) -> std::io::Result<Self> {
        RecordDir::open(&exam_dir.join("results"), "an exam result").map(Self)
    }

    /// Writes `r` atomically and durably.
    pub fn save(&self, r: &ExamResult) -> std::io::Result<()> {
        self.0.save(&r.summary.id, r)
    }

    /// One run; `Ok(None)` when there is no such file, `Err` when it cannot be read or parsed.
    pub fn load(&self, id: &str) -> Result<Option<ExamResult>, String> {
        self.0.load(id)
    }

    /// Every readable result, oldest first (an unreadable file is set aside).
    pub fn all(&self) -> Vec<ExamResult> {
        let mut out: Vec<ExamResult> = self.0.all();
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
        for s in finished.iter().take(finished.len().saturating_sub(keep)) {
            self.0.remove(&s.id);
        }
    }
}
