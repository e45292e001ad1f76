//! Index primitives of the memory table: the IVF-PQ vector index, the `parent_id` BTree and the `kind`
//! bitmap (creation, their state, folding new rows in) and fragment compaction. Two-stage retrieval needs
//! all three indexes to stay fast at a million rows (stage 1 prefilters on `kind`, stage 2 finds a few
//! summaries' children through `parent_id`), and every write adds a data fragment, so the memory actor's
//! upkeep job (`memory/upkeep.rs`) calls these after writes; when and how often is decided there, not here.
//! The IVF-PQ geometry is derived from the row count and width unless settings fix it.

use lancedb::index::scalar::{BTreeIndexBuilder, BitmapIndexBuilder};
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::index::Index;
use lancedb::table::OptimizeAction;
use lancedb::{DistanceType, Table};
use serde::{Deserialize, Serialize};

use super::store_err;
use crate::memory::MemError;

/// Name of the vector index.
pub const VECTOR_INDEX: &str = "vector_idx";
/// Name of the parent_id index.
pub const PARENT_INDEX: &str = "parent_id_idx";
/// Name of the kind (summary/detail) index.
pub const KIND_INDEX: &str = "kind_idx";

/// Index state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IndexState {
    /// Rows covered by the vector index (0 = none or untrained).
    pub vector_indexed_rows: u64,
    /// Rows not yet in the vector index.
    pub vector_unindexed_rows: u64,
    /// Whether the parent_id BTree exists.
    pub parent_index: bool,
}

/// Reads the index state.
pub async fn index_state(table: &Table) -> Result<IndexState, MemError> {
    let mut s = IndexState::default();
    for cfg in table.list_indices().await.map_err(store_err)? {
        if cfg.name == VECTOR_INDEX {
            if let Some(st) = table.index_stats(VECTOR_INDEX).await.map_err(store_err)? {
                s.vector_indexed_rows = st.num_indexed_rows as u64;
                s.vector_unindexed_rows = st.num_unindexed_rows as u64;
            }
        } else if cfg.name == PARENT_INDEX {
            s.parent_index = true;
        }
    }
    Ok(s)
}

/// IVF-PQ geometry derived from the row count and dimension (a setting of 0 means "derive").
pub fn ivf_pq_shape(rows: u64, dim: usize, partitions: u32, sub_vectors: u32) -> (u32, u32) {
    let parts = if partitions > 0 {
        partitions
    } else {
        // ~sqrt(n) partitions, at least 256 rows each so every centroid trains on real data.
        ((rows as f64).sqrt() as u32).clamp(1, (rows / 256).max(1) as u32)
    };
    let subs = if sub_vectors > 0 {
        sub_vectors
    } else {
        // 16 dims per sub-vector when it divides evenly (memory-frugal codes), else 8, else 1 per dim group.
        [16usize, 8, 4, 2, 1]
            .iter()
            .find(|d| dim.is_multiple_of(**d))
            .map(|d| (dim / d) as u32)
            .unwrap_or(1)
    };
    (parts, subs)
}

/// (Re)builds the IVF-PQ vector index, the parent_id BTree and the kind bitmap.
pub async fn build_indexes(
    table: &Table,
    partitions: u32,
    sub_vectors: u32,
) -> Result<(), MemError> {
    let ivf_pq = IvfPqIndexBuilder::default()
        .distance_type(DistanceType::Cosine)
        .num_partitions(partitions)
        .num_sub_vectors(sub_vectors);
    // Stage 1 and the unconsolidated-details query prefilter on `kind`; without an index that filter scans
    // the whole column.
    let indexes = [
        ("vector", VECTOR_INDEX, Index::IvfPq(ivf_pq)),
        (
            "parent_id",
            PARENT_INDEX,
            Index::BTree(BTreeIndexBuilder::default()),
        ),
        (
            "kind",
            KIND_INDEX,
            Index::Bitmap(BitmapIndexBuilder::default()),
        ),
    ];
    for (column, name, index) in indexes {
        table
            .create_index(&[column], index)
            .name(name.to_string())
            .replace(true)
            .execute()
            .await
            .map_err(store_err)?;
    }
    Ok(())
}

/// How many data fragments the table has (each write adds one).
pub async fn fragment_count(table: &Table) -> Result<usize, MemError> {
    Ok(table
        .stats()
        .await
        .map_err(store_err)?
        .fragment_stats
        .num_fragments)
}

