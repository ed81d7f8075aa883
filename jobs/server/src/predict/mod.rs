//! Online inference, `sluice serve --predict HOST:PORT`: registered model versions behind HTTP,
//! scored by the same loaded models as `predict` in batch and stream.
//!
//! Routes: `POST /v1/models/{name}[@{version|alias}]/predict` with `{"rows": [{feature: value}]}`
//! (by the registry's input names) or `{"inputs": [[...]]}` (in order); the KServe v2 / Open
//! Inference Protocol routes (`/v2/health/{live,ready}`, `/v2/models/{name}[/versions/{v}]`,
//! `.../ready`, `.../infer`); `POST /v1/reload` (operators) resolves aliases again;
//! `/healthz`, `/readyz`, `/metrics` (Prometheus). Aliases resolve to a version at start, on
//! SIGHUP, on `/v1/reload` and every `reload` interval, never in the middle of a request.
//! Requests for one version are gathered into shared forward passes ([`batcher`]).
//!
//! Bodies are JSON, or Arrow IPC (`Content-Type: application/vnd.apache.arrow.stream` or
//! `.file`): a column per input name, answered as an Arrow stream of the outputs.
//!
//! Requests for a bare model name follow its traffic split ([`route`]); shadow versions score the
//! same requests after the answer. Sampled requests and their predictions go to a request log
//! asset ([`log`]).
//!
//! The same users and roles as Flight: any role may predict; reloading needs an operator.

pub mod batcher;
pub mod log;
pub mod route;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sluice_catalog::models::{ModelAt, ModelRef, ModelVersion, Registry};

use crate::{Access, Permission, Principal};
use batcher::{BatchOptions, Batcher, SIZE_BOUNDS};
use log::{Entry, RequestLog};
use route::Route;

/// Traffic splits and shadows, by model name.
#[derive(Debug, Default)]
pub struct Traffic {
    /// The split of requests that name the bare model.
    pub routes: HashMap<String, Route>,
    /// Versions that score every request of the model too, without answering.
    pub shadows: HashMap<String, Vec<ModelRef>>,
}

/// The IPC stream media type.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The IPC file media type.
const ARROW_FILE: &str = "application/vnd.apache.arrow.file";

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// How requests are gathered into forward passes.
    pub batch: BatchOptions,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most rows in one request.
    pub max_rows: usize,
    /// How often aliases are resolved again.
    pub reload: Duration,
}

/// One model version being served.
pub struct Served {
    version: ModelVersion,
    inputs: Arc<Vec<String>>,
    outputs: Arc<Vec<String>>,
    /// Whether the model returns float64.
    float64: bool,
    /// Whether the model takes float64 inputs.
    takes_f64: bool,
    batcher: Batcher,
}

/// Latency histogram bounds, seconds.
const LATENCY_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Latency {
    buckets: [u64; 13],
    sum: f64,
    count: u64,
}

/// Request counters by (model, version, status code) and latency by (model, version).
#[derive(Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Latency>>,
    /// Routed requests by (model, target, version).
    routed: Mutex<BTreeMap<(String, String, u64), u64>>,
    /// Shadow scorings by (model, version, outcome).
    shadows: Mutex<BTreeMap<(String, String, &'static str), u64>>,
}

/// What the endpoint serves from.
pub struct Endpoint {
    registry: Registry,
    access: Access,
    options: PredictOptions,
    /// `name` or `name@alias` to the version it means now.
    resolved: RwLock<HashMap<String, u64>>,
    served: Mutex<HashMap<(String, u64), Arc<Served>>>,
    /// Serialises first loads, so concurrent first requests load a version once.
    loading: tokio::sync::Mutex<()>,
    metrics: Metrics,
    reloads: AtomicU64,
    traffic: Traffic,
    log: Option<RequestLog>,
    /// Shadow scorings not finished yet (shutdown waits for them before the last commit).
    shadows_running: std::sync::atomic::AtomicUsize,
}

/// A refusal or failure, answered as JSON `{"error": ...}` with its status.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "application/json")], json!({ "error": self.1 }).to_string()).into_response()
    }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.into())
}

type Shared = State<Arc<Endpoint>>;

impl Endpoint {
    /// An endpoint over `registry`, resolving each of `preload` (`name`, `name@alias`, `name@3`),
    /// every route target and every shadow, and loading their versions now.
    pub async fn start(
        registry: Registry,
        access: Access,
        options: PredictOptions,
        preload: &[String],
        traffic: Traffic,
        log: Option<RequestLog>,
    ) -> sluice_catalog::Result<Arc<Self>> {
        let endpoint = Arc::new(Self {
            registry,
            access,
            options,
            resolved: Default::default(),
            served: Default::default(),
            loading: Default::default(),
            metrics: Metrics::default(),
            reloads: AtomicU64::new(0),
            traffic,
            log,
            shadows_running: Default::default(),
        });
        let mut references = preload.iter().map(|r| ModelRef::parse(r)).collect::<sluice_catalog::Result<Vec<_>>>()?;
        for route in endpoint.traffic.routes.values() {
            references.extend(route.targets.iter().map(|t| route.reference(t)));
        }
        references.extend(endpoint.traffic.shadows.values().flatten().cloned());
        for reference in references {
            endpoint
                .served(&reference)
                .await
                .map_err(|Failure(_, m)| sluice_catalog::Error::Invalid(format!("{reference}: {m}")))?;
        }
        Ok(endpoint)
    }

