//! What the memory actor shares with its jobs: the open table, the settings and backend they read, the
//! flags that keep consolidation and index upkeep single, and how a job reports a broken store.

use std::sync::atomic::{AtomicBool, AtomicU64};

use lancedb::Table;
use ractor::ActorRef;

use super::messages::{MemoryArgs, MemoryMsg};
use super::store::SearchKnobs;
use super::{MemError, SearchResult};
use crate::job::Coalesce;
use crate::settings::MemorySettings;

/// Details not yet under a summary.
pub(super) const UNPARENTED: &str = "kind = 'detail' AND parent_id IS NULL";

/// An open table and its embedding width.
pub(super) struct Store {
    pub(super) table: Table,
    pub(super) dim: usize,
}

/// Shared between the actor and its background operations.
pub(super) struct Ctx {
    pub(super) args: MemoryArgs,
    pub(super) consolidating: AtomicBool,
    pub(super) indexing: Coalesce,
    pub(super) rows_at_last_build: AtomicU64,
}

impl Ctx {
    pub(super) fn settings(&self) -> MemorySettings {
        self.args.settings.load().memory.clone()
    }

    fn embed_model(&self) -> String {
        self.args.settings.load().llm.embed_model.clone()
    }

    pub(super) async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemError> {
        self.args
            .backend
            .embed(&self.embed_model(), texts)
            .await
            .map_err(|e| MemError::Embed(e.to_string()))
    }

    /// Publishes `knowledge.gap` when `r` holds nothing at or above `memory.min_relevance`.
    pub(super) fn report_gap(&self, query: &str, r: &SearchResult) {
        let hits = r.summaries.iter().chain(&r.details).chain(&r.recent);
        let best = hits
            .map(|h| f64::from(h.score))
            .fold(None, |b: Option<f64>, s| Some(b.map_or(s, |b| b.max(s))));
        if best.is_some_and(|b| b >= f64::from(self.settings().min_relevance)) {
            return;
        }
        self.args.hub.publish(crate::events::Event::KnowledgeGap {
            task: None,
            query: batos_protocol::truncate(query, batos_protocol::EVENT_TEXT_BYTES).to_string(),
            best,
        });
    }

    pub(super) fn knobs(&self) -> SearchKnobs {
        let s = self.settings();
        SearchKnobs {
            nprobes: s.nprobes,
            refine_factor: s.refine_factor,
        }
    }
}

pub(super) fn now_micros() -> i64 {
    (crate::events::unix_now() * 1e6) as i64
}

/// Reports a store failure to the actor (which fails and is restarted) and passes the error on.
pub(super) fn escalate<T>(me: &ActorRef<MemoryMsg>, r: Result<T, MemError>) -> Result<T, MemError> {
    if let Err(MemError::Store(e)) = &r {
        let _ = me.cast(MemoryMsg::StoreFailed(e.clone()));
    }
    r
}
