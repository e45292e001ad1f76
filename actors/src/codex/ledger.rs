//! The amendment ledger (`data_dir/amendments.json`) and the approval protocol that keeps it consistent with
//! `codex.toml` across any kill.
//!
//! An approval changes two files, and no rename can cover both. So the ledger is a write-ahead record:
//!
//! 1. the amendment is marked `approving` (a timestamp) and the ledger is written (atomically);
//! 2. codex.toml is committed (its own protocol, `amend::commit`);
//! 3. the amendment becomes `committed` (diff, backup, decision time) and the ledger is written again.
//!
//! A kill before 1 changes nothing. A kill between 1 and 3 leaves an `approving` mark; [`Ledger::recover`]
//! (run when the codex organ starts) reads codex.toml: if it holds the amendment's changes the amendment is
//! `committed` (the kill fell after 2), else the mark is cleared and it is `pending` again (the kill fell
//! before 2; the Architect can approve it again). So after any kill the amendment is committed exactly when
//! codex.toml holds it — `actors/tests/commit_kill.rs` kills this sequence 200 times to show it.

use std::path::{Path, PathBuf};

use super::amend::{self, Amendment, AmendmentStatus, Committed};
use super::Codex;
use crate::events::unix_now;

/// What the note of a recovered amendment says where a live commit would carry its diff.
pub const RECOVERED_DIFF: &str =
    "(committed before the daemon stopped; the diff was not recorded — see the backup files)";

/// Why an approval did not commit (codex.toml and the ledger are as they were, the amendment pending).
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// The write-ahead mark could not be stored; nothing was attempted.
    #[error("cannot store the approval: {0}")]
    Ledger(String),
    /// codex.toml refused the change (see `amend::commit`).
    #[error(transparent)]
    Commit(#[from] amend::CommitError),
}

/// The amendments in proposal order, and the file they live in.
#[derive(Debug, Default)]
pub struct Ledger {
    path: PathBuf,
    /// Every stored amendment, oldest proposal first.
    pub amendments: Vec<Amendment>,
}

impl Ledger {
    /// Reads the ledger; a missing file is empty, an unreadable one is set aside (`.corrupt`) and logged.
    pub fn load(path: &Path) -> Self {
        let amendments = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(event = "codex.amendments_corrupt", path = %path.display(), error = %e, "amendment store unreadable; set aside");
                let _ = std::fs::rename(path, path.with_extension("corrupt"));
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self {
            path: path.to_path_buf(),
            amendments,
        }
    }

    /// Writes the ledger atomically, first dropping decided amendments beyond `keep_decided`.
    pub fn save(&mut self, keep_decided: usize) -> Result<(), String> {
        prune_decided(&mut self.amendments, keep_decided);
        let bytes = serde_json::to_vec_pretty(&self.amendments).map_err(|e| e.to_string())?;
        crate::fsutil::atomic_write(&self.path, &bytes).map_err(|e| e.to_string())
    }

    /// Approves the pending amendment at `i` by the three steps of the module docs. Blocking (file I/O and
    /// the codex lock). On success the amendment is `committed` and returned as decided (pruning may drop it
    /// from the ledger when `keep_decided` is 0); a failure of the last ledger write is only logged, since
    /// codex.toml already holds the change and [`Ledger::recover`] will record it.
    pub fn approve(
        &mut self,
        i: usize,
        codex_path: &Path,
        keep_backups: usize,
        keep_decided: usize,
    ) -> Result<(Amendment, Committed), ApproveError> {
        let proposal = self.amendments[i].proposal.clone();
        self.amendments[i].approving = Some(unix_now());
        if let Err(e) = self.save(keep_decided) {
            self.amendments[i].approving = None;
            return Err(ApproveError::Ledger(e));
        }
        let committed = match amend::commit(codex_path, &proposal, keep_backups) {
            Ok(c) => c,
            Err(e) => {
                self.amendments[i].approving = None;
                if let Err(w) = self.save(keep_decided) {
                    // The mark stays on disk; recovery clears it, since codex.toml did not change.
                    tracing::error!(event = "codex.amendments_write_failed", error = %w, "approval mark not cleared");
                }
                return Err(e.into());
            }
        };
        let a = &mut self.amendments[i];
        a.approving = None;
        a.status = AmendmentStatus::Committed;
        a.decided_at = Some(unix_now());
        a.diff = Some(committed.diff.clone());
        a.backup = Some(committed.backup.clone());
        let decided = a.clone();
        if let Err(e) = self.save(keep_decided) {
            tracing::error!(event = "codex.amendments_write_failed", error = %e, "amendment store not updated; recovered at the next start");
        }
        Ok((decided, committed))
    }

