//! Profiles of data sets read on the cluster with SQL aggregates (a reference, or any table), the
//! reference profile of a model kept with the reference asset, and the merge of the partial
//! profiles a scoring run's executors wrote.
//!
//! A reference profile sets the bins: numbers get [`FINE_BINS`] equal bins over the reference's
//! range (the current data is binned the same way, values outside counted with their sum, so
//! every metric is exact to a bin's width); integers with at most [`FEW_VALUES`] distinct values,
//! booleans and text are categories.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::Digest;
use sluice_lake::delta::{AssetRef, AssetVersion, At, Lake};
use sluice_engine::profile::{Binning, ColumnSpec, Profile};

use sluice_catalog::error::{Error, Result};

/// Bins of a numeric column's histogram.
pub const FINE_BINS: usize = 1000;
/// Integer columns with at most this many distinct values in the reference are categories.
pub const FEW_VALUES: u64 = 20;

/// A column to profile: its name in the profile and the SQL that computes it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name in the profile.
    pub name: String,
    /// SQL expression over the data set.
    pub sql: String,
    /// Numbers, categories, or decided from the type and the reference's distinct values.
    pub kind: Kind,
}

/// How a column is summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text and booleans are categories, so are integers with few distinct values; the rest numbers.
    Auto,
    /// Numbers.
    Numeric,
    /// Categories.
    Categorical,
}

impl Column {
    /// The column `name` itself.
    pub fn named(name: &str) -> Self {
        Self { name: name.to_string(), sql: sluice_catalog::sql::ident(name), kind: Kind::Auto }
    }
}

async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

fn first_row(batches: &[arrow::record_batch::RecordBatch]) -> Option<&arrow::record_batch::RecordBatch> {
    batches.iter().find(|b| b.num_rows() > 0)
}

/// Row `row` of `column` as a number (None when NULL or not a number).
pub fn number_at(column: &dyn Array, row: usize) -> Option<f64> {
    let a = arrow::compute::cast(column, &DataType::Float64).ok()?;
    let a = a.as_primitive::<Float64Type>();
    (row < a.len() && !a.is_null(row)).then(|| a.value(row))
}

fn float(b: &arrow::record_batch::RecordBatch, i: usize) -> Option<f64> {
    number_at(b.column(i).as_ref(), 0)
}

/// The bins of each column, decided from the reference `from` (a FROM clause) with one query:
/// the range of every numeric column, and the distinct values of integers left to decide.
pub async fn reference_bins(ctx: &SessionContext, from: &str, columns: &[Column]) -> Result<Vec<ColumnSpec>> {
    let select: Vec<String> = columns.iter().map(|c| format!("{} AS {}", c.sql, sluice_catalog::sql::ident(&c.name))).collect();
    let schema = ctx.sql(&format!("SELECT {} FROM {from} LIMIT 0", select.join(", "))).await?.schema().as_arrow().clone();
    // Per column: None (categories), or the index of its MIN, MAX and distinct count in the query.
    let mut aggregates: Vec<String> = Vec::new();
    let mut at: Vec<Option<usize>> = Vec::new();
    for (column, field) in columns.iter().zip(schema.fields()) {
        let t = field.data_type();
        let text = matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean);
        if column.kind == Kind::Categorical || (column.kind == Kind::Auto && text) {
            at.push(None);
            continue;
        }
        if !t.is_numeric() {
            return Err(Error::Invalid(format!(
                "column '{}' is {t}: drift is measured on numbers and categories (text, booleans, integers)",
                column.name
            )));
        }
        let x = format!("({})", column.sql);
        // Finite values only: NaN and the infinities are counted apart and set no edge (|NaN| <
        // MAX is false, |inf| is above it).
        let d = format!("CASE WHEN abs(CAST({x} AS DOUBLE)) <= {} THEN CAST({x} AS DOUBLE) END", f64::MAX);
        let distinct = if t.is_integer() && column.kind == Kind::Auto { format!("COUNT(DISTINCT {x})") } else { "NULL".into() };
        let i = aggregates.len();
        at.push(Some(i));
        aggregates.extend([format!("MIN({d}) AS a{i}"), format!("MAX({d}) AS a{}", i + 1), format!("{distinct} AS a{}", i + 2)]);
    }
    let ranges = match aggregates.is_empty() {
        true => Vec::new(),
        false => collect(ctx, &format!("SELECT {} FROM {from}", aggregates.join(", "))).await?,
    };
    let mut specs = Vec::new();
    for (column, at) in columns.iter().zip(at) {
        let binning = match at {
            None => Binning::Categorical,
            Some(i) => {
                let b = first_row(&ranges).ok_or_else(|| Error::Invalid(format!("{from}: no rows")))?;
                let (Some(lo), Some(hi)) = (float(b, i), float(b, i + 1)) else {
                    return Err(Error::Invalid(format!("column '{}' has no values in the reference {from}", column.name)));
                };
                if float(b, i + 2).is_some_and(|n| n <= FEW_VALUES as f64) {
                    Binning::Categorical
                } else {
                    Binning::Numeric { lo, hi, bins: FINE_BINS }
                }
            }
        };
        specs.push(ColumnSpec { name: column.name.clone(), binning });
    }
    Ok(specs)
}

