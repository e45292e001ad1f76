//! Families: every detail's row id, grouped under its summary (the unparented ones apart), over a pinned
//! snapshot of the table — so stage 2 of a search and the recent details are read by row id instead of
//! planned as filtered queries.
//!
//! Both reads already know their candidates by a key: stage 2 wants the children of the `k_summaries`
//! summaries stage 1 chose, the recent part the details no summary covers yet. Through LanceDB each is a
//! filtered exact query (`parent_id IN (…)`, `kind = 'detail' AND parent_id IS NULL`): a SQL filter parsed,
//! a DataFusion plan built and optimised, the scalar index searched, the rows read, a sort — a few hundred
//! rows of arithmetic behind a large fixed cost, and the daemon `scripts/run.sh` builds runs that planning
//! at opt-level 0 (issue 31: 8.7 ms p50 there at 100k rows against 1.8 ms in release). Here the candidates'
//! row ids are looked up, their rows taken from the snapshot by id (lance's take, no planner), and scored
//! with `batos_kernels`' dot products: the same rows, the same exact cosine (BENCHMARKS.md, memory).
//!
//! Invariants:
//! - The map is exactly the snapshot's details: [`Families::load`] reads every live row of the snapshot, and
//!   [`Families::refresh`] moves to the table's newest version by dropping the rows of every fragment that
//!   changed or went (a merge-insert's deletions, a compaction) and reading the fragments that are new or
//!   changed — so a search never mixes two versions. Row ids are the snapshot's own: without stable row ids
//!   (how `store::open` makes tables) a row id is its address, fragment id in the high 32 bits.
//! - Searches read whatever map is current; a write's rows reach it when its writer refreshes (the memory
//!   actor after each ingest, before answering; consolidation after each pass; upkeep after compacting).
//!   Until then a search reads the previous version whole, which is consistent: a detail being adopted is
//!   still found, as recent. The old version's files stay readable: pruning keeps 7 days of versions.
//! - It holds at most `max_bytes` of row ids (8 bytes each): a larger table has no map, and both reads go
//!   through LanceDB's planner as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use futures::TryStreamExt;
use lance::dataset::ProjectionRequest;
use lance::table::format::Fragment;
use lance::Dataset;
use lancedb::Table;

use batos_kernels::vector::{dot, dots};

use super::{hits, Hit};
use crate::memory::MemError;

/// The columns a hit is built from, and the vector it is scored on.
const TAKEN: &[&str] = &[
    "id",
    "parent_id",
    "kind",
    "text",
    "task_id",
    "persona",
    "vector",
];

fn lance_err(e: lance::Error) -> MemError {
    MemError::Store(e.to_string())
}

/// Every detail's row id by parent over one snapshot; see the module essay.
#[derive(Debug, Clone)]
pub struct Families {
    snapshot: Arc<Dataset>,
    /// Summary id → its children's row ids.
    children: HashMap<String, Vec<u64>>,
    /// Details without a parent.
    unparented: Vec<u64>,
    /// Detail row ids held (children and unparented).
    rows: usize,
    max_rows: usize,
}

impl Families {
    /// Reads every detail of `table`'s current version, or `None` when they are more than `max_bytes` of row
    /// ids hold (or `max_bytes` is 0: the map is off).
    pub async fn load(table: &Table, max_bytes: u64) -> Result<Option<Self>, MemError> {
        let max_rows = usize::try_from(max_bytes / 8).unwrap_or(usize::MAX);
        if max_rows == 0 {
            return Ok(None);
        }
        let snapshot = snapshot(table).await?;
        let mut f = Self {
            snapshot,
            children: HashMap::new(),
            unparented: Vec::new(),
            rows: 0,
            max_rows,
        };
        let all = f.snapshot.fragments().as_ref().clone();
        f.read(all).await?;
        Ok((f.rows <= f.max_rows).then_some(f))
    }

