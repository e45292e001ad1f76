//! What the memory actor shares with its jobs: the open table, the settings and backend they read, the
//! flags that keep consolidation and index upkeep single, and how a job reports a broken store.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use lancedb::Table;
use ractor::ActorRef;

use super::messages::{MemoryArgs, MemoryMsg};
use super::store::{Families, NewRow, SearchKnobs, SummaryTier};
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
    /// Every detail's row id by parent over a pinned snapshot, for stage 2 and the recent details, or `None`
    /// (off, outgrown, or a refresh failed: both reads go through LanceDB's planner). Searches read it without
    /// a lock; each writer refreshes it after its commit ([`Store::refresh_families`]).
    pub(super) families: ArcSwapOption<Families>,
    /// One refresh at a time, so a newer version is never replaced by an older one.
    pub(super) refreshing: tokio::sync::Mutex<()>,
    /// Set when the details outgrew `memory.family_map_mib`: not read again until the table is reopened.
    pub(super) families_outgrown: AtomicBool,
}

impl Store {
    /// An open table with its tier and its families (`None`: off, outgrown — `outgrown` says which — or not
    /// readable at open, when the first write's refresh tries again).
    pub(super) fn new(
        table: Table,
        dim: usize,
        tier: Option<SummaryTier>,
        families: Option<Families>,
        outgrown: bool,
    ) -> Self {
        Self {
            table,
            dim,
            tier: ArcSwapOption::new(tier.map(Arc::new)),
            families: ArcSwapOption::new(families.map(Arc::new)),
            refreshing: tokio::sync::Mutex::new(()),
            families_outgrown: AtomicBool::new(outgrown),
        }
    }

    /// Moves the families to the table's newest version after a write (read again whole when there were
    /// none, unless they outgrew `max_bytes`). A failed refresh drops them, with a warning, rather than leave
    /// searches on a version that misses the write; the next write's refresh reads them again.
    pub(super) async fn refresh_families(&self, max_bytes: u64) {
        let _one = self.refreshing.lock().await;
        if self
            .families_outgrown
            .load(std::sync::atomic::Ordering::SeqCst)
            || max_bytes == 0
        {
            self.families.store(None);
            return;
        }
        let next = match self.families.load_full() {
            Some(cur) if cur.is_current(&self.table).await => return,
            Some(cur) => cur.refresh(&self.table).await,
            None => Families::load(&self.table, max_bytes).await,
        };
        match next {
            Ok(Some(f)) => self.families.store(Some(Arc::new(f))),
            Ok(None) => {
                self.families.store(None);
                self.families_outgrown
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(
                    event = "memory.families_dropped",
                    max_bytes,
                    "details outgrew memory.family_map_mib: stage 2 and the recent details go through the planner until the table is reopened"
                );
            }
            Err(e) => {
                self.families.store(None);
                tracing::warn!(event = "memory.families_refresh_failed", error = %e, "families dropped; the next write reads them again");
            }
        }
    }

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

    /// `memory.family_map_mib` in bytes.
    pub(super) fn family_bytes(&self) -> u64 {
        self.settings().family_map_mib.saturating_mul(1 << 20)
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
        let s = Store::new(table, 4, Some(SummaryTier::new(4, 32)), None, false);
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
