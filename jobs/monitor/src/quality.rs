//! Prediction quality once labels arrive: predictions joined with labels on their key, per time
//! window, reduced on the cluster (ROC AUC from the average ranks of each distinct score, accuracy at 0.5 and log loss for
//! classifiers; RMSE and MAE for regressors), against the test metrics the registry keeps with
//! the model version that made the predictions.

use std::collections::BTreeMap;

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use sluice_lake::delta::{AssetRef, Lake};

use sluice_catalog::error::{Error, Result};
use sluice_catalog::models::{ModelRef, Registry};
use sluice_catalog::sql::ident;

/// What to join and measure (also the `[quality]` table of a job file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    /// The predictions asset (`name[@version]`).
    pub predictions: String,
    /// The labels: an asset (`name[@version]`) or a table readable in the session.
    pub labels: String,
    /// Key columns, the same in both.
    pub key: Vec<String>,
    /// The label column.
    pub label: String,
    /// The prediction column (default `prediction`).
    #[serde(default = "default_prediction")]
    pub prediction: String,
    /// `hour`, `day`, `week`, `month` or `none` (default `day`).
    #[serde(default = "default_window")]
    pub window: String,
    /// The predictions' time column the windows are cut on (default `scored_at`).
    #[serde(default = "default_time")]
    pub time_column: String,
    /// A SQL condition on the joined rows (`p.` predictions, `l.` labels).
    #[serde(default)]
    pub filter: Option<String>,
    /// The model the metrics are held against (default: the one that made the predictions).
    #[serde(default)]
    pub model: Option<String>,
}

fn default_prediction() -> String {
    "prediction".into()
}

fn default_window() -> String {
    "day".into()
}

fn default_time() -> String {
    "scored_at".into()
}

/// Metrics of one window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowQuality {
    /// The window's start (or `all`).
    pub window: String,
    /// Labelled predictions.
    pub rows: u64,
    /// Positive labels (classification).
    pub positives: u64,
    /// ROC AUC (classification; NaN with one class only).
    pub auc: Option<f64>,
    /// Accuracy at 0.5 (classification).
    pub accuracy: Option<f64>,
    /// Log loss, scores clamped to [1e-7, 1 - 1e-7] (classification).
    pub log_loss: Option<f64>,
    /// Root mean squared error (regression).
    pub rmse: Option<f64>,
    /// Mean absolute error (regression).
    pub mae: Option<f64>,
}

impl WindowQuality {
    /// The metrics by name, as the registry names them.
    pub fn metrics(&self) -> BTreeMap<&'static str, f64> {
        [("auc", self.auc), ("accuracy", self.accuracy), ("log_loss", self.log_loss), ("rmse", self.rmse), ("mae", self.mae)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    }
}

/// What `sluice monitor quality` measured.
#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    /// The predictions version read.
    pub predictions: String,
    /// The labels read.
    pub labels: String,
    /// The model (`name@version`) whose test metrics are the reference, when known.
    pub model: Option<String>,
    /// `classification` or `regression`.
    pub task: String,
    /// Every window, oldest first.
    pub windows: Vec<WindowQuality>,
    /// All labelled predictions together.
    pub overall: WindowQuality,
    /// The model's metrics on its test split, from the registry.
    pub test: BTreeMap<String, f64>,
    /// Predictions with no label yet.
    pub unlabelled: u64,
}

fn pinned_or_table(version: Option<sluice_lake::delta::AssetVersion>, text: &str) -> String {
    version.map_or_else(|| text.to_string(), |v| format!("{}@{}", v.name, v.version))
}

async fn resolve(lake: &Lake, text: &str) -> Result<Option<sluice_lake::delta::AssetVersion>> {
    let asset = AssetRef::parse(text)?;
    if lake.exists(&asset.name).await? { Ok(Some(lake.resolve(&asset).await?)) } else { Ok(None) }
}

