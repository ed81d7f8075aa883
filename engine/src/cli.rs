//! The command-line arguments every command shares (where the workspace and the cluster are),
//! the `scheduler` and `executor` commands, and [`Say`], the lines a command shows its user.

use std::path::PathBuf;

use clap::Args;
use datafusion::prelude::SessionContext;
use sluice_lake::datastore::{Datastore, WorkspaceConfig};
use sluice_lake::delta::Lake;

use crate::cluster::{DEFAULT_EXECUTOR_TIMEOUT_SECONDS, DEFAULT_HEARTBEAT_SECONDS};
use crate::{EmbeddedCluster, EmbeddedOptions, Error, ExecutorOptions, Result, SchedulerOptions};

/// Where a command's lines go: results to `out`, notes (progress, what started) to `note`. The
/// binary prints them on stdout and stderr; library code never prints.
#[derive(Clone, Copy)]
pub struct Say {
    out: fn(&str),
    note: fn(&str),
}

impl Say {
    pub const fn new(out: fn(&str), note: fn(&str)) -> Self {
        Say { out, note }
    }

    /// One line (or several) of the command's result.
    pub fn out(&self, line: impl AsRef<str>) {
        (self.out)(line.as_ref())
    }

    /// A table or report that already ends with its line break.
    pub fn block(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if !text.is_empty() {
            (self.out)(text.strip_suffix('\n').unwrap_or(text))
        }
    }

    /// A note beside the result: what started, what was resolved.
    pub fn note(&self, line: impl AsRef<str>) {
        (self.note)(line.as_ref())
    }
}

/// The workspace file and the assets location of a command.
#[derive(Args, Debug, Clone)]
pub struct WorkspaceArg {
    /// Workspace file with the datastores (default: ./sluice.toml when present).
    #[arg(long = "workspace", env = "SLUICE_WORKSPACE", value_name = "FILE")]
    pub path: Option<PathBuf>,
    /// Where data assets live: a datastore name, a URL in one, or a directory (default: the
    /// workspace's [assets] location, else ./lake).
    #[arg(long = "assets", env = "SLUICE_ASSETS", value_name = "LOCATION")]
    pub assets: Option<String>,
}

impl WorkspaceArg {
    /// The workspace's datastores, opened.
    pub fn datastores(&self) -> Result<Vec<Datastore>> {
        let config = WorkspaceConfig::discover(self.path.as_deref())?;
        Ok(Datastore::open_all(&config)?)
    }

    /// The lake the assets live in.
    pub fn lake(&self) -> Result<Lake> {
        let config = WorkspaceConfig::discover(self.path.as_deref())?;
        let datastores = Datastore::open_all(&config)?;
        let location = self.assets.clone().unwrap_or(config.assets.location);
        Lake::open(&location, &datastores)
            .map_err(|e| Error::Config(format!("opening the assets location '{location}': {e}")))
    }
}

/// The cluster a command runs on: a running scheduler, or an embedded one.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// A running scheduler, df://HOST:PORT; without it an embedded cluster starts on loopback.
    #[arg(long, env = "SLUICE_CLUSTER")]
    pub cluster: Option<String>,
    /// Executors of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    #[command(flatten)]
    pub workspace: WorkspaceArg,
}

impl ClusterArgs {
    /// A session on the cluster, with the lake's assets readable by name; keeps an embedded
    /// cluster alive while held.
    pub async fn session(&self) -> Result<(SessionContext, Option<EmbeddedCluster>)> {
        let (ctx, cluster) = self.connect().await?;
        crate::assets::register(&ctx, &self.workspace.lake()?)?;
        Ok((ctx, cluster))
    }

    /// A session on the cluster, without the assets.
    pub async fn connect(&self) -> Result<(SessionContext, Option<EmbeddedCluster>)> {
        let functions = crate::client_functions();
        let datastores = self.workspace.datastores()?;
        match &self.cluster {
            Some(url) => {
                let ctx = crate::connect(url, &functions, &datastores)
                    .await
                    .map_err(|e| Error::Startup(format!("connecting to {url}: {e}")))?;
                Ok((ctx, None))
            }
            None => {
                let options = EmbeddedOptions { executors: self.executors, datastores, ..Default::default() };
                let cluster = EmbeddedCluster::start(options)
                    .await
                    .map_err(|e| Error::Startup(format!("starting the embedded cluster: {e}")))?;
                let ctx = cluster.connect(&functions).await?;
                tracing::info!(scheduler = %cluster.url(), executors = cluster.executors().len(), "embedded cluster started");
                Ok((ctx, Some(cluster)))
            }
        }
    }