    /// The routes, shadows and request log, for the start-up line.
    pub fn traffic(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.traffic.routes.values().map(|r| format!("route {}", r.describe())).collect();
        for (model, shadows) in &self.traffic.shadows {
            lines.extend(shadows.iter().map(|s| format!("shadow {model}={s}")));
        }
        lines.sort();
        lines.extend(self.log.as_ref().map(RequestLog::describe));
        lines
    }

    /// Commits the request log's waiting rows (on shutdown), after the running shadow
    /// scorings (10 s at most); returns the rows that could not be committed.
    pub async fn flush(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shadows_running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match &self.log {
            Some(log) => log.flush().await,
            None => 0,
        }
    }

    /// The versions being served, as `name@version` (for the start-up line).
    pub fn serving(&self) -> Vec<String> {
        let served = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<String> = served.keys().map(|(n, v)| format!("{n}@{v}")).collect();
        names.sort();
        names
    }

    /// Resolves every alias in use again; returns what changed, as `name@alias: old -> new`.
    pub async fn reload(&self) -> Vec<String> {
        let keys: Vec<String> = self.resolved.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect();
        let mut changed = Vec::new();
        for key in keys {
            let Ok(reference) = ModelRef::parse(&key) else { continue };
            match self.registry.resolve(&reference).await {
                Ok(version) => {
                    let mut resolved = self.resolved.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let old = resolved.insert(key.clone(), version.version);
                    if old != Some(version.version) {
                        changed.push(format!("{key}: {} -> {}", old.map_or("-".into(), |v| v.to_string()), version.version));
                    }
                }
                Err(e) => tracing::warn!(model = %key, error = %e, "an alias did not resolve; keeping its version"),
            }
        }
        self.reloads.fetch_add(1, Ordering::Relaxed);
        if !changed.is_empty() {
            tracing::info!(changed = %changed.join(", "), "aliases resolved again");
        }
        changed
    }

    /// The version `reference` means now, loaded and ready.
    async fn served(&self, reference: &ModelRef) -> Result<Arc<Served>, Failure> {
        let not_found = |e: sluice_catalog::Error| Failure(StatusCode::NOT_FOUND, e.to_string());
        let version = match &reference.at {
            ModelAt::Version(v) => *v,
            _ => {
                let key = reference.to_string();
                let known = self.resolved.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).copied();
                match known {
                    Some(v) => v,
                    None => {
                        let version = self.registry.resolve(reference).await.map_err(not_found)?.version;
                        *self
                            .resolved
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry(key)
                            .or_insert(version)
                    }
                }
            }
        };
        let key = (reference.name.clone(), version);
        if let Some(served) = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Ok(served.clone());
        }
        let _loading = self.loading.lock().await;
        if let Some(served) = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Ok(served.clone());
        }
        let exact = ModelRef { name: reference.name.clone(), at: ModelAt::Version(version) };
        let version = self.registry.resolve(&exact).await.map_err(not_found)?;
        let path = self.registry.scoring_path(&version).map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let inputs: Vec<String> = version.info.inputs.iter().map(|i| i.name.clone()).collect();
        let width = inputs.len();
        let name = format!("{}@{}", version.name, version.version);
        let options = self.options.batch;
        let loaded = tokio::task::spawn_blocking(move || {
            let model = sluice_udfs::Model::load(&path)?;
            let shape = model.probe(width)?;
            Ok::<_, sluice_udfs::Error>((model, shape))
        })
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("loading {name}: {e}")))?
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("loading {name}: {e}")))?;
        let (model, shape) = loaded;
        let float64 = matches!(shape.kind, sluice_udfs::model::OutputKind::Float64);
        let takes_f64 = model.takes_f64();
        let batcher = Batcher::start(&name, model, shape, options)
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("starting the workers of {name}: {e}")))?;
        let mut outputs = version.info.outputs.clone();
        if outputs.len() != shape.outputs {
            outputs = (1..=shape.outputs).map(|i| format!("output_{i}")).collect();
        }
        tracing::info!(model = %name, inputs = width, outputs = shape.outputs, "serving a model version");
        let served =
            Arc::new(Served { version, inputs: Arc::new(inputs), outputs: Arc::new(outputs), float64, takes_f64, batcher });
        self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, served.clone());
        Ok(served)
    }

    fn principal(&self, headers: &HeaderMap) -> Result<Principal, Failure> {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        self.access.authenticate(authorization).map_err(|d| Failure(StatusCode::UNAUTHORIZED, d.message().to_string()))
    }

    fn check(&self, headers: &HeaderMap, action: Permission) -> Result<Principal, Failure> {
        let principal = self.principal(headers)?;
        principal.check(action).map_err(|d| Failure(StatusCode::FORBIDDEN, d.message().to_string()))?;
        Ok(principal)
    }

    fn record(&self, model: &str, version: &str, code: StatusCode, started: Instant) {
        let key = (model.to_string(), version.to_string());
        *self
            .metrics
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((key.0.clone(), key.1.clone(), code.as_u16()))
            .or_default() += 1;
        if code.is_success() {
            let seconds = started.elapsed().as_secs_f64();
            let mut latency = self.metrics.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = latency.entry(key).or_default();
            let bucket = LATENCY_BOUNDS.iter().position(|b| seconds <= *b).unwrap_or(LATENCY_BOUNDS.len());
            entry.buckets[bucket] += 1;
            entry.sum += seconds;
            entry.count += 1;
        }
    }

    /// Reads a body of at most `max_body_bytes`. A longer one is read on (up to 4 times the
    /// limit, so the client gets the answer rather than a reset connection) and refused.
    async fn body(&self, request: Request) -> Result<Bytes, Failure> {
        use futures::StreamExt;
        let limit = self.options.max_body_bytes;
        let mut stream = request.into_body().into_data_stream();
        let mut body = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bad(format!("the request body could not be read: {e}")))?;
            total += chunk.len();
            if total <= limit {
                body.extend_from_slice(&chunk);
            } else if total > limit.saturating_mul(4) {
                break;
            }
        }
        if total > limit {
            return Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the limit of {limit} bytes; send fewer rows per request (--max-body-bytes)"),
            ));
        }
        Ok(Bytes::from(body))
    }

    async fn score(&self, served: &Served, rows: usize, values: Vec<f64>) -> Result<Vec<f64>, Failure> {
        if rows > self.options.max_rows {
            return Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{rows} rows in one request, over the limit of {}; split it", self.options.max_rows),
            ));
        }
        served.batcher.score(rows, values).await.map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e))
    }
}

