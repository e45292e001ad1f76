//! The LanceDB side of memory: one table of summary and detail rows, two-stage retrieval, indexes.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::index::scalar::{BTreeIndexBuilder, BitmapIndexBuilder};
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select, VectorQuery};
use lancedb::table::OptimizeAction;
use lancedb::{DistanceType, Table};
use serde::{Deserialize, Serialize};

use super::MemError;

/// Name of the vector index.
pub const VECTOR_INDEX: &str = "vector_idx";
/// Name of the parent_id index.
pub const PARENT_INDEX: &str = "parent_id_idx";
/// Name of the kind (summary/detail) index.
pub const KIND_INDEX: &str = "kind_idx";

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    /// Row id.
    pub id: String,
    /// Summary this detail belongs to (None for summaries and fresh details).
    pub parent_id: Option<String>,
    /// `summary` or `detail`.
    pub kind: &'static str,
    /// Text.
    pub text: String,
    /// Embedding.
    pub vector: Vec<f32>,
    /// Persona that wrote it.
    pub persona: String,
    /// Task it came from.
    pub task_id: Option<String>,
    /// Unix microseconds.
    pub created_at: i64,
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    /// Row id.
    pub id: String,
    /// Parent summary id.
    pub parent_id: Option<String>,
    /// `summary` or `detail`.
    pub kind: String,
    /// Text.
    pub text: String,
    /// Task it came from.
    pub task_id: Option<String>,
    /// Cosine similarity (1 - cosine distance).
    pub score: f32,
}

/// Vector-search knobs.
#[derive(Debug, Clone, Copy)]
pub struct SearchKnobs {
    /// IVF partitions probed.
    pub nprobes: usize,
    /// Re-rank factor on exact vectors (0 = off).
    pub refine_factor: u32,
}

/// The table schema for vectors of width `dim`.
pub fn schema(dim: usize) -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("parent_id", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("vector", DataType::FixedSizeList(item, dim as i32), true),
        Field::new("persona", DataType::Utf8, false),
        Field::new("task_id", DataType::Utf8, true),
        Field::new("created_at", DataType::Int64, false),
    ]))
}

/// Builds a record batch from rows (all of width `dim`).
pub fn batch(rows: &[NewRow], dim: usize) -> Result<RecordBatch, MemError> {
    let schema = schema(dim);
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        if r.vector.len() != dim {
            return Err(MemError::Invalid(format!(
                "vector of width {} in a table of width {dim}",
                r.vector.len()
            )));
        }
        flat.extend_from_slice(&r.vector);
    }
    let vectors = FixedSizeListArray::try_new(
        item,
        dim as i32,
        Arc::new(Float32Array::from(flat)) as ArrayRef,
        None,
    )
    .map_err(|e| MemError::Store(e.to_string()))?;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.parent_id.as_deref())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.kind).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(vectors),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.persona.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.task_id.as_deref())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.created_at).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, cols).map_err(|e| MemError::Store(e.to_string()))
}

fn store_err(e: lancedb::Error) -> MemError {
    MemError::Store(e.to_string())
}

/// Only ids we generate (hex/uuid) ever reach SQL; anything else is refused rather than escaped.
pub fn sql_id(id: &str) -> Result<String, MemError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(MemError::Invalid(format!("not a memory id: `{id}`")));
    }
    Ok(format!("'{id}'"))
}

/// Opens (or creates) the table.
pub async fn open(dir: &std::path::Path, name: &str, dim: usize) -> Result<Table, MemError> {
    let uri = dir
        .to_str()
        .ok_or_else(|| MemError::Invalid("memory path is not UTF-8".into()))?;
    let db = lancedb::connect(uri).execute().await.map_err(store_err)?;
    let names = db.table_names().execute().await.map_err(store_err)?;
    if names.iter().any(|n| n == name) {
        let t = db.open_table(name).execute().await.map_err(store_err)?;
        let s = t.schema().await.map_err(store_err)?;
        let width = match s.field_with_name("vector").map(|f| f.data_type().clone()) {
            Ok(DataType::FixedSizeList(_, w)) => w as usize,
            _ => {
                return Err(MemError::Store(format!(
                    "table {name} has no vector column"
                )))
            }
        };
        if width != dim {
            return Err(MemError::Store(format!(
                "table {name} holds vectors of width {width} but the embedding model gives {dim}"
            )));
        }
        Ok(t)
    } else {
        db.create_empty_table(name, schema(dim))
            .execute()
            .await
            .map_err(store_err)
    }
}

