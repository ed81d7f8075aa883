//! Quarantine: records that could not be parsed or typed, kept with where they were and why,
//! as rows of a quarantine asset next to the asset the good rows land in.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use object_store::{ObjectStore, ObjectStoreExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::json::Reject;

/// The columns of a quarantine asset.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("quarantined_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]))
}

/// `rejects` of source `source` as quarantine rows.
pub fn batch(source: &str, rejects: &[Reject]) -> Result<RecordBatch> {
    let now = chrono::Utc::now().timestamp_micros();
    let column = |f: fn(&Reject) -> &str| Arc::new(StringArray::from_iter_values(rejects.iter().map(f)));
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|_| source))),
            column(|r| &r.location),
            column(|r| &r.raw),
            column(|r| &r.reason),
            Arc::new(TimestampMicrosecondArray::from(vec![now; rejects.len()]).with_timezone("UTC")),
        ],
    )
    .map_err(|e| Error::Schema(format!("quarantine rows: {e}")))
}

/// Where one read puts what it rejects, and when it must give up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineTarget {
    /// The source's name, recorded with each row.
    pub source: String,
    /// The object store the folders are in (`file:///`, `az://container`), as registered in
    /// every site's runtime.
    pub store_url: String,
    /// Folder for the rejected rows (Parquet; committed to the quarantine asset by the job).
    pub rows_path: String,
    /// Folder for each partition's counts (JSON).
    pub counts_path: String,
    /// A partition fails once it rejected more than this many records.
    pub max_errors: Option<u64>,
}

/// What one partition read: every record counted once, as landed or as rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records read.
    pub read: u64,
    /// Of those, rejected.
    pub rejected: u64,
}

impl Counts {
    /// Sums counts.
    pub fn add(&mut self, other: Counts) {
        self.read += other.read;
        self.rejected += other.rejected;
    }
}

/// Writes rejects of partition `partition` (if any) as its file `file_no` and, at its end, its
/// counts, under `target` in `store`; the names are fixed per partition so a retried task
/// replaces its first attempt's files.
pub async fn write_partition(
    store: &Arc<dyn ObjectStore>,
    target: &QuarantineTarget,
    partition: usize,
    file_no: usize,
    rejects: &[Reject],
    counts: Option<Counts>,
) -> Result<()> {
    let rows_path = Path::from(target.rows_path.as_str()).join(format!("part-{partition:05}-{file_no:04}.parquet").as_str());
    if !rejects.is_empty() {
        let batch = batch(&target.source, rejects)?;
        let mut bytes = Vec::new();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
            .map_err(|e| Error::Schema(format!("quarantine file: {e}")))?;
        writer.write(&batch).and_then(|_| writer.close().map(|_| ())).map_err(|e| Error::Schema(format!("quarantine file: {e}")))?;
        put(store, &rows_path, bytes).await?;
    }
    let Some(counts) = counts else { return Ok(()) };
    let counts_path = Path::from(target.counts_path.as_str()).join(format!("part-{partition:05}.json").as_str());
    let json = serde_json::to_vec(&counts).map_err(|e| Error::Schema(e.to_string()))?;
    put(store, &counts_path, json).await
}

/// Sums the counts every partition wrote under `target`.
pub async fn read_counts(store: &Arc<dyn ObjectStore>, target: &QuarantineTarget) -> Result<Counts> {
    let mut total = Counts::default();
    for object in counts_files(store, target).await? {
        let read = async { store.get(&object.location).await?.bytes().await };
        let bytes = read.await.map_err(|e| Error::Asset(format!("reading {}: {e}", object.location)))?;
        let counts: Counts = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Asset(format!("reading {}: {e}", object.location)))?;
        total.add(counts);
    }
    Ok(total)
}

/// Removes the partitions' counts once summed.
pub async fn remove_counts(store: &Arc<dyn ObjectStore>, target: &QuarantineTarget) -> Result<()> {
    for object in counts_files(store, target).await? {
        store.delete(&object.location).await.map_err(|e| Error::Asset(format!("removing {}: {e}", object.location)))?;
    }
    Ok(())
}

async fn counts_files(store: &Arc<dyn ObjectStore>, target: &QuarantineTarget) -> Result<Vec<object_store::ObjectMeta>> {
    use futures::TryStreamExt;
    let prefix = Path::from(target.counts_path.as_str());
    store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::Asset(format!("listing quarantine counts at {prefix}: {e}")))
}

async fn put(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) -> Result<()> {
    store.put(path, bytes.into()).await.map(|_| ()).map_err(|e| Error::Asset(format!("writing quarantine file {path}: {e}")))
}
