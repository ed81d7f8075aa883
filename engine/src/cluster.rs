//! Ballista schedulers and executors with Sluice's functions and object stores, as separate
//! processes (`sluice scheduler`, `sluice executor`) or as an embedded cluster on loopback.
//!
//! Ballista needs a UDF in three places: the client session (planning), the scheduler's session
//! builder (it re-plans the job) and each executor's function registry (it decodes and runs the
//! tasks). Every entry point here wires all three from [`sluice_udfs::functions`].

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::create_grpc_server;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use sluice_lake::datastore::Datastore;
use sluice_udfs::{Functions, PredictStats, functions};
use tonic::transport::server::TcpIncoming;

use crate::error::{Error, Result};
use crate::runtime::runtime_env;
use crate::session::{connect, scheduler_session_state, session_config};

/// Settings of a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on.
    pub bind_host: String,
    /// Host name executors and clients use to reach this scheduler.
    pub external_host: String,
    /// gRPC (and REST, Flight SQL) port; 0 picks a free one.
    pub port: u16,
    /// Seconds without a heartbeat after which an executor is considered lost and its tasks
    /// are run again elsewhere (Ballista's default, 180 s, leaves a job waiting for minutes).
    pub executor_timeout_seconds: u64,
    /// Datastores registered in every job's session (the scheduler plans with them).
    pub datastores: Vec<Datastore>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            bind_host: "127.0.0.1".into(),
            external_host: "127.0.0.1".into(),
            port: 50050,
            executor_timeout_seconds: DEFAULT_EXECUTOR_TIMEOUT_SECONDS,
            datastores: Vec::new(),
        }
    }
}

/// Settings of an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Unique id; also labels this executor's `predict` counters.
    pub id: String,
    /// Address to listen on.
    pub bind_host: String,
    /// Host name other executors and clients use to fetch this executor's results.
    pub external_host: String,
    /// Arrow Flight port (shuffle and results); 0 picks a free one.
    pub flight_port: u16,
    /// gRPC port the scheduler pushes tasks to; 0 picks a free one.
    pub grpc_port: u16,
    /// Scheduler host.
    pub scheduler_host: String,
    /// Scheduler port.
    pub scheduler_port: u16,
    /// Tasks run at once.
    pub vcores: usize,
    /// Directory for shuffle and spill files; a temporary one when `None`.
    pub work_dir: Option<String>,
    /// Seconds to keep retrying the scheduler at start-up (0: fail at once).
    pub connect_timeout_seconds: u16,
    /// Datastores the executor reads and writes.
    pub datastores: Vec<Datastore>,
    /// Seconds between heartbeats to the scheduler (Ballista's default is 60).
    pub heartbeat_seconds: u64,
    /// Port of this executor's `/metrics` (Prometheus) and `/healthz` endpoints; None: off.
    pub metrics_port: Option<u16>,
}

/// Seconds between an executor's heartbeats, by default: a few, so that a scheduler with
/// [`DEFAULT_EXECUTOR_TIMEOUT_SECONDS`] tells a lost executor from a slow one.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 2;
/// Seconds without a heartbeat before the scheduler gives a lost executor's tasks to others.
pub const DEFAULT_EXECUTOR_TIMEOUT_SECONDS: u64 = 8;

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            id: format!("executor-{}", std::process::id()),
            bind_host: "127.0.0.1".into(),
            external_host: "127.0.0.1".into(),
            flight_port: 50051,
            grpc_port: 50052,
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: 50050,
            vcores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            work_dir: None,
            connect_timeout_seconds: 30,
            datastores: Vec::new(),
            heartbeat_seconds: DEFAULT_HEARTBEAT_SECONDS,
            metrics_port: None,
        }
    }
}