fn f64_at(batch: &arrow::record_batch::RecordBatch, name: &str, row: usize) -> Result<Option<f64>> {
    let column = batch.column_by_name(name).ok_or_else(|| Error::Invalid(format!("quality query: no column {name}")))?;
    Ok(super::profile::number_at(column.as_ref(), row))
}

/// Joins, measures and compares, as `spec` says.
pub async fn quality(ctx: &SessionContext, lake: &Lake, spec: &QualitySpec) -> Result<QualityReport> {
    if spec.key.is_empty() {
        return Err(Error::Invalid("--key: name the columns that join predictions and labels".into()));
    }
    let predictions = resolve(lake, &spec.predictions)
        .await?
        .ok_or_else(|| Error::Invalid(format!("no predictions asset '{}'", spec.predictions)))?;
    let labels = resolve(lake, &spec.labels).await?;
    let (p_name, l_name) = (pinned_or_table(Some(predictions.clone()), ""), pinned_or_table(labels.clone(), &spec.labels));
    for column in spec.key.iter().chain([&spec.prediction, &spec.time_column]) {
        if predictions.schema.field_with_name(column).is_err() && !(column == &spec.time_column && spec.window == "none") {
            return Err(Error::Invalid(format!("{p_name} has no column '{column}'")));
        }
    }
    // The model that made the predictions, and its test metrics.
    let model = match &spec.model {
        Some(m) => Some(m.clone()),
        None if predictions.schema.field_with_name("model").is_ok() && predictions.schema.field_with_name("model_version").is_ok() => {
            let batches = ctx
                .sql(&format!("SELECT DISTINCT model, CAST(model_version AS BIGINT) AS v FROM {} LIMIT 2", ident(&p_name)))
                .await?
                .collect()
                .await?;
            let mut found = Vec::new();
            for b in &batches {
                let names = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
                for i in 0..b.num_rows() {
                    if let Some(v) = f64_at(b, "v", i)? {
                        found.push(format!("{}@{}", names.as_string::<i32>().value(i), v as u64));
                    }
                }
            }
            (found.len() == 1).then(|| found.remove(0))
        }
        None => None,
    };
    let registered = match &model {
        Some(m) => Some(Registry::open(lake)?.resolve(&ModelRef::parse(m)?).await?),
        None => None,
    };
    let test: BTreeMap<String, f64> = registered
        .as_ref()
        .and_then(|v| v.info.metrics.get("test")?.as_object().cloned())
        .map(|o| o.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect())
        .unwrap_or_default();
    let label_type = match &labels {
        Some(v) => v.schema.field_with_name(&spec.label).map(|f| f.data_type().clone()).map_err(|_| {
            Error::Invalid(format!("{l_name} has no label column '{}'", spec.label))
        })?,
        None => DataType::Null,
    };
    let task = match registered.as_ref().and_then(|v| v.info.task.clone()) {
        Some(task) => task,
        None if label_type == DataType::Boolean => "classification".into(),
        None => "regression".into(),
    };
    let on: Vec<String> = spec.key.iter().map(|k| format!("p.{k} = l.{k}", k = ident(k))).collect();
    let join = format!("{} p JOIN {} l ON {}", ident(&p_name), ident(&l_name), on.join(" AND "));
    let filter = spec.filter.as_deref().map_or(String::new(), |f| format!(" WHERE {f}"));
    let window = match spec.window.as_str() {
        "none" => "'all'".to_string(),
        unit @ ("hour" | "day" | "week" | "month") => {
            format!("CAST(date_trunc('{unit}', p.{}) AS VARCHAR)", ident(&spec.time_column))
        }
        other => return Err(Error::Invalid(format!("--window '{other}': use hour, day, week, month or none"))),
    };
    let measure = |w: &str| {
        format!(
            "WITH j AS (SELECT {w} AS w, CAST(p.{p} AS DOUBLE) AS s, CAST(l.{y} AS DOUBLE) AS y FROM {join}{filter}), \
             g AS (SELECT w, s, COUNT(*) AS n, SUM(CASE WHEN y > 0.5 THEN 1 ELSE 0 END) AS pos, \
                   SUM(CASE WHEN (s >= 0.5) = (y > 0.5) THEN 1.0 ELSE 0.0 END) AS correct, \
                   SUM(CASE WHEN y > 0.5 THEN -ln(GREATEST(LEAST(s, 0.9999999), 0.0000001)) \
                       ELSE -ln(1.0 - GREATEST(LEAST(s, 0.9999999), 0.0000001)) END) AS loss, \
                   SUM((s - y) * (s - y)) AS sq, SUM(abs(s - y)) AS ab \
                   FROM j WHERE s IS NOT NULL AND y IS NOT NULL GROUP BY w, s), \
             r AS (SELECT *, COALESCE(SUM(n) OVER ({over} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) \
                   AS before FROM g) \
             SELECT w, SUM(n) AS n, SUM(pos) AS pos, \
               SUM(CAST(pos AS DOUBLE) * (CAST(before AS DOUBLE) + (CAST(n AS DOUBLE) + 1.0) / 2.0)) AS rank_sum, \
               SUM(correct) / SUM(n) AS accuracy, SUM(loss) / SUM(n) AS log_loss, \
               sqrt(SUM(sq) / SUM(n)) AS rmse, SUM(ab) / SUM(n) AS mae \
             FROM r GROUP BY w ORDER BY w",
            p = ident(&spec.prediction),
            // A constant window needs no partitioning (and Ballista's planner refuses one).
            over = if w.starts_with('\'') { "ORDER BY s" } else { "PARTITION BY w ORDER BY s" },
            y = ident(&spec.label),
        )
    };
    let classifier = task == "classification";
    let read = |sql: String| async move {
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            let names = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
            for i in 0..b.num_rows() {
                let n = f64_at(b, "n", i)?.unwrap_or(0.0);
                let pos = f64_at(b, "pos", i)?.unwrap_or(0.0);
                let neg = n - pos;
                let mut q = WindowQuality {
                    window: names.as_string::<i32>().value(i).to_string(),
                    rows: n as u64,
                    ..Default::default()
                };
                if classifier {
                    let rank_sum = f64_at(b, "rank_sum", i)?.unwrap_or(0.0);
                    q.positives = pos as u64;
                    q.auc = Some(if pos > 0.0 && neg > 0.0 { (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg) } else { f64::NAN });
                    q.accuracy = f64_at(b, "accuracy", i)?;
                    q.log_loss = f64_at(b, "log_loss", i)?;
                } else {
                    q.rmse = f64_at(b, "rmse", i)?;
                    q.mae = f64_at(b, "mae", i)?;
                }
                out.push(q);
            }
        }
        Ok::<_, Error>(out)
    };
    let windows = read(measure(&window)).await?;
    let overall = read(measure("'all'")).await?.into_iter().next().unwrap_or_else(|| WindowQuality { window: "all".into(), ..Default::default() });
    let missing = spec.key.first().map(|k| format!("l.{} IS NULL", ident(k))).unwrap_or_default();
    let unlabelled_sql = format!(
        "SELECT COUNT(*) AS n FROM {} p LEFT JOIN {} l ON {} WHERE {missing}",
        ident(&p_name),
        ident(&l_name),
        on.join(" AND ")
    );
    let batches = ctx.sql(&unlabelled_sql).await?.collect().await?;
    let unlabelled = batches.iter().find(|b| b.num_rows() > 0).map(|b| f64_at(b, "n", 0)).transpose()?.flatten().unwrap_or(0.0) as u64;
    Ok(QualityReport {
        predictions: p_name,
        labels: l_name,
        model: registered.map(|v| format!("{}@{}", v.name, v.version)),
        task,
        windows,
        overall,
        test,
        unlabelled,
    })
}