    /// These arguments as `sluice` takes them, for a run started in another process.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--executors".into(), self.executors.to_string().into()];
        if let Some(url) = &self.cluster {
            args.extend(["--cluster".into(), url.into()]);
        }
        if let Some(path) = &self.workspace.path {
            args.extend(["--workspace".into(), path.into()]);
        }
        if let Some(assets) = &self.workspace.assets {
            args.extend(["--assets".into(), assets.into()]);
        }
        args
    }
}

/// `sluice scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Host name executors and clients use to reach this scheduler.
    #[arg(long, default_value = "127.0.0.1")]
    external_host: String,
    /// Port for gRPC, REST and Flight SQL.
    #[arg(long, default_value_t = 50050)]
    port: u16,
    /// Seconds without a heartbeat before an executor is considered lost and its tasks run
    /// elsewhere; keep it a few times the executors' --heartbeat.
    #[arg(long, default_value_t = DEFAULT_EXECUTOR_TIMEOUT_SECONDS)]
    executor_timeout: u64,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

impl SchedulerArgs {
    pub async fn run(self) -> Result<()> {
        crate::cluster::run_scheduler(SchedulerOptions {
            bind_host: self.bind,
            external_host: self.external_host,
            port: self.port,
            executor_timeout_seconds: self.executor_timeout,
            datastores: self.workspace.datastores()?,
        })
        .await
    }
}

/// `sluice executor`.
#[derive(Args, Debug)]
pub struct ExecutorArgs {
    /// Scheduler address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// Executor id (default: executor-PID).
    #[arg(long)]
    id: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Host name others use to fetch this executor's results.
    #[arg(long, default_value = "127.0.0.1")]
    external_host: String,
    /// Arrow Flight port (0: any free port).
    #[arg(long, default_value_t = 50051)]
    flight_port: u16,
    /// gRPC port the scheduler pushes tasks to (0: any free port).
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Tasks run at once (default: all cores).
    #[arg(long)]
    vcores: Option<usize>,
    /// Directory for shuffle and spill files.
    #[arg(long)]
    work_dir: Option<String>,
    /// Seconds to wait for the scheduler at start-up.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u16,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_SECONDS)]
    heartbeat: u64,
    /// Serve Prometheus metrics on /metrics and a health check on /healthz at this port.
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// Device the models of this executor run on: auto (a GPU where there is one), cpu,
    /// cuda or cuda:N (default: SLUICE_DEVICE, else auto). It is part of the default id.
    #[arg(long)]
    pub device: Option<String>,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

impl ExecutorArgs {
    /// Runs the executor; `device` is where its models run (from [`crate::init_torch`]).
    pub async fn run(self, device: &str) -> Result<()> {
        let scheduler = &self.scheduler;
        let (host, port) = scheduler
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Config(format!("--scheduler '{scheduler}': expected HOST:PORT, e.g. 127.0.0.1:50050")))?;
        let defaults = ExecutorOptions::default();
        crate::cluster::run_executor(ExecutorOptions {
            // The id says where models run, e.g. executor-123-cuda0 (listed by the scheduler).
            id: self.id.unwrap_or_else(|| match device {
                "cpu" => defaults.id,
                gpu => format!("{}-{}", defaults.id, gpu.replace(':', "")),
            }),
            bind_host: self.bind,
            external_host: self.external_host,
            flight_port: self.flight_port,
            grpc_port: self.grpc_port,
            scheduler_host: host,
            scheduler_port: port,
            vcores: self.vcores.unwrap_or(defaults.vcores),
            work_dir: self.work_dir,
            connect_timeout_seconds: self.connect_timeout,
            datastores: self.workspace.datastores()?,
            heartbeat_seconds: self.heartbeat,
            metrics_port: self.metrics_port,
        })
        .await
    }
}

/// A number of seconds from 0 up to a few years, as a command-line value (`--for inf` or `-1`
/// would panic as a duration).
pub fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if sluice_connectors::seconds("", s).is_ok() => Ok(s),
        _ => Err(format!("'{text}': give a number of seconds from 0 up to a few years, e.g. 3600")),
    }
}

/// SIGTERM (pending forever where it cannot be listened for).
pub async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Ctrl-C or SIGTERM.
pub async fn stopped() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
}