/// The FROM clause of a reference: the rows of `pinned` (`name@version`), of `split` when given,
/// that `bad` (a condition on their features) does not reject.
pub fn reference_rows(pinned: &str, split: Option<&str>, bad: &str) -> String {
    let split = split.map_or(String::new(), |s| format!("split = '{}' AND ", s.replace('\'', "''")));
    format!("(SELECT * FROM {} WHERE {split}NOT {bad}) AS reference", sluice_catalog::sql::ident(pinned))
}

/// The profile of `columns` of `from` (a FROM clause) with `specs`' bins: one query, every
/// column sketched by the `sluice_sketch` aggregate on the executors in one scan.
pub async fn sql_profile(ctx: &SessionContext, from: &str, columns: &[Column], specs: &[ColumnSpec]) -> Result<Profile> {
    let mut select = vec!["COUNT(*)".to_string()];
    for (column, spec) in columns.iter().zip(specs) {
        select.push(sluice_engine::profile::sketch_sql(&column.sql, spec)?);
    }
    let rows = collect(ctx, &format!("SELECT {} FROM {from}", select.join(", "))).await?;
    let row = first_row(&rows).ok_or_else(|| Error::Invalid(format!("{from}: the profile query returned no row")))?;
    let mut profile = Profile::new(specs);
    profile.rows = float(row, 0).unwrap_or(0.0) as u64;
    for (i, (sketch, spec)) in profile.columns.iter_mut().zip(specs).enumerate() {
        let text = arrow::compute::cast(row.column(i + 1), &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let value = (!text.is_null(0)).then(|| text.value(0));
        *sketch = sluice_engine::profile::read_sketch(value, spec)?;
    }
    Ok(profile)
}

/// The profile of a reference, kept next to it: `<reference asset>/_profiles/<key>.json`, where
/// the key names the pinned version, the rows taken and the columns' SQL (a model's predictions
/// included), so it is computed once per reference and model version.
pub async fn reference_profile(
    ctx: &SessionContext,
    lake: &Lake,
    asset: &str,
    from: &str,
    columns: &[Column],
) -> Result<Profile> {
    let mut hash = sha2::Sha256::new();
    hash.update(from.as_bytes());
    for c in columns {
        hash.update(format!("\n{}={} ({:?})", c.name, c.sql, c.kind).as_bytes());
    }
    let key: String = hash.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let url = lake
        .asset_url(asset)?
        .join(&format!("_profiles/{key}.json"))
        .map_err(|e| Error::Invalid(format!("profile of {asset}: {e}")))?;
    let path = lake.store_path(&url)?;
    let store = lake.store();
    if let Ok(found) = store.get(&path).await
        && let Ok(bytes) = found.bytes().await
        && let Ok(profile) = serde_json::from_slice::<Profile>(&bytes)
    {
        return Ok(profile);
    }
    let specs = reference_bins(ctx, from, columns).await?;
    let profile = sql_profile(ctx, from, columns, &specs).await?;
    let bytes = serde_json::to_vec(&profile).map_err(|e| Error::Invalid(format!("profile of {asset}: {e}")))?;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| Error::Invalid(format!("saving the profile of {asset} at {url}: {e}")))?;
    Ok(profile)
}

/// Columns of an asset version profiled for the console (numbers, text, booleans), at most.
pub const PROFILED_COLUMNS: usize = 32;

/// The profile of an asset version (its first [`PROFILED_COLUMNS`] numeric, text and boolean
/// columns), made on the cluster with two queries the first time and then kept with the asset.
pub async fn version_profile(ctx: &SessionContext, lake: &Lake, version: &AssetVersion) -> Result<Profile> {
    let columns: Vec<Column> = version
        .schema
        .fields()
        .iter()
        .filter(|f| {
            let t = f.data_type();
            t.is_numeric() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean)
        })
        .take(PROFILED_COLUMNS)
        .map(|f| Column::named(f.name()))
        .collect();
    if columns.is_empty() {
        return Err(Error::Invalid("no numeric or text columns".into()));
    }
    let pinned = sluice_catalog::sql::ident(&format!("{}@{}", version.name, version.version));
    reference_profile(ctx, lake, &version.name, &pinned, &columns).await
}

/// Versions of at most this many rows are profiled when written (the profile reads the whole
/// version; `SLUICE_PROFILE_ON_WRITE` sets another limit, `0` none).
pub const PROFILE_ON_WRITE_ROWS: u64 = 100_000_000;