/// The report as text: a row per window, the overall row, the test metrics and the change.
pub fn table(report: &QualityReport) -> String {
    use std::fmt::Write;
    let names: Vec<&str> = report.overall.metrics().keys().copied().collect();
    let mut out = format!("{:<26} {:>10} {:>10}", "window", "rows", "positives");
    for n in &names {
        let _ = write!(out, " {n:>10}");
    }
    out.push('\n');
    for w in report.windows.iter().chain(std::iter::once(&report.overall)) {
        let _ = write!(out, "{:<26} {:>10} {:>10}", w.window, w.rows, w.positives);
        for v in w.metrics().values() {
            let _ = write!(out, " {v:>10.6}");
        }
        out.push('\n');
    }
    if let Some(model) = &report.model {
        let test: Vec<String> = names.iter().filter_map(|n| Some(format!("{n} {:.6}", report.test.get(*n)?))).collect();
        let _ = writeln!(out, "test         {model} on its test split: {}", if test.is_empty() { "no metrics".into() } else { test.join(", ") });
        let change: Vec<String> = report
            .overall
            .metrics()
            .iter()
            .filter_map(|(n, v)| Some(format!("{n} {:+.6}", v - report.test.get(*n)?)))
            .collect();
        if !change.is_empty() {
            let _ = writeln!(out, "change       {}", change.join(", "));
        }
    }
    let _ = writeln!(out, "unlabelled   {} predictions have no label yet", report.unlabelled);
    out
}

