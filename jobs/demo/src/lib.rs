//! `sluice demo`: the whole batch path on synthetic churn data, needing no service.
//!
//! Lands CRM accounts, SQL orders and IoT device events as Parquet in a local lake, builds
//! features with SQL on the cluster, splits train/validate/test by a stable hash of the account
//! id, trains a small MLP with libtorch, saves it as TorchScript, scores the test split with
//! `predict` on the cluster's executors and writes the predictions as Parquet. The command's
//! arguments are in [`cli`].

pub mod cli;
pub mod data;

pub use sluice_catalog::{Error, Result, error};

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float32Type, Float64Type, Int64Type};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use sluice_udfs::Model;

use sluice_catalog::metrics::{self, Binary};
use sluice_catalog::progress::{self, Stages};
use sluice_score::train::{self, Dataset, TrainOptions};

/// The feature columns, in the order the model takes them.
pub const FEATURES: [&str; 16] = [
    "tenure_months",
    "log_seats",
    "log_monthly_fee",
    "support_tickets_90d",
    "nps",
    "nps_missing",
    "segment_smb",
    "segment_enterprise",
    "orders_n",
    "log_order_total",
    "avg_discount",
    "refunds",
    "days_since_last_order",
    "events_n",
    "error_events",
    "avg_temperature",
];

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Accounts to generate (orders and events scale with it).
    pub rows: usize,
    /// Output directory: `lake/`, `models/`, `predictions/`.
    pub out: PathBuf,
    /// The lake as a URL of a registered datastore (`az://container/prefix`, `abfss://...`,
    /// `s3://...`); `None` keeps it in `out/lake`. Raw data is generated in `out/staging` and
    /// copied into a remote lake by the executors; predictions go to `<lake>/predictions/`.
    pub lake: Option<String>,
    /// Seed of the data and of the split.
    pub seed: u64,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// Timed stages.
    pub stages: Vec<progress::Stage>,
    /// Rows per split: train, validate, test.
    pub split_rows: [u64; 3],
    /// Metrics on the test split.
    pub test: Binary,
    /// Model id (`stem@sha256-prefix`).
    pub model_id: String,
    /// Saved TorchScript file.
    pub model_path: PathBuf,
    /// Predictions location (a directory or a URL).
    pub predictions: String,
    /// Stage table, ready to print.
    pub table: String,
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str().map(str::to_string).ok_or_else(|| Error::Invalid(format!("path {} is not valid UTF-8", p.display())))
}

/// The SQL that turns the three raw tables into one row of features per account, with its split.
pub fn features_sql(seed: u64) -> String {
    format!(
        "WITH o AS (
            SELECT account_id, COUNT(*) AS orders_n, SUM(amount) AS order_total,
                   AVG(discount_pct) AS avg_discount,
                   SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS refunds,
                   MAX(order_ts) AS last_order_ts
            FROM orders GROUP BY account_id),
         e AS (
            SELECT account_id, COUNT(*) AS events_n,
                   SUM(CASE WHEN event_type = 'error' THEN 1 ELSE 0 END) AS error_events,
                   AVG(temperature_c) AS avg_temperature
            FROM device_events GROUP BY account_id)
        SELECT a.account_id,
               CAST(a.tenure_months AS FLOAT) AS tenure_months,
               CAST(ln(1.0 + a.seats) AS FLOAT) AS log_seats,
               CAST(ln(1.0 + a.monthly_fee) AS FLOAT) AS log_monthly_fee,
               CAST(a.support_tickets_90d AS FLOAT) AS support_tickets_90d,
               CAST(COALESCE(a.nps, 7) AS FLOAT) AS nps,
               CAST(CASE WHEN a.nps IS NULL THEN 1 ELSE 0 END AS FLOAT) AS nps_missing,
               CAST(CASE WHEN a.segment = 'smb' THEN 1 ELSE 0 END AS FLOAT) AS segment_smb,
               CAST(CASE WHEN a.segment = 'enterprise' THEN 1 ELSE 0 END AS FLOAT) AS segment_enterprise,
               CAST(COALESCE(o.orders_n, 0) AS FLOAT) AS orders_n,
               CAST(ln(1.0 + COALESCE(o.order_total, 0)) AS FLOAT) AS log_order_total,
               CAST(COALESCE(o.avg_discount, 0) AS FLOAT) AS avg_discount,
               CAST(COALESCE(o.refunds, 0) AS FLOAT) AS refunds,
               CAST(COALESCE((to_unixtime(TIMESTAMP '2026-06-30T00:00:00') - to_unixtime(o.last_order_ts)) / 86400.0, 365.0) AS FLOAT)
                   AS days_since_last_order,
               CAST(COALESCE(e.events_n, 0) AS FLOAT) AS events_n,
               CAST(COALESCE(e.error_events, 0) AS FLOAT) AS error_events,
               CAST(COALESCE(e.avg_temperature, 40.0) AS FLOAT) AS avg_temperature,
               CAST(a.churned AS INT) AS label,
               CASE WHEN split_hash(a.account_id, {seed}) < 0.70 THEN 'train'
                    WHEN split_hash(a.account_id, {seed}) < 0.85 THEN 'validate'
                    ELSE 'test' END AS split
        FROM accounts a
        LEFT JOIN o ON o.account_id = a.account_id
        LEFT JOIN e ON e.account_id = a.account_id"
    )
}