/// Profiles the version a write committed, so it is kept with the version (the console shows
/// it, a later drift check against it starts from it). Versions over the row limit
/// ([`PROFILE_ON_WRITE_ROWS`], `SLUICE_PROFILE_ON_WRITE`) are left to their first view. A failed
/// profile is logged: the write itself has landed.
pub async fn profile_written(ctx: &SessionContext, lake: &Lake, written: &sluice_engine::assets::WriteSummary) {
    let limit = match std::env::var("SLUICE_PROFILE_ON_WRITE") {
        Ok(v) if v.eq_ignore_ascii_case("false") => 0,
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
            tracing::warn!("SLUICE_PROFILE_ON_WRITE='{v}' is not a number of rows; using {PROFILE_ON_WRITE_ROWS}");
            PROFILE_ON_WRITE_ROWS
        }),
        Err(_) => PROFILE_ON_WRITE_ROWS,
    };
    if limit == 0 {
        return;
    }
    let started = std::time::Instant::now();
    let pinned = AssetRef { name: written.asset.clone(), at: At::Version(written.version) };
    let result = async {
        let version = lake.resolve(&pinned).await?;
        if version.rows() > limit {
            return Ok(None);
        }
        version_profile(ctx, lake, &version).await.map(Some)
    };
    match result.await {
        Ok(Some(p)) => tracing::info!(asset = %written.asset, version = written.version, columns = p.columns.len(), seconds = started.elapsed().as_secs_f64(), "profiled"),
        Ok(None) => tracing::info!(asset = %written.asset, version = written.version, limit, "not profiled now: more rows than SLUICE_PROFILE_ON_WRITE"),
        Err(e) => tracing::warn!(asset = %written.asset, version = written.version, "the new version was not profiled: {e}"),
    }
}

/// Merges the partial profiles `SIDE-N.json` under `folder` (and its subfolders); None when
/// there are none.
pub async fn merge_parts(lake: &Lake, folder: &url::Url, side: &str) -> Result<Option<Profile>> {
    let store = lake.store();
    let listed: Vec<_> = store
        .list(Some(&lake.store_path(folder)?))
        .try_collect()
        .await
        .map_err(|e| Error::Invalid(format!("listing profiles under {folder}: {e}")))?;
    let mut merged: Option<Profile> = None;
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        if !(name.starts_with(&format!("{side}-")) && name.ends_with(".json")) {
            continue;
        }
        let read_error = |e: object_store::Error| Error::Invalid(format!("reading the profile {}: {e}", meta.location));
        let bytes = store.get(&meta.location).await.map_err(read_error)?.bytes().await.map_err(read_error)?;
        let part: Profile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("the profile {} is not a profile: {e}", meta.location)))?;
        match &mut merged {
            Some(profile) => profile.merge(&part)?,
            None => merged = Some(part),
        }
    }
    Ok(merged)
}

/// A scoring run's profiles, from its folder: the reference's, and the current data's (inputs
/// then predictions, merged from what the executors wrote).
pub async fn run_profiles(lake: &Lake, run_url: &url::Url) -> Result<(Profile, Profile)> {
    let at = run_url.join("_reference.json").map_err(|e| Error::Invalid(e.to_string()))?;
    let read_error = |e: object_store::Error| Error::Invalid(format!("reading the reference profile {at}: {e}"));
    let bytes = lake.store().get(&lake.store_path(&at)?).await.map_err(read_error)?.bytes().await.map_err(read_error)?;
    let reference: Profile = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{at}: {e}")))?;
    let inputs = merge_parts(lake, run_url, "input").await?;
    let outputs = merge_parts(lake, run_url, "output").await?;
    let Some(inputs) = inputs else {
        return Err(Error::Invalid(format!("the executors left no profiles under {run_url}")));
    };
    // Predictions are profiled when they are single numbers.
    let outputs = outputs.map(|o| o.columns).unwrap_or_default();
    let current = Profile { rows: inputs.rows, columns: inputs.columns.into_iter().chain(outputs).collect() };
    Ok((reference, current))
}

/// The folder of scoring run `run_id` of predictions asset `asset`.
pub fn run_folder(lake: &Lake, asset: &str, run_id: &str) -> Result<url::Url> {
    lake.asset_url(asset)?.join(&format!("run-{run_id}/")).map_err(|e| Error::Invalid(format!("run folder: {e}")))
}

/// The training data of a registered model, from its lineage: `(asset@version, split)` for a
/// split asset (rows with `split = 'train'`), or the `_train` asset of separate splits.
pub fn training_split(version: &sluice_catalog::models::ModelVersion) -> Option<(String, Option<String>)> {
    let datasets: Vec<&str> = version.info.lineage.get("datasets")?.as_array()?.iter().filter_map(|d| d.as_str()).collect();
    if let Some(train) = datasets.iter().find(|d| d.split('@').next().is_some_and(|n| n.ends_with("_train"))) {
        return Some((train.to_string(), None));
    }
    match datasets.as_slice() {
        [one] => Some((one.to_string(), Some("train".into()))),
        _ => None,
    }
}
