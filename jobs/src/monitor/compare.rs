//! Drift of current data against a reference, column by column, computed where the data is:
//! each side is reduced on the cluster to fixed-bin histograms (`GROUP BY` of a bin number)
//! and category counts, and the metrics of [`super::drift`] are taken from those counts.
//!
//! Numeric columns: PSI and Jensen-Shannon over 10 bins of the reference's range; KS and the
//! normalized Wasserstein distance from the two CDFs on a 1,000-bin grid over both ranges (exact
//! to a bin's width). Categorical columns: Jensen-Shannon, PSI and chi-squared over the union of
//! categories. A column drifts when its deciding metric passes the threshold: normalized
//! Wasserstein for numbers, Jensen-Shannon distance for categories (Evidently's defaults, 0.1).

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::drift;
use crate::error::{Error, Result};
use crate::sql::ident;

/// Bins of the PSI / Jensen-Shannon histogram of a numeric column.
const COARSE_BINS: i64 = 10;
/// Bins of the grid the CDFs are compared on.
const FINE_BINS: i64 = 1000;

/// How one column moved.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    /// The column.
    pub column: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    /// Non-NULL values in the reference and in the current data.
    pub rows: (u64, u64),
    /// Population stability index.
    pub psi: f64,
    /// Jensen-Shannon distance.
    pub js_distance: f64,
    /// Kolmogorov-Smirnov statistic (numeric).
    pub ks: Option<f64>,
    /// Wasserstein distance over the reference's standard deviation (numeric).
    pub normalized_wasserstein: Option<f64>,
    /// Chi-squared p-value (categorical).
    pub chi_squared_p: Option<f64>,
    /// The metric that decides, its value and threshold.
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
    /// The threshold it is held to.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// min, max, count and population standard deviation of `column` in `table`.
async fn summary(ctx: &SessionContext, table: &str, column: &str) -> Result<(f64, f64, u64, f64)> {
    let c = format!("CAST({} AS DOUBLE)", ident(column));
    let sql = format!("SELECT MIN({c}), MAX({c}), CAST(COUNT({c}) AS DOUBLE), STDDEV_POP({c}) FROM {table}");
    let batches = rows(ctx, &sql).await?;
    let b = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| Error::Invalid(format!("{table}: no rows")))?;
    let value = |i: usize| {
        let a = b.column(i).as_primitive::<Float64Type>();
        if a.is_null(0) { f64::NAN } else { a.value(0) }
    };
    Ok((value(0), value(1), value(2) as u64, value(3)))
}

/// Counts of `column` in `bins` equal bins from `lo`, `width` wide (values outside in the end bins).
async fn histogram(ctx: &SessionContext, table: &str, column: &str, lo: f64, width: f64, bins: i64) -> Result<Vec<u64>> {
    let c = format!("CAST({} AS DOUBLE)", ident(column));
    let sql = format!(
        "SELECT LEAST(GREATEST(CAST(FLOOR(({c} - ({lo:e})) / ({width:e})) AS BIGINT), 0), {}) AS bin, COUNT(*) AS n \
         FROM {table} WHERE {c} IS NOT NULL GROUP BY 1",
        bins - 1
    );
    let mut counts = vec![0u64; usize::try_from(bins).unwrap_or(1)];
    for b in rows(ctx, &sql).await? {
        let (bin, n) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
        for i in 0..b.num_rows() {
            if let Some(slot) = usize::try_from(bin.value(i)).ok().and_then(|k| counts.get_mut(k)) {
                *slot += u64::try_from(n.value(i)).unwrap_or(0);
            }
        }
    }
    Ok(counts)
}

async fn numeric(ctx: &SessionContext, reference: &str, current: &str, column: &str, threshold: f64) -> Result<ColumnDrift> {
    let (rmin, rmax, rn, rstd) = summary(ctx, reference, column).await?;
    let (cmin, cmax, cn, _) = summary(ctx, current, column).await?;
    if rn == 0 || cn == 0 {
        return Err(Error::Invalid(format!("column '{column}' has no values in the reference or the current data")));
    }
    // Coarse bins over the reference's range (one bin when it is constant).
    let coarse_width = if rmax > rmin { (rmax - rmin) / COARSE_BINS as f64 } else { 1.0 };
    let coarse_bins = if rmax > rmin { COARSE_BINS } else { 1 };
    let ref_coarse = histogram(ctx, reference, column, rmin, coarse_width, coarse_bins).await?;
    let cur_coarse = histogram(ctx, current, column, rmin, coarse_width, coarse_bins).await?;
    // The CDFs on a fine grid over both ranges.
    let (lo, hi) = (rmin.min(cmin), rmax.max(cmax));
    let width = if hi > lo { (hi - lo) / FINE_BINS as f64 } else { 1.0 };
    let ref_fine = histogram(ctx, reference, column, lo, width, FINE_BINS).await?;
    let cur_fine = histogram(ctx, current, column, lo, width, FINE_BINS).await?;
    let (mut fr, mut fc, mut ks, mut area) = (0u64, 0u64, 0.0f64, 0.0f64);
    for (r, c) in ref_fine.iter().zip(&cur_fine) {
        fr += r;
        fc += c;
        let gap = (fr as f64 / rn as f64 - fc as f64 / cn as f64).abs();
        ks = ks.max(gap);
        area += gap * width;
    }
    let normalized = if rstd > 0.0 { area / rstd } else if area > 0.0 { f64::INFINITY } else { 0.0 };
    Ok(ColumnDrift {
        column: column.to_string(),
        kind: "numeric",
        rows: (rn, cn),
        psi: drift::psi(&ref_coarse, &cur_coarse),
        js_distance: drift::js_distance(&ref_coarse, &cur_coarse),
        ks: Some(ks),
        normalized_wasserstein: Some(normalized),
        chi_squared_p: None,
        metric: "normalized_wasserstein",
        value: normalized,
        threshold,
        drifted: normalized > threshold,
    })
}