async fn register_dir(ctx: &SessionContext, name: &str, location: &str) -> Result<()> {
    ctx.register_parquet(name, location, ParquetReadOptions::default()).await?;
    Ok(())
}

/// Deletes every object under `url` (a prefix in a registered object store), so a re-run does
/// not add its files to an earlier run's.
async fn clear_remote(ctx: &SessionContext, url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| Error::Invalid(format!("--lake '{url}' is not a URL: {e}")))?;
    let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(&parsed[..url::Position::BeforePath])?;
    let store = ctx.runtime_env().object_store(&store_url).map_err(|e| {
        Error::Invalid(format!("--lake '{url}': no datastore of the workspace covers it ({e}); add one to sluice.toml"))
    })?;
    let prefix = object_store::path::Path::from(parsed.path().trim_matches('/'));
    let locations = store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
    store
        .delete_stream(locations)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| Error::Invalid(format!("clearing {url}: {e}")))?;
    Ok(())
}

async fn load_split(ctx: &SessionContext, split: &str) -> Result<Dataset> {
    let columns = FEATURES.join(", ");
    let batches = ctx
        .sql(&format!("SELECT {columns}, label FROM features WHERE split = '{split}' ORDER BY account_id"))
        .await?
        .collect()
        .await?;
    let mut data = Dataset { width: FEATURES.len(), ..Default::default() };
    for batch in &batches {
        let cols: Vec<_> = (0..FEATURES.len()).map(|c| batch.column(c).as_primitive::<Float32Type>()).collect();
        let labels = batch.column(FEATURES.len()).as_primitive::<arrow::datatypes::Int32Type>();
        for r in 0..batch.num_rows() {
            data.features.extend(cols.iter().map(|c| c.value(r)));
            data.labels.push(labels.value(r) as f32);
        }
    }
    Ok(data)
}