/// Appends rows; returns once they are committed.
pub async fn add(table: &Table, rows: &[NewRow], dim: usize) -> Result<(), MemError> {
    if rows.is_empty() {
        return Ok(());
    }
    table
        .add(batch(rows, dim)?)
        .execute()
        .await
        .map_err(store_err)?;
    Ok(())
}

fn hits(batches: &[RecordBatch]) -> Vec<Hit> {
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).map(|c| c.as_string::<i32>().clone());
        let (Some(id), Some(parent), Some(kind), Some(text), Some(task)) = (
            col("id"),
            col("parent_id"),
            col("kind"),
            col("text"),
            col("task_id"),
        ) else {
            continue;
        };
        let dist = b
            .column_by_name("_distance")
            .map(|c| c.as_primitive::<Float32Type>().clone());
        for i in 0..b.num_rows() {
            let opt = |a: &arrow_array::StringArray| {
                (!arrow_array::Array::is_null(a, i)).then(|| a.value(i).to_string())
            };
            out.push(Hit {
                id: id.value(i).to_string(),
                parent_id: opt(&parent),
                kind: kind.value(i).to_string(),
                text: text.value(i).to_string(),
                task_id: opt(&task),
                score: dist.as_ref().map(|d| 1.0 - d.value(i)).unwrap_or(0.0),
            });
        }
    }
    out
}

const COLUMNS: &[&str] = &["id", "parent_id", "kind", "text", "task_id", "_distance"];

/// How stage 2 of a two-stage query searches the details of the chosen summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage2 {
    /// The vector index, prefiltered to the chosen summaries' details.
    Ann,
    /// Exact distances over just those details (found through the `parent_id` BTree).
    Exact,
}

/// A cosine vector query over rows matching `filter` (a prefilter), through the IVF-PQ index with `knobs`
/// (exact below the index threshold) or, with `None`, exact.
fn vector_query(
    table: &Table,
    q: &[f32],
    filter: Option<&str>,
    k: usize,
    knobs: Option<SearchKnobs>,
) -> Result<VectorQuery, MemError> {
    let mut query = table
        .query()
        .nearest_to(q)
        .map_err(store_err)?
        .column("vector")
        .distance_type(DistanceType::Cosine)
        .limit(k)
        .select(Select::columns(COLUMNS));
    if let Some(f) = filter {
        query = query.only_if(f);
    }
    match knobs {
        Some(knobs) => {
            query = query.nprobes(knobs.nprobes.max(1)).map_err(store_err)?;
            if knobs.refine_factor > 0 {
                query = query.refine_factor(knobs.refine_factor);
            }
        }
        None => query = query.bypass_vector_index(),
    }
    Ok(query)
}

async fn run(query: VectorQuery) -> Result<Vec<Hit>, MemError> {
    let batches: Vec<RecordBatch> = query
        .execute()
        .await
        .map_err(store_err)?
        .try_collect()
        .await
        .map_err(store_err)?;
    Ok(hits(&batches))
}

/// ANN (or exact, below the index threshold) over rows matching `filter`, prefiltered.
pub async fn knn(
    table: &Table,
    q: &[f32],
    filter: &str,
    k: usize,
    knobs: SearchKnobs,
) -> Result<Vec<Hit>, MemError> {
    run(vector_query(table, q, Some(filter), k, Some(knobs))?).await
}

/// Exact search (no index) — the ground truth for recall.
pub async fn exact(
    table: &Table,
    q: &[f32],
    filter: Option<&str>,
    k: usize,
) -> Result<Vec<Hit>, MemError> {
    run(vector_query(table, q, filter, k, None)?).await
}

/// Two-stage retrieval: the `k_summaries` summaries nearest to `q`, then the `k` details nearest to `q` among
/// the children of those summaries only. Returns (summaries, details, the stage-2 filter; empty if none).
pub async fn two_stage(
    table: &Table,
    q: &[f32],
    k_summaries: usize,
    k: usize,
    knobs: SearchKnobs,
    stage2: Stage2,
) -> Result<(Vec<Hit>, Vec<Hit>, String), MemError> {
    let summaries = knn(table, q, "kind = 'summary'", k_summaries, knobs).await?;
    if summaries.is_empty() {
        return Ok((summaries, Vec::new(), String::new()));
    }
    let ids = summaries
        .iter()
        .map(|h| sql_id(&h.id))
        .collect::<Result<Vec<_>, _>>()?;
    // Only details have a parent, so no `kind` term: ANDing the large `kind = 'detail'` bitmap cost ~0.8 ms
    // per query at 1M rows (BENCHMARKS.md, memory).
    let filter = format!("parent_id IN ({})", ids.join(","));
    let details = match stage2 {
        Stage2::Ann => knn(table, q, &filter, k, knobs).await?,
        Stage2::Exact => exact(table, q, Some(&filter), k).await?,
    };
    Ok((summaries, details, filter))
}