/// The endpoint's routes.
pub fn router(endpoint: Arc<Endpoint>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/v2/health/live", get(|| async { Json200(json!({ "live": true })) }))
        .route("/v2/health/ready", get(|| async { Json200(json!({ "ready": true })) }))
        .route("/v1/models/{model}/predict", post(predict_v1))
        .route("/v1/reload", post(reload))
        .route("/v2/models/{name}", get(metadata_latest))
        .route("/v2/models/{name}/ready", get(ready_latest))
        .route("/v2/models/{name}/infer", post(infer_latest))
        .route("/v2/models/{name}/versions/{version}", get(metadata_version))
        .route("/v2/models/{name}/versions/{version}/ready", get(ready_version))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/metrics", get(metrics))
        .with_state(endpoint)
}

struct Json200(Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0.to_string()).into_response()
    }
}

/// Serves the endpoint on `listener` (HTTPS with `tls`) until `shutdown` resolves, resolving
/// aliases again every `reload` interval and on SIGHUP; then commits what waits in the request log.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Arc<Endpoint>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> sluice_catalog::Result<()> {
    let reloader = endpoint.clone();
    let every = endpoint.options.reload;
    let reloading = tokio::spawn(async move {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.tick().await;
        loop {
            let signal = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = signal => tracing::info!("SIGHUP: resolving aliases again"),
            }
            reloader.reload().await;
        }
    });
    let app = router(endpoint.clone());
    // Once stopping, open connections get DRAIN to finish; then they are closed.
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let drained = async move {
        if stopped.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN).await;
        tracing::warn!(seconds = DRAIN.as_secs(), "connections still open after the drain; closing them");
    };
    let serving = async {
        match tls {
            Some(acceptor) => match tls::TlsListener::new(listener, acceptor) {
                Ok(listener) => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
                Err(e) => Err(e),
            },
            None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        }
    };
    let served = tokio::select! {
        served = serving => served.map_err(sluice_catalog::Error::io("serving the prediction endpoint")),
        () = drained => Ok(()),
    };
    reloading.abort();
    // Requests answered are in the log's queue; commit them before leaving.
    let lost = endpoint.flush().await;
    served?;
    if lost > 0 {
        return Err(sluice_catalog::Error::Invalid(format!(
            "{lost} request log rows could not be committed before stopping (the warnings above say why)"
        )));
    }
    Ok(())
}

/// A number from a JSON value, or why it is not one.
fn number(value: &Value) -> Result<f64, &'static str> {
    match value {
        Value::Number(n) => n.as_f64().ok_or("not a finite number"),
        // As `predict` refuses boolean columns: encode them first (1.0 / 0.0).
        Value::Bool(_) => Err("a boolean (send 1 or 0)"),
        Value::Null => Err("null"),
        Value::String(_) => Err("a string"),
        Value::Array(_) => Err("an array"),
        Value::Object(_) => Err("an object"),
    }
}

/// Features of a `/v1` body, row-major.
fn v1_features(served: &Served, body: &Value) -> Result<(usize, Vec<f64>), Failure> {
    let k = served.inputs.len();
    let takes = served.inputs.join(", ");
    let mut values = Vec::new();
    if let Some(rows) = body.get("rows") {
        let rows = rows.as_array().ok_or_else(|| bad("\"rows\" must be an array of objects, one per row"))?;
        for (r, row) in rows.iter().enumerate() {
            let row = row.as_object().ok_or_else(|| bad(format!("row {r} is not an object of features (the model takes: {takes})")))?;
            for name in served.inputs.iter() {
                let value = row.get(name).ok_or_else(|| {
                    bad(format!("row {r}: the feature '{name}' is missing (the model takes: {takes})"))
                })?;
                values.push(number(value).map_err(|what| {
                    bad(format!("row {r}: the feature '{name}' is {what}, not a number (the model takes numbers: {takes})"))
                })?);
            }
        }
        Ok((rows.len(), values))
    } else if let Some(rows) = body.get("inputs") {
        let rows = rows.as_array().ok_or_else(|| bad("\"inputs\" must be an array of rows, each an array of numbers"))?;
        for (r, row) in rows.iter().enumerate() {
            let row = row.as_array().filter(|a| a.len() == k).ok_or_else(|| {
                bad(format!("row {r} of \"inputs\" must be an array of {k} numbers, in order: {takes}"))
            })?;
            for (c, value) in row.iter().enumerate() {
                values.push(number(value).map_err(|what| {
                    bad(format!("row {r}: value {c} ('{}') is {what}, not a number", served.inputs[c]))
                })?);
            }
        }
        Ok((rows.len(), values))
    } else {
        Err(bad(format!(
            "the body needs \"rows\" ([{{feature: value}}, ...], features: {takes}) or \"inputs\" ([[{k} numbers], ...])"
        )))
    }
}