type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// A port free now, for Ballista to bind later (the executor's gRPC port, which Ballista binds
/// itself after registering). Drawn below the kernel's ephemeral range (32768 and up on Linux):
/// a port from `bind(0)` is an ephemeral one, and any outgoing connection of any process (to a
/// database, a broker, another test's server) may take it before Ballista binds it.
fn free_port(host: &str) -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..64 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = 20_000 + (random % 12_000) as u16;
        if StdListener::bind((host, port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = StdListener::bind((host, 0)).map_err(Error::io(format!("finding a free port on {host}")))?;
    let port = listener.local_addr().map_err(Error::io("reading a bound port"))?.port();
    Ok(port)
}

/// Builds and initialises a scheduler; returns it with the listener it will serve on.
async fn build_scheduler(options: &SchedulerOptions) -> Result<(Scheduler, tokio::net::TcpListener)> {
    let listener = tokio::net::TcpListener::bind((options.bind_host.as_str(), options.port))
        .await
        .map_err(Error::io(format!("binding the scheduler to {}:{}", options.bind_host, options.port)))?;
    let port = listener.local_addr().map_err(Error::io("reading the scheduler's address"))?.port();
    let functions = functions("scheduler");
    let datastores = options.datastores.clone();
    let mut config = SchedulerConfig::default()
        .with_hostname(options.external_host.clone())
        .with_port(port)
        .with_override_config_producer(Arc::new(session_config))
        .with_override_session_builder(Arc::new(move |config| {
            scheduler_session_state(config, &functions, &datastores)
        }));
    config.bind_host = options.bind_host.clone();
    config.override_logical_codec = Some(crate::codec::logical_codec());
    config.override_physical_codec = Some(crate::codec::physical_codec());
    config.executor_timeout_seconds = options.executor_timeout_seconds.max(1);
    // Look for lost executors often enough that the timeout, not the check, sets the delay.
    config.expire_dead_executor_interval_seconds = (options.executor_timeout_seconds / 4).clamp(1, 15);
    config.no_executors_grace_period_seconds = config.executor_timeout_seconds;
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config)).await?;
    Ok((scheduler, listener))
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    let (scheduler, listener) = build_scheduler(&options).await?;
    let addr = listener.local_addr().map_err(Error::io("reading the scheduler's address"))?;
    tracing::info!(%addr, "scheduler listening (gRPC, REST)");
    start_grpc_service_with_listener(listener, scheduler).await?;
    Ok(())
}

/// The executor process config for `options`, with Sluice's functions, object stores and session
/// settings; also returns this executor's `predict` so its counters can be read.
fn executor_config(options: &ExecutorOptions) -> Result<(ExecutorProcessConfig, Functions)> {
    let functions = functions(&options.id);
    Ok((executor_config_with(options, &functions)?, functions))
}

/// The executor process config for `options` with `functions` as its registry.
fn executor_config_with(options: &ExecutorOptions, functions: &Functions) -> Result<ExecutorProcessConfig> {
    let mut registry = BallistaFunctionRegistry::default();
    // Ballista's default registry lacks the array functions (`prediction[1]`, `make_array`, ...).
    for udf in datafusion::functions_nested::all_default_nested_functions() {
        registry.scalar_functions.entry(udf.name().to_string()).or_insert(udf);
    }
    for udf in &functions.scalar {
        registry.scalar_functions.insert(udf.name().to_string(), udf.clone());
    }
    let work_dir = match &options.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating executor work dir {dir}")))?;
            dir.clone()
        }
        None => {
            let dir = std::env::temp_dir().join(format!("sluice-{}", options.id));
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating executor work dir {}", dir.display())))?;
            dir.to_string_lossy().into_owned()
        }
    };
    let spill = work_dir.clone();
    let datastores = options.datastores.clone();
    // The Flight port is bound here, before the executor registers, and served by the hook below.
    // Ballista's own server binds it only after registering: had another process taken the port
    // in between, the executor would stop registered, and its stop marks every executor in the
    // process as terminating.
    let flight = StdListener::bind((options.bind_host.as_str(), options.flight_port)).map_err(Error::io(format!(
        "binding the executor's Flight port {}:{} (taken? pick another with --flight-port)",
        options.bind_host, options.flight_port
    )))?;
    flight.set_nonblocking(true).map_err(Error::io("setting the Flight listener non-blocking"))?;
    let flight_port = flight.local_addr().map_err(Error::io("reading the Flight listener's address"))?.port();
    let grpc_port = if options.grpc_port == 0 { free_port(&options.bind_host)? } else { options.grpc_port };
    let defaults = ExecutorProcessConfig::default();
    let flight_service = flight_service(flight, defaults.grpc_max_encoding_message_size as usize, defaults.grpc_max_decoding_message_size as usize);
    let config = ExecutorProcessConfig {
        executor_id: options.id.clone(),
        bind_host: options.bind_host.clone(),
        external_host: Some(options.external_host.clone()),
        port: flight_port,
        override_arrow_flight_service: Some(flight_service),
        grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: options.connect_timeout_seconds,
        vcores: options.vcores.max(1),
        work_dir: Some(work_dir),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: options.heartbeat_seconds.max(1),
        override_function_registry: Some(Arc::new(registry)),
        override_runtime_producer: Some(Arc::new(move |_| runtime_env(Some(&spill), &datastores))),
        override_config_producer: Some(Arc::new(session_config)),
        override_logical_codec: Some(crate::codec::logical_codec()),
        override_physical_codec: Some(crate::codec::physical_codec()),
        ..Default::default()
    };
    Ok(config)
}

