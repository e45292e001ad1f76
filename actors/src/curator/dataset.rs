//! The Curator's files: JSON lines, appended with one `write` and an fsync, and read back line by line.
//!
//! ```text
//! data_dir/curator/
//! ├── <PERSONA>/train.jsonl       accepted examples (chat format + lineage), one per line
//! ├── <PERSONA>/heldout.jsonl     the held-out split: never trained on
//! ├── <PERSONA>/decisions.jsonl   every decision with its reason (accepts too), the last one per key counts
//! ├── ratings.jsonl               human ratings, the last one per task counts
//! ├── triggers.json               per persona: training-set size at the last trigger, trigger count
//! └── inbox/<task>.json           finished tasks handed over and not yet fully decided
//! ```
//!
//! A kill -9 can at worst cut the last line of a file short (an append is one `write`, but nothing promises
//! the kernel finished it); [`read_lines`] drops such a torn tail and [`repair`] truncates it away before the
//! next append, so every file parses line by line after any crash. Rewrites (a human rating removing
//! examples) go through `fsutil::atomic_write`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::llm::ChatMessage;

/// Which set an accepted example belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Trained on.
    Train,
    /// Held out: the Forge's gate measures loss here and never trains on it.
    Heldout,
}

impl Split {
    /// `train` or `heldout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }
}

/// The judge's verdict on one exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeVerdict {
    /// Judging persona.
    pub persona: String,
    /// Its model.
    pub model: String,
    /// Its actor's generation.
    pub generation: u64,
    /// Additive rubric score, 0..=5.
    pub score: u8,
    /// The judge's reason, in its words (cut to 500 bytes).
    pub reason: String,
}

/// A human's rating of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rating {
    /// The task.
    pub task: String,
    /// 1..=5.
    pub score: u8,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Unix seconds.
    pub at: f64,
}

/// Where an example came from and why it was kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lineage {
    /// `task/step/index`: the exchange's identity (index: its place among the step's model calls).
    pub key: String,
    /// Task id.
    pub task: String,
    /// The Architect's request that started the task (with the answer, the text dedupe looks at).
    pub request: String,
    /// Step (1-based).
    pub step: u32,
    /// Node of the step.
    pub node: String,
    /// Persona that answered.
    pub persona: String,
    /// Model that answered.
    pub model: String,
    /// Actor generation that answered.
    pub generation: u64,
    /// SHA-256 of the normalised task text and answer: dedupe key and split key.
    pub hash: String,
    /// Which set.
    pub split: Split,
    /// The task's final dissonance.
    pub dissonance: Option<f64>,
    /// The judge's verdict; absent when a human rating admitted the example without it.
    pub judge: Option<JudgeVerdict>,
    /// The human rating in force when it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<Rating>,
    /// The checks it passed, in order.
    pub filters: Vec<String>,
    /// Unix seconds when it was kept.
    pub at: f64,
}

/// One line of `train.jsonl` / `heldout.jsonl`: the chat the trainer reads (system, prompt, answer) and its
/// lineage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    /// The conversation, ending with the persona's answer as the assistant message.
    pub messages: Vec<ChatMessage>,
    /// The tools the call offered (absent when none): the trainer renders them as serving did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::llm::ToolSpec>,
    /// Where it came from.
    pub lineage: Lineage,
}

impl Example {
    /// The persona's answer: the last message's text.
    pub fn answer(&self) -> &str {
        self.messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or_default()
    }

    /// The text dedupe looks at, as [`super::screen::Candidate::dedupe_text`] builds it.
    pub fn dedupe_text(&self) -> String {
        format!("{}\n{}", self.lineage.request, self.answer())
    }
}

/// One line of `decisions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    /// `task/step/index`.
    pub key: String,
    /// Task id.
    pub task: String,
    /// Step.
    pub step: u32,
    /// `accepted` or a rejection reason code.
    pub outcome: String,
    /// The split, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// The reason in words.
    pub detail: String,
    /// The judge's score, when it judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// Unix seconds.
    pub at: f64,
    /// For rejections a human rating may overturn (the judge's, the dissonance's): the example itself, so a
    /// later rating of 5 can admit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Example>,
}

/// Appends one JSON line with a single `write`, then fsyncs.
pub fn append_line<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Truncates a torn last line (no final newline) left by a crash mid-append; returns whether it did.
pub fn repair(path: &Path) -> io::Result<bool> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(false);
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    f.sync_all()?;
    Ok(true)
}

/// Every well-formed line of a JSONL file (a missing file is empty). Lines that do not parse (a torn tail,
/// a hand edit) are skipped and counted.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> io::Result<(Vec<T>, usize)> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Rewrites a JSONL file with `values`, atomically.
pub fn rewrite<T: Serialize>(path: &Path, values: &[T]) -> io::Result<()> {
    let mut bytes = Vec::new();
    for v in values {
        bytes.extend(serde_json::to_vec(v).map_err(io::Error::other)?);
        bytes.push(b'\n');
    }
    crate::fsutil::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_skipped_on_read_and_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        append_line(&p, &serde_json::json!({"a": 1})).unwrap();
        append_line(&p, &serde_json::json!({"a": 2})).unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"a\": 3, \"tor").unwrap();
        let (rows, bad): (Vec<serde_json::Value>, _) = read_lines(&p).unwrap();
        assert_eq!((rows.len(), bad), (2, 1));
        assert!(repair(&p).unwrap());
        append_line(&p, &serde_json::json!({"a": 4})).unwrap();
        let (rows, bad): (Vec<serde_json::Value>, _) = read_lines(&p).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(
            rows.iter()
                .map(|r| r["a"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert!(!repair(&p).unwrap());
    }
}