fn reference(text: &str) -> Result<ModelRef, Failure> {
    ModelRef::parse(text).map_err(|e| Failure(StatusCode::NOT_FOUND, e.to_string()))
}

/// Row-major predictions as the answer lists them: a number per row for one output, an object
/// of output names per row for several.
fn v1_predictions(served: &Served, values: &[f64]) -> Value {
    let m = served.outputs.len();
    if m == 1 {
        return json!(values);
    }
    Value::Array(
        values
            .chunks(m)
            .map(|row| Value::Object(served.outputs.iter().cloned().zip(row.iter().map(|v| json!(v))).collect()))
            .collect(),
    )
}

/// A request's body: JSON, or Arrow IPC record batches.
enum Features {
    Json(Value),
    Arrow(Vec<arrow::record_batch::RecordBatch>),
}

/// Reads a JSON or Arrow IPC body, by its content type.
fn parse_body(headers: &HeaderMap, bytes: &Bytes, max_rows: usize) -> Result<Features, Failure> {
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let kind = kind.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let unreadable = |e: arrow::error::ArrowError| bad(format!("the body is not a readable Arrow IPC {kind}: {e}"));
    if kind == ARROW_STREAM || kind == ARROW_FILE {
        // Before decoding: the rows the batches declare, and no compressed buffers (their
        // declared sizes would be allocated as given).
        let start = if kind == ARROW_FILE { 8.min(bytes.len()) } else { 0 };
        check_ipc(&bytes[start..], max_rows)?;
    }
    if kind == ARROW_STREAM {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.as_ref()), None).map_err(unreadable)?;
        Ok(Features::Arrow(reader.collect::<Result<Vec<_>, _>>().map_err(unreadable)?))
    } else if kind == ARROW_FILE {
        let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes.as_ref()), None).map_err(unreadable)?;
        Ok(Features::Arrow(reader.collect::<Result<Vec<_>, _>>().map_err(unreadable)?))
    } else {
        serde_json::from_slice(bytes).map(Features::Json).map_err(|e| bad(format!("the body is not valid JSON: {e}")))
    }
}

/// Walks the messages of an Arrow IPC stream (or a file's messages after its magic) without
/// decoding their bodies: refuses compressed batches and more than `max_rows` rows.
fn check_ipc(bytes: &[u8], max_rows: usize) -> Result<(), Failure> {
    let corrupt = || bad("the body is not a readable Arrow IPC stream: a message runs past its end");
    let mut at = 0usize;
    let mut rows: u64 = 0;
    while at + 4 <= bytes.len() {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        let mut length = i32::from_le_bytes(word);
        at += 4;
        if length == -1 {
            // The continuation marker; the length follows.
            if at + 4 > bytes.len() {
                return Err(corrupt());
            }
            word.copy_from_slice(&bytes[at..at + 4]);
            length = i32::from_le_bytes(word);
            at += 4;
        }
        if length <= 0 {
            // The end of the stream.
            return Ok(());
        }
        let end = at.checked_add(length as usize).filter(|e| *e <= bytes.len()).ok_or_else(corrupt)?;
        let message = arrow::ipc::root_as_message(&bytes[at..end])
            .map_err(|e| bad(format!("the body is not a readable Arrow IPC stream: {e}")))?;
        let compressed = message.header_as_record_batch().is_some_and(|b| b.compression().is_some())
            || message.header_as_dictionary_batch().and_then(|d| d.data()).is_some_and(|b| b.compression().is_some());
        if compressed {
            return Err(Failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed Arrow IPC buffers are not accepted; send the stream uncompressed".into(),
            ));
        }
        if let Some(batch) = message.header_as_record_batch() {
            rows = rows.saturating_add(u64::try_from(batch.length()).map_err(|_| bad("an Arrow batch declares a negative row count"))?);
            if rows > max_rows as u64 {
                return Err(Failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the Arrow body declares {rows} rows or more, over the limit of {max_rows}; split it"),
                ));
            }
        }
        let body = usize::try_from(message.bodyLength()).map_err(|_| corrupt())?;
        at = end.checked_add(body).filter(|e| *e <= bytes.len()).ok_or_else(corrupt)?;
    }
    Ok(())
}