    /// The map for `table`'s newest version: this one's rows of the fragments that did not change, and the
    /// changed and new fragments read again. `None` when the details outgrew `max_bytes`.
    pub async fn refresh(&self, table: &Table) -> Result<Option<Self>, MemError> {
        let now = snapshot(table).await?;
        if now.manifest.version == self.snapshot.manifest.version {
            return Ok(Some(self.clone()));
        }
        if now.manifest.uses_stable_row_ids() {
            // Row ids no longer name their fragment: read it all.
            let mut f = Self {
                snapshot: now,
                children: HashMap::new(),
                unparented: Vec::new(),
                rows: 0,
                max_rows: self.max_rows,
            };
            let all = f.snapshot.fragments().as_ref().clone();
            f.read(all).await?;
            return Ok((f.rows <= f.max_rows).then_some(f));
        }
        let old: &[Fragment] = self.snapshot.fragments();
        let new: &[Fragment] = now.fragments();
        let kept: HashSet<u64> = old
            .iter()
            .filter(|f| new.iter().any(|n| n == *f))
            .map(|f| f.id)
            .collect();
        let fresh: Vec<Fragment> = new
            .iter()
            .filter(|n| !kept.contains(&n.id))
            .cloned()
            .collect();
        let keep = |id: &u64| kept.contains(&(id >> 32));
        let mut children = HashMap::with_capacity(self.children.len());
        for (parent, ids) in &self.children {
            let ids: Vec<u64> = ids.iter().copied().filter(keep).collect();
            if !ids.is_empty() {
                children.insert(parent.clone(), ids);
            }
        }
        let unparented: Vec<u64> = self.unparented.iter().copied().filter(keep).collect();
        let rows = children.values().map(Vec::len).sum::<usize>() + unparented.len();
        let mut f = Self {
            snapshot: now,
            children,
            unparented,
            rows,
            max_rows: self.max_rows,
        };
        if !fresh.is_empty() {
            f.read(fresh).await?;
        }
        Ok((f.rows <= f.max_rows).then_some(f))
    }

    /// Adds the details of `fragments` (of this snapshot) to the map.
    async fn read(&mut self, fragments: Vec<Fragment>) -> Result<(), MemError> {
        if fragments.is_empty() {
            return Ok(());
        }
        let mut scan = self.snapshot.scan();
        scan.with_fragments(fragments)
            .project(&["parent_id", "kind"])
            .map_err(lance_err)?
            .with_row_id();
        let batches: Vec<RecordBatch> = scan
            .try_into_stream()
            .await
            .map_err(lance_err)?
            .try_collect()
            .await
            .map_err(lance_err)?;
        let missing = |c: &str| MemError::Store(format!("no {c} column"));
        for b in &batches {
            let parent = b
                .column_by_name("parent_id")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| missing("parent_id"))?;
            let kind = b
                .column_by_name("kind")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| missing("kind"))?;
            let id = b
                .column_by_name("_rowid")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| missing("_rowid"))?;
            for i in 0..b.num_rows() {
                if kind.is_null(i) || kind.value(i) != "detail" {
                    continue;
                }
                if parent.is_null(i) {
                    self.unparented.push(id.value(i));
                } else {
                    self.children
                        .entry(parent.value(i).to_string())
                        .or_default()
                        .push(id.value(i));
                }
                self.rows += 1;
                if self.rows > self.max_rows {
                    // Too many to hold: the caller drops the map; no point reading on.
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Detail rows held.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no detail is held.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The table version the map describes.
    pub fn version(&self) -> u64 {
        self.snapshot.manifest.version
    }

    /// Whether `table` is still at the version the map describes (false when it cannot tell: a refresh then
    /// finds out).
    pub async fn is_current(&self, table: &Table) -> bool {
        snapshot(table)
            .await
            .is_ok_and(|now| now.manifest.version == self.snapshot.manifest.version)
    }

    /// The `k` details nearest to `q` by cosine among the children of `parents` (or, with `None`, among the
    /// unparented details), nearest first, `score` = cosine similarity as LanceDB's `1 - cosine distance`.
    pub async fn nearest(
        &self,
        q: &[f32],
        parents: Option<&[&str]>,
        k: usize,
    ) -> Result<Vec<Hit>, MemError> {
        let ids: Vec<u64> = match parents {
            Some(ps) => ps
                .iter()
                .filter_map(|p| self.children.get(*p))
                .flatten()
                .copied()
                .collect(),
            None => self.unparented.clone(),
        };
        if ids.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let projection = ProjectionRequest::from_columns(TAKEN, self.snapshot.schema());
        let b = self
            .snapshot
            .take_rows(&ids, projection)
            .await
            .map_err(lance_err)?;
        let vectors = b
            .column_by_name("vector")
            .and_then(|c| c.as_fixed_size_list_opt())
            .ok_or_else(|| MemError::Store("no vector column".into()))?;
        let dim = usize::try_from(vectors.value_length()).unwrap_or(0);
        if dim != q.len() || vectors.values().null_count() > 0 {
            return Err(MemError::Store(format!(
                "taken vectors are {dim} wide (or hold nulls); the query is {}",
                q.len()
            )));
        }
        let flat = vectors
            .values()
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| MemError::Store("vectors are not f32".into()))?
            .values();
        // A fixed-size list's values may start past an offset when the batch is a slice.
        let start = vectors.offset() * dim;
        let flat = flat
            .get(start..start + b.num_rows() * dim)
            .ok_or_else(|| MemError::Store("taken vectors shorter than their rows".into()))?;
        let found = hits(std::slice::from_ref(&b));
        if found.len() != b.num_rows() {
            return Err(MemError::Store("taken rows lack a hit's columns".into()));
        }
        let qn = dot(q, q).sqrt();
        let mut scored: Vec<(f32, Hit)> = dots(flat, dim, q)
            .into_iter()
            .zip(flat.chunks_exact(dim.max(1)))
            .map(|(d, row)| {
                let n = dot(row, row).sqrt() * qn;
                // A zero vector has no direction: it scores 0 against everything, as in the summary tier.
                if n > 0.0 {
                    d / n
                } else {
                    0.0
                }
            })
            .zip(found)
            .map(|(s, mut h)| {
                h.score = s;
                (s, h)
            })
            .collect();
        let best = |a: &(f32, Hit), b: &(f32, Hit)| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id));
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, best);
            scored.truncate(k);
        }
        scored.sort_unstable_by(best);
        Ok(scored.into_iter().map(|(_, h)| h).collect())
    }
}

