//! Codex amendments: the structured proposal, its validation, and the commit protocol.
//!
//! Commit, in order: exclusive file lock; timestamped backup (keep the last N); parse; apply with `toml_edit`
//! so comments and layout survive; validate (parses, schema holds, nothing but the amended fields changed);
//! atomic write (temp file in the same directory, fsync, rename, fsync the directory); release. Any failure
//! before the rename leaves the file exactly as it was.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Codex, CodexError, PersonaCodex, MAX_TEXT_BYTES};

/// The fields of a persona an amendment may change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// New role line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// New list of principles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principles: Option<Vec<String>>,
}

impl Changes {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.role.is_none() && self.system_prompt.is_none() && self.principles.is_none()
    }

    /// Names of the changed fields.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.role.is_some() {
            f.push("role");
        }
        if self.system_prompt.is_some() {
            f.push("system_prompt");
        }
        if self.principles.is_some() {
            f.push("principles");
        }
        f
    }

    fn apply_to(&self, p: &mut PersonaCodex) {
        if let Some(r) = &self.role {
            p.role = r.clone();
        }
        if let Some(s) = &self.system_prompt {
            p.system_prompt = s.clone();
        }
        if let Some(pr) = &self.principles {
            p.principles = pr.clone();
        }
    }
}

/// What a persona proposes: data, never applied without the Architect's approval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// Persona whose codex entry changes.
    pub persona: String,
    /// The new role, system prompt and/or principles; at least one, and the codex must change.
    pub changes: Changes,
    /// Why the persona proposes it, for the Architect (not blank, at most `MAX_TEXT_BYTES` bytes).
    pub rationale: String,
}

/// JSON schema the proposing persona answers through (structured output).
pub fn proposal_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "persona": {"type": "string", "enum": crate::PERSONAS},
            "changes": {
                "type": "object",
                "properties": {
                    "role": {"type": "string"},
                    "system_prompt": {"type": "string"},
                    "principles": {"type": "array", "items": {"type": "string"}}
                }
            },
            "rationale": {"type": "string"}
        },
        "required": ["persona", "changes", "rationale"]
    })
}

/// Where an amendment stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AmendmentStatus {
    /// Awaiting the Architect.
    Pending,
    /// Approved and written to codex.toml.
    Committed,
    /// Rejected by the Architect (`reason` says why); codex.toml untouched. A failed commit leaves it
    /// `Pending`.
    Rejected,
}

/// A stored amendment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Amendment {
    /// 32 lowercase hex chars (UUID v4 simple), assigned when the proposal is stored.
    pub id: String,
    /// What the persona proposed, validated against the codex in force before it was stored.
    pub proposal: Proposal,
    /// `Pending` until the Architect approves (`Committed`) or rejects it; never changes after that.
    pub status: AmendmentStatus,
    /// The paused task that raised it.
    pub task_id: Option<String>,
    /// Unix seconds (microsecond precision) when it was stored as pending.
    pub created_at: f64,
    /// Unix seconds of the decision.
    pub decided_at: Option<f64>,
    /// The Architect's reason, when rejected; the paused task gets it as guidance.
    pub reason: Option<String>,
    /// Unified diff of codex.toml, once committed.
    pub diff: Option<String>,
    /// Backup written before the commit.
    pub backup: Option<PathBuf>,
    /// Unix seconds at which an approval began committing; stored only between the ledger's write-ahead
    /// mark and the commit's record, so one found on disk means a stop interrupted it (see `ledger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approving: Option<f64>,
}

/// Whether `codex` already holds every change of `p` (the persona exists and each proposed field equals).
pub fn holds(codex: &Codex, p: &Proposal) -> bool {
    codex.persona(&p.persona).is_some_and(|current| {
        let mut amended = current.clone();
        p.changes.apply_to(&mut amended);
        &amended == current
    })
}