/// Features of Arrow record batches, row-major: a numeric column per input name.
fn arrow_features(served: &Served, batches: &[arrow::record_batch::RecordBatch]) -> Result<(usize, Vec<f64>), Failure> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type};
    let k = served.inputs.len();
    let takes = served.inputs.join(", ");
    for name in served.inputs.iter() {
        if batches.iter().any(|b| b.column_by_name(name).is_none()) {
            return Err(bad(format!("the column '{name}' is missing (the model takes: {takes})")));
        }
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let cells = rows.checked_mul(k).ok_or_else(|| bad(format!("{rows} rows of {k} features is too many")))?;
    let mut values = vec![0.0; cells];
    let mut at = 0;
    for batch in batches {
        for (c, name) in served.inputs.iter().enumerate() {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("the column '{name}' is missing (the model takes: {takes})")))?;
            let numeric = column.data_type().is_numeric() && !matches!(column.data_type(), DataType::Decimal32(..) | DataType::Decimal64(..));
            if !numeric {
                return Err(bad(format!(
                    "the column '{name}' is {}, not a number (cast it to a numeric type; booleans as 1 or 0)",
                    column.data_type()
                )));
            }
            let column = arrow::compute::cast(column, &DataType::Float64)
                .map_err(|e| bad(format!("the column '{name}' could not be read as float64: {e}")))?;
            let column = column.as_primitive::<Float64Type>();
            for r in 0..column.len() {
                if column.is_null(r) {
                    return Err(bad(format!("row {}: the feature '{name}' is null", at + r)));
                }
                let v = column.value(r);
                if !v.is_finite() {
                    return Err(bad(format!("row {}: the feature '{name}' is {v}, not a finite number", at + r)));
                }
                values[(at + r) * k + c] = v;
            }
        }
        at += batch.num_rows();
    }
    Ok((rows, values))
}

/// How the answer is written: as JSON (with the route) or as an Arrow IPC stream.
fn wants_arrow(features: &Features) -> bool {
    matches!(features, Features::Arrow(_))
}

/// A scored request.
struct Scored {
    served: Arc<Served>,
    /// The route target, alias or version that chose the version.
    route: String,
    rows: usize,
    predictions: Vec<f64>,
    features: Arc<Features>,
    request_id: String,
}

type Parse = fn(&Served, &Features) -> Result<(usize, Vec<f64>), Failure>;

fn v1_parse(served: &Served, features: &Features) -> Result<(usize, Vec<f64>), Failure> {
    match features {
        Features::Json(body) => v1_features(served, body),
        Features::Arrow(batches) => arrow_features(served, batches),
    }
}

fn v2_parse(served: &Served, features: &Features) -> Result<(usize, Vec<f64>), Failure> {
    match features {
        Features::Json(body) => v2_features(served, body),
        Features::Arrow(batches) => arrow_features(served, batches),
    }
}

/// How long open connections may take to finish once the endpoint stops.
const DRAIN: Duration = Duration::from_secs(30);

/// Header naming what a traffic split hashes (a user or session id), so a caller keeps one version.
const ROUTE_KEY: &str = "x-sluice-route-key";

impl Endpoint {
    /// The version a request for `reference` goes to, and the route label: a bare name follows
    /// its traffic split; a version or alias is taken as asked.
    fn choose(&self, reference: ModelRef, headers: &HeaderMap) -> (ModelRef, String) {
        if reference.at == ModelAt::Latest
            && let Some(route) = self.traffic.routes.get(&reference.name)
        {
            let key = headers.get(ROUTE_KEY).and_then(|v| v.to_str().ok());
            let target = route.pick(key);
            return (route.reference(target), target.at.clone());
        }
        let label = match &reference.at {
            ModelAt::Latest => "latest".to_string(),
            ModelAt::Version(v) => v.to_string(),
            ModelAt::Alias(a) => a.clone(),
        };
        (reference, label)
    }

