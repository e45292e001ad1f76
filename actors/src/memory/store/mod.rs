//! The LanceDB side of memory: one table of summary and detail rows, two-stage retrieval, indexes.
//! This file holds the schema, writes, counts and queries; index creation, index state and compaction
//! are in `index.rs` and re-exported here, so every `memory::store::...` path stays as it was; the in-memory
//! summary tier that answers stage 1 is in `tier.rs`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase, Select, VectorQuery};
use lancedb::{DistanceType, Table};
use serde::{Deserialize, Serialize};

use super::MemError;

mod families;
pub mod image;
mod index;
mod tier;

pub use families::{by_family, Families};
pub use index::{
    build_indexes, compact, fragment_count, index_state, ivf_pq_shape, optimize_indexes,
    IndexState, KIND_INDEX, PARENT_INDEX, VECTOR_INDEX,
};
pub use tier::SummaryTier;

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    /// Row id: 32 lowercase hex chars (UUID v4 simple), new per row; summaries' ids become `parent_id`s.
    pub id: String,
    /// Summary this detail belongs to (None for summaries and fresh details).
    pub parent_id: Option<String>,
    /// `summary` or `detail`.
    pub kind: &'static str,
    /// The text embedded: a detail chunk of at most `memory.chunk_chars` bytes, or a written summary.
    pub text: String,
    /// Embedding of `text`; its length must be the table's dimension.
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
    /// Row id (32 lowercase hex chars); a summary's id is its details' `parent_id`.
    pub id: String,
    /// Parent summary id.
    pub parent_id: Option<String>,
    /// `summary` or `detail`.
    pub kind: String,
    /// The row's text: a detail chunk, or a summary of several details.
    pub text: String,
    /// Task it came from.
    pub task_id: Option<String>,
    /// Cosine similarity (1 - cosine distance).
    pub score: f32,
    /// Whose words the row holds: `person` (what a person told the household), `tool:<name>` (a tool's
    /// exact result), or a persona's name (the household's own words: answers that passed the quality bar,
    /// and summaries).
    #[serde(default)]
    pub persona: String,
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