/// Checks a proposal against the codex: known persona, something to change, texts within bounds, and the
/// amended codex still valid.
pub fn validate(codex: &Codex, p: &Proposal) -> Result<Codex, CodexError> {
    if !crate::PERSONAS.contains(&p.persona.as_str()) {
        return Err(CodexError::Invalid(format!(
            "unknown persona `{}`",
            batos_protocol::truncate(&p.persona, 40)
        )));
    }
    if p.changes.is_empty() {
        return Err(CodexError::Invalid("the amendment changes nothing".into()));
    }
    if p.rationale.trim().is_empty() || p.rationale.len() > MAX_TEXT_BYTES {
        return Err(CodexError::Invalid(format!(
            "the rationale must be 1..={MAX_TEXT_BYTES} bytes"
        )));
    }
    let mut next = codex.clone();
    let entry = next
        .personas
        .get_mut(&p.persona)
        .ok_or_else(|| CodexError::Invalid(format!("persona {} is not in the codex", p.persona)))?;
    p.changes.apply_to(entry);
    next.validate()?;
    if &next == codex {
        return Err(CodexError::Invalid(
            "the amendment would leave the codex unchanged".into(),
        ));
    }
    Ok(next)
}

/// Why a commit failed (the file is unchanged).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("commit failed, codex.toml left as it was: {0}")]
pub struct CommitError(pub String);

/// What a commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The codex now on disk.
    pub codex: Codex,
    /// Unified diff of codex.toml (2 lines of context), as `amendment.committed` carries it.
    pub diff: String,
    /// The previous codex.toml, copied beside it as `codex.toml.bak.<µs since the epoch, 20 digits>`.
    pub backup: PathBuf,
}

