//! The summary tier: every summary's unit vector (and its hit) held in memory, so stage 1 of a two-stage
//! query is an exact scan instead of an IVF-PQ query.
//!
//! Summaries are few beside details (one per consolidated group), and stage 1 asks for only `k_summaries`
//! of them. Through LanceDB that is a planned, prefiltered (`kind = 'summary'`) IVF-PQ query with a re-rank
//! read: 5.0 ms p50 at 1M rows on two cores, most of it fixed cost rather than arithmetic. In memory it is one
//! pass of dot products over contiguous floats — bound by memory bandwidth, 0.92 ms for 10,000 summaries of
//! 384 floats in the same run — and exact: no partition can hide the right summary and every score is the true
//! cosine, which is what `refine_factor` bought on the index path (BENCHMARKS.md, issue 19).
//!
//! Invariants: the tier holds exactly the table's summaries as of the last [`SummaryTier::load`] plus every
//! summary written since through [`super::adopt`] (the only path that writes summaries; the memory actor
//! inserts each one after its commit; between the commit and the insert, microseconds, a search may miss
//! that one summary). If `adopt` fails, the store is taken for broken and the actor reopens the table,
//! loading the tier again, so an uncertain commit cannot leave it behind for long. It never holds more than
//! `max_bytes` of vectors: a table with more summaries than that has no tier, and stage 1 goes through the
//! index as before.

use lancedb::Table;

// The scan's dot products are in the kernels crate (opt-level 3 in the dev profile too): stage 1 of every
// search scores every summary.
use batos_kernels::vector::{dot, dots};

use super::{count, scan, Hit, NewRow};
use crate::memory::MemError;

/// The rows the tier holds.
const SUMMARIES: &str = "kind = 'summary'";

/// Summaries and their unit vectors, row-major; see the module essay.
#[derive(Debug, Clone)]
pub struct SummaryTier {
    dim: usize,
    hits: Vec<Hit>,
    unit: Vec<f32>,
    max_rows: usize,
}

impl SummaryTier {
    /// An empty tier for vectors of width `dim` that may hold at most `max_bytes` of vectors.
    pub fn new(dim: usize, max_bytes: u64) -> Self {
        let per_row = (dim.max(1) * std::mem::size_of::<f32>()) as u64;
        Self {
            dim,
            hits: Vec::new(),
            unit: Vec::new(),
            // LanceDB takes the scan limit as an i64-sized count.
            max_rows: usize::try_from(max_bytes / per_row)
                .unwrap_or(usize::MAX)
                .min(i64::MAX as usize - 1),
        }
    }

    /// Reads every summary of `table` into a tier, or `None` when they would take more than `max_bytes` (or
    /// `max_bytes` is 0: the tier is off).
    pub async fn load(table: &Table, dim: usize, max_bytes: u64) -> Result<Option<Self>, MemError> {
        let mut tier = Self::new(dim, max_bytes);
        if tier.max_rows == 0 {
            return Ok(None);
        }
        // Counted first (the `kind` bitmap answers it) so a mind that outgrew the tier reads no vectors at
        // each open only to drop them.
        let n = count(table, Some(SUMMARIES)).await?;
        if usize::try_from(n).map_or(true, |n| n > tier.max_rows) {
            return Ok(None);
        }
        // One row past the bound still tells "too many" from "exactly full" if summaries came meanwhile.
        let rows = scan(table, SUMMARIES, tier.max_rows.saturating_add(1)).await?;
        for r in rows {
            if !tier.insert(r.hit, &r.vector) {
                return Ok(None);
            }
        }
        Ok(Some(tier))
    }

    /// Adds one summary (score ignored). False, with nothing added, when the tier is full or the vector is
    /// not `dim` wide.
    pub fn insert(&mut self, mut hit: Hit, vector: &[f32]) -> bool {
        if self.hits.len() >= self.max_rows || vector.len() != self.dim {
            return false;
        }
        let norm = dot(vector, vector).sqrt();
        // A zero vector has no direction: it scores 0 against everything.
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        self.unit.extend(vector.iter().map(|x| x * scale));
        hit.score = 0.0;
        self.hits.push(hit);
        true
    }

    /// [`Self::insert`] for a row as [`super::adopt`] writes it.
    pub fn insert_row(&mut self, row: &NewRow) -> bool {
        self.insert(
            Hit {
                id: row.id.clone(),
                parent_id: row.parent_id.clone(),
                kind: row.kind.to_string(),
                text: row.text.clone(),
                task_id: row.task_id.clone(),
                score: 0.0,
                persona: row.persona.clone(),
            },
            &row.vector,
        )
    }

    /// Summaries held.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether no summary is held.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Bytes of vectors held (what `max_bytes` bounds).
    pub fn bytes(&self) -> u64 {
        (self.unit.len() * std::mem::size_of::<f32>()) as u64
    }