pub(super) fn store_err(e: lancedb::Error) -> MemError {
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
        let persona = col("persona");
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
                persona: persona
                    .as_ref()
                    .map(|p| p.value(i).to_string())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

const COLUMNS: &[&str] = &[
    "id",
    "parent_id",
    "kind",
    "text",
    "task_id",
    "persona",
    "_distance",
];

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

/// Two-stage retrieval: the `k_summaries` summaries nearest to `q` (exactly from `tier` when there is one,
/// else through the index with `knobs`), then the `k` details nearest to `q` among the children of those
/// summaries only — with [`Stage2::Exact`] and `families`, taken by row id from its snapshot. Returns
/// (summaries, details, the stage-2 filter; empty if none).
#[allow(clippy::too_many_arguments)]
pub async fn two_stage(
    table: &Table,
    tier: Option<&SummaryTier>,
    families: Option<&Families>,
    q: &[f32],
    k_summaries: usize,
    k: usize,
    knobs: SearchKnobs,
    stage2: Stage2,
) -> Result<(Vec<Hit>, Vec<Hit>, String), MemError> {
    let summaries = match tier {
        Some(t) => t.nearest(q, k_summaries),
        None => knn(table, q, "kind = 'summary'", k_summaries, knobs).await?,
    };
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
    let details = match (stage2, families) {
        (Stage2::Ann, _) => knn(table, q, &filter, k, knobs).await?,
        (Stage2::Exact, Some(f)) => {
            let parents: Vec<&str> = summaries.iter().map(|h| h.id.as_str()).collect();
            by_family(f, q, Some(&parents), k, || {
                exact(table, q, Some(&filter), k)
            })
            .await?
        }
        (Stage2::Exact, None) => exact(table, q, Some(&filter), k).await?,
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

/// A stored row as a scan reads it back: enough to write it again whole (see [`adopt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Scanned {
    /// Id, parent, kind, text and task (score 0).
    pub hit: Hit,
    /// The stored embedding.
    pub vector: Vec<f32>,
    /// Persona that wrote it.
    pub persona: String,
    /// Unix microseconds.
    pub created_at: i64,
}

/// Rows matching a filter (plain scan), up to `limit`.
pub async fn scan(table: &Table, filter: &str, limit: usize) -> Result<Vec<Scanned>, MemError> {
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
            "persona",
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
        let missing = |c: &str| MemError::Store(format!("no {c} column"));
        let vecs = b
            .column_by_name("vector")
            .map(|c| c.as_fixed_size_list().clone())
            .ok_or_else(|| missing("vector"))?;
        let personas = b
            .column_by_name("persona")
            .map(|c| c.as_string::<i32>().clone())
            .ok_or_else(|| missing("persona"))?;
        let created = b
            .column_by_name("created_at")
            .and_then(|c| {
                c.as_primitive_opt::<arrow_array::types::Int64Type>()
                    .cloned()
            })
            .ok_or_else(|| missing("created_at"))?;
        for (i, hit) in hs.into_iter().enumerate() {
            let v = vecs.value(i);
            out.push(Scanned {
                hit,
                vector: v.as_primitive::<Float32Type>().values().to_vec(),
                persona: personas.value(i).to_string(),
                created_at: created.value(i),
            });
        }
    }
    Ok(out)
}

/// Writes `summary` and re-parents `details` under it in one commit: a single merge-insert keyed on `id`
/// inserts the summary and rewrites each detail with `parent_id` = the summary's id, so a stop leaves either
/// both or neither (never a summary without children, nor children of a missing summary). A detail that got
/// a parent meanwhile keeps it. Returns how many details were re-parented.
pub async fn adopt(
    table: &Table,
    summary: &NewRow,
    details: &[Scanned],
    dim: usize,
) -> Result<u64, MemError> {
    let mut rows = Vec::with_capacity(details.len() + 1);
    rows.push(summary.clone());
    for d in details {
        rows.push(NewRow {
            id: d.hit.id.clone(),
            parent_id: Some(summary.id.clone()),
            kind: "detail",
            text: d.hit.text.clone(),
            vector: d.vector.clone(),
            persona: d.persona.clone(),
            task_id: d.hit.task_id.clone(),
            created_at: d.created_at,
        });
    }
    let b = batch(&rows, dim)?;
    let reader = arrow_array::RecordBatchIterator::new(vec![Ok(b)], schema(dim));
    let mut merge = table.merge_insert(&["id"]);
    merge
        .when_matched_update_all(Some("target.parent_id IS NULL".into()))
        .when_not_matched_insert_all();
    let r = merge.execute(Box::new(reader)).await.map_err(store_err)?;
    Ok(r.num_updated_rows)
}

/// Counts rows matching a filter.
pub async fn count(table: &Table, filter: Option<&str>) -> Result<u64, MemError> {
    table
        .count_rows(filter.map(str::to_string))
        .await
        .map(|n| n as u64)
        .map_err(store_err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ids_are_checked_before_sql() {
        assert!(sql_id("abc-123_x").is_ok());
        assert!(sql_id("x' OR 1=1 --").is_err());
        assert!(sql_id("").is_err());
    }

    fn detail(id: &str, parent: Option<&str>, x: f32) -> NewRow {
        NewRow {
            id: id.into(),
            parent_id: parent.map(str::to_string),
            kind: "detail",
            text: format!("text of {id}"),
            vector: vec![x, 1.0 - x],
            persona: "BABS".into(),
            task_id: Some("t".into()),
            created_at: 7,
        }
    }

    /// The summary and its children land in one table version (one commit), so no stop can split them; a
    /// detail that already has a parent keeps it; the rewritten details keep every other column.
    #[tokio::test]
    async fn adopt_writes_the_summary_and_its_children_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let table = open(dir.path(), "m", 2).await.unwrap();
        let rows = [
            detail("d1", None, 0.1),
            detail("d2", None, 0.2),
            detail("d3", Some("p0"), 0.3),
        ];
        add(&table, &rows, 2).await.unwrap();
        let scanned = scan(&table, "kind = 'detail'", 10).await.unwrap();
        assert_eq!(scanned.len(), 3);
        assert_eq!(scanned[0].persona, "BABS");
        assert_eq!(scanned[0].created_at, 7);
        let before = table.version().await.unwrap();
        let summary = NewRow {
            id: "s1".into(),
            parent_id: None,
            kind: "summary",
            text: "summary".into(),
            vector: vec![0.5, 0.5],
            persona: "BABS".into(),
            task_id: Some("t".into()),
            created_at: 8,
        };
        let adopted = adopt(&table, &summary, &scanned, 2).await.unwrap();
        assert_eq!(adopted, 2, "d3 already had a parent");
        assert_eq!(table.version().await.unwrap(), before + 1, "one commit");
        assert_eq!(
            count(&table, None).await.unwrap(),
            4,
            "updated in place, nothing doubled"
        );
        let mut all = scan(&table, "id IS NOT NULL", 10).await.unwrap();
        all.sort_by(|a, b| a.hit.id.cmp(&b.hit.id));
        let parents: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|r| (r.hit.id.as_str(), r.hit.parent_id.as_deref()))
            .collect();
        assert_eq!(
            parents,
            [
                ("d1", Some("s1")),
                ("d2", Some("s1")),
                ("d3", Some("p0")),
                ("s1", None)
            ]
        );
        let d1 = &all[0];
        assert_eq!(
            (d1.hit.text.as_str(), d1.vector.as_slice(), d1.created_at),
            ("text of d1", [0.1f32, 0.9].as_slice(), 7)
        );
    }
}
