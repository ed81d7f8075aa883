//! The request log of the online endpoint: each sampled request's features and predictions (and
//! its shadows'), appended to a data asset per model in commits of many requests, written by a
//! task of its own so a request never waits on storage.
//!
//! Columns: `request_id`, `row` (the row's place in its request), `scored_at` (UTC), `model`,
//! `model_version`, `route` (the route target, the alias or version asked for, or `shadow`),
//! `shadow`, `latency_ms`, then one float64 column per model input and `prediction` (one output)
//! or one column per output name. An input whose name is one of those columns is written as
//! `input_NAME`. Such an asset is what `sluice monitor drift` and `sluice monitor quality` read
//! (quality joins labels on `request_id, row`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::SessionContext;
use sluice_engine::Lake;
use sluice_engine::assets::{WriteOptions, write_asset};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Model name to the asset its requests go to.
    pub assets: HashMap<String, String>,
    /// The fraction of requests logged, 0 to 1.
    pub sample: f64,
    /// Commit at least this often while requests come in.
    pub every: Duration,
    /// Commit when this many rows wait.
    pub max_rows: usize,
}

/// Parses `--request-log MODEL=ASSET`.
pub fn parse_target(text: &str) -> Result<(String, String)> {
    let (model, asset) = text
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("--request-log '{text}': give MODEL=ASSET, e.g. churn=churn_requests")))?;
    let (model, asset) = (model.trim(), asset.trim());
    sluice_catalog::models::check_name(model, "model").map_err(|e| Error::Invalid(format!("--request-log '{text}': {e}")))?;
    sluice_lake::delta::check_name(asset, "asset").map_err(|e| Error::Invalid(format!("--request-log '{text}': {e}")))?;
    Ok((model.to_string(), asset.to_string()))
}

/// One scored request, as logged.
pub struct Entry {
    pub asset: String,
    pub request_id: String,
    pub scored_at_us: i64,
    pub model: String,
    pub version: u64,
    pub route: String,
    pub shadow: bool,
    pub latency_ms: f64,
    pub inputs: Arc<Vec<String>>,
    pub outputs: Arc<Vec<String>>,
    pub rows: usize,
    /// Row-major, `rows * inputs.len()`.
    pub features: Arc<Vec<f64>>,
    /// Row-major, `rows * outputs.len()`.
    pub predictions: Vec<f64>,
}

enum Message {
    Entry(Entry),
    /// Commit now; answers the rows still waiting afterwards.
    Flush(oneshot::Sender<usize>),
}

/// Counters of the log, for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Rows committed, per asset.
    pub rows: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Commits made.
    pub commits: AtomicU64,
    /// Commits that failed (their rows are kept and tried again).
    pub failed_commits: AtomicU64,
    /// Requests not logged because the queue or the buffer was full.
    pub dropped: AtomicU64,
}

/// Most requests queued for the writer; past it a request is answered but not logged (counted).
const QUEUE: usize = 65_536;

/// The writer of the request log.
pub struct RequestLog {
    options: LogOptions,
    queue: mpsc::Sender<Message>,
    pub stats: Arc<LogStats>,
}

