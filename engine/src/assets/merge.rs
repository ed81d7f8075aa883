//! `mode = "merge"`: the new rows replace the asset's rows with the same key, the others are
//! appended, and rows flagged by the delete column remove their key; one new version, atomic.
//!
//! Copy-on-write, as Delta's MERGE does it: the new rows are first written aside (so the query
//! runs once), then the files of the current version that hold any of their keys are found, and
//! their other rows are written again with the new rows; the version removes those files and
//! adds the new ones. The commit must follow the version it was planned on: when another writer
//! committed in between, the merge is planned again on the newer version from the rows written
//! aside, so concurrent writers never leave two rows of one key.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::JoinType;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;
use sluice_lake::delta::{AssetRef, AssetVersion, Lake, NewFiles};

use super::files::{WriteOptions, delta_ready, inputs_of, run_id, write_files};
use super::table::AssetTable;
use crate::error::{Error, Result};

/// A merge that lost the race to commit is planned again this many times.
const MAX_ATTEMPTS: usize = 20;

/// What a merge did to the asset's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MergeCounts {
    /// New rows merged (deletes included).
    pub rows: u64,
    /// New keys, appended.
    pub inserted: u64,
    /// Keys the asset held, whose rows were replaced.
    pub updated: u64,
    /// Keys the asset held, removed by the delete column.
    pub deleted: u64,
    /// Rows of other keys in the files that were rewritten (kept as they were).
    pub rewritten: u64,
}

impl std::fmt::Display for MergeCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} new rows: {} inserted, {} updated, {} deleted; {} rows of other keys rewritten with them",
            self.rows, self.inserted, self.updated, self.deleted, self.rewritten
        )
    }
}

/// The files a merge wrote for the version it planned, not yet committed.
pub(crate) struct Written {
    pub(crate) run_id: String,
    pub(crate) new: NewFiles,
    pub(crate) lineage: serde_json::Value,
}

/// A merge planned on one version, ready to commit (or to plan again).
pub(crate) struct PendingMerge {
    ctx: SessionContext,
    /// The new rows, as written aside (delete column included).
    source: DataFrame,
    options: WriteOptions,
    /// The version planned on (None: the asset did not exist).
    current: Option<AssetVersion>,
    /// The files of `current` (indices) that the new version replaces.
    affected: Vec<usize>,
    counts: MergeCounts,
}

impl std::fmt::Debug for PendingMerge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingMerge")
            .field("key", &self.options.key)
            .field("base", &self.base())
            .field("affected", &self.affected)
            .field("counts", &self.counts)
            .finish()
    }
}

impl PendingMerge {
    fn base(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.version)
    }

    /// Store paths of the files the new version replaces.
    fn removed(&self) -> Vec<String> {
        let files = self.current.as_ref().map(|c| c.files.as_slice()).unwrap_or_default();
        self.affected.iter().map(|&i| files[i].path.clone()).collect()
    }
}

fn column(name: &str) -> Expr {
    col(datafusion::common::Column::from_name(name))
}

/// The key column's alias on the new rows' side of a join.
fn right(i: usize) -> String {
    format!("__sluice_merge_key_{i}")
}

/// Writes the new rows of `df` aside, plans merging them into asset `name` and writes the
/// planned version's files; returns the plan, the files and the query's inputs.
pub(crate) async fn stage(
    lake: &Lake,
    name: &str,
    df: DataFrame,
    options: &WriteOptions,
) -> Result<(PendingMerge, Written, Vec<String>)> {
    let key = &options.key;
    if key.is_empty() {
        return Err(Error::Config(
            "mode = \"merge\" needs key = [\"column\", ...]: the columns whose equal values make rows the same".into(),
        ));
    }
    let schema = df.schema().as_arrow().clone();
    for k in key {
        if schema.field_with_name(k).is_err() {
            return Err(Error::Config(format!(
                "merge key '{k}' is not a column of the new rows (columns: {})",
                names(&schema)
            )));
        }
    }
    if let Some(d) = &options.delete_column {
        match schema.field_with_name(d).map(|f| f.data_type().clone()) {
            Ok(DataType::Boolean) => {}
            Ok(other) => {
                return Err(Error::Config(format!(
                    "merge delete column '{d}' is {other}, not a boolean; true removes the row's key, \
                     e.g. `op = 'D' AS {d}`"
                )));
            }
            Err(_) => {
                return Err(Error::Config(format!(
                    "merge delete column '{d}' is not a column of the new rows (columns: {})",
                    names(&schema)
                )));
            }
        }
    }
    let inputs = inputs_of(df.logical_plan());
    let (state, _) = df.clone().into_parts();
    let ctx = SessionContext::new_with_state(state);
    // The query runs once: its rows go aside, inside the asset's folder (invisible to readers;
    // `vacuum` removes them), and every plan below reads them from there.
    let aside = lake
        .asset_url(name)?
        .join(&format!("run-{}-merge-source/", run_id()))
        .map_err(|e| Error::Config(e.to_string()))?;
    delta_ready(df)?.write_parquet(aside.as_str(), DataFrameWriteOptions::new(), None).await.map_err(|e| {
        Error::Write(format!("merging into asset '{name}': writing the new rows aside failed; nothing was committed: {e}"))
    })?;
    let source = ctx.read_parquet(aside.as_str(), ParquetReadOptions::default()).await?;
    check_keys(&source, key, name).await?;
    let mut pending = plan(lake, name, ctx, source, options.clone()).await?;
    let written = write_merge(lake, name, &mut pending).await?;
    Ok((pending, written, inputs))
}

