//! The files of a write: the executors write a query's rows as Parquet into a folder of their
//! own inside the asset (`run-<id>/`), laid out as the write's options say; nothing is committed
//! here (see [`super::write`] and [`super::merge`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, SortExpr, cast, col};
use sluice_lake::delta::{Lake, NewFiles, WriteMode, delta_compatible};

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

