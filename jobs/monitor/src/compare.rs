//! Drift of current data against a reference, column by column, from two profiles with the same
//! bins (see [`super::profile`]): the reference's, and the current data's, made on the cluster by
//! SQL aggregates or inside a scoring pass by the executors.
//!
//! Numeric columns: PSI and Jensen-Shannon over 10 bins of the reference's range (values outside
//! it in the end bins); KS and the normalized Wasserstein distance from the two CDFs on the
//! 1,000-bin grid, values outside the range taken exactly from their count and sum. Categorical
//! columns: Jensen-Shannon, PSI and chi-squared over the union of categories. What decides, as
//! Evidently does: above 1,000 reference values, normalized Wasserstein (numbers) or
//! Jensen-Shannon distance (categories) over 0.1; for smaller references, a KS or chi-squared
//! p-value under 0.05. Thresholds can be set per column.

use datafusion::prelude::SessionContext;
use serde::Serialize;
use sluice_engine::profile::{Binning, ColumnProfile, Profile};

use super::drift;
use super::profile::{self, Column, Kind};
use sluice_catalog::error::{Error, Result};
use sluice_catalog::sql::ident;

/// Bins of the PSI / Jensen-Shannon histogram of a numeric column.
const COARSE_BINS: usize = 10;
/// References with more values than this are judged by a distance, smaller ones by a test.
const LARGE_REFERENCE: u64 = 1000;

/// What a column is held to.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Largest normalized Wasserstein / Jensen-Shannon distance that is not drift (default 0.1).
    #[serde(default = "default_distance")]
    pub distance: f64,
    /// Smallest KS / chi-squared p-value that is not drift, for small references (default 0.05).
    #[serde(default = "default_p_value")]
    pub p_value: f64,
    /// Per column: the threshold of whichever metric decides for it.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, f64>,
}

fn default_distance() -> f64 {
    0.1
}

fn default_p_value() -> f64 {
    0.05
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { distance: default_distance(), p_value: default_p_value(), columns: Default::default() }
    }
}

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
    /// Its asymptotic p-value (numeric).
    pub ks_p: Option<f64>,
    /// Wasserstein distance over the reference's standard deviation (numeric).
    pub normalized_wasserstein: Option<f64>,
    /// Chi-squared p-value (categorical).
    pub chi_squared_p: Option<f64>,
    /// The metric that decides.
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
    /// The threshold it is held to (a p-value drifts below it, a distance above it).
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
}

/// Drift of every column of `reference` found in `current` (same bins), held to `thresholds`.
pub fn compare_profiles(reference: &Profile, current: &Profile, thresholds: &Thresholds) -> Result<Vec<ColumnDrift>> {
    let mut out = Vec::new();
    for r in &reference.columns {
        let c = current.column(&r.name).ok_or_else(|| Error::Invalid(format!("the current profile has no column '{}'", r.name)))?;
        if c.binning != r.binning {
            return Err(Error::Invalid(format!("column '{}': the current profile was not binned like the reference", r.name)));
        }
        out.push(match r.binning {
            Binning::Numeric { lo, hi, bins } => numeric(r, c, lo, hi, bins, thresholds),
            Binning::Categorical => categorical(r, c, thresholds),
        });
    }
    Ok(out)
}