    /// Authenticates, routes, reads, scores; then hands the request to its shadows and the log.
    async fn run(self: &Arc<Self>, headers: &HeaderMap, reference: ModelRef, request: Request, parse: Parse) -> Result<Scored, Failure> {
        let started = Instant::now();
        self.check(headers, Permission::Query)?;
        let routed = reference.at == ModelAt::Latest && self.traffic.routes.contains_key(&reference.name);
        let (reference, route) = self.choose(reference, headers);
        let served = self.served(&reference).await?;
        let features = Arc::new(parse_body(headers, &self.body(request).await?, self.options.max_rows)?);
        let (rows, values) = parse(&served, &features)?;
        if rows == 0 {
            return Err(bad("no rows to score"));
        }
        let logging = self.log.as_ref().filter(|l| l.asset(&served.version.name).is_some() && l.sampled());
        let logged = logging.map(|_| Arc::new(values.clone()));
        let predictions = self.score(&served, rows, values).await?;
        if routed {
            *self
                .metrics
                .routed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry((served.version.name.clone(), route.clone(), served.version.version))
                .or_default() += 1;
        }
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| match &*features {
                Features::Json(body) => body.get("id").and_then(Value::as_str).map(str::to_string),
                Features::Arrow(_) => None,
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if let (Some(log), Some(features)) = (logging, logged) {
            log.add(self.entry(&served, &request_id, &route, false, started, rows, features, predictions.clone()));
        }
        for shadow in self.traffic.shadows.get(&served.version.name).into_iter().flatten().cloned() {
            let (e, features, request_id, log) = (self.clone(), features.clone(), request_id.clone(), logging.is_some());
            let model = served.version.name.clone();
            let primary = served.version.version;
            self.shadows_running.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                e.shadow(shadow, primary, &model, &features, parse, &request_id, log).await;
                e.shadows_running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Ok(Scored { served, route, rows, predictions, features, request_id })
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        served: &Served,
        request_id: &str,
        route: &str,
        shadow: bool,
        started: Instant,
        rows: usize,
        features: Arc<Vec<f64>>,
        predictions: Vec<f64>,
    ) -> Entry {
        let asset = self.log.as_ref().and_then(|l| l.asset(&served.version.name)).unwrap_or_default().to_string();
        Entry {
            asset,
            request_id: request_id.to_string(),
            scored_at_us: chrono::Utc::now().timestamp_micros(),
            model: served.version.name.clone(),
            version: served.version.version,
            route: route.to_string(),
            shadow,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            inputs: served.inputs.clone(),
            outputs: served.outputs.clone(),
            rows,
            features,
            predictions,
        }
    }

    /// Scores a request with a shadow version (unless the request was answered by it), counts
    /// the outcome and logs the predictions when the request is logged.
    #[allow(clippy::too_many_arguments)]
    async fn shadow(&self, shadow: ModelRef, primary: u64, model: &str, features: &Features, parse: Parse, request_id: &str, log: bool) {
        let started = Instant::now();
        let outcome = async {
            let served = self.served(&shadow).await?;
            if served.version.version == primary {
                return Ok(None);
            }
            let (rows, values) = parse(&served, features)?;
            let logged = log.then(|| Arc::new(values.clone()));
            let predictions = self.score(&served, rows, values).await?;
            if let (Some(log), Some(features)) = (self.log.as_ref(), logged) {
                log.add(self.entry(&served, request_id, "shadow", true, started, rows, features, predictions));
            }
            Ok::<_, Failure>(Some(served.version.version))
        }
        .await;
        let (version, result) = match outcome {
            Ok(None) => return,
            Ok(Some(v)) => (v.to_string(), "ok"),
            Err(Failure(code, message)) => {
                tracing::warn!(model = %model, shadow = %shadow, code = code.as_u16(), error = %message, "a shadow scoring failed");
                (String::new(), "error")
            }
        };
        *self
            .metrics
            .shadows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((model.to_string(), version, result))
            .or_default() += 1;
    }
}

/// An Arrow IPC stream of the outputs, a float64 column each; the version in the headers and
/// the schema's metadata.
fn arrow_answer(scored: &Scored) -> Result<Response, Failure> {
    use arrow::array::{ArrayRef, Float64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let served = &scored.served;
    let m = served.outputs.len();
    let metadata: HashMap<String, String> = [
        ("model".to_string(), served.version.name.clone()),
        ("model_version".to_string(), served.version.version.to_string()),
        ("route".to_string(), scored.route.clone()),
    ]
    .into();
    let fields: Vec<Field> = served.outputs.iter().map(|n| Field::new(n, DataType::Float64, false)).collect();
    let schema = Arc::new(Schema::new(fields).with_metadata(metadata));
    let columns: Vec<ArrayRef> = (0..m)
        .map(|o| Arc::new(Float64Array::from(scored.predictions.iter().skip(o).step_by(m).copied().collect::<Vec<_>>())) as ArrayRef)
        .collect();
    let failed = |e: arrow::error::ArrowError| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("writing the Arrow answer: {e}"));
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).map_err(failed)?;
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(failed)?;
        writer.write(&batch).map_err(failed)?;
        writer.finish().map_err(failed)?;
    }
    Ok((
        [
            (header::CONTENT_TYPE, ARROW_STREAM.to_string()),
            (header::HeaderName::from_static("x-sluice-model"), served.version.name.clone()),
            (header::HeaderName::from_static("x-sluice-model-version"), served.version.version.to_string()),
            (header::HeaderName::from_static("x-sluice-route"), scored.route.clone()),
            (header::HeaderName::from_static("x-request-id"), scored.request_id.clone()),
        ],
        out,
    )
        .into_response())
}

async fn predict_v1(State(e): Shared, Path(model): Path<String>, headers: HeaderMap, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let scored = e.run(&headers, reference(&model)?, request, v1_parse).await?;
        if wants_arrow(&scored.features) {
            return Ok((scored.served.clone(), arrow_answer(&scored)?));
        }
        let served = &scored.served;
        let answer = json!({
            "model": served.version.name,
            "model_version": served.version.version,
            "route": scored.route,
            "request_id": scored.request_id,
            "outputs": served.outputs.as_slice(),
            "predictions": v1_predictions(served, &scored.predictions),
        });
        Ok((served.clone(), Json200(answer).into_response()))
    }
    .await;
    finish(&e, &model, result, started)
}

fn finish(e: &Endpoint, model: &str, result: Result<(Arc<Served>, Response), Failure>, started: Instant) -> Response {
    match result {
        Ok((served, answer)) => {
            e.record(&served.version.name, &served.version.version.to_string(), StatusCode::OK, started);
            answer
        }
        Err(failure) => {
            // Only names being served become labels: a client's typo must not mint series.
            let name = model.split('@').next().unwrap_or(model);
            let known = e.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().any(|(n, _)| n == name);
            e.record(if known { name } else { "-" }, "", failure.0, started);
            failure.into_response()
        }
    }
}

async fn reload(State(e): Shared, headers: HeaderMap) -> Response {
    if let Err(f) = e.check(&headers, Permission::Operate) {
        return f.into_response();
    }
    let changed = e.reload().await;
    let resolved: BTreeMap<String, u64> =
        e.resolved.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(k, v)| (k.clone(), *v)).collect();
    Json200(json!({ "changed": changed, "resolved": resolved })).into_response()
}

fn v2_reference(name: &str, version: Option<&str>) -> Result<ModelRef, Failure> {
    match version {
        None => reference(name),
        Some(v) => reference(&format!("{name}@{v}")),
    }
}

fn datatype(float64: bool) -> &'static str {
    if float64 { "FP64" } else { "FP32" }
}