fn backups_of(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.bak.");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Sets a persona field in the document, keeping the surrounding comments and the key's own decoration.
fn set_field(
    doc: &mut toml_edit::DocumentMut,
    persona: &str,
    key: &str,
    value: toml_edit::Value,
) -> Result<(), CommitError> {
    let table = doc
        .get_mut("personas")
        .and_then(|p| p.get_mut(persona))
        .and_then(|t| t.as_table_like_mut())
        .ok_or_else(|| CommitError(format!("no [personas.{persona}] table in codex.toml")))?;
    let mut value = value;
    if let Some(old) = table.get(key).and_then(|i| i.as_value()) {
        *value.decor_mut() = old.decor().clone();
    }
    table.insert(key, toml_edit::Item::Value(value));
    Ok(())
}

fn text_value(s: &str) -> toml_edit::Value {
    // Multi-line texts stay multi-line literals when they can, like the hand-written codex.
    if s.contains('\n') && !s.contains("'''") {
        let repr = format!("'''\n{s}'''");
        if let Ok(v) = repr.parse::<toml_edit::Value>() {
            return v;
        }
    }
    toml_edit::Value::from(s)
}

/// Why a commit attempt starts over: codex.toml changed between its read and its rename (a hand edit).
const CHANGED_MEANWHILE: &str = "codex.toml changed on disk while the amendment was being written";
/// Read-modify-write attempts before a commit gives up on a file that keeps changing.
const COMMIT_ATTEMPTS: u32 = 3;

/// Applies an approved proposal to the codex file (see the module docs for the protocol).
pub fn commit(
    path: &Path,
    proposal: &Proposal,
    keep_backups: usize,
) -> Result<Committed, CommitError> {
    let err = |what: &str, e: &dyn std::fmt::Display| CommitError(format!("{what}: {e}"));
    let lock =
        crate::fsutil::lock_file_for(path).map_err(|e| err("cannot open the lock file", &e))?;
    lock.lock().map_err(|e| err("cannot lock codex.toml", &e))?;
    // An editor saving codex.toml does not take our lock: the file is read again just before the rename, and
    // the whole read-modify-write starts over (a few times) when it changed, so a hand edit made meanwhile is
    // amended, never overwritten.
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        let r = (|| {
            let before =
                std::fs::read_to_string(path).map_err(|e| err("cannot read codex.toml", &e))?;
            let current =
                Codex::parse(&before).map_err(|e| err("the codex on disk is invalid", &e))?;
            let expected =
                validate(&current, proposal).map_err(|e| err("the amendment is invalid", &e))?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0);
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("codex.toml");
            let backup = path.with_file_name(format!("{name}.bak.{stamp:020}"));
            crate::fsutil::atomic_write(&backup, before.as_bytes())
                .map_err(|e| err("cannot write the backup", &e))?;
            let mut doc: toml_edit::DocumentMut = before
                .parse()
                .map_err(|e| err("cannot parse codex.toml", &e))?;
            let c = &proposal.changes;
            if let Some(r) = &c.role {
                set_field(&mut doc, &proposal.persona, "role", text_value(r))?;
            }
            if let Some(s) = &c.system_prompt {
                set_field(&mut doc, &proposal.persona, "system_prompt", text_value(s))?;
            }
            if let Some(pr) = &c.principles {
                let mut arr = toml_edit::Array::new();
                for p in pr {
                    arr.push(p.as_str());
                }
                for v in arr.iter_mut() {
                    v.decor_mut().set_prefix("\n  ");
                }
                arr.set_trailing("\n");
                arr.set_trailing_comma(true);
                set_field(
                    &mut doc,
                    &proposal.persona,
                    "principles",
                    toml_edit::Value::Array(arr),
                )?;
            }
            let after = doc.to_string();
            // Validate what will be written: it parses, holds the schema, and equals the expected codex exactly,
            // so nothing but the amended fields changed.
            let written =
                Codex::parse(&after).map_err(|e| err("the amended file would be invalid", &e))?;
            if written != expected {
                return Err(CommitError(
                    "the amended file differs from the amendment in other places".into(),
                ));
            }
            let now =
                std::fs::read_to_string(path).map_err(|e| err("cannot read codex.toml", &e))?;
            if now != before {
                return Err(CommitError(CHANGED_MEANWHILE.into()));
            }
            crate::fsutil::atomic_write(path, after.as_bytes())
                .map_err(|e| err("cannot write codex.toml", &e))?;
            let diff = similar::TextDiff::from_lines(&before, &after)
                .unified_diff()
                .context_radius(2)
                .header("codex.toml", "codex.toml")
                .to_string();
            Ok(Committed {
                codex: written,
                diff,
                backup,
            })
        })();
        match r {
            Err(CommitError(m)) if m == CHANGED_MEANWHILE && attempts < COMMIT_ATTEMPTS => continue,
            other => break other,
        }
    };
    let _ = lock.unlock();
    if result.is_ok() {
        let all = backups_of(path);
        if all.len() > keep_backups {
            for old in &all[..all.len() - keep_backups] {
                let _ = std::fs::remove_file(old);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/codex.toml"))
            .unwrap()
    }

    fn proposal() -> Proposal {
        Proposal {
            persona: "BRICK".into(),
            changes: Changes {
                system_prompt: Some("You are BRICK, now with more care.\nSecond line.".into()),
                principles: Some(vec!["Decompose with kindness.".into()]),
                role: None,
            },
            rationale: "Dissonance kept rising.".into(),
        }
    }

    #[test]
    fn commit_changes_only_the_fields_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codex.toml");
        std::fs::write(&path, shipped()).unwrap();
        let c = commit(&path, &proposal(), 2).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        for line in shipped().lines().filter(|l| l.starts_with('#')) {
            assert!(after.contains(line), "comment lost: {line}");
        }
        let codex = Codex::parse(&after).unwrap();
        assert_eq!(codex, c.codex);
        assert_eq!(
            codex.personas["BRICK"].principles,
            vec!["Decompose with kindness."]
        );
        assert!(codex.personas["BRICK"]
            .system_prompt
            .starts_with("You are BRICK, now with more care."));
        assert_eq!(
            codex.personas["ROBIN"],
            Codex::parse(&shipped()).unwrap().personas["ROBIN"]
        );
        assert!(
            c.diff.contains("+  \"Decompose with kindness.\","),
            "{}",
            c.diff
        );
        assert_eq!(std::fs::read_to_string(&c.backup).unwrap(), shipped());
    }

    #[test]
    fn backups_are_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codex.toml");
        std::fs::write(&path, shipped()).unwrap();
        for i in 0..4 {
            let mut p = proposal();
            p.changes.role = Some(format!("Role {i}"));
            commit(&path, &p, 2).unwrap();
        }
        assert_eq!(backups_of(&path).len(), 2);
    }

    #[test]
    fn invalid_amendments_leave_the_file_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codex.toml");
        std::fs::write(&path, shipped()).unwrap();
        for bad in [
            Proposal {
                persona: "NOBODY".into(),
                ..proposal()
            },
            Proposal {
                changes: Changes::default(),
                ..proposal()
            },
            Proposal {
                changes: Changes {
                    system_prompt: Some("  ".into()),
                    ..Default::default()
                },
                ..proposal()
            },
            Proposal {
                changes: Changes {
                    principles: Some(vec!["".into()]),
                    ..Default::default()
                },
                ..proposal()
            },
        ] {
            assert!(commit(&path, &bad, 2).is_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), shipped());
        }
        assert!(backups_of(&path).is_empty());
    }
}