/// Runs the demo on the cluster behind `ctx` (whose session has Sluice's functions).
pub async fn run(ctx: &SessionContext, options: &DemoOptions) -> Result<DemoSummary> {
    if options.rows < 100 {
        return Err(Error::Invalid(format!("--rows {}: the demo needs at least 100 accounts", options.rows)));
    }
    let out = std::path::absolute(&options.out).map_err(Error::io(format!("resolving {}", options.out.display())))?;
    let remote = options.lake.as_deref().filter(|l| l.contains("://") && !l.starts_with("file://"));
    let lake = match remote {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => match options.lake.as_deref() {
            Some(dir) => path_str(
                &std::path::absolute(dir.trim_start_matches("file://"))
                    .map_err(Error::io(format!("resolving {dir}")))?,
            )?,
            None => path_str(&out.join("lake"))?,
        },
    };
    for dir in ["lake", "staging", "models", "predictions"] {
        let path = out.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(Error::io(format!("clearing {}", path.display())))?;
        }
    }
    if remote.is_some() {
        for prefix in ["raw", "curated", "predictions"] {
            clear_remote(ctx, &format!("{lake}/{prefix}/")).await?;
        }
    } else if Path::new(&lake).exists() {
        std::fs::remove_dir_all(&lake).map_err(Error::io(format!("clearing {lake}")))?;
    }
    let mut stages = Stages::default();

    // 1. Land the raw sources (generated locally; copied into a remote lake by the executors).
    let started = stages.start();
    let bar = progress::bar(options.rows as u64, "landing raw sources", "accounts");
    let generated = if remote.is_some() { out.join("staging/raw") } else { PathBuf::from(&lake).join("raw") };
    let (rows, seed, raw) = (options.rows, options.seed, generated.clone());
    let landed = tokio::task::spawn_blocking(move || data::land(&raw, rows, seed, |n| bar.inc(n as u64)))
        .await
        .map_err(|e| Error::Invalid(format!("landing task failed: {e}")))??;
    if remote.is_some() {
        for table in ["accounts", "orders", "device_events"] {
            register_dir(ctx, &format!("staging_{table}"), &path_str(&generated.join(table))?).await?;
            ctx.sql(&format!("COPY (SELECT * FROM staging_{table}) TO '{lake}/raw/{table}/' STORED AS PARQUET"))
                .await?
                .collect()
                .await?;
        }
    }
    let total_rows = landed.accounts.rows + landed.orders.rows + landed.events.rows;
    let total_bytes = landed.accounts.bytes + landed.orders.bytes + landed.events.bytes;
    stages.finish(
        "land raw (3 sources)",
        started,
        total_rows,
        format!(
            "accounts {} / orders {} / events {}; {} files, {:.1} MB; {lake}/raw",
            landed.accounts.rows,
            landed.orders.rows,
            landed.events.rows,
            landed.accounts.files + landed.orders.files + landed.events.files,
            total_bytes as f64 / 1e6
        ),
    );

    // 2. Features and split, on the cluster.
    let started = stages.start();
    let spin = progress::spinner("building features");
    register_dir(ctx, "accounts", &format!("{lake}/raw/accounts/")).await?;
    register_dir(ctx, "orders", &format!("{lake}/raw/orders/")).await?;
    register_dir(ctx, "device_events", &format!("{lake}/raw/device_events/")).await?;
    let features_dir = format!("{lake}/curated/features/");
    ctx.sql(&features_sql(options.seed))
        .await?
        .write_parquet(&features_dir, DataFrameWriteOptions::new(), None)
        .await?;
    register_dir(ctx, "features", &features_dir).await?;
    let counts = ctx.sql("SELECT split, COUNT(*) AS n FROM features GROUP BY split").await?.collect().await?;
    let mut split_rows = [0u64; 3];
    for batch in &counts {
        let names = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let n = batch.column(1).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            let slot = match names.value(r) {
                "train" => 0,
                "validate" => 1,
                _ => 2,
            };
            split_rows[slot] = n.value(r) as u64;
        }
    }
    spin.finish_and_clear();
    stages.finish(
        "features + split (SQL)",
        started,
        split_rows.iter().sum(),
        format!("train {} / validate {} / test {}", split_rows[0], split_rows[1], split_rows[2]),
    );

    // 3. Train on the client with libtorch.
    let started = stages.start();
    let train_set = load_split(ctx, "train").await?;
    let validate_set = load_split(ctx, "validate").await?;
    let model_path = out.join("models/churn_mlp.pt");
    let options_train = TrainOptions::default();
    let bar = progress::bar(options_train.max_epochs as u64, "training MLP", "epochs");
    let path = model_path.clone();
    let train_rows = train_set.rows() as u64;
    let trained = tokio::task::spawn_blocking(move || {
        tch::set_num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()) as i32);
        let result = train::train_binary_classifier(&train_set, &validate_set, &options_train, &path, |epoch, loss| {
            bar.set_position(epoch as u64);
            bar.set_message(format!("training MLP (val loss {loss:.4})"));
        });
        bar.finish_and_clear();
        result
    })
    .await
    .map_err(|e| Error::Invalid(format!("training task failed: {e}")))??;
    let model = Model::load(&path_str(&model_path)?)?;
    let model_id = model.id().to_string();
    stages.finish(
        "train (libtorch MLP)",
        started,
        train_rows,
        format!(
            "{} epochs, best {} (val log loss {:.4}); {model_id}",
            trained.epochs, trained.best_epoch, trained.validation_log_loss
        ),
    );

    // 4. Score the test split on the executors.
    let started = stages.start();
    let spin = progress::spinner("scoring test split");
    let predictions =
        if remote.is_some() { format!("{lake}/predictions/") } else { path_str(&out.join("predictions"))? };
    let feature_list = FEATURES.join(", ");
    let model_arg = path_str(&model_path)?.replace('\'', "''");
    let scoring = format!(
        "SELECT account_id, predict('{model_arg}', {feature_list}) AS score, '{model_id}' AS model_id \
         FROM features WHERE split = 'test'"
    );
    ctx.sql(&scoring).await?.write_parquet(&predictions, DataFrameWriteOptions::new(), None).await?;
    spin.finish_and_clear();
    stages.finish("score test (predict)", started, split_rows[2], format!("on the executors; {model_id}"));

    // 5. Evaluate: join predictions with labels.
    let started = stages.start();
    register_dir(ctx, "predictions", &predictions).await?;
    let joined = ctx
        .sql("SELECT CAST(p.score AS DOUBLE) AS score, f.label FROM predictions p JOIN features f ON p.account_id = f.account_id")
        .await?
        .collect()
        .await?;
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for batch in &joined {
        let s = batch.column(0).as_primitive::<Float64Type>();
        let l = batch.column(1).as_primitive::<arrow::datatypes::Int32Type>();
        for r in 0..batch.num_rows() {
            scores.push(s.value(r));
            labels.push(!l.is_null(r) && l.value(r) == 1);
        }
    }
    let test = metrics::binary(&scores, &labels);
    stages.finish("evaluate", started, test.rows as u64, format!("AUC {:.4}, accuracy {:.4}", test.auc, test.accuracy));

    Ok(DemoSummary {
        table: stages.table(),
        stages: stages.all().to_vec(),
        split_rows,
        test,
        model_id,
        model_path,
        predictions,
    })
}
