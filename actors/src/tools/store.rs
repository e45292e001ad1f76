//! Registered tools on disk: `data_dir/tools/<name>/tool.json` (current) and `v<N>.json` (history).

use std::path::{Path, PathBuf};

use super::python::ToolRecord;

/// The tool directory.
#[derive(Debug, Clone)]
pub struct ToolStore {
    dir: PathBuf,
}

impl ToolStore {
    /// A store in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a new version (history file first, then the current pointer, both atomically).
    pub fn save(&self, r: &ToolRecord) -> std::io::Result<()> {
        let d = self.dir.join(&r.name);
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&d.join(format!("v{}.json", r.version)), &bytes)?;
        crate::fsutil::atomic_write(&d.join("tool.json"), &bytes)
    }

    /// Moves a tool's current record aside (`tool.json` → `retired.json`): it is not loaded at the next start,
    /// and its versions (`v<N>.json`) stay as its history. A tool with no record is left as it is.
    pub fn retire(&self, name: &str) -> std::io::Result<()> {
        let d = self.dir.join(name);
        match std::fs::rename(d.join("tool.json"), d.join("retired.json")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// The current record of one tool.
    pub fn get(&self, name: &str) -> Option<ToolRecord> {
        let b = std::fs::read(self.dir.join(name).join("tool.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Every readable tool; unreadable ones are reported and skipped.
    pub fn load_all(&self) -> Vec<ToolRecord> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path().join("tool.json");
            if !p.exists() {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ToolRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::error!(event = "tools.load_failed", path = %p.display(), error = %e, "stored tool unreadable; skipped")
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