    /// Settles every approval a kill interrupted, against the codex on disk: committed if `codex` holds its
    /// changes, pending again if not. Returns the amendments it found committed (their paused tasks still
    /// wait for the decision). Writes the ledger when anything changed.
    pub fn recover(&mut self, codex: &Codex, keep_decided: usize) -> Vec<Amendment> {
        let mut committed = Vec::new();
        let mut changed = false;
        for a in &mut self.amendments {
            if a.approving.take().is_none() {
                continue;
            }
            changed = true;
            if a.status == AmendmentStatus::Pending && amend::holds(codex, &a.proposal) {
                a.status = AmendmentStatus::Committed;
                a.decided_at = Some(unix_now());
                a.diff = Some(RECOVERED_DIFF.to_string());
                committed.push(a.clone());
            }
            tracing::warn!(event = "codex.approval_recovered", id = %a.id, status = ?a.status, "an approval interrupted by a stop was settled against codex.toml");
        }
        if changed {
            if let Err(e) = self.save(keep_decided) {
                tracing::error!(event = "codex.amendments_write_failed", error = %e, "recovered approvals not stored; settled again at the next start");
            }
        }
        committed
    }
}

/// Drops the oldest decided amendments beyond `keep`; pending ones always stay.
pub(super) fn prune_decided(amendments: &mut Vec<Amendment>, keep: usize) {
    let decided = amendments
        .iter()
        .filter(|a| a.status != AmendmentStatus::Pending)
        .count();
    let mut excess = decided.saturating_sub(keep);
    if excess == 0 {
        return;
    }
    // Oldest first by decision time (the vector is in proposal order).
    let mut order: Vec<(f64, String)> = amendments
        .iter()
        .filter(|a| a.status != AmendmentStatus::Pending)
        .map(|a| (a.decided_at.unwrap_or(a.created_at), a.id.clone()))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let drop: std::collections::HashSet<String> = order
        .into_iter()
        .take_while(|_| {
            let go = excess > 0;
            excess = excess.saturating_sub(1);
            go
        })
        .map(|(_, id)| id)
        .collect();
    amendments.retain(|a| !drop.contains(&a.id));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::codex::amend::{Changes, Proposal};

    fn amendment(id: &str, status: AmendmentStatus, decided_at: Option<f64>) -> Amendment {
        Amendment {
            id: id.into(),
            proposal: Proposal {
                persona: "BRICK".into(),
                changes: Changes {
                    system_prompt: Some(format!("You are BRICK, version {id}.")),
                    ..Default::default()
                },
                rationale: "test".into(),
            },
            status,
            task_id: None,
            created_at: 1.0,
            decided_at,
            reason: None,
            diff: None,
            backup: None,
            approving: None,
        }
    }

    #[test]
    fn decided_amendments_beyond_the_cap_go_oldest_first_and_pending_ones_stay() {
        let mut all = vec![
            amendment("a", AmendmentStatus::Committed, Some(30.0)),
            amendment("b", AmendmentStatus::Rejected, Some(10.0)),
            amendment("p", AmendmentStatus::Pending, None),
            amendment("c", AmendmentStatus::Committed, Some(20.0)),
        ];
        prune_decided(&mut all, 1);
        let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a", "p"]);
        prune_decided(&mut all, 0);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, AmendmentStatus::Pending);
    }

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/codex.toml"))
            .unwrap()
    }

    /// The two halves of an interrupted approval: codex.toml changed (→ committed) or not (→ pending again).
    #[test]
    fn an_interrupted_approval_is_settled_against_codex_toml() {
        let dir = tempfile::tempdir().unwrap();
        let codex_path = dir.path().join("codex.toml");
        std::fs::write(&codex_path, shipped()).unwrap();
        let store = dir.path().join("amendments.json");
        let mut ledger = Ledger::load(&store);
        let mut done = amendment("x", AmendmentStatus::Pending, None);
        done.approving = Some(2.0);
        let mut undone = amendment("y", AmendmentStatus::Pending, None);
        undone.approving = Some(3.0);
        ledger.amendments = vec![done.clone(), undone];
        ledger.save(10).unwrap();
        // The kill fell after step 2 for `x`: codex.toml holds its change.
        amend::commit(&codex_path, &done.proposal, 3).unwrap();

        let mut ledger = Ledger::load(&store);
        let codex = Codex::load(&codex_path).unwrap();
        let recovered = ledger.recover(&codex, 10);
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].id, "x");
        let again = Ledger::load(&store);
        let status: Vec<(String, AmendmentStatus, Option<f64>)> = again
            .amendments
            .iter()
            .map(|a| (a.id.clone(), a.status, a.approving))
            .collect();
        assert_eq!(
            status,
            [
                ("x".to_string(), AmendmentStatus::Committed, None),
                ("y".to_string(), AmendmentStatus::Pending, None)
            ],
            "settled and stored"
        );
    }

    #[test]
    fn a_refused_commit_leaves_the_amendment_pending_and_unmarked() {
        let dir = tempfile::tempdir().unwrap();
        let codex_path = dir.path().join("codex.toml");
        std::fs::write(&codex_path, shipped()).unwrap();
        let store = dir.path().join("amendments.json");
        let mut ledger = Ledger::load(&store);
        let mut bad = amendment("z", AmendmentStatus::Pending, None);
        bad.proposal.persona = "NOBODY".into();
        ledger.amendments.push(bad);
        assert!(ledger.approve(0, &codex_path, 3, 10).is_err());
        let again = Ledger::load(&store);
        assert_eq!(again.amendments[0].status, AmendmentStatus::Pending);
        assert_eq!(again.amendments[0].approving, None);
        assert_eq!(std::fs::read_to_string(&codex_path).unwrap(), shipped());
    }
}