async fn categories(ctx: &SessionContext, table: &str, column: &str) -> Result<Vec<(String, u64)>> {
    let sql = format!(
        "SELECT CAST({c} AS VARCHAR) AS v, COUNT(*) AS n FROM {table} WHERE {c} IS NOT NULL GROUP BY 1",
        c = ident(column)
    );
    let mut out = Vec::new();
    for b in rows(ctx, &sql).await? {
        let values = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let (v, n) = (values.as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
        for i in 0..b.num_rows() {
            out.push((v.value(i).to_string(), u64::try_from(n.value(i)).unwrap_or(0)));
        }
    }
    Ok(out)
}

async fn categorical(ctx: &SessionContext, reference: &str, current: &str, column: &str, threshold: f64) -> Result<ColumnDrift> {
    let (r, c) = (categories(ctx, reference, column).await?, categories(ctx, current, column).await?);
    let mut names: Vec<&String> = r.iter().chain(&c).map(|(v, _)| v).collect();
    names.sort();
    names.dedup();
    let count = |side: &[(String, u64)]| -> Vec<u64> {
        names.iter().map(|n| side.iter().find(|(v, _)| v == *n).map_or(0, |(_, k)| *k)).collect()
    };
    let (rc, cc) = (count(&r), count(&c));
    let (rn, cn) = (rc.iter().sum::<u64>(), cc.iter().sum::<u64>());
    if rn == 0 || cn == 0 {
        return Err(Error::Invalid(format!("column '{column}' has no values in the reference or the current data")));
    }
    let js = drift::js_distance(&rc, &cc);
    Ok(ColumnDrift {
        column: column.to_string(),
        kind: "categorical",
        rows: (rn, cn),
        psi: drift::psi(&rc, &cc),
        js_distance: js,
        ks: None,
        normalized_wasserstein: None,
        chi_squared_p: Some(drift::chi_squared(&rc, &cc).1),
        metric: "js_distance",
        value: js,
        threshold,
        drifted: js > threshold,
    })
}

/// Drift of `columns` (numbers) and `categorical` columns of `current` against `reference`
/// (asset references or tables readable in `ctx`), each held to `threshold`.
pub async fn compare(
    ctx: &SessionContext,
    reference: &str,
    current: &str,
    columns: &[String],
    categorical_columns: &[String],
    threshold: f64,
) -> Result<Vec<ColumnDrift>> {
    let (reference, current) = (ident(reference), ident(current));
    let mut out = Vec::new();
    for column in columns {
        out.push(numeric(ctx, &reference, &current, column, threshold).await?);
    }
    for column in categorical_columns {
        out.push(categorical(ctx, &reference, &current, column, threshold).await?);
    }
    Ok(out)
}

/// Writes `report` as a new version of asset `name` (appended): one row per column, with the
/// time of the check and the pinned versions of `reference` and `current` it compared.
pub async fn write_report(
    lake: &sluice_connectors::delta::Lake,
    name: &str,
    reference: &str,
    current: &str,
    report: &[ColumnDrift],
) -> Result<sluice_engine::assets::WriteSummary> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use sluice_connectors::delta::AssetRef;
    use sluice_engine::assets::{WriteOptions, write_asset};

    let (reference, current) = (lake.resolve(&AssetRef::parse(reference)?).await?, lake.resolve(&AssetRef::parse(current)?).await?);
    let (reference, current) =
        (format!("{}@{}", reference.name, reference.version), format!("{}@{}", current.name, current.version));
    let n = report.len();
    let text = |f: &dyn Fn(&ColumnDrift) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(report.iter().map(f))) };
    let float = |f: &dyn Fn(&ColumnDrift) -> Option<f64>| -> ArrayRef { Arc::new(report.iter().map(f).collect::<Float64Array>()) };
    let checked_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("checked_at", Arc::new(StringArray::from(vec![checked_at; n]))),
        ("reference", Arc::new(StringArray::from(vec![reference.clone(); n]))),
        ("current", Arc::new(StringArray::from(vec![current.clone(); n]))),
        ("column", text(&|c| c.column.clone())),
        ("kind", text(&|c| c.kind.to_string())),
        ("reference_rows", Arc::new(report.iter().map(|c| i64::try_from(c.rows.0).ok()).collect::<Int64Array>())),
        ("current_rows", Arc::new(report.iter().map(|c| i64::try_from(c.rows.1).ok()).collect::<Int64Array>())),
        ("psi", float(&|c| Some(c.psi))),
        ("js_distance", float(&|c| Some(c.js_distance))),
        ("ks", float(&|c| c.ks)),
        ("normalized_wasserstein", float(&|c| c.normalized_wasserstein)),
        ("chi_squared_p", float(&|c| c.chi_squared_p)),
        ("metric", text(&|c| c.metric.to_string())),
        ("value", float(&|c| Some(c.value))),
        ("threshold", float(&|c| Some(c.threshold))),
        ("drifted", Arc::new(report.iter().map(|c| Some(c.drifted)).collect::<BooleanArray>())),
    ];
    let batch = RecordBatch::try_from_iter(columns)?;
    let ctx = SessionContext::new_with_config(sluice_engine::session::session_config());
    ctx.register_object_store(lake.store_url(), lake.store());
    let mut lineage = serde_json::Map::new();
    lineage.insert("drift".into(), serde_json::json!({ "reference": reference, "current": current }));
    let options = WriteOptions { job: "sluice monitor drift".into(), lineage, ..Default::default() };
    Ok(write_asset(lake, name, ctx.read_batch(batch)?, &options).await?)
}