/// Ballista's shuffle Flight service on a listener bound already (the executor starts it once).
fn flight_service(listener: StdListener, max_encoding: usize, max_decoding: usize) -> Arc<ArrowFlightServerProvider> {
    let listener = std::sync::Mutex::new(Some(listener));
    Arc::new(move |work_dir, address, mut shutdown, grpc| {
        let listener = listener.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        tokio::spawn(async move {
            let listener = listener
                .ok_or_else(|| BallistaError::General(format!("the Flight listener on {address} was served already")))
                .and_then(|l| tokio::net::TcpListener::from_std(l).map_err(BallistaError::from))?;
            tracing::debug!(%address, "executor Flight service listening");
            let service = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_encoding_message_size(max_encoding)
                .max_decoding_message_size(max_decoding);
            create_grpc_server(&grpc)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener)
                        .with_nodelay(Some(true))
                        .with_keepalive(Some(Duration::from_secs(grpc.tcp_keepalive_seconds))),
                    shutdown.recv(),
                )
                .await
                .map_err(BallistaError::TonicError)
        })
    })
}

/// Waits until the scheduler accepts TCP connections, for at most `seconds`.
async fn wait_for_scheduler(host: &str, port: u16, seconds: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    loop {
        match tokio::net::TcpStream::connect((host, port)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Startup(format!(
                    "cannot reach the scheduler at {host}:{port} after {seconds} s ({e}); start `sluice scheduler` \
                     first or fix --scheduler"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Runs an executor until the process is stopped or the scheduler tells it to stop.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    // Ballista's own connect retry never gives up; wait here with a deadline, then connect once.
    wait_for_scheduler(&options.scheduler_host, options.scheduler_port, options.connect_timeout_seconds).await?;
    let options = ExecutorOptions { connect_timeout_seconds: 0, ..options };
    let (config, functions) = executor_config(&options)?;
    if let Some(port) = options.metrics_port {
        let listener = tokio::net::TcpListener::bind((options.bind_host.as_str(), port))
            .await
            .map_err(Error::io(format!("binding the metrics endpoint to {}:{port}", options.bind_host)))?;
        tracing::info!(addr = %listener.local_addr().map_err(Error::io("reading the metrics address"))?, "metrics on /metrics, health on /healthz");
        let (id, stats) = (options.id.clone(), functions.predict.stats());
        tokio::spawn(crate::metrics::serve(listener, Arc::new(move || prometheus_text(&id, &stats))));
    }
    tracing::info!(id = %options.id, flight_port = config.port, grpc_port = config.grpc_port,
        scheduler = %format!("{}:{}", options.scheduler_host, options.scheduler_port), "executor starting");
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

/// The executor's counters (stable names; `executor` label).
fn prometheus_text(id: &str, stats: &PredictStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    use crate::metrics::Metric;
    let device = sluice_udfs::device::default_device_name();
    let metrics = [
        Metric::gauge("sluice_executor_up", "1 while the executor process runs.", 1.0),
        Metric::gauge("sluice_executor_device", "1 for the device this executor's models run on.", 1.0)
            .with_label("device", &device),
        Metric::counter("sluice_predict_rows_total", "Rows scored by predict.", stats.rows.load(Relaxed) as f64),
        Metric::counter("sluice_predict_batches_total", "Forward calls of predict.", stats.batches.load(Relaxed) as f64),
        Metric::counter(
            "sluice_predict_seconds_total",
            "Seconds in predict's forward calls (model latency: rate of this over rate of batches).",
            stats.forward_nanos.load(Relaxed) as f64 / 1e9,
        ),
        Metric::counter(
            "sluice_predict_errors_total",
            "Failed predict calls (bad rows, bad calls, model errors).",
            stats.errors.load(Relaxed) as f64,
        ),
    ];
    crate::metrics::render(&[("executor", id)], &metrics)
}

/// Settings of an embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Number of executors.
    pub executors: usize,
    /// Tasks each executor runs at once; by default the cores shared out among the executors.
    pub vcores_per_executor: Option<usize>,
    /// Datastores registered on the scheduler, every executor and the clients.
    pub datastores: Vec<Datastore>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { executors: 2, vcores_per_executor: None, datastores: Vec::new() }
    }
}

/// An executor of an embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedExecutor {
    /// Its id.
    pub id: String,
    /// Its `predict` counters: rows scored in this executor's tasks.
    pub predict: Arc<PredictStats>,
}

/// A scheduler and executors running in this process on loopback ports, talking gRPC and Arrow
/// Flight exactly as separate processes do. It runs on its own threads, so it outlives the
/// caller's runtime; dropping it stops them.
pub struct EmbeddedCluster {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    executors: Vec<EmbeddedExecutor>,
    datastores: Vec<Datastore>,
    // Shuffle and spill files of the executors; removed when the cluster is dropped.
    _work_dir: tempfile::TempDir,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster").field("addr", &self.addr).field("executors", &self.executors).finish()
    }
}

impl EmbeddedCluster {
    /// Starts a scheduler and `options.executors` executors and waits until all have registered.
    pub async fn start(options: EmbeddedOptions) -> Result<Self> {
        if options.executors == 0 {
            return Err(Error::Config(
                "an embedded cluster needs at least one executor (--executors 1 or more)".into(),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let vcores = options.vcores_per_executor.unwrap_or((cores / options.executors).max(1));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.max(2))
            .thread_name("sluice-cluster")
            .thread_stack_size(8 * 1024 * 1024)
            .enable_all()
            .build()
            .map_err(Error::io("starting the cluster's runtime"))?;
        // Dropped without blocking on every early return below (we are inside the caller's runtime).
        let rt = runtime.handle().clone();
        let mut runtime = BackgroundRuntime(Some(runtime));

        let scheduler_options =
            SchedulerOptions { port: 0, datastores: options.datastores.clone(), ..Default::default() };
        let (scheduler, listener) =
            rt.spawn(async move { build_scheduler(&scheduler_options).await }).await.map_err(join_error)??;
        let addr = listener.local_addr().map_err(Error::io("reading the scheduler's address"))?;
        let serving = scheduler.clone();
        rt.spawn(async move {
            if let Err(e) = start_grpc_service_with_listener(listener, serving).await {
                tracing::error!(error = %e, "embedded scheduler stopped");
            }
        });

        let work_dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .map_err(Error::io("creating the cluster's work directory"))?;
        let mut executors = Vec::new();
        let mut starts = Vec::new();
        for i in 1..=options.executors {
            let exec_options = ExecutorOptions {
                id: format!("executor-{i}"),
                flight_port: 0,
                grpc_port: 0,
                scheduler_port: addr.port(),
                vcores,
                // The scheduler is already serving: connect once.
                connect_timeout_seconds: 0,
                work_dir: Some(work_dir.path().join(format!("executor-{i}")).to_string_lossy().into_owned()),
                datastores: options.datastores.clone(),
                ..Default::default()
            };
            let functions = functions(&exec_options.id);
            executors.push(EmbeddedExecutor { id: exec_options.id.clone(), predict: functions.predict.stats() });
            starts.push((exec_options, functions));
        }

        let expected = options.executors;
        let waited = rt
            .spawn(async move {
                // An executor binds its gRPC port (picked free a moment before) ahead of
                // registering; one that lost the port to another process stops unregistered and
                // is started again on fresh ports.
                let spawn = |options: &ExecutorOptions, functions: &Functions| -> Result<_> {
                    let config = Arc::new(executor_config_with(options, functions)?);
                    Ok(tokio::spawn(async move { start_executor_process(config).await }))
                };
                let mut running = Vec::new();
                for (options, functions) in &starts {
                    running.push((spawn(options, functions)?, 0u32));
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    for ((options, functions), (handle, retries)) in starts.iter().zip(running.iter_mut()) {
                        if !handle.is_finished() {
                            continue;
                        }
                        let outcome = match (&mut *handle).await {
                            Ok(Ok(())) => "it stopped".to_string(),
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                        };
                        if *retries >= 3 {
                            return Err(Error::Startup(format!(
                                "embedded executor {} did not start after {retries} retries: {outcome}",
                                options.id
                            )));
                        }
                        tracing::warn!(executor = %options.id, error = %outcome, "embedded executor did not start; retrying on fresh ports");
                        *retries += 1;
                        *handle = spawn(options, functions)?;
                    }
                    let alive =
                        scheduler.state.executor_manager.get_executors_state().await.map(|s| s.len()).unwrap_or(0);
                    if alive >= expected {
                        // Errors after start are the executors' own to log.
                        for ((options, _), (handle, _)) in starts.iter().zip(running) {
                            let id = options.id.clone();
                            tokio::spawn(async move {
                                if let Ok(Err(e)) = handle.await {
                                    tracing::error!(executor = %id, error = %e, "embedded executor stopped");
                                }
                            });
                        }
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(Error::Startup(format!("{alive} of {expected} executors registered within 30 s")));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .map_err(join_error)?;
        waited?;
        tracing::info!(%addr, executors = expected, vcores, "embedded cluster ready");
        Ok(Self { runtime: runtime.0.take(), addr, executors, datastores: options.datastores, _work_dir: work_dir })
    }

    /// `df://127.0.0.1:PORT` of the scheduler.
    pub fn url(&self) -> String {
        format!("df://{}", self.addr)
    }

    /// The executors and their counters.
    pub fn executors(&self) -> &[EmbeddedExecutor] {
        &self.executors
    }

    /// A client session on this cluster, with Sluice's functions registered as `client`.
    pub async fn connect(&self, functions: &Functions) -> Result<SessionContext> {
        connect(&self.url(), functions, &self.datastores).await
    }
}

/// A runtime shut down in the background when dropped (dropping a runtime normally blocks, which
/// panics inside another runtime).
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Startup(format!("a start-up task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    #[test]
    fn metrics_are_prometheus_text_with_the_executor_label() {
        let stats = PredictStats::default();
        stats.rows.store(1200, Relaxed);
        stats.batches.store(3, Relaxed);
        stats.forward_nanos.store(1_500_000_000, Relaxed);
        stats.errors.store(2, Relaxed);
        let text = prometheus_text("exec-a", &stats);
        for line in [
            "# TYPE sluice_predict_rows_total counter",
            "sluice_predict_rows_total{executor=\"exec-a\"} 1200",
            "sluice_predict_batches_total{executor=\"exec-a\"} 3",
            "sluice_predict_seconds_total{executor=\"exec-a\"} 1.5",
            "sluice_predict_errors_total{executor=\"exec-a\"} 2",
            "sluice_executor_up{executor=\"exec-a\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }

    fn options(flight_port: u16, work_dir: &std::path::Path) -> ExecutorOptions {
        let work_dir = Some(work_dir.to_string_lossy().into_owned());
        ExecutorOptions { id: "exec-t".into(), flight_port, grpc_port: 0, work_dir, ..Default::default() }
    }

    #[test]
    fn the_flight_port_is_held_from_configuration_on() {
        let dir = tempfile::tempdir().unwrap();
        let options = options(0, dir.path());
        let config = executor_config_with(&options, &functions(&options.id)).unwrap();
        assert_ne!(config.port, 0, "the executor must advertise the port it holds");
        // Nobody can take the port between configuration and serving.
        assert!(StdListener::bind(("127.0.0.1", config.port)).is_err(), "port {} is not held", config.port);
        assert!(config.override_arrow_flight_service.is_some());
    }

    #[test]
    fn a_taken_flight_port_fails_before_the_executor_registers() {
        let dir = tempfile::tempdir().unwrap();
        let taken = StdListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let options = options(port, dir.path());
        let error = executor_config_with(&options, &functions(&options.id)).err().expect("a taken port must fail");
        let text = format!("{error}");
        assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("--flight-port"), "{text}");
    }
}
