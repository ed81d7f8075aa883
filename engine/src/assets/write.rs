//! Writing a query's result as a new asset version: the executors write Parquet files into a
//! folder of their own inside the asset, then the client commits them as one Delta version.
//! A write that fails or is killed before the commit leaves no new version; its files stay
//! invisible to readers and `sluice asset vacuum` deletes them.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, SortExpr, cast, col};
use serde::Serialize;
use sluice_connectors::delta::{Lake, NewFiles, WriteMode, delta_compatible};

use super::table::AssetTable;
use crate::error::{Error, Result};

/// How a write lays out its files.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Append to the asset, replace its rows, or merge into them by `key`.
    pub mode: WriteMode,
    /// Merge: the columns whose equal values make two rows the same.
    pub key: Vec<String>,
    /// Merge: a boolean column of the new rows; true removes the row's key from the asset (the
    /// column itself is not stored).
    pub delete_column: Option<String>,
    /// Partition columns: one folder per value (`col=value/`), pruned on reads.
    pub partition_by: Vec<String>,
    /// Sort order of the rows (`col` or `col DESC`), e.g. for tighter statistics.
    pub sort_by: Vec<String>,
    /// Aim for files of about this many bytes (estimated from the schema's width).
    pub target_file_bytes: Option<u64>,
    /// Parquet compression, e.g. `zstd(3)` (the default), `snappy`, `uncompressed`.
    pub compression: String,
    /// The job that writes, as lineage records it.
    pub job: String,
    /// More lineage to record with the version (e.g. source watermarks).
    pub lineage: serde_json::Map<String, serde_json::Value>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            mode: WriteMode::Append,
            key: Vec::new(),
            delete_column: None,
            partition_by: Vec::new(),
            sort_by: Vec::new(),
            target_file_bytes: None,
            compression: "zstd(3)".into(),
            job: "sql".into(),
            lineage: serde_json::Map::new(),
        }
    }
}

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
    pub merged: Option<super::merge::MergeCounts>,
}

/// Files written for a new version, not yet committed (readers do not see them).
#[derive(Debug)]
pub struct StagedWrite {
    pub(crate) name: String,
    run_id: String,
    pub(crate) inputs: Vec<String>,
    pub(crate) new: NewFiles,
    mode: WriteMode,
    pub(crate) lineage: serde_json::Value,
    pub(crate) started: Instant,
    pub(crate) merge: Option<super::merge::PendingMerge>,
}

