//! The goal file: `data_dir/motivator/goals.json`, the goals (open and the last `keep_goals` finished), the
//! durable pause and the counters, rewritten atomically (temp file, fsync, rename) at every change, so a
//! kill -9 leaves the previous or the next version, never a torn one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::evidence::Counters;
use super::Goal;
use crate::fsutil;

/// What the file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// Paused by `motivator_pause` (until `motivator_resume`).
    pub paused: bool,
    /// Open goals and the newest finished ones.
    pub goals: Vec<Goal>,
    /// Trigger counters and the day's tokens.
    pub counters: Counters,
}

impl Saved {
    /// Keeps every open goal and the newest `keep` finished ones.
    pub fn prune(&mut self, keep: usize) {
        let mut finished: Vec<(f64, String)> = self
            .goals
            .iter()
            .filter(|g| g.status.is_final())
            .map(|g| (g.created_at, g.id.clone()))
            .collect();
        if finished.len() <= keep {
            return;
        }
        finished.sort_by(|a, b| b.0.total_cmp(&a.0));
        let gone: std::collections::HashSet<String> =
            finished.into_iter().skip(keep).map(|(_, id)| id).collect();
        self.goals.retain(|g| !gone.contains(&g.id));
    }
}

/// Where the goals live.
#[derive(Debug, Clone)]
pub struct GoalStore {
    path: PathBuf,
}

impl GoalStore {
    /// Opens `dir/goals.json` (creating `dir`). A file that cannot be read as goals is moved aside to
    /// `goals.json.unreadable` and the Motivator starts empty: its goals are its own, and a start that
    /// fails over them would stop the daemon.
    pub fn open(dir: &Path) -> io::Result<(Self, Saved)> {
        std::fs::create_dir_all(dir)?;
        fsutil::clean_stale_temps(dir);
        let path = dir.join("goals.json");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    let aside = dir.join("goals.json.unreadable");
                    tracing::error!(event = "motivator.store_unreadable", path = %path.display(), aside = %aside.display(), error = %e, "goal file unreadable; moved aside, starting without goals");
                    std::fs::rename(&path, &aside)?;
                    Saved::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e),
        };
        Ok((Self { path }, saved))
    }

    /// Writes `saved` atomically.
    pub fn save(&self, saved: &Saved) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(saved).map_err(io::Error::other)?;
        fsutil::atomic_write(&self.path, &bytes)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