/// New rows with a NULL key, or two new rows of one key, cannot merge: which replaces which?
async fn check_keys(source: &DataFrame, key: &[String], name: &str) -> Result<()> {
    let null = key.iter().map(|k| column(k).is_null()).reduce(Expr::or).unwrap_or(lit(false));
    let nulls = source.clone().filter(null)?.count().await?;
    if nulls > 0 {
        return Err(Error::Config(format!(
            "merging into asset '{name}': {nulls} new rows have a NULL in the key ({}); filter them out or \
             give them a key",
            key.join(", ")
        )));
    }
    let keys: Vec<Expr> = key.iter().map(|k| column(k)).collect();
    let repeated = source
        .clone()
        .aggregate(keys, vec![datafusion::functions_aggregate::count::count_all().alias("__n")])?
        .filter(col("__n").gt(lit(1i64)))?;
    let examples = repeated.clone().limit(0, Some(3))?.collect().await?;
    let shown: Vec<String> = examples
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                let values: Vec<String> = (0..key.len())
                    .map(|c| arrow::util::display::array_value_to_string(b.column(c), r).unwrap_or_default())
                    .collect();
                format!("({}) x{}", values.join(", "), b.column(key.len()).as_primitive::<Int64Type>().value(r))
            })
        })
        .collect();
    if !shown.is_empty() {
        return Err(Error::Config(format!(
            "merging into asset '{name}': the new rows hold some keys more than once ({}), so which one replaces \
             the asset's row is ambiguous; de-duplicate them first (e.g. `dedup` on the source, or keep the \
             latest per key in the SQL)",
            shown.join(", ")
        )));
    }
    Ok(())
}

/// Plans the merge on the asset's latest version.
async fn plan(lake: &Lake, name: &str, ctx: SessionContext, source: DataFrame, options: WriteOptions) -> Result<PendingMerge> {
    let key = &options.key;
    let total = source.clone().count().await? as u64;
    let deletes = match &options.delete_column {
        Some(d) => source.clone().filter(column(d).is_true())?.count().await? as u64,
        None => 0,
    };
    if !lake.exists(name).await? {
        let counts = MergeCounts { rows: total, inserted: total - deletes, ..Default::default() };
        return Ok(PendingMerge { ctx, source, options, current: None, affected: Vec::new(), counts });
    }
    let current = lake.resolve(&AssetRef::parse(name)?).await?;
    for k in key {
        if current.schema.field_with_name(k).is_err() {
            return Err(Error::Config(format!(
                "merge key '{k}' is not a column of asset '{name}' (columns: {})",
                names(&current.schema)
            )));
        }
    }
    let affected = files_with_keys(&ctx, &current, &source, key).await?;
    let mut counts = MergeCounts { rows: total, ..Default::default() };
    if !affected.is_empty() {
        let old = table_of(&ctx, &current, &affected)?;
        let keys_of_old: Vec<Expr> = key.iter().enumerate().map(|(i, k)| column(k).alias(right(i))).collect();
        let matched = source.clone().join(
            old.select(keys_of_old)?.distinct()?,
            JoinType::LeftSemi,
            &key.iter().map(String::as_str).collect::<Vec<_>>(),
            &(0..key.len()).map(right).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )?;
        let matched_total = matched.clone().count().await? as u64;
        counts.deleted = match &options.delete_column {
            Some(d) => matched.filter(column(d).is_true())?.count().await? as u64,
            None => 0,
        };
        counts.updated = matched_total - counts.deleted;
    }
    counts.inserted = total - deletes - counts.updated;
    Ok(PendingMerge { ctx, source, options, current: Some(current), affected, counts })
}

/// A table over the files `which` of `version`.
fn table_of(ctx: &SessionContext, version: &AssetVersion, which: &[usize]) -> Result<DataFrame> {
    let mut part = version.clone();
    part.files = which.iter().map(|&i| version.files[i].clone()).collect();
    Ok(ctx.read_table(Arc::new(AssetTable::new(&part)?))?)
}