/// The `k` details nearest to `q` among the children of `parents` (`None`: the unparented details) read
/// through `families`, or by `planned` (the same rows through LanceDB's planner) when the take fails — the map
/// is a shortcut, never the only way to the rows.
pub async fn by_family<F, Fut>(
    families: &Families,
    q: &[f32],
    parents: Option<&[&str]>,
    k: usize,
    planned: F,
) -> Result<Vec<Hit>, MemError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Hit>, MemError>>,
{
    match families.nearest(q, parents, k).await {
        Ok(h) => Ok(h),
        Err(e) => {
            tracing::warn!(event = "memory.family_read_failed", error = %e, version = families.version(), "read by row id failed; the planned query answers");
            planned().await
        }
    }
}

/// The table's current version, pinned.
async fn snapshot(table: &Table) -> Result<Arc<Dataset>, MemError> {
    table
        .dataset()
        .ok_or_else(|| MemError::Store("memory table is not a local Lance table".into()))?
        .get()
        .await
        .map_err(super::store_err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::memory::store::{self, NewRow, Scanned};

    const UNPARENTED: &str = "kind = 'detail' AND parent_id IS NULL";

    fn id(n: u32) -> String {
        format!("{n:032x}")
    }

    /// A detail (or summary) whose vector turns with `n`, so every query has a distinct order.
    fn row(n: u32, kind: &'static str) -> NewRow {
        let a = n as f32 * 0.37;
        NewRow {
            id: id(n),
            parent_id: None,
            kind,
            text: format!("{kind} {n}"),
            vector: vec![a.cos(), a.sin(), 0.1 * (n % 7) as f32, 1.0],
            persona: "BABS".into(),
            task_id: Some(format!("t{n}")),
            created_at: i64::from(n),
        }
    }

    async fn scanned(table: &Table, ids: &[u32]) -> Vec<Scanned> {
        let list: Vec<String> = ids.iter().map(|n| format!("'{}'", id(*n))).collect();
        store::scan(table, &format!("id IN ({})", list.join(",")), 1000)
            .await
            .unwrap()
    }

    /// The families' answer is the planned exact query's: the same rows in the same order, the same
    /// scores (to float rounding), for the children of some summaries and for the unparented details.
    async fn same_as_planned(table: &Table, f: &Families, parents: &[u32]) {
        let names: Vec<String> = parents.iter().map(|n| id(*n)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let inlist: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let filter = format!("parent_id IN ({})", inlist.join(","));
        for (i, q) in [
            [1.0, 0.0, 0.0, 0.5],
            [0.0, 1.0, 0.3, 0.2],
            [-0.7, 0.2, 0.0, 1.0],
        ]
        .iter()
        .enumerate()
        {
            let children = if refs.is_empty() {
                assert!(f.nearest(q, Some(&refs), 5).await.unwrap().is_empty());
                (Vec::new(), Vec::new())
            } else {
                (
                    f.nearest(q, Some(&refs), 5).await.unwrap(),
                    store::exact(table, q, Some(&filter), 5).await.unwrap(),
                )
            };
            for (ours, planned) in [
                children,
                (
                    f.nearest(q, None, 5).await.unwrap(),
                    store::exact(table, q, Some(UNPARENTED), 5).await.unwrap(),
                ),
            ] {
                let ids = |h: &[Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
                assert_eq!(ids(&ours), ids(&planned), "query {i}");
                for (a, b) in ours.iter().zip(&planned) {
                    assert!((a.score - b.score).abs() < 1e-5, "{a:?} vs {b:?}");
                    assert_eq!(
                        (&a.parent_id, &a.kind, &a.text, &a.task_id, &a.persona),
                        (&b.parent_id, &b.kind, &b.text, &b.task_id, &b.persona)
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn the_families_answer_as_the_planned_query_through_appends_adoptions_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let table = store::open(dir.path(), "t", 4).await.unwrap();
        let details: Vec<NewRow> = (1..=20).map(|n| row(n, "detail")).collect();
        store::add(&table, &details, 4).await.unwrap();
        let first = Families::load(&table, 1 << 20).await.unwrap().unwrap();
        assert_eq!(first.len(), 20);
        same_as_planned(&table, &first, &[]).await;

        // A summary adopts eight details (a merge-insert: their old rows deleted, new rows appended).
        let adopted = scanned(&table, &[1, 2, 3, 4, 5, 6, 7, 8]).await;
        store::adopt(&table, &row(100, "summary"), &adopted, 4)
            .await
            .unwrap();
        let second = first.refresh(&table).await.unwrap().unwrap();
        assert!(second.version() > first.version());
        assert_eq!(second.len(), 20, "summaries are not details");
        same_as_planned(&table, &second, &[100]).await;
        // The earlier map still reads its own version whole: the eight are unparented there.
        assert_eq!(
            first
                .nearest(&[1.0, 0.0, 0.0, 0.0], None, 50)
                .await
                .unwrap()
                .len(),
            20
        );

        // An append (a new fragment only), a second summary, then compaction (every fragment rewritten).
        let more: Vec<NewRow> = (21..=25).map(|n| row(n, "detail")).collect();
        store::add(&table, &more, 4).await.unwrap();
        let third = second.refresh(&table).await.unwrap().unwrap();
        assert_eq!(third.len(), 25);
        same_as_planned(&table, &third, &[100]).await;
        let adopted = scanned(&table, &[9, 10, 21]).await;
        store::adopt(&table, &row(101, "summary"), &adopted, 4)
            .await
            .unwrap();
        store::compact(&table).await.unwrap();
        let fourth = third.refresh(&table).await.unwrap().unwrap();
        assert_eq!(fourth.len(), 25);
        same_as_planned(&table, &fourth, &[100, 101]).await;
        same_as_planned(&table, &fourth, &[101]).await;
        assert!(fourth.is_current(&table).await);
        assert!(!first.is_current(&table).await);
        // Read whole, the same version gives the same map.
        let whole = Families::load(&table, 1 << 20).await.unwrap().unwrap();
        assert_eq!(whole.version(), fourth.version());
        assert_eq!(whole.unparented.len(), fourth.unparented.len());
        let mut a: Vec<_> = whole
            .children
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        let mut b: Vec<_> = fourth
            .children
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn details_past_the_bound_leave_no_families_and_a_failed_read_falls_back_to_the_planner()
    {
        let dir = tempfile::tempdir().unwrap();
        let table = store::open(dir.path(), "t", 4).await.unwrap();
        let details: Vec<NewRow> = (1..=5).map(|n| row(n, "detail")).collect();
        store::add(&table, &details, 4).await.unwrap();
        assert!(
            Families::load(&table, 0).await.unwrap().is_none(),
            "0 is off"
        );
        let f = Families::load(&table, 5 * 8).await.unwrap().unwrap();
        assert_eq!(f.len(), 5);
        store::add(&table, &[row(6, "detail")], 4).await.unwrap();
        assert!(f.refresh(&table).await.unwrap().is_none(), "six do not fit");

        // A query of the wrong width cannot be scored from the taken rows: the planned query answers.
        let planned = vec![Hit {
            id: id(9),
            parent_id: None,
            kind: "detail".into(),
            text: "planned".into(),
            task_id: None,
            score: 0.5,
            persona: String::new(),
        }];
        let p = planned.clone();
        let got = store::by_family(&f, &[1.0, 0.0, 0.0], None, 3, || async move { Ok(p) })
            .await
            .unwrap();
        assert_eq!(got, planned);
        assert!(f.nearest(&[1.0, 0.0, 0.0], None, 3).await.is_err());
    }
}