impl StagedWrite {
    pub(crate) fn new(
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
                let (version, staged, counts) = self.commit_merge(lake, pending).await?;
                self = staged;
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
        return super::merge::stage(lake, name, df, options).await;
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

/// Writes `df`'s rows as Parquet files into folder `run-<run_id>/` of asset `name` (not
/// committed).
pub(crate) async fn write_files(lake: &Lake, name: &str, df: DataFrame, options: &WriteOptions, run_id: &str) -> Result<NewFiles> {
    let prefix = lake.asset_url(name)?.join(&format!("run-{run_id}/")).map_err(|e| Error::Config(e.to_string()))?;

    let df = delta_ready(df)?;
    let schema: Arc<Schema> = Arc::new(df.schema().as_arrow().clone());
    for column in &options.partition_by {
        if schema.field_with_name(column).is_err() {
            return Err(Error::Config(format!(
                "partition column '{column}' is not a column of the query (columns: {})",
                column_names(&schema)
            )));
        }
    }
    let sort_by = sort_exprs(&options.sort_by, &schema)?;
    let df = with_rows_per_file(df, options.target_file_bytes, &schema)?;

    let mut parquet = TableParquetOptions::default();
    parquet.global.compression = Some(options.compression.clone());
    let write = DataFrameWriteOptions::new().with_partition_by(options.partition_by.clone()).with_sort_by(sort_by);
    tracing::info!(asset = name, run_id = %run_id, "writing files");
    df.write_parquet(prefix.as_str(), write, Some(parquet)).await.map_err(|e| {
        Error::Write(format!(
            "writing asset '{name}' failed; no new version was committed, and files already written under \
             {prefix} are invisible to readers (`sluice asset vacuum {name}` deletes them): {e}"
        ))
    })?;

    let files = lake.collect_written(name, &prefix, &options.partition_by).await?;
    Ok(NewFiles { schema, partition_by: options.partition_by.clone(), files })
}

/// A fresh, sortable, unique id: UTC time and random bits.
pub fn run_id() -> String {
    format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// What a plan reads: pinned assets as `name@version`, files by path, other tables by name.
pub fn inputs_of(plan: &LogicalPlan) -> Vec<String> {
    let mut inputs = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let input = match source_as_provider(&scan.source) {
                Ok(provider) => {
                    if let Some(asset) = provider.downcast_ref::<AssetTable>() {
                        asset.pinned()
                    } else if let Some(source) = provider.downcast_ref::<crate::sources::SourceTable>() {
                        source.plan().lineage()
                    } else if let Some(listing) = provider.downcast_ref::<ListingTable>() {
                        listing.table_paths().iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
                    } else {
                        scan.table_name.to_string()
                    }
                }
                Err(_) => scan.table_name.to_string(),
            };
            if !inputs.contains(&input) {
                inputs.push(input);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    inputs
}

/// Casts the columns Delta cannot store as they are (unsigned integers, nanosecond timestamps).
pub(crate) fn delta_ready(df: DataFrame) -> Result<DataFrame> {
    let casts = delta_compatible(df.schema().as_arrow())?;
    if casts.iter().all(Option::is_none) {
        return Ok(df);
    }
    let exprs: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .zip(casts)
        .map(|(field, to)| {
            let c = col(datafusion::common::Column::from_name(field.name()));
            match to {
                Some(to) => cast(c, to).alias(field.name()),
                None => c,
            }
        })
        .collect();
    Ok(df.select(exprs)?)
}

fn sort_exprs(sort_by: &[String], schema: &Schema) -> Result<Vec<SortExpr>> {
    sort_by
        .iter()
        .map(|spec| {
            let mut words = spec.split_whitespace();
            let column = words.next().unwrap_or_default();
            let asc = match words.next().map(|w| w.to_ascii_lowercase()) {
                None => true,
                Some(w) if w == "asc" => true,
                Some(w) if w == "desc" => false,
                Some(w) => {
                    return Err(Error::Config(format!(
                        "sort order '{spec}': expected ASC or DESC after the column, not '{w}'"
                    )));
                }
            };
            if schema.field_with_name(column).is_err() {
                return Err(Error::Config(format!(
                    "sort column '{column}' is not a column of the query (columns: {})",
                    column_names(schema)
                )));
            }
            Ok(col(datafusion::common::Column::from_name(column)).sort(asc, !asc))
        })
        .collect()
}

/// Rows per file for files of about `target` bytes: the schema's width, with compression
/// assumed to halve it.
fn with_rows_per_file(df: DataFrame, target: Option<u64>, schema: &Schema) -> Result<DataFrame> {
    let Some(target) = target else { return Ok(df) };
    let width: u64 = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary | DataType::BinaryView => 24,
            t => t.primitive_width().unwrap_or(16) as u64,
        })
        .sum::<u64>()
        .max(1);
    let rows = (target.saturating_mul(2) / width).max(1) as usize;
    let (state, plan) = df.into_parts();
    let mut config = state.config().clone();
    config.options_mut().execution.soft_max_rows_per_output_file =
        datafusion::common::config::ConfigNonZeroUsize::try_new(rows)?;
    // With a size asked for, a small output is not spread over several files for parallelism.
    config.options_mut().execution.minimum_parallel_output_files =
        datafusion::common::config::ConfigNonZeroUsize::try_new(1)?;
    let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
    Ok(DataFrame::new(state, plan))
}

fn column_names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
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