/// The plan of stage 2 as `two_stage` runs it with `stage2`, for inspection.
pub async fn explain(
    table: &Table,
    q: &[f32],
    filter: &str,
    k: usize,
    knobs: SearchKnobs,
    stage2: Stage2,
) -> Result<String, MemError> {
    let knobs = (stage2 == Stage2::Ann).then_some(knobs);
    vector_query(table, q, Some(filter), k, knobs)?
        .explain_plan(true)
        .await
        .map_err(store_err)
}

/// Rows matching a filter (plain scan), up to `limit`.
pub async fn scan(
    table: &Table,
    filter: &str,
    limit: usize,
) -> Result<Vec<(Hit, Vec<f32>)>, MemError> {
    let batches: Vec<RecordBatch> = table
        .query()
        .only_if(filter)
        .select(Select::columns(&[
            "id",
            "parent_id",
            "kind",
            "text",
            "task_id",
            "vector",
            "created_at",
        ]))
        .limit(limit)
        .execute()
        .await
        .map_err(store_err)?
        .try_collect()
        .await
        .map_err(store_err)?;
    let mut out = Vec::new();
    for b in &batches {
        let hs = hits(std::slice::from_ref(b));
        let vecs = b
            .column_by_name("vector")
            .map(|c| c.as_fixed_size_list().clone())
            .ok_or_else(|| MemError::Store("no vector column".into()))?;
        for (i, h) in hs.into_iter().enumerate() {
            let v = vecs.value(i);
            let v = v.as_primitive::<Float32Type>().values().to_vec();
            out.push((h, v));
        }
    }
    Ok(out)
}

/// Sets `parent_id` of the given rows.
pub async fn set_parent(table: &Table, ids: &[String], parent: &str) -> Result<(), MemError> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = ids
        .iter()
        .map(|i| sql_id(i))
        .collect::<Result<Vec<_>, _>>()?
        .join(",");
    table
        .update()
        .only_if(format!("id IN ({list})"))
        .column("parent_id", sql_id(parent)?)
        .execute()
        .await
        .map_err(store_err)?;
    Ok(())
}

/// Counts rows matching a filter.
pub async fn count(table: &Table, filter: Option<&str>) -> Result<u64, MemError> {
    table
        .count_rows(filter.map(str::to_string))
        .await
        .map(|n| n as u64)
        .map_err(store_err)
}

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
/// than LanceDB's default retention (7 days) so superseded files do not pile up.
pub async fn compact(table: &Table) -> Result<(), MemError> {
    table
        .optimize(OptimizeAction::Compact {
            options: Default::default(),
            remap_options: None,
        })
        .await
        .map_err(store_err)?;
    table
        .optimize(OptimizeAction::Prune {
            older_than: None,
            delete_unverified: None,
            error_if_tagged_old_versions: None,
        })
        .await
        .map(|_| ())
        .map_err(store_err)
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

    #[test]
    fn shape_derivation() {
        assert_eq!(ivf_pq_shape(1_000_000, 384, 0, 0), (1000, 24));
        assert_eq!(ivf_pq_shape(100_000, 384, 0, 0), (316, 24));
        assert_eq!(ivf_pq_shape(600, 64, 0, 0), (2, 4));
        assert_eq!(ivf_pq_shape(600, 64, 7, 8), (7, 8));
        assert_eq!(ivf_pq_shape(600, 576, 0, 0), (2, 36));
    }

    #[tokio::test]
    async fn compaction_merges_fragments_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let table = open(dir.path(), "t", 8).await.unwrap();
        for i in 0..12 {
            let row = NewRow {
                id: format!("d{i}"),
                parent_id: None,
                kind: "detail",
                text: format!("row {i}"),
                vector: vec![i as f32 + 1.0; 8],
                persona: "BABS".into(),
                task_id: None,
                created_at: i,
            };
            add(&table, &[row], 8).await.unwrap();
        }
        assert_eq!(fragment_count(&table).await.unwrap(), 12);
        compact(&table).await.unwrap();
        assert_eq!(fragment_count(&table).await.unwrap(), 1);
        assert_eq!(count(&table, None).await.unwrap(), 12);
        let hit = exact(&table, &[5.0; 8], None, 1).await.unwrap();
        assert_eq!(hit.len(), 1);
    }

    #[test]
    fn ids_are_checked_before_sql() {
        assert!(sql_id("abc-123_x").is_ok());
        assert!(sql_id("x' OR 1=1 --").is_err());
        assert!(sql_id("").is_err());
    }
}