async fn metadata(e: &Endpoint, headers: &HeaderMap, name: &str, version: Option<&str>) -> Response {
    let result: Result<Value, Failure> = async {
        e.check(headers, Permission::Query)?;
        let served = e.served(&v2_reference(name, version)?).await?;
        let versions: Vec<String> = e
            .registry
            .versions_of(name)
            .await
            .map_err(|err| Failure(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?
            .iter()
            .filter(|v| v.archived.is_none())
            .map(|v| v.version.to_string())
            .collect();
        let platform = match served.version.info.format.as_deref() {
            Some("onnx") => "onnxruntime_onnx",
            _ => "pytorch_torchscript",
        };
        Ok(json!({
            "name": served.version.name,
            "versions": versions,
            "platform": platform,
            "inputs": served.inputs.iter().map(|n| json!({"name": n, "datatype": datatype(served.takes_f64), "shape": [-1]})).collect::<Vec<_>>(),
            "outputs": served.outputs.iter().map(|n| json!({"name": n, "datatype": datatype(served.float64), "shape": [-1]})).collect::<Vec<_>>(),
        }))
    }
    .await;
    match result {
        Ok(answer) => Json200(answer).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn metadata_latest(State(e): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    metadata(&e, &headers, &name, None).await
}

async fn metadata_version(State(e): Shared, Path((name, version)): Path<(String, String)>, headers: HeaderMap) -> Response {
    metadata(&e, &headers, &name, Some(&version)).await
}

async fn ready(e: &Endpoint, headers: &HeaderMap, name: &str, version: Option<&str>) -> Response {
    let result = async {
        e.check(headers, Permission::Query)?;
        e.served(&v2_reference(name, version)?).await
    }
    .await;
    match result {
        Ok(served) => Json200(json!({ "name": served.version.name, "ready": true })).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn ready_latest(State(e): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    ready(&e, &headers, &name, None).await
}

async fn ready_version(State(e): Shared, Path((name, version)): Path<(String, String)>, headers: HeaderMap) -> Response {
    ready(&e, &headers, &name, Some(&version)).await
}

/// Numbers of a v2 tensor's `data`, flat or nested.
fn flatten(value: &Value, out: &mut Vec<f64>, tensor: &str) -> Result<(), Failure> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out, tensor)),
        other => {
            out.push(number(other).map_err(|what| bad(format!("input '{tensor}' holds {what}; send numbers")))?);
            Ok(())
        }
    }
}

/// Features of a v2 `infer` body, row-major: one `[n, k]` tensor, or one `[n]` / `[n, 1]`
/// tensor per input name.
fn v2_features(served: &Served, body: &Value) -> Result<(usize, Vec<f64>), Failure> {
    let k = served.inputs.len();
    let takes = served.inputs.join(", ");
    let tensors = body.get("inputs").and_then(Value::as_array).ok_or_else(|| {
        bad(format!("the body needs \"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}] (one [n, {k}] tensor, or one [n] tensor per input: {takes})"))
    })?;
    let read = |t: &Value| -> Result<(String, Vec<i64>, Vec<f64>), Failure> {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let shape: Vec<i64> = t
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_i64).collect())
            .ok_or_else(|| bad(format!("input '{name}' has no \"shape\"")))?;
        let mut data = Vec::new();
        flatten(t.get("data").ok_or_else(|| bad(format!("input '{name}' has no \"data\"")))?, &mut data, &name)?;
        if shape.iter().any(|d| *d < 0) {
            return Err(bad(format!("input '{name}' has shape {shape:?}; give the real size of every dimension")));
        }
        let elements = shape.iter().try_fold(1i64, |n, d| n.checked_mul(*d));
        if elements != Some(data.len() as i64) {
            return Err(bad(format!("input '{name}' has shape {shape:?} but {} values", data.len())));
        }
        Ok((name, shape, data))
    };
    if tensors.len() == 1 && k > 1 || (k == 1 && tensors.len() == 1 && read(&tensors[0])?.1.len() == 2) {
        let (name, shape, data) = read(&tensors[0])?;
        if shape.len() != 2 || shape[1] != k as i64 {
            return Err(bad(format!("input '{name}' has shape {shape:?}; the model takes [n, {k}] ({takes})")));
        }
        return Ok((shape[0] as usize, data));
    }
    if k == 0 {
        return Err(bad(format!("model {} declares no inputs", served.version.name)));
    }
    let mut columns = Vec::with_capacity(k);
    for input in served.inputs.iter() {
        let tensor = tensors.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(input)).ok_or_else(|| {
            bad(format!("the input '{input}' is missing (the model takes: {takes}, or one [n, {k}] tensor)"))
        })?;
        let (_, shape, data) = read(tensor)?;
        if !(shape.len() == 1 || shape.len() == 2 && shape[1] == 1) {
            return Err(bad(format!("input '{input}' has shape {shape:?}; send [n] or [n, 1]")));
        }
        columns.push(data);
    }
    let rows = columns[0].len();
    if let Some((c, _)) = columns.iter().enumerate().find(|(_, c)| c.len() != rows) {
        return Err(bad(format!("input '{}' has {} rows where '{}' has {rows}", served.inputs[c], columns[c].len(), served.inputs[0])));
    }
    Ok((rows, (0..rows).flat_map(|r| columns.iter().map(move |c| c[r])).collect()))
}