/// Appends `report` to asset `name`: a row per window (and one for `all`) with the test metrics
/// beside the measured ones.
pub async fn write_report(lake: &Lake, name: &str, report: &QualityReport) -> Result<sluice_engine::assets::WriteSummary> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use sluice_engine::assets::{WriteOptions, write_asset};

    let rows: Vec<&WindowQuality> = report.windows.iter().chain(std::iter::once(&report.overall)).collect();
    let n = rows.len();
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v.to_string(); n])) };
    let metric = |f: &dyn Fn(&WindowQuality) -> Option<f64>| -> ArrayRef { Arc::new(rows.iter().map(|w| f(w)).collect::<Float64Array>()) };
    let test = |k: &str| -> ArrayRef { Arc::new(Float64Array::from(vec![report.test.get(k).copied(); n])) };
    let checked_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let batch = RecordBatch::try_from_iter(vec![
        ("checked_at", text(&checked_at)),
        ("predictions", text(&report.predictions)),
        ("labels", text(&report.labels)),
        ("model", text(report.model.as_deref().unwrap_or(""))),
        ("window", Arc::new(StringArray::from_iter_values(rows.iter().map(|w| w.window.clone()))) as ArrayRef),
        ("rows", Arc::new(rows.iter().map(|w| i64::try_from(w.rows).ok()).collect::<Int64Array>())),
        ("positives", Arc::new(rows.iter().map(|w| i64::try_from(w.positives).ok()).collect::<Int64Array>())),
        ("auc", metric(&|w| w.auc)),
        ("accuracy", metric(&|w| w.accuracy)),
        ("log_loss", metric(&|w| w.log_loss)),
        ("rmse", metric(&|w| w.rmse)),
        ("mae", metric(&|w| w.mae)),
        ("test_auc", test("auc")),
        ("test_accuracy", test("accuracy")),
        ("test_log_loss", test("log_loss")),
        ("test_rmse", test("rmse")),
        ("test_mae", test("mae")),
    ])?;
    let ctx = sluice_engine::session::in_process(&sluice_udfs::functions("report"), Some(lake))?;
    let mut lineage = serde_json::Map::new();
    lineage.insert("inputs".into(), serde_json::json!([report.predictions, report.labels]));
    lineage.insert("quality".into(), serde_json::json!({ "model": report.model, "task": report.task }));
    let options = WriteOptions { job: "sluice monitor quality".into(), lineage, ..Default::default() };
    Ok(write_asset(lake, name, ctx.read_batch(batch)?, &options).await?)
}
