//! The codex document: each persona's role, system prompt and principles, as parsed from
//! `config/codex.toml`. Plain data with its checks, below every organ: personas think with it, the codex
//! organ governs changes to it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Longest accepted system prompt or principle, in bytes: a guard against a runaway amendment.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Why a codex is unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CodexError {
    /// The file could not be read.
    #[error("cannot read codex {path}: {detail}")]
    Read {
        /// File.
        path: String,
        /// OS error.
        detail: String,
    },
    /// Not TOML, or not the codex schema.
    #[error("invalid codex: {0}")]
    Invalid(String),
}

/// The whole codex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Codex {
    /// Format version; 1 is the only one accepted, so a future layout is refused rather than misread.
    pub version: u32,
    /// Exactly one entry per persona (`ALFRED`, `BABS`, `BRICK`, `ROBIN`); no other names.
    pub personas: BTreeMap<String, PersonaCodex>,
}

/// One persona's principles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersonaCodex {
    /// What the persona is for.
    pub role: String,
    /// Its system prompt (not blank, at most [`MAX_TEXT_BYTES`]); the start of every model call's system
    /// message.
    pub system_prompt: String,
    /// Its principles, each not blank and at most [`MAX_TEXT_BYTES`]; appended to the system message as
    /// a numbered list.
    pub principles: Vec<String>,
}

impl PersonaCodex {
    /// The full system message: prompt, then principles as a numbered list.
    pub fn system_message(&self) -> String {
        let mut s = self.system_prompt.trim().to_string();
        if !self.principles.is_empty() {
            s.push_str("\n\nYour principles:");
            for (i, p) in self.principles.iter().enumerate() {
                s.push_str(&format!("\n{}. {}", i + 1, p));
            }
        }
        s
    }
}

impl Codex {
    /// Parses and validates codex text.
    pub fn parse(text: &str) -> Result<Codex, CodexError> {
        let c: Codex =
            toml_edit::de::from_str(text).map_err(|e| CodexError::Invalid(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads, parses and validates a codex file.
    pub fn load(path: &Path) -> Result<Codex, CodexError> {
        let text = std::fs::read_to_string(path).map_err(|e| CodexError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Codex::parse(&text)
    }

    /// Checks the schema rules serde cannot express.
    pub fn validate(&self) -> Result<(), CodexError> {
        if self.version != 1 {
            return Err(CodexError::Invalid(format!(
                "unsupported codex version {}",
                self.version
            )));
        }
        for name in crate::PERSONAS {
            let p = self
                .personas
                .get(*name)
                .ok_or_else(|| CodexError::Invalid(format!("persona {name} is missing")))?;
            if p.role.trim().is_empty() || p.system_prompt.trim().is_empty() {
                return Err(CodexError::Invalid(format!(
                    "persona {name}: role and system_prompt must not be empty"
                )));
            }
            if p.system_prompt.len() > MAX_TEXT_BYTES || p.role.len() > MAX_TEXT_BYTES {
                return Err(CodexError::Invalid(format!(
                    "persona {name}: text longer than {MAX_TEXT_BYTES} bytes"
                )));
            }
            if p.principles
                .iter()
                .any(|x| x.trim().is_empty() || x.len() > MAX_TEXT_BYTES)
            {
                return Err(CodexError::Invalid(format!(
                    "persona {name}: principles must be non-empty and at most {MAX_TEXT_BYTES} bytes"
                )));
            }
        }
        if let Some(extra) = self
            .personas
            .keys()
            .find(|k| !crate::PERSONAS.contains(&k.as_str()))
        {
            return Err(CodexError::Invalid(format!("unknown persona {extra}")));
        }
        Ok(())
    }

    /// One persona's entry by its case-sensitive name; `None` for a name not in the codex.
    pub fn persona(&self, name: &str) -> Option<&PersonaCodex> {
        self.personas.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/codex.toml"))
            .unwrap()
    }

    #[test]
    fn shipped_codex_is_valid() {
        let c = Codex::parse(&shipped()).unwrap();
        assert_eq!(c.personas.len(), 4);
        let m = c.persona("BRICK").unwrap().system_message();
        assert!(m.starts_with("You are BRICK"));
        assert!(m.contains("1. Decompose before you decide."));
    }

    #[test]
    fn missing_persona_or_unknown_field_is_refused() {
        let t = shipped().replace("[personas.ROBIN]", "[personas.ROBYN]");
        assert!(Codex::parse(&t).is_err());
        let t = shipped().replace("version = 1", "version = 1\nmood = \"x\"");
        assert!(Codex::parse(&t).unwrap_err().to_string().contains("mood"));
    }
}
