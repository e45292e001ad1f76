//! What the memory actor shares with its jobs: the open table, the settings and backend they read, the
//! flags that keep consolidation and index upkeep single, and how a job reports a broken store.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use lancedb::Table;
use ractor::ActorRef;

use super::messages::{MemoryArgs, MemoryMsg};
use super::store::{NewRow, SearchKnobs, SummaryTier};
use super::{MemError, SearchResult};
use crate::job::Coalesce;
use crate::settings::MemorySettings;

/// Details not yet under a summary.
pub(super) const UNPARENTED: &str = "kind = 'detail' AND parent_id IS NULL";

/// An open table, its embedding width and its summary tier.
pub(super) struct Store {
    pub(super) table: Table,
    pub(super) dim: usize,
    /// Every summary in memory for stage 1, or `None` (off, or more summaries than
    /// `memory.summary_tier_mib` holds: stage 1 uses the index). Searches read a snapshot without a lock;
    /// consolidation, the only writer of summaries, swaps in a copy with its new summaries after each commit.
    pub(super) tier: ArcSwapOption<SummaryTier>,
}

impl Store {
    /// Adds a summary just committed to the tier. A full tier is dropped (stage 1 goes back to the index)
    /// rather than left missing a summary a search should find.
    pub(super) fn remember_summary(&self, row: &NewRow) {
        let Some(cur) = self.tier.load_full() else {
            return;
        };
        let mut next = SummaryTier::clone(&cur);
        if next.insert_row(row) {
            self.tier.store(Some(Arc::new(next)));
        } else {
            self.tier.store(None);
            tracing::warn!(
                event = "memory.summary_tier_dropped",
                summaries = cur.len(),
                bytes = cur.bytes(),
                "summary tier full: stage 1 of a search goes through the index until the table is reopened"
            );
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::memory::store;

    fn summary(id: &str, x: f32) -> NewRow {
        NewRow {
            id: id.into(),
            parent_id: None,
            kind: "summary",
            text: format!("summary {id}"),
            vector: vec![x, 1.0, 0.0, 0.0],
            persona: "BABS".into(),
            task_id: None,
            created_at: 0,
        }
    }

    /// Searches keep the snapshot they loaded; a summary past the bound drops the tier (stage 1 goes back to
    /// the index, which sees every summary) instead of leaving it unfindable; no tier stays no tier.
    #[tokio::test]
    async fn new_summaries_join_the_tier_and_a_full_tier_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let table = store::open(dir.path(), "t", 4).await.unwrap();
        // Two summaries of four floats fit in 32 bytes.
        let tier = Some(Arc::new(SummaryTier::new(4, 32)));
        let s = Store {
            table,
            dim: 4,
            tier: ArcSwapOption::new(tier),
        };
        let before = s.tier.load_full().unwrap();
        s.remember_summary(&summary("a", 0.0));
        s.remember_summary(&summary("b", 5.0));
        assert!(
            before.is_empty(),
            "a search's snapshot does not change under it"
        );
        let now = s.tier.load_full().unwrap();
        assert_eq!(now.len(), 2);
        assert_eq!(now.nearest(&[1.0, 0.0, 0.0, 0.0], 1)[0].id, "b");
        s.remember_summary(&summary("c", 1.0));
        assert!(s.tier.load().is_none(), "full: dropped");
        s.remember_summary(&summary("d", 1.0));
        assert!(s.tier.load().is_none());
    }
}