async fn infer(e: &Arc<Endpoint>, headers: &HeaderMap, name: &str, version: Option<&str>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let scored = e.run(headers, v2_reference(name, version)?, request, v2_parse).await?;
        if wants_arrow(&scored.features) {
            return Ok((scored.served.clone(), arrow_answer(&scored)?));
        }
        let served = &scored.served;
        let m = served.outputs.len();
        let outputs: Vec<Value> = served
            .outputs
            .iter()
            .enumerate()
            .map(|(o, output)| {
                let data: Vec<f64> = scored.predictions.iter().skip(o).step_by(m).copied().collect();
                json!({ "name": output, "datatype": datatype(served.float64), "shape": [scored.rows], "data": data })
            })
            .collect();
        let answer = json!({
            "model_name": served.version.name,
            "model_version": served.version.version.to_string(),
            "id": scored.request_id,
            "parameters": { "route": scored.route },
            "outputs": outputs,
        });
        Ok((served.clone(), Json200(answer).into_response()))
    }
    .await;
    finish(e, name, result, started)
}

async fn infer_latest(State(e): Shared, Path(name): Path<String>, headers: HeaderMap, request: Request) -> Response {
    infer(&e, &headers, &name, None, request).await
}

async fn infer_version(
    State(e): Shared,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    infer(&e, &headers, &name, Some(&version), request).await
}

fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

async fn metrics(State(e): Shared, headers: HeaderMap) -> Response {
    if let Err(f) = e.check(&headers, Permission::Query) {
        return f.into_response();
    }
    let mut out = String::new();
    out.push_str("# HELP sluice_predict_requests_total Prediction requests answered, by model, version and status code.\n");
    out.push_str("# TYPE sluice_predict_requests_total counter\n");
    for ((model, version, code), n) in e.metrics.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let _ = writeln!(out, "sluice_predict_requests_total{{model=\"{}\",version=\"{version}\",code=\"{code}\"}} {n}", label(model));
    }
    out.push_str("# HELP sluice_predict_request_seconds Latency of answered prediction requests.\n");
    out.push_str("# TYPE sluice_predict_request_seconds histogram\n");
    for ((model, version), l) in e.metrics.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let tags = format!("model=\"{}\",version=\"{version}\"", label(model));
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BOUNDS.iter().zip(l.buckets) {
            cumulative += n;
            let _ = writeln!(out, "sluice_predict_request_seconds_bucket{{{tags},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "sluice_predict_request_seconds_bucket{{{tags},le=\"+Inf\"}} {}", l.count);
        let _ = writeln!(out, "sluice_predict_request_seconds_sum{{{tags}}} {}", l.sum);
        let _ = writeln!(out, "sluice_predict_request_seconds_count{{{tags}}} {}", l.count);
    }
    out.push_str("# HELP sluice_predict_batch_rows Rows per forward pass of the dynamic batcher.\n");
    out.push_str("# TYPE sluice_predict_batch_rows histogram\n");
    let served: Vec<Arc<Served>> = e.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
    for s in &served {
        let tags = format!("model=\"{}\",version=\"{}\"", label(&s.version.name), s.version.version);
        let stats = &s.batcher.stats;
        let mut cumulative = 0;
        for (bound, n) in SIZE_BOUNDS.iter().zip(&stats.sizes) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "sluice_predict_batch_rows_bucket{{{tags},le=\"{bound}\"}} {cumulative}");
        }
        let batches = stats.batches.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_predict_batch_rows_bucket{{{tags},le=\"+Inf\"}} {batches}");
        let _ = writeln!(out, "sluice_predict_batch_rows_sum{{{tags}}} {}", stats.rows.load(Ordering::Relaxed));
        let _ = writeln!(out, "sluice_predict_batch_rows_count{{{tags}}} {batches}");
    }
    let _ = writeln!(out, "# TYPE sluice_predict_reloads_total counter\nsluice_predict_reloads_total {}", e.reloads.load(Ordering::Relaxed));
    out.push_str("# HELP sluice_predict_routed_total Requests of a bare model name sent by its traffic split, by target and version.\n");
    out.push_str("# TYPE sluice_predict_routed_total counter\n");
    for ((model, target, version), n) in e.metrics.routed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let _ = writeln!(out, "sluice_predict_routed_total{{model=\"{}\",target=\"{}\",version=\"{version}\"}} {n}", label(model), label(target));
    }
    out.push_str("# HELP sluice_predict_shadow_total Requests scored by a shadow version, by outcome.\n");
    out.push_str("# TYPE sluice_predict_shadow_total counter\n");
    for ((model, version, outcome), n) in e.metrics.shadows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let _ = writeln!(out, "sluice_predict_shadow_total{{model=\"{}\",version=\"{version}\",outcome=\"{outcome}\"}} {n}", label(model));
    }
    if let Some(log) = &e.log {
        let stats = &log.stats;
        out.push_str("# HELP sluice_predict_logged_rows_total Rows committed to the request log, by asset.\n");
        out.push_str("# TYPE sluice_predict_logged_rows_total counter\n");
        for (asset, n) in stats.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            let _ = writeln!(out, "sluice_predict_logged_rows_total{{asset=\"{}\"}} {n}", label(asset));
        }
        let _ = writeln!(out, "# TYPE sluice_predict_log_commits_total counter\nsluice_predict_log_commits_total {}", stats.commits.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# TYPE sluice_predict_log_failed_commits_total counter\nsluice_predict_log_failed_commits_total {}",
            stats.failed_commits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_predict_log_dropped_total Requests answered but not logged: the log's queue was full.\n# TYPE sluice_predict_log_dropped_total counter\nsluice_predict_log_dropped_total {}",
            stats.dropped.load(Ordering::Relaxed)
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from(out)).into_response()
}
