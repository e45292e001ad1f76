//! Lives on disk: one JSON file per life, `data_dir/life/<id>.json`, rewritten atomically after every task and
//! exam, so a kill at any instant leaves the last complete step (a [`RecordDir`]).

use std::path::Path;

use batos_protocol::life::{LifeRecord, LifeStatus};

use crate::records::RecordDir;

/// The lives folder.
#[derive(Debug, Clone)]
pub struct LifeStore(RecordDir);

impl LifeStore {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        RecordDir::open(dir, "a life record").map(Self)
    }

    /// Writes `r` atomically and durably.
    pub fn save(&self, r: &LifeRecord) -> std::io::Result<()> {
        self.0.save(&r.summary.id, r)
    }

    /// One life; `Ok(None)` when there is no such file.
    pub fn load(&self, id: &str) -> Result<Option<LifeRecord>, String> {
        self.0.load(id)
    }

    /// Every readable life, oldest first (an unreadable file is set aside).
    pub fn all(&self) -> Vec<LifeRecord> {
        let mut out: Vec<LifeRecord> = self.0.all();
        out.sort_by(|a, b| a.summary.started_at.total_cmp(&b.summary.started_at));
        out
    }

    /// Deletes the oldest finished lives beyond `keep` (a running one is never deleted).
    pub fn prune(&self, keep: usize) {
        let finished: Vec<String> = self
            .all()
            .into_iter()
            .filter(|r| r.summary.status != LifeStatus::Running.as_str())
            .map(|r| r.summary.id)
            .collect();
        for id in finished.iter().take(finished.len().saturating_sub(keep)) {
            self.0.remove(id);
        }
    }
}
