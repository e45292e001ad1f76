//! The memory table in a living image: its rows as one Arrow IPC stream (every column, vectors included), and
//! the way back into a fresh table. Rows, not LanceDB's files: the stream is independent of LanceDB's on-disk
//! version and of compaction running meanwhile, and a table rebuilt from it answers the same searches.

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;
use lancedb::Table;

use super::{open, store_err, MemError};

/// The table's version and row count, and (when `rows`) every row as an Arrow IPC stream.
pub async fn dump(table: &Table, rows: bool) -> Result<(u64, u64, Option<Vec<u8>>), MemError> {
    let version = table.version().await.map_err(store_err)?;
    if !rows {
        let n = table.count_rows(None).await.map_err(store_err)? as u64;
        return Ok((version, n, None));
    }
    let schema = table.schema().await.map_err(store_err)?;
    let batches: Vec<RecordBatch> = table
        .query()
        .execute()
        .await
        .map_err(store_err)?
        .try_collect()
        .await
        .map_err(store_err)?;
    let ipc_err = |e: arrow_schema::ArrowError| MemError::Store(format!("arrow ipc: {e}"));
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(ipc_err)?;
    let mut n = 0u64;
    for b in &batches {
        n += b.num_rows() as u64;
        w.write(b).map_err(ipc_err)?;
    }
    w.finish().map_err(ipc_err)?;
    Ok((version, n, Some(w.into_inner().map_err(ipc_err)?)))
}

/// Creates table `name` under `dir` (which must not hold it yet) from an IPC stream written by [`dump`];
/// returns the rows written. The vectors' width is the stream's.
pub async fn restore(dir: &std::path::Path, name: &str, ipc: &[u8]) -> Result<u64, MemError> {
    let ipc_err = |e: arrow_schema::ArrowError| MemError::Invalid(format!("memory rows: {e}"));
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(ipc_err)?;
    let dim = match reader
        .schema()
        .field_with_name("vector")
        .map(|f| f.data_type().clone())
    {
        Ok(arrow_schema::DataType::FixedSizeList(_, w)) if w > 0 => w as usize,
        _ => {
            return Err(MemError::Invalid(
                "memory rows carry no vector column".into(),
            ))
        }
    };
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(ipc_err)?;
    let table = open(dir, name, dim).await?;
    if table.count_rows(None).await.map_err(store_err)? > 0 {
        return Err(MemError::Invalid(format!(
            "table {name} under {} is not empty",
            dir.display()
        )));
    }
    let n: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if n > 0 {
        table.add(batches).execute().await.map_err(store_err)?;
    }
    Ok(n)
}