/// Merges small fragments into large ones (indexes are remapped, not rebuilt), then drops versions older
/// than LanceDB's default retention (7 days) so superseded files do not pile up. Compaction is upkeep: when
/// another write (a consolidation's re-parenting) commits first, Lance refuses the rewrite with a commit
/// conflict; the rewrite is skipped (logged) and the next write's upkeep compacts again.
pub async fn compact(table: &Table) -> Result<(), MemError> {
    let merged = table
        .optimize(OptimizeAction::Compact {
            options: Default::default(),
            remap_options: None,
        })
        .await;
    match merged {
        Ok(_) => {}
        Err(e) if lost_commit_race(&e) => {
            tracing::info!(event = "memory.compaction_deferred", error = %e, "another write committed first; compaction waits for the next upkeep");
            return Ok(());
        }
        Err(e) => return Err(store_err(e)),
    }
    match table
        .optimize(OptimizeAction::Prune {
            older_than: None,
            delete_unverified: None,
            error_if_tagged_old_versions: None,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if lost_commit_race(&e) => Ok(()),
        Err(e) => Err(store_err(e)),
    }
}

/// Whether Lance refused a commit because another one won (its "commit conflict" errors, retryable or not):
/// the table is fine, only this write's plan is stale.
fn lost_commit_race(e: &lancedb::Error) -> bool {
    matches!(e, lancedb::Error::Lance { source } if source.to_string().to_lowercase().contains("commit conflict"))
}

/// Folds new rows into the existing indexes (no retraining).
pub async fn optimize_indexes(table: &Table) -> Result<(), MemError> {
    table
        .optimize(OptimizeAction::Index(Default::default()))
        .await
        .map(|_| ())
        .map_err(store_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::store::{add, count, exact, open, NewRow};

    #[test]
    fn shape_derivation() {
        assert_eq!(ivf_pq_shape(1_000_000, 384, 0, 0), (1000, 24));
        assert_eq!(ivf_pq_shape(100_000, 384, 0, 0), (316, 24));
        assert_eq!(ivf_pq_shape(600, 64, 0, 0), (2, 4));
        assert_eq!(ivf_pq_shape(600, 64, 7, 8), (7, 8));
        assert_eq!(ivf_pq_shape(600, 576, 0, 0), (2, 36));
    }

    /// Detail row `i` of an 8-wide test table.
    fn detail(i: i64) -> NewRow {
        NewRow {
            id: format!("d{i}"),
            parent_id: None,
            kind: "detail",
            text: format!("row {i}"),
            vector: vec![i as f32 + 1.0; 8],
            persona: "BABS".into(),
            task_id: None,
            created_at: i,
        }
    }

    #[tokio::test]
    async fn compaction_merges_fragments_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let table = open(dir.path(), "t", 8).await.unwrap();
        for i in 0..12 {
            add(&table, &[detail(i)], 8).await.unwrap();
        }
        assert_eq!(fragment_count(&table).await.unwrap(), 12);
        compact(&table).await.unwrap();
        assert_eq!(fragment_count(&table).await.unwrap(), 1);
        assert_eq!(count(&table, None).await.unwrap(), 12);
        let hit = exact(&table, &[5.0; 8], None, 1).await.unwrap();
        assert_eq!(hit.len(), 1);
    }

    /// Found by the Motivator's bench: a consolidation's re-parenting (an Update) committed while index upkeep
    /// compacted from the version before, and the Rewrite's retryable conflict was taken for a broken store
    /// (memory answered `unavailable` until its reopen pause ended).
    #[tokio::test]
    async fn a_compaction_that_loses_the_race_to_an_update_is_deferred_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let upkeep = open(dir.path(), "t", 8).await.unwrap();
        for i in 0..6 {
            add(&upkeep, &[detail(i)], 8).await.unwrap();
        }
        // Another handle (the consolidation's view) re-parents every detail under a summary.
        let consolidate = open(dir.path(), "t", 8).await.unwrap();
        let details = crate::memory::store::scan(&consolidate, "kind = 'detail'", 100)
            .await
            .unwrap();
        let summary = NewRow {
            id: "s0".into(),
            parent_id: None,
            kind: "summary",
            text: "summary".into(),
            vector: vec![1.0; 8],
            persona: "BABS".into(),
            task_id: None,
            created_at: 99,
        };
        let moved = crate::memory::store::adopt(&consolidate, &summary, &details, 8)
            .await
            .unwrap();
        assert_eq!(moved, 6);
        // Upkeep compacts from the version before the update: it loses, and says so without failing.
        compact(&upkeep).await.unwrap();
        assert_eq!(count(&consolidate, None).await.unwrap(), 7);
        assert_eq!(
            count(&consolidate, Some("parent_id = 's0'")).await.unwrap(),
            6,
            "the update survived"
        );
    }
}
