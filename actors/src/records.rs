//! A folder of JSON records, one file per id (`<id>.json`, 32 lowercase hex chars), each rewritten atomically
//! (fsutil) so a kill at any instant leaves the last complete write. The exam's results and the lives are
//! kept this way; a file that does not parse is set aside as `<name>.unreadable` (logged), so it neither hides
//! the others nor is lost.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Whether `id` is an id a record folder names files by (32 lowercase hex chars): only those name files.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// One folder of records of one kind (`what` names them in errors and logs).
#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
    what: &'static str,
}

impl RecordDir {
    /// The folder `dir`, created if missing; temp files an interrupted write left behind are removed.
    pub fn open(dir: &Path, what: &'static str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        crate::fsutil::clean_stale_temps(dir);
        Ok(Self {
            dir: dir.to_path_buf(),
            what,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes record `id` atomically and durably.
    pub fn save<T: Serialize>(&self, id: &str, r: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&self.path(id), &bytes)
    }

    /// One record; `Ok(None)` when there is no such file (or `id` is not one), `Err` when it cannot be read
    /// or parsed.
    pub fn load<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, String> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not {}: {e}", path.display(), self.what)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Every readable record, in no particular order; unreadable ones are set aside.
    pub fn all<T: DeserializeOwned>(&self) -> Vec<T> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id)) else {
                continue;
            };
            match self.load(id) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(why) => {
                    let aside = self.dir.join(format!("{name}.unreadable"));
                    let moved = std::fs::rename(e.path(), &aside).is_ok();
                    tracing::error!(event = "records.unreadable", what = self.what, file = %e.path().display(), error = %why, set_aside = moved, "record set aside");
                }
            }
        }
        out
    }

    /// Deletes record `id` (a missing one is not an error).
    pub fn remove(&self, id: &str) {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(event = "records.remove_failed", what = self.what, id, error = %e, "old record not removed")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_bad_file_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let d = RecordDir::open(dir.path(), "a test record").unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        d.save(id, &vec![1, 2, 3]).unwrap();
        assert_eq!(d.load::<Vec<i32>>(id).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(d.load::<Vec<i32>>("../etc/passwd").unwrap(), None);
        let bad = "ffffffffffffffffffffffffffffffff";
        std::fs::write(dir.path().join(format!("{bad}.json")), "{torn").unwrap();
        assert!(d
            .load::<Vec<i32>>(bad)
            .unwrap_err()
            .contains("a test record"));
        assert_eq!(d.all::<Vec<i32>>(), vec![vec![1, 2, 3]]);
        assert!(dir.path().join(format!("{bad}.json.unreadable")).exists());
        d.remove(id);
        d.remove(id);
        assert!(d.all::<Vec<i32>>().is_empty());
    }
}