impl RequestLog {
    /// Starts the writer task.
    pub fn start(lake: Lake, ctx: SessionContext, options: LogOptions) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(LogStats::default());
        tokio::spawn(write(lake, ctx, options.clone(), rx, stats.clone()));
        Self { options, queue, stats }
    }

    /// The asset `model`'s requests go to, if they are logged.
    pub fn asset(&self, model: &str) -> Option<&str> {
        self.options.assets.get(model).map(String::as_str)
    }

    /// Whether to log the next request (sampled).
    pub fn sampled(&self) -> bool {
        self.options.sample >= 1.0 || rand::random::<f64>() < self.options.sample
    }

    /// Queues `entry`; never waits.
    pub fn add(&self, entry: Entry) {
        if self.queue.try_send(Message::Entry(entry)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Commits what waits (trying 3 times); returns the rows still not committed.
    pub async fn flush(&self) -> usize {
        let (done, wait) = oneshot::channel();
        match self.queue.send(Message::Flush(done)).await {
            Ok(()) => wait.await.unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// What `/metrics` shows of the log.
    pub fn describe(&self) -> String {
        let mut assets: Vec<String> = self.options.assets.iter().map(|(m, a)| format!("{m} -> {a}")).collect();
        assets.sort();
        format!("request log {} (sample {})", assets.join(", "), self.options.sample)
    }
}

/// Fixed columns of the log; an input of the same name is written as `input_NAME`.
const FIXED: [&str; 8] = ["request_id", "row", "scored_at", "model", "model_version", "route", "shadow", "latency_ms"];

fn column_names(entry: &Entry) -> (Vec<String>, Vec<String>) {
    let inputs = entry
        .inputs
        .iter()
        .map(|n| if FIXED.contains(&n.as_str()) || n == "prediction" { format!("input_{n}") } else { n.clone() })
        .collect();
    let outputs = if entry.outputs.len() == 1 {
        vec!["prediction".to_string()]
    } else {
        entry
            .outputs
            .iter()
            .map(|n| if FIXED.contains(&n.as_str()) || entry.inputs.contains(n) { format!("output_{n}") } else { n.clone() })
            .collect()
    };
    (inputs, outputs)
}

/// The rows of `entries` (of one asset and one set of columns) as one batch.
fn batch(entries: &[Entry]) -> Result<RecordBatch> {
    let (inputs, outputs) = column_names(&entries[0]);
    let mut fields = vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("row", DataType::Int32, false),
        Field::new("scored_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("model", DataType::Utf8, false),
        Field::new("model_version", DataType::Int64, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("shadow", DataType::Boolean, false),
        Field::new("latency_ms", DataType::Float64, false),
    ];
    fields.extend(inputs.iter().chain(&outputs).map(|n| Field::new(n, DataType::Float64, true)));
    let repeat = |e: &Entry, value: &str| vec![value.to_string(); e.rows];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(per_row(entries, |e| repeat(e, &e.request_id)))),
        Arc::new(Int32Array::from(per_row(entries, |e| (0..e.rows as i32).collect()))),
        Arc::new(TimestampMicrosecondArray::from(per_row(entries, |e| vec![e.scored_at_us; e.rows])).with_timezone("UTC")),
        Arc::new(StringArray::from(per_row(entries, |e| repeat(e, &e.model)))),
        Arc::new(Int64Array::from(per_row(entries, |e| vec![e.version as i64; e.rows]))),
        Arc::new(StringArray::from(per_row(entries, |e| repeat(e, &e.route)))),
        Arc::new(BooleanArray::from(per_row(entries, |e| vec![e.shadow; e.rows]))),
        Arc::new(Float64Array::from(per_row(entries, |e| vec![e.latency_ms; e.rows]))),
    ];
    let k = inputs.len();
    for c in 0..k {
        columns.push(Arc::new(Float64Array::from(per_row(entries, |e| (0..e.rows).map(|r| e.features[r * k + c]).collect()))));
    }
    let m = outputs.len();
    for o in 0..m {
        columns.push(Arc::new(Float64Array::from(per_row(entries, |e| (0..e.rows).map(|r| e.predictions[r * m + o]).collect()))));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Invalid(format!("building a request log batch: {e}")))
}

/// A column over every row of `entries`, each entry giving its rows' values.
fn per_row<T>(entries: &[Entry], f: impl Fn(&Entry) -> Vec<T>) -> Vec<T> {
    entries.iter().flat_map(f).collect()
}

/// What waits for one asset, grouped by column set (a new model version may take other inputs).
#[derive(Default)]
struct Pending {
    groups: BTreeMap<(Vec<String>, Vec<String>), Vec<Entry>>,
    rows: usize,
}

async fn write(lake: Lake, ctx: SessionContext, options: LogOptions, mut rx: mpsc::Receiver<Message>, stats: Arc<LogStats>) {
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut since = Instant::now();
    // Past this many waiting rows (commits failing for a while), new requests are not logged.
    let most = options.max_rows.saturating_mul(20).max(100_000);
    loop {
        let message = tokio::time::timeout(options.every.max(Duration::from_millis(50)), rx.recv()).await;
        let mut flushed = None;
        match message {
            Ok(Some(Message::Entry(entry))) => {
                // Per asset: one whose commits keep failing must not stop the others' logging.
                let waiting = pending.get(&entry.asset).map_or(0, |p| p.rows);
                if waiting + entry.rows > most {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    let p = pending.entry(entry.asset.clone()).or_default();
                    p.rows += entry.rows;
                    p.groups.entry(column_names(&entry)).or_default().push(entry);
                }
            }
            Ok(Some(Message::Flush(done))) => flushed = Some(done),
            Ok(None) => {
                commit(&lake, &ctx, &mut pending, &stats).await;
                return;
            }
            Err(_) => {}
        }
        let waiting: usize = pending.values().map(|p| p.rows).sum();
        if flushed.is_some() || waiting >= options.max_rows || (waiting > 0 && since.elapsed() >= options.every) {
            commit(&lake, &ctx, &mut pending, &stats).await;
            since = Instant::now();
        }
        if let Some(done) = flushed {
            for _ in 0..2 {
                if pending.values().all(|p| p.rows == 0) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                commit(&lake, &ctx, &mut pending, &stats).await;
            }
            let _ = done.send(pending.values().map(|p| p.rows).sum());
        }
    }
}

/// Commits each asset's waiting rows, a version per column set; what fails stays for the next try.
async fn commit(lake: &Lake, ctx: &SessionContext, pending: &mut BTreeMap<String, Pending>, stats: &LogStats) {
    for (asset, p) in pending.iter_mut() {
        let keys: Vec<_> = p.groups.keys().cloned().collect();
        for key in keys {
            let Some(entries) = p.groups.get(&key) else { continue };
            let written = async {
                let b = batch(entries)?;
                let rows = b.num_rows();
                let df = ctx.read_batch(b)?;
                let mut lineage = serde_json::Map::new();
                lineage.insert("request_log".into(), serde_json::json!({ "requests": entries.len(), "rows": rows }));
                let options = WriteOptions { job: "sluice serve --predict".into(), lineage, ..Default::default() };
                Ok::<_, Error>((rows, write_asset(lake, asset, df, &options).await?))
            }
            .await;
            match written {
                Ok((rows, summary)) => {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    *stats.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(asset.clone()).or_default() +=
                        rows as u64;
                    tracing::debug!(asset = %asset, version = summary.version, rows, "request log committed");
                    p.groups.remove(&key);
                    p.rows -= rows;
                }
                Err(e) => {
                    stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(asset = %asset, error = %e, "the request log could not be committed; its rows wait for the next try");
                    break;
                }
            }
        }
    }
}
