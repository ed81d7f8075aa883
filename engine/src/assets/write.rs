//! Writing a query's result as a new asset version: the executors write Parquet files into a
//! folder of their own inside the asset, then the client commits them as one Delta version.
//! A write that fails or is killed before the commit leaves no new version; its files stay
//! invisible to readers and `sluice asset vacuum` deletes them.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::Schema;
use datafusion::dataframe::DataFrame;
use serde::Serialize;
use sluice_lake::delta::{Lake, NewFiles, WriteMode};

pub use super::files::{WriteOptions, inputs_of, run_id};
use super::files::write_files;
use super::merge::{self, MergeCounts, PendingMerge, Written};
use crate::error::{Error, Result};

/// What a write did.
#[derive(Debug, Clone, Serialize)]
pub struct WriteSummary {
    /// The asset.
    pub asset: String,
    /// The version it committed.
    pub version: u64,
    /// Rows written.
    pub rows: u64,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Inputs the query read (`asset@version` or a path or table name).
    pub inputs: Vec<String>,
    /// The write's run id (its files' folder is `run-<id>`).
    pub run_id: String,
    /// Seconds from start to commit.
    pub seconds: f64,
    /// What a merge did to the asset's rows (merges only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeCounts>,
}

/// Files written for a new version, not yet committed (readers do not see them).
#[derive(Debug)]
pub struct StagedWrite {
    name: String,
    run_id: String,
    inputs: Vec<String>,
    new: NewFiles,
    mode: WriteMode,
    lineage: serde_json::Value,
    started: Instant,
    /// A merge's plan, to commit (or plan again on a newer version).
    merge: Option<PendingMerge>,
}

impl StagedWrite {
    fn new(
        name: &str,
        run_id: String,
        inputs: Vec<String>,
        new: NewFiles,
        mode: WriteMode,
        lineage: serde_json::Value,
        started: Instant,
    ) -> Self {
        Self { name: name.to_string(), run_id, inputs, new, mode, lineage, started, merge: None }
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.new.rows()
    }

    /// The write's run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Adds to the lineage the version will record.
    pub fn add_lineage(&mut self, key: &str, value: serde_json::Value) {
        if let Some(map) = self.lineage.as_object_mut() {
            map.insert(key.to_string(), value);
        }
    }

    /// Commits the files as one new version.
    pub async fn commit(mut self, lake: &Lake) -> Result<WriteSummary> {
        let (version, merged) = match self.merge.take() {
            Some(pending) => {
                let written = Written { run_id: self.run_id, new: self.new, lineage: self.lineage };
                let (version, written, counts) = merge::commit(lake, &self.name, pending, written).await?;
                (self.run_id, self.new, self.lineage) = (written.run_id, written.new, written.lineage);
                (version, Some(counts))
            }
            None => (lake.commit(&self.name, self.mode, &self.new, self.lineage).await?, None),
        };
        let summary = WriteSummary {
            asset: self.name,
            version,
            rows: self.new.rows(),
            files: self.new.files.len(),
            bytes: self.new.bytes(),
            inputs: self.inputs,
            run_id: self.run_id,
            seconds: self.started.elapsed().as_secs_f64(),
            merged,
        };
        tracing::info!(asset = %summary.asset, version, rows = summary.rows, files = summary.files, "committed");
        Ok(summary)
    }
}

/// Writes `df`'s rows as a new version of asset `name` in `lake` and returns what was written.
pub async fn write_asset(lake: &Lake, name: &str, df: DataFrame, options: &WriteOptions) -> Result<WriteSummary> {
    stage_asset(lake, name, df, options).await?.commit(lake).await
}

/// Writes `df`'s rows into a new folder of asset `name`, ready to be committed as a version.
pub async fn stage_asset(lake: &Lake, name: &str, df: DataFrame, options: &WriteOptions) -> Result<StagedWrite> {
    if options.mode == WriteMode::Merge {
        let started = Instant::now();
        let (pending, written, inputs) = merge::stage(lake, name, df, options).await?;
        let mut staged = StagedWrite::new(name, written.run_id, inputs, written.new, options.mode, written.lineage, started);
        staged.merge = Some(pending);
        return Ok(staged);
    }
    if !options.key.is_empty() || options.delete_column.is_some() {
        return Err(Error::Config(format!(
            "key and delete columns are for mode = \"merge\"; this write's mode is {}",
            options.mode.as_str()
        )));
    }
    let started = Instant::now();
    let run_id = run_id();
    let inputs = inputs_of(df.logical_plan());
    let new = write_files(lake, name, df, options, &run_id).await?;
    let mut lineage = serde_json::json!({
        "run_id": run_id,
        "job": options.job,
        "inputs": inputs,
        "mode": options.mode.as_str(),
        "rows": new.rows(),
        "files": new.files.len(),
        "bytes": new.bytes(),
        "engine": concat!("sluice ", env!("CARGO_PKG_VERSION")),
    });
    if let Some(map) = lineage.as_object_mut() {
        map.extend(options.lineage.clone());
    }
    Ok(StagedWrite::new(name, run_id, inputs, new, options.mode, lineage, started))
}

/// Commits the Parquet files that others wrote under `prefix` (e.g. the executors' quarantined
/// records) as a new version of asset `name` appending rows of `schema`; None when there are none.
pub async fn commit_folder(
    lake: &Lake,
    name: &str,
    prefix: &url::Url,
    schema: Arc<Schema>,
    lineage: serde_json::Value,
) -> Result<Option<WriteSummary>> {
    commit_folder_with(lake, name, prefix, schema, &[], lineage).await
}

/// As [`commit_folder`], with `constants` (column, Delta's string form of its value) the same on
/// every row: partition columns of the asset, kept in the log instead of in every file. The
/// written files hold the other columns of `schema`; the constants are its last columns.
pub async fn commit_folder_with(
    lake: &Lake,
    name: &str,
    prefix: &url::Url,
    schema: Arc<Schema>,
    constants: &[(String, Option<String>)],
    lineage: serde_json::Value,
) -> Result<Option<WriteSummary>> {
    let started = Instant::now();
    let mut files = lake.collect_written(name, prefix, &[]).await?;
    if files.is_empty() {
        return Ok(None);
    }
    for file in &mut files {
        file.partition_values.extend(constants.iter().cloned());
    }
    let partition_by = constants.iter().map(|(column, _)| column.clone()).collect();
    let new = NewFiles { schema, partition_by, files };
    let run_id = lineage.get("run_id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let inputs = Vec::new();
    let staged = StagedWrite::new(name, run_id, inputs, new, WriteMode::Append, lineage, started);
    staged.commit(lake).await.map(Some)
}