/// The rows of files `affected` of `version` whose key the new rows do not hold.
fn kept(ctx: &SessionContext, version: &AssetVersion, affected: &[usize], source: &DataFrame, key: &[String]) -> Result<DataFrame> {
    let old = table_of(ctx, version, affected)?;
    let new_keys: Vec<Expr> = key.iter().enumerate().map(|(i, k)| column(k).alias(right(i))).collect();
    let rights: Vec<String> = (0..key.len()).map(right).collect();
    Ok(old.join(
        source.clone().select(new_keys)?,
        JoinType::LeftAnti,
        &key.iter().map(String::as_str).collect::<Vec<_>>(),
        &rights.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    )?)
}

/// The indices of the files of `version` holding a key of the new rows: one query, each file's
/// keys tagged with its index.
async fn files_with_keys(ctx: &SessionContext, version: &AssetVersion, source: &DataFrame, key: &[String]) -> Result<Vec<usize>> {
    let mut tagged: Option<DataFrame> = None;
    for i in 0..version.files.len() {
        let mut exprs = vec![lit(i as i64).alias("__sluice_file")];
        exprs.extend(key.iter().map(|k| column(k)));
        let one = table_of(ctx, version, &[i])?.select(exprs)?;
        tagged = Some(match tagged {
            None => one,
            Some(all) => all.union(one)?,
        });
    }
    let Some(tagged) = tagged else { return Ok(Vec::new()) };
    let new_keys: Vec<Expr> = key.iter().enumerate().map(|(i, k)| column(k).alias(right(i))).collect();
    let rights: Vec<String> = (0..key.len()).map(right).collect();
    let hits = tagged
        .join(
            source.clone().select(new_keys)?,
            JoinType::LeftSemi,
            &key.iter().map(String::as_str).collect::<Vec<_>>(),
            &rights.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )?
        .select(vec![col("__sluice_file")])?
        .distinct()?
        .collect()
        .await?;
    let mut files: Vec<usize> = hits
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_primitive::<Int64Type>().clone();
            (0..ids.len()).map(move |r| ids.value(r) as usize)
        })
        .collect();
    files.sort_unstable();
    Ok(files)
}

/// Writes the planned version's new files: the kept rows of the replaced files and the new rows
/// that are not deletes (so the rows of other keys rewritten are what the files hold beyond
/// the inserts and updates).
async fn write_merge(lake: &Lake, name: &str, pending: &mut PendingMerge) -> Result<Written> {
    let options = &pending.options;
    let key = &options.key;
    let mut rows = pending.source.clone();
    if let Some(d) = &options.delete_column {
        let others: Vec<Expr> = rows.schema().fields().iter().filter(|f| f.name() != d).map(|f| column(f.name())).collect();
        rows = rows.filter(column(d).is_not_true())?.select(others)?;
    }
    if let Some(current) = &pending.current
        && !pending.affected.is_empty()
    {
        rows = kept(&pending.ctx, current, &pending.affected, &pending.source, key)?.union_by_name(rows)?;
    }
    let run_id = run_id();
    let new: NewFiles = write_files(lake, name, rows, options, &run_id).await?;
    pending.counts.rewritten = new.rows().saturating_sub(pending.counts.inserted + pending.counts.updated);
    let options = &pending.options;
    let key = &options.key;
    let lineage = serde_json::json!({
        "run_id": run_id,
        "job": options.job,
        "mode": "merge",
        "merge": { "key": key, "delete_column": options.delete_column, "base": pending.base(), "counts": pending.counts },
        "rows": new.rows(),
        "files": new.files.len(),
        "bytes": new.bytes(),
        "engine": concat!("sluice ", env!("CARGO_PKG_VERSION")),
    });
    let mut lineage = lineage;
    if let Some(map) = lineage.as_object_mut() {
        map.extend(options.lineage.clone());
    }
    Ok(Written { run_id, new, lineage })
}

/// Commits a merge, planning it again on the newer version each time another writer wins;
/// returns the version, the files it holds and what the merge did.
pub(crate) async fn commit(
    lake: &Lake,
    name: &str,
    mut pending: PendingMerge,
    mut written: Written,
) -> Result<(u64, Written, MergeCounts)> {
    let predicate = pending.options.key.iter().map(|k| format!("target.{k} = source.{k}")).collect::<Vec<_>>().join(" AND ");
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            tracing::info!(asset = %name, attempt, "another writer committed first; merging again on the newer version");
            pending = plan(lake, name, pending.ctx, pending.source, pending.options).await?;
            written = write_merge(lake, name, &mut pending).await?;
        }
        let removed = pending.removed();
        let committed =
            lake.commit_replacing(name, pending.base(), &removed, &written.new, &predicate, written.lineage.clone()).await?;
        if let Some(version) = committed {
            return Ok((version, written, pending.counts));
        }
    }
    Err(Error::Write(format!(
        "asset '{name}': gave up merging after {MAX_ATTEMPTS} attempts lost races with other writers; nothing was \
         committed (`sluice asset vacuum {name}` removes the files written)"
    )))
}

fn names(schema: &arrow::datatypes::Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}