    /// The `k` summaries nearest to `q` by cosine, nearest first, `score` = cosine similarity (as LanceDB's
    /// `1 - cosine distance`). Empty if `q` is not `dim` wide.
    pub fn nearest(&self, q: &[f32], k: usize) -> Vec<Hit> {
        if q.len() != self.dim || self.dim == 0 || k == 0 {
            return Vec::new();
        }
        let norm = dot(q, q).sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        let mut scored: Vec<(f32, usize)> = dots(&self.unit, self.dim, q)
            .into_iter()
            .enumerate()
            .map(|(i, d)| (d * scale, i))
            .collect();
        let best = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, best);
            scored.truncate(k);
        }
        scored.sort_unstable_by(best);
        scored
            .into_iter()
            .filter_map(|(s, i)| {
                let mut h = self.hits.get(i)?.clone();
                h.score = s;
                Some(h)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hit(id: &str) -> Hit {
        Hit {
            id: id.into(),
            parent_id: None,
            kind: "summary".into(),
            text: format!("summary {id}"),
            task_id: None,
            score: 0.0,
            persona: "BABS".into(),
        }
    }

    /// A deterministic pseudo-random vector (xorshift), not normalised.
    fn vector(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (n(a) * n(b))
    }

    #[test]
    fn nearest_is_the_exact_cosine_order_with_true_scores() {
        let dim = 37; // not a multiple of the lanes: the tail counts
        let mut tier = SummaryTier::new(dim, 1 << 20);
        let vs: Vec<Vec<f32>> = (0..500).map(|i| vector(i, dim)).collect();
        for (i, v) in vs.iter().enumerate() {
            assert!(tier.insert(hit(&format!("s{i}")), v));
        }
        for seed in 1000..1020 {
            let q = vector(seed, dim);
            let mut truth: Vec<(f32, usize)> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| (cosine(v, &q), i))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let got = tier.nearest(&q, 5);
            assert_eq!(got.len(), 5);
            for (h, (s, i)) in got.iter().zip(&truth) {
                assert_eq!(h.id, format!("s{i}"));
                assert!((h.score - s).abs() < 1e-4, "{} vs {s}", h.score);
                assert_eq!(h.text, format!("summary s{i}"));
            }
        }
        // Fewer summaries than asked: all of them, in order.
        let mut small = SummaryTier::new(dim, 1 << 20);
        small.insert(hit("a"), &vs[0]);
        small.insert(hit("b"), &vs[1]);
        let got = small.nearest(&vs[1], 10);
        assert_eq!(
            got.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!((got[0].score - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_byte_bound_and_the_width_are_enforced() {
        // Two rows of 4 floats fit in 32 bytes; the third does not.
        let mut tier = SummaryTier::new(4, 32);
        assert!(tier.insert(hit("a"), &[1.0, 0.0, 0.0, 0.0]));
        assert!(!tier.insert(hit("w"), &[1.0, 0.0, 0.0]), "wrong width");
        assert!(tier.insert(hit("b"), &[0.0, 2.0, 0.0, 0.0]));
        assert!(
            !tier.insert(hit("c"), &[0.0, 0.0, 1.0, 0.0]),
            "over the bound"
        );
        assert_eq!((tier.len(), tier.bytes()), (2, 32));
        // A zero vector scores 0; a zero or wrong-width query finds nothing it can rank.
        assert!(tier.nearest(&[1.0, 0.0], 1).is_empty());
        let mut z = SummaryTier::new(2, 64);
        z.insert(hit("z"), &[0.0, 0.0]);
        assert_eq!(z.nearest(&[1.0, 0.0], 1)[0].score, 0.0);
        assert!(SummaryTier::new(4, 0).nearest(&[1.0; 4], 1).is_empty());
    }

    /// What the tier loads from a real LanceDB table ranks and scores as LanceDB's exact cosine search over
    /// `kind = 'summary'` does (details are left out); a table with more summaries than the bound has no tier.
    #[tokio::test]
    async fn a_loaded_tier_agrees_with_lancedb_exact_search() {
        let dim = 16;
        let dir = tempfile::tempdir().unwrap();
        let table = super::super::open(dir.path(), "t", dim).await.unwrap();
        let rows: Vec<NewRow> = (0..60u64)
            .map(|i| NewRow {
                id: format!("r{i}"),
                parent_id: None,
                kind: if i % 3 == 0 { "summary" } else { "detail" },
                text: format!("row {i}"),
                vector: vector(i, dim),
                persona: "BABS".into(),
                task_id: Some("t".into()),
                created_at: 0,
            })
            .collect();
        super::super::add(&table, &rows, dim).await.unwrap();
        let tier = SummaryTier::load(&table, dim, 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tier.len(), 20);
        for seed in 500..510 {
            let q = vector(seed, dim);
            let got = tier.nearest(&q, 4);
            let want = super::super::exact(&table, &q, Some("kind = 'summary'"), 4)
                .await
                .unwrap();
            let ids = |h: &[Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&got), ids(&want));
            for (g, w) in got.iter().zip(&want) {
                assert!((g.score - w.score).abs() < 1e-4, "{g:?} vs {w:?}");
                assert_eq!(
                    (&g.text, &g.kind, &g.task_id),
                    (&w.text, &w.kind, &w.task_id)
                );
            }
        }
        // 19 rows of 16 floats fit in 19 × 64 bytes; the table has 20 summaries.
        assert!(SummaryTier::load(&table, dim, 19 * 64)
            .await
            .unwrap()
            .is_none());
        assert!(SummaryTier::load(&table, dim, 20 * 64)
            .await
            .unwrap()
            .is_some());
        assert!(SummaryTier::load(&table, dim, 0).await.unwrap().is_none());
    }
}
