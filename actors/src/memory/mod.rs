//! The memory organ: hierarchical long-term memory on an embedded LanceDB table ("the Sidekick's
//! Scrapbook"). Finished tasks become detail rows; a background consolidation groups unparented details (by
//! task, then by similarity) under persona-written summary rows; retrieval finds the relevant summaries
//! first and then only their details, by a prefiltered vector query, plus recent unparented details so
//! nothing new is invisible. IVF-PQ and a BTree on `parent_id` are built once the table is large enough.

mod actor;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::ActorRef;
use serde::{Deserialize, Serialize};

pub use actor::{MemoryActor, MemoryArgs, MemoryMsg, MEMORY_NAME};
pub use store::Hit;

use crate::orchestrator::{MemoryHook, TaskState};

/// Why a memory operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum MemError {
    /// LanceDB failed (the actor restarts and reopens the table).
    #[error("memory store error: {0}")]
    Store(String),
    /// Embedding failed.
    #[error("embedding failed: {0}")]
    Embed(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The memory organ is not running.
    #[error("memory is unavailable: {0}")]
    Unavailable(String),
}

/// One thing to remember.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestItem {
    /// Text to store (chunked).
    pub text: String,
    /// Persona that wrote it.
    #[serde(default)]
    pub persona: Option<String>,
    /// Task it came from.
    #[serde(default)]
    pub task_id: Option<String>,
}

/// The answer to a two-stage search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SearchResult {
    /// Stage 1: the most relevant summaries.
    pub summaries: Vec<Hit>,
    /// Stage 2: details of those summaries only (prefiltered by `parent_id IN (...)`).
    pub details: Vec<Hit>,
    /// Recent details not yet consolidated.
    pub recent: Vec<Hit>,
    /// The stage-2 filter used.
    pub filter: String,
    /// The query plan of stage 2, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Whether the vector index served the query (else exact search).
    pub indexed: bool,
}

/// What a consolidation pass did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ConsolidateReport {
    /// Summaries written.
    pub summaries: usize,
    /// Details given a parent.
    pub details: usize,
}

/// Table statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MemStats {
    /// All rows.
    pub rows: u64,
    /// Summary rows.
    pub summaries: u64,
    /// Detail rows.
    pub details: u64,
    /// Details without a summary yet.
    pub unparented: u64,
    /// Embedding width.
    pub dim: usize,
    /// Index state.
    pub index: store::IndexState,
    /// Whether an index build is running.
    pub indexing: bool,
}

/// Splits text into chunks of at most `max` bytes, at whitespace where possible.
pub fn chunk(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        if cur.len() + word.len() > max && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur).trim().to_string());
        }
        if word.len() > max {
            // A single overlong "word": cut it on char boundaries.
            let mut rest = word;
            while rest.len() > max {
                let cut = crate::protocol::truncate(rest, max);
                let cut = if cut.is_empty() {
                    &rest[..rest.chars().next().map(char::len_utf8).unwrap_or(1)]
                } else {
                    cut
                };
                out.push(cut.to_string());
                rest = &rest[cut.len()..];
            }
            cur.push_str(rest);
        } else {
            cur.push_str(word);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The memory organ as the cognition graph sees it: calls the `memory` actor by name, so it keeps working
/// across restarts of that actor, and retries ingest while it restarts.
pub struct MemoryLink {
    /// Attempts per ingest.
    pub retries: u32,
    /// Pause between attempts.
    pub backoff: Duration,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Minimum similarity for a memory to count as relevant.
    pub min_relevance: f32,
}

fn actor() -> Result<ActorRef<MemoryMsg>, MemError> {
    ractor::registry::where_is(MEMORY_NAME)
        .map(Into::into)
        .ok_or_else(|| MemError::Unavailable("the memory actor is restarting".into()))
}

/// Calls the memory actor.
pub async fn call<T: Send + 'static>(
    build: impl FnOnce(ractor::RpcReplyPort<Result<T, MemError>>) -> MemoryMsg,
    timeout: Duration,
) -> Result<T, MemError> {
    match actor()?.call(build, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(r)) => r,
        Ok(ractor::rpc::CallResult::Timeout) => Err(MemError::Unavailable(
            "memory did not answer in time".into(),
        )),
        _ => Err(MemError::Unavailable(
            "the memory actor stopped while answering".into(),
        )),
    }
}

#[async_trait]
impl MemoryHook for MemoryLink {
    async fn retrieve(&self, query: &str) -> Result<Vec<String>, String> {
        let q = query.to_string();
        let r = call(
            |reply| MemoryMsg::Search {
                query: q,
                k: None,
                explain: false,
                reply,
            },
            self.timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut notes = Vec::new();
        for s in r.summaries.iter().filter(|h| h.score >= self.min_relevance) {
            notes.push(format!(
                "[summary {} · similarity {:.2}] {}",
                s.id, s.score, s.text
            ));
        }
        for d in r
            .details
            .iter()
            .chain(&r.recent)
            .filter(|h| h.score >= self.min_relevance)
        {
            let task = d.task_id.as_deref().unwrap_or("-");
            notes.push(format!(
                "[memory of task {task} · similarity {:.2}] {}",
                d.score, d.text
            ));
        }
        Ok(notes)
    }

    async fn ingest(&self, task: &TaskState) -> Result<(), String> {
        let text = format!(
            "Q: {}\nA: {}",
            task.text,
            task.result.as_deref().unwrap_or_default()
        );
        let item = IngestItem {
            text,
            persona: Some("ALFRED".into()),
            task_id: Some(task.id.clone()),
        };
        let mut last = String::new();
        for attempt in 0..self.retries.max(1) {
            let items = vec![item.clone()];
            match call(|reply| MemoryMsg::Ingest(items, reply), self.timeout).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(self.backoff * (attempt + 1)).await;
        }
        Err(last)
    }
}

/// A link for the graph.
pub fn link(s: &crate::settings::MemorySettings) -> Arc<MemoryLink> {
    Arc::new(MemoryLink {
        retries: s.ingest_retries,
        backoff: Duration::from_millis(s.ingest_backoff_ms),
        timeout: Duration::from_millis(s.call_timeout_ms),
        min_relevance: s.min_relevance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_limit_and_keep_all_words() {
        let text = "alpha beta gamma delta epsilon ".repeat(20);
        let parts = chunk(&text, 40);
        assert!(parts.iter().all(|p| p.len() <= 40), "{parts:?}");
        assert_eq!(
            parts.join(" ").split_whitespace().count(),
            text.split_whitespace().count()
        );
        assert_eq!(chunk("short", 40), vec!["short"]);
        let long = "x".repeat(100);
        assert!(chunk(&long, 30).iter().all(|p| p.len() <= 30));
        assert!(chunk("   ", 10).is_empty());
    }
}
