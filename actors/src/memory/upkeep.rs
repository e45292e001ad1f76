//! Index upkeep: after every write the memory actor asks for this job, which compacts small data files,
//! builds the IVF-PQ index (plus the `parent_id` BTree and the `kind` bitmap) once the table passes
//! `index_min_rows`, rebuilds it when the table has grown by `reindex_growth`, and otherwise folds new rows
//! into the existing index. Queries keep working on the previous table version meanwhile.
//!
//! Why upkeep coalesces requests: writes come in bursts, and each asks for upkeep. Running one job per
//! write would build the same index several times at once; dropping requests while a job runs would leave
//! the last write of a burst unlooked-at (unindexed rows, uncompacted fragments) until some later write.
//! `job::Coalesce` gives both: at most one runner, and a request made while it runs gets exactly one more run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::ActorRef;

use super::ctx::{escalate, Ctx, Store};
use super::messages::MemoryMsg;
use super::store;
use super::MemError;
use crate::events::Event;

/// Index upkeep after writes: build IVF-PQ + BTree once past the threshold, rebuild when the table has grown
/// by `reindex_growth`, otherwise fold new rows into the existing index. Runs as a job; queries keep working
/// on the previous version meanwhile. A write that asks while upkeep runs is not dropped: upkeep runs once
/// more afterwards, so the last write of a burst is always looked at.
pub(super) async fn maintain(ctx: Arc<Ctx>, store: Arc<Store>, me: ActorRef<MemoryMsg>) {
    loop {
        ctx.indexing.begin();
        let r = upkeep(&ctx, &store).await;
        if let Err(e) = r {
            ctx.indexing.abandon();
            tracing::error!(event = "memory.index_failed", error = %e, "index upkeep failed");
            let _ = escalate::<()>(&me, Err(e));
            return;
        }
        if !ctx.indexing.finish() {
            return;
        }
    }
}

async fn upkeep(ctx: &Ctx, store: &Store) -> Result<(), MemError> {
    let s = ctx.settings();
    let fragments = store::fragment_count(&store.table).await?;
    if fragments >= s.compact_min_fragments {
        let started = std::time::Instant::now();
        let compacted = store::compact(&store.table).await;
        // Compaction rewrote the fragments (their row ids with them): the families move to the new files.
        store.refresh_families(ctx.family_bytes()).await;
        compacted?;
        tracing::info!(
            event = "memory.compacted",
            fragments,
            ms = started.elapsed().as_millis() as u64,
            "merged small data files"
        );
    }
    let rows = store::count(&store.table, None).await?;
    if rows < s.index_min_rows {
        return Ok(());
    }
    let last = ctx.rows_at_last_build.load(Ordering::SeqCst);
    if last == 0 || rows as f64 >= last as f64 * s.reindex_growth {
        let (parts, subs) =
            store::ivf_pq_shape(rows, store.dim, s.index_partitions, s.index_sub_vectors);
        let started = std::time::Instant::now();
        tracing::info!(
            event = "memory.index_build",
            rows,
            partitions = parts,
            sub_vectors = subs,
            "building IVF-PQ index"
        );
        store::build_indexes(&store.table, parts, subs).await?;
        ctx.rows_at_last_build.store(rows, Ordering::SeqCst);
        tracing::info!(
            event = "memory.index_built",
            rows,
            ms = started.elapsed().as_millis() as u64,
            "IVF-PQ index ready"
        );
        ctx.args.hub.publish(Event::MemoryUpdated {
            what: format!(
                "IVF-PQ index built over {rows} rows ({parts} partitions, {subs} sub-vectors)"
            ),
            rows,
        });
    } else {
        let st = store::index_state(&store.table).await?;
        if st.vector_unindexed_rows >= s.optimize_min_unindexed {
            store::optimize_indexes(&store.table).await?;
        }
    }
    Ok(())
}