fn decide(
    column: &str,
    large: bool,
    (distance_metric, distance): (&'static str, f64),
    (test_metric, p): (&'static str, f64),
    thresholds: &Thresholds,
) -> (&'static str, f64, f64, bool) {
    let own = thresholds.columns.get(column).copied();
    if large {
        let t = own.unwrap_or(thresholds.distance);
        (distance_metric, distance, t, distance > t)
    } else {
        let t = own.unwrap_or(thresholds.p_value);
        (test_metric, p, t, p < t)
    }
}

fn numeric(r: &ColumnProfile, c: &ColumnProfile, lo: f64, hi: f64, bins: usize, thresholds: &Thresholds) -> ColumnDrift {
    let (rn, cn) = (r.count, c.count);
    let empty = ColumnDrift {
        column: r.name.clone(),
        kind: "numeric",
        rows: (rn, cn),
        psi: f64::NAN,
        js_distance: f64::NAN,
        ks: None,
        ks_p: None,
        normalized_wasserstein: None,
        chi_squared_p: None,
        metric: "no_values",
        value: f64::NAN,
        threshold: f64::NAN,
        drifted: rn > 0,
    };
    if rn == 0 || cn == 0 {
        return empty;
    }
    // Coarse bins: groups of fine bins, values outside the range in the end bins.
    let coarse = |p: &ColumnProfile| -> Vec<u64> {
        let group = bins.div_ceil(COARSE_BINS).max(1);
        let mut out: Vec<u64> = p.bins.chunks(group).map(|g| g.iter().sum()).collect();
        if let Some(first) = out.first_mut() {
            *first += p.below.0;
        }
        if let Some(last) = out.last_mut() {
            *last += p.above.0;
        }
        out
    };
    let (rc, cc) = (coarse(r), coarse(c));
    // CDFs at every edge of the grid; the area between them by trapezoids inside the range, and
    // exactly outside it from the count and sum of the values there.
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 0.0 };
    let (rn_f, cn_f) = (rn as f64, cn as f64);
    let (mut fr, mut fc) = (r.below.0 as f64 / rn_f, c.below.0 as f64 / cn_f);
    let mut ks = (fr - fc).abs();
    let mut area = ((r.below.0 as f64 * lo - r.below.1) / rn_f - (c.below.0 as f64 * lo - c.below.1) / cn_f).abs();
    for (a, b) in r.bins.iter().zip(&c.bins) {
        let before = (fr - fc).abs();
        fr += *a as f64 / rn_f;
        fc += *b as f64 / cn_f;
        let after = (fr - fc).abs();
        ks = ks.max(after);
        area += (before + after) / 2.0 * width;
    }
    area += ((r.above.1 - r.above.0 as f64 * hi) / rn_f - (c.above.1 - c.above.0 as f64 * hi) / cn_f).abs();
    let std = r.std();
    let normalized = if std > 0.0 { area / std } else if area > 0.0 { f64::INFINITY } else { 0.0 };
    let ks_p = drift::ks_p_value(ks, rn, cn);
    let (metric, value, threshold, drifted) = decide(
        &r.name,
        rn > LARGE_REFERENCE,
        ("normalized_wasserstein", normalized),
        ("ks_p_value", ks_p),
        thresholds,
    );
    ColumnDrift {
        psi: drift::psi(&rc, &cc),
        js_distance: drift::js_distance(&rc, &cc),
        ks: Some(ks),
        ks_p: Some(ks_p),
        normalized_wasserstein: Some(normalized),
        metric,
        value,
        threshold,
        drifted,
        ..empty
    }
}

fn categorical(r: &ColumnProfile, c: &ColumnProfile, thresholds: &Thresholds) -> ColumnDrift {
    let mut names: Vec<&String> = r.categories.keys().chain(c.categories.keys()).collect();
    names.sort();
    names.dedup();
    let count = |p: &ColumnProfile| -> Vec<u64> {
        let mut v: Vec<u64> = names.iter().map(|n| p.categories.get(*n).copied().unwrap_or(0)).collect();
        v.push(p.other);
        v
    };
    let (rc, cc) = (count(r), count(c));
    let (rn, cn) = (r.count, c.count);
    let js = drift::js_distance(&rc, &cc);
    let chi_p = drift::chi_squared(&rc, &cc).1;
    let (metric, value, threshold, drifted) = if rn == 0 || cn == 0 {
        ("no_values", f64::NAN, f64::NAN, rn > 0)
    } else {
        decide(&r.name, rn > LARGE_REFERENCE, ("js_distance", js), ("chi_squared_p", chi_p), thresholds)
    };
    ColumnDrift {
        column: r.name.clone(),
        kind: "categorical",
        rows: (rn, cn),
        psi: drift::psi(&rc, &cc),
        js_distance: js,
        ks: None,
        ks_p: None,
        normalized_wasserstein: None,
        chi_squared_p: Some(chi_p),
        metric,
        value,
        threshold,
        drifted,
    }
}

/// The report as a text table, a row per column, then the `drifted` line.
pub fn table(report: &[ColumnDrift]) -> String {
    use std::fmt::Write;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut out = format!(
        "{:<20} {:<12} {:>17} {:>8} {:>8} {:>8} {:>8} {:>8}  drifted\n",
        "column", "kind", "rows (ref/cur)", "psi", "js", "ks", "wass/sd", "chi2 p"
    );
    for c in report {
        let verdict = match (c.drifted, c.metric.ends_with("_p") || c.metric.ends_with("_p_value")) {
            (false, _) => "no".to_string(),
            (true, true) => format!("yes ({} {:.3} < {})", c.metric, c.value, c.threshold),
            (true, false) => format!("yes ({} {:.3} > {})", c.metric, c.value, c.threshold),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:>17} {:>8.4} {:>8.4} {:>8} {:>8} {:>8}  {verdict}",
            c.column,
            c.kind,
            format!("{}/{}", c.rows.0, c.rows.1),
            c.psi,
            c.js_distance,
            opt(c.ks),
            opt(c.normalized_wasserstein),
            opt(c.chi_squared_p),
        );
    }
    let _ = writeln!(out, "drifted      {}", drifted_columns(report));
    out
}

/// The drifted columns, comma-separated, or `none`.
pub fn drifted_columns(report: &[ColumnDrift]) -> String {
    let drifted: Vec<&str> = report.iter().filter(|c| c.drifted).map(|c| c.column.as_str()).collect();
    if drifted.is_empty() { "none".to_string() } else { drifted.join(", ") }
}

/// Drift of `columns` (numbers) and `categorical` columns of `current` against `reference`
/// (asset references or tables readable in `ctx`), each reduced on the cluster to a profile.
pub async fn compare(
    ctx: &SessionContext,
    reference: &str,
    current: &str,
    columns: &[String],
    categorical_columns: &[String],
    thresholds: &Thresholds,
) -> Result<Vec<ColumnDrift>> {
    let (reference, current) = (ident(reference), ident(current));
    let mut wanted: Vec<Column> = columns.iter().map(|c| Column { kind: Kind::Numeric, ..Column::named(c) }).collect();
    wanted.extend(categorical_columns.iter().map(|c| Column { kind: Kind::Categorical, ..Column::named(c) }));
    let specs = profile::reference_bins(ctx, &reference, &wanted).await?;
    let r = profile::sql_profile(ctx, &reference, &wanted, &specs).await?;
    let c = profile::sql_profile(ctx, &current, &wanted, &specs).await?;
    compare_profiles(&r, &c, thresholds)
}

/// Writes `report` as a new version of asset `name` (appended): one row per column, with the
/// time of the check and the `labels` (what was compared: pinned versions, run, model) as
/// columns of every row; `job` names the writer in the lineage.
pub async fn write_report(
    lake: &sluice_lake::delta::Lake,
    name: &str,
    job: &str,
    labels: &[(&str, String)],
    report: &[ColumnDrift],
) -> Result<sluice_engine::assets::WriteSummary> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use sluice_engine::assets::{WriteOptions, write_asset};

    let n = report.len();
    let text = |f: &dyn Fn(&ColumnDrift) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(report.iter().map(f))) };
    let float = |f: &dyn Fn(&ColumnDrift) -> Option<f64>| -> ArrayRef { Arc::new(report.iter().map(f).collect::<Float64Array>()) };
    let checked_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut columns: Vec<(&str, ArrayRef)> = vec![("checked_at", Arc::new(StringArray::from(vec![checked_at; n])))];
    for (label, value) in labels {
        columns.push((label, Arc::new(StringArray::from(vec![value.clone(); n]))));
    }
    columns.extend([
        ("column", text(&|c| c.column.clone())),
        ("kind", text(&|c| c.kind.to_string())),
        ("reference_rows", Arc::new(report.iter().map(|c| i64::try_from(c.rows.0).ok()).collect::<Int64Array>()) as ArrayRef),
        ("current_rows", Arc::new(report.iter().map(|c| i64::try_from(c.rows.1).ok()).collect::<Int64Array>())),
        ("psi", float(&|c| Some(c.psi))),
        ("js_distance", float(&|c| Some(c.js_distance))),
        ("ks", float(&|c| c.ks)),
        ("ks_p_value", float(&|c| c.ks_p)),
        ("normalized_wasserstein", float(&|c| c.normalized_wasserstein)),
        ("chi_squared_p", float(&|c| c.chi_squared_p)),
        ("metric", text(&|c| c.metric.to_string())),
        ("value", float(&|c| Some(c.value))),
        ("threshold", float(&|c| Some(c.threshold))),
        ("drifted", Arc::new(report.iter().map(|c| Some(c.drifted)).collect::<BooleanArray>())),
    ]);
    let batch = RecordBatch::try_from_iter(columns)?;
    let ctx = sluice_engine::session::in_process(&sluice_udfs::functions("report"), Some(lake))?;
    let mut lineage = serde_json::Map::new();
    let labels: serde_json::Map<String, serde_json::Value> =
        labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
    lineage.insert("drift".into(), serde_json::Value::Object(labels));
    let options = WriteOptions { job: job.into(), lineage, ..Default::default() };
    Ok(write_asset(lake, name, ctx.read_batch(batch)?, &options).await?)
}
