//! `sluice serve`: job files on their cron schedules and, with `--flight` and `--http`, Flight
//! SQL and the web console, all until stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use sluice_catalog::record::spawn_run;
use sluice_catalog::runs::{Catalog, default_location};
use sluice_engine::cli::{ClusterArgs, Say, parse_seconds};
use sluice_engine::{Lake, SessionContext};
use sluice_ingest::schedule::{Scheduled, ServeEvent};

use crate::{Access, AccessConfig, Error, FlightServer, Launch, Result, Tls};

/// `sluice serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Job files with a schedule.
    jobs: Vec<PathBuf>,
    /// Stop starting runs after this many seconds, and return once the running ones end.
    #[arg(long = "for", value_name = "SECONDS", value_parser = parse_seconds)]
    stop_after: Option<f64>,
    /// Serve Flight SQL and Flight on this address, e.g. 127.0.0.1:50060.
    #[arg(long, value_name = "HOST:PORT")]
    flight: Option<String>,
    /// Serve the web console (and drift gauges on /metrics) on this address, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// Serve online predictions of registered models on this address, e.g. 127.0.0.1:8081
    /// (`POST /v1/models/NAME[@VERSION|@ALIAS]/predict`, KServe v2 `/v2/models/NAME/infer`).
    #[arg(long, value_name = "HOST:PORT")]
    predict: Option<String>,
    /// A model to load at start for --predict (`name`, `name@3`, `name@production`); repeatable.
    /// Others load on their first request.
    #[arg(long = "model", value_name = "MODEL")]
    models: Vec<String>,
    /// Most rows gathered into one forward pass from concurrent requests.
    #[arg(long, default_value_t = 256, value_name = "ROWS")]
    max_batch_rows: usize,
    /// How long the first request of a batch waits for others, in milliseconds. 0 (the
    /// default) takes what is queued: under load requests queue while the workers score, which
    /// batches them without adding a wait to each (bench/RESULTS.md, online inference).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    max_delay_ms: f64,
    /// Largest prediction request body.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_body_bytes: usize,
    /// Most rows in one prediction request.
    #[arg(long, default_value_t = 100_000, value_name = "ROWS")]
    max_request_rows: usize,
    /// Resolve model aliases again this often, in seconds (also on SIGHUP and POST /v1/reload).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    reload_s: f64,
    /// Split the requests that name a bare model between its versions or aliases, e.g.
    /// churn=production:90,staging:10 (the answer's `route` and `model_version` say which);
    /// repeatable, one per model. Send `X-Sluice-Route-Key: USER` to keep a caller on one target.
    #[arg(long = "route", value_name = "MODEL=TARGET:WEIGHT,...")]
    routes: Vec<String>,
    /// Score every request of MODEL also with this version or alias, after answering and
    /// without changing the answer (its predictions go to the request log), e.g.
    /// churn=candidate; repeatable.
    #[arg(long = "shadow", value_name = "MODEL=VERSION|ALIAS")]
    shadows: Vec<String>,
    /// Log MODEL's requests (features, predictions, version, route) to a data asset, e.g.
    /// churn=churn_requests, for drift and `sluice monitor quality`; repeatable.
    #[arg(long = "request-log", value_name = "MODEL=ASSET")]
    request_logs: Vec<String>,
    /// The fraction of requests logged (0 to 1).
    #[arg(long, default_value_t = 1.0, value_name = "FRACTION")]
    request_log_sample: f64,
    /// Commit the request log at least this often, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = parse_seconds)]
    request_log_every_s: f64,
    /// Commit the request log when this many rows wait.
    #[arg(long, default_value_t = 100_000, value_name = "ROWS")]
    request_log_max_rows: usize,
    /// The access file: users, their roles and credentials (required with --flight, --http and --predict).
    #[arg(long, env = "SLUICE_ACCESS", value_name = "FILE")]
    access: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the Flight and prediction endpoints; needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A run of a job file in its own process, as the scheduler and Flight's `submit` start them.
fn launcher(cluster: &ClusterArgs) -> impl Fn(&Path, &str) -> Result<std::process::Child> + Send + Sync + 'static {
    let cluster = cluster.clone();
    move |job: &Path, id: &str| spawn_run(job, id, &cluster).map(|(child, _)| child)
}

async fn bind(address: &str, what: &str) -> Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(Error::io(format!("binding the {what} to {address}")))?;
    let bound = listener.local_addr().map_err(Error::io(format!("reading the {what}'s address")))?;
    Ok((listener, bound))
}

impl ServeArgs {
    /// Whether the command handles Ctrl-C and SIGTERM itself: with --predict it stops taking
    /// requests, commits its request log and ends the process.
    pub fn stops_itself(&self) -> bool {
        self.predict.is_some()
    }

    pub async fn run(self, say: Say) -> Result<()> {
        let ServeArgs {
            jobs,
            stop_after,
            flight,
            http,
            predict,
            models,
            max_batch_rows,
            max_delay_ms,
            max_body_bytes,
            max_request_rows,
            reload_s,
            routes,
            shadows,
            request_logs,
            request_log_sample,
            request_log_every_s,
            request_log_max_rows,
            access,
            tls_cert,
            tls_key,
            cluster,
        } = self;
        if jobs.is_empty() && flight.is_none() && http.is_none() && predict.is_none() {
            return Err(Error::Invalid(
                "nothing to serve: give job files with a schedule, --flight HOST:PORT, --http HOST:PORT, \
                 --predict HOST:PORT, or several"
                    .into(),
            ));
        }
        if !(max_delay_ms.is_finite() && max_delay_ms >= 0.0 && reload_s.is_finite() && reload_s > 0.0) {
            return Err(Error::Invalid("--max-delay-ms must be 0 or more and --reload-s more than 0".into()));
        }
        let mut scheduled = Vec::new();
        for path in &jobs {
            let spec = sluice_ingest::JobFile::load(path)?;
            let schedule = spec
                .job
                .schedule()?
                .ok_or_else(|| Error::Invalid(format!("{}: no job.schedule to serve it on", path.display())))?;
            say.out(format!(
                "serving      {} ({}: '{}' in {})",
                spec.job.name,
                path.display(),
                schedule.expression,
                schedule.timezone
            ));
            scheduled.push(Scheduled { path: path.clone(), name: spec.job.name, schedule });
        }
        let lake = cluster.workspace.lake()?;
        let catalog = Catalog::open(&default_location(lake.root())).await?;
        let tls = tls_cert.zip(tls_key).map(|(cert, key)| Tls { cert, key });
        // One cluster session (and one set of users and sessions) for Flight and the console.
        let shared = match flight.is_some() || http.is_some() {
            true => Some((serve_access(access.as_deref())?, cluster.session().await?)),
            false => None,
        };
        let scheduler_url = shared
            .as_ref()
            .and_then(|(_, (_, embedded))| embedded.as_ref().map(|e| e.url()).or_else(|| cluster.cluster.clone()));
        let flight = match (&flight, &shared) {
            (Some(address), Some(((rules, users), (ctx, _)))) => {
                let (listener, bound) = bind(address, "Flight endpoint").await?;
                let runs = Catalog::open(&default_location(lake.root())).await?;
                let launch: Launch = Arc::new(launcher(&cluster));
                let server =
                    FlightServer::new(ctx.clone(), local_session(&lake)?, lake.clone(), rules.clone(), Arc::new(runs), Some(launch))?;
                let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
                say.out(format!("flight       {scheme}://{bound} (Flight SQL and Flight; {users})"));
                Some((listener, server))
            }
            _ => None,
        };
        let console = match (&http, &shared) {
            (Some(address), Some(((rules, users), (ctx, embedded)))) => {
                let (listener, bound) = bind(address, "console").await?;
                say.out(format!("console      http://{bound}/ (web console and /metrics; {users})"));
                let console = crate::console::Console {
                    lake: lake.clone(),
                    ctx: ctx.clone(),
                    local: local_session(&lake)?,
                    runs: Arc::new(Catalog::open(&default_location(lake.root())).await?),
                    access: rules.clone(),
                    scheduler: scheduler_url,
                    executors: embedded.as_ref().map(|e| e.executors().to_vec()).unwrap_or_default(),
                    lineage: Default::default(),
                };
                Some((listener, Arc::new(console)))
            }
            _ => None,
        };
        let endpoint = match &predict {
            Some(address) => {
                let (rules, users) = match &shared {
                    Some(((rules, users), _)) => (rules.clone(), users.clone()),
                    None => serve_access(access.as_deref())?,
                };
                let options = crate::predict::PredictOptions {
                    batch: crate::predict::batcher::BatchOptions {
                        max_batch_rows: max_batch_rows.max(1),
                        max_delay: std::time::Duration::from_secs_f64(max_delay_ms / 1000.0),
                        workers: std::thread::available_parallelism().map_or(1, usize::from),
                    },
                    max_body_bytes,
                    max_rows: max_request_rows.max(1),
                    reload: std::time::Duration::from_secs_f64(reload_s),
                };
                let registry = sluice_catalog::models::Registry::open(&lake)?;
                let traffic = traffic(&routes, &shadows)?;
                let log = match request_logs.is_empty() {
                    true => None,
                    false => {
                        if request_log_every_s < 0.1 {
                            return Err(Error::Invalid(format!(
                                "--request-log-every-s is {request_log_every_s}; give 0.1 seconds or more (each commit is a version of the asset)"
                            )));
                        }
                        if !(0.0..=1.0).contains(&request_log_sample) {
                            return Err(Error::Invalid(format!(
                                "--request-log-sample is {request_log_sample}; give a fraction from 0 to 1"
                            )));
                        }
                        let assets = request_logs.iter().map(|t| crate::predict::log::parse_target(t)).collect::<Result<_>>()?;
                        let options = crate::predict::log::LogOptions {
                            assets,
                            sample: request_log_sample,
                            every: std::time::Duration::from_secs_f64(request_log_every_s),
                            max_rows: request_log_max_rows.max(1),
                        };
                        Some(crate::predict::log::RequestLog::start(lake.clone(), local_session(&lake)?, options))
                    }
                };
                let acceptor = tls.as_ref().map(crate::predict::tls::acceptor).transpose()?;
                let endpoint = crate::predict::Endpoint::start(registry, rules, options, &models, traffic, log).await?;
                let (listener, bound) = bind(address, "prediction endpoint").await?;
                let serving = endpoint.serving();
                let scheme = if acceptor.is_some() { "https" } else { "http" };
                say.out(format!(
                    "predict      {scheme}://{bound}/v1/models/NAME/predict and /v2 (KServe); {}; {users}",
                    if serving.is_empty() { "models load on first use".to_string() } else { format!("loaded {}", serving.join(", ")) }
                ));
                for line in endpoint.traffic() {
                    say.out(format!("             {line}"));
                }
                Some((listener, endpoint, acceptor))
            }
            None => None,
        };
        let launch = launcher(&cluster);
        let launch = |job: &Scheduled, id: &str| launch(&job.path, id);
        let stop_after = stop_after.map(std::time::Duration::from_secs_f64);
        let stop = move || async move {
            match stop_after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        let schedules = async {
            if scheduled.is_empty() {
                return Ok(());
            }
            sluice_ingest::schedule::serve(scheduled, &catalog, launch, stop_after, |event| match event {
                ServeEvent::Next { job, at } => say.out(format!("next         {job} at {at}")),
                ServeEvent::Started { job, run, catch_up } => say.out(format!(
                    "started      {job} run {run}{}",
                    if catch_up { " (catching up a missed time)" } else { "" }
                )),
                ServeEvent::Skipped { job, running } => say.out(format!("skipped      {job}: run {running} is still running")),
                ServeEvent::Ended { job, run, status } => say.out(format!("ended        {job} run {run}: {status}")),
            })
            .await
        };
        let flight = async {
            match flight {
                Some((listener, server)) => crate::serve_flight(listener, tls.as_ref(), server, stop()).await,
                None => Ok(()),
            }
        };
        let console = async {
            match console {
                Some((listener, console)) => crate::console::serve(listener, console, stop()).await,
                None => Ok(()),
            }
        };
        let endpoint = async {
            match endpoint {
                Some((listener, endpoint, acceptor)) => {
                    // On SIGTERM or Ctrl-C the endpoint stops taking requests and commits its
                    // request log, then the process ends (as it would without the endpoint).
                    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let flag = signalled.clone();
                    let shutdown = async move {
                        tokio::select! {
                            () = stop() => {}
                            () = sluice_engine::cli::stopped() => flag.store(true, std::sync::atomic::Ordering::SeqCst),
                        }
                    };
                    crate::predict::serve(listener, endpoint, acceptor, shutdown).await?;
                    if signalled.load(std::sync::atomic::Ordering::SeqCst) {
                        say.out("stopped      the prediction endpoint (request log committed)");
                        std::process::exit(0);
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        };
        let (a, b, c, d) = tokio::join!(schedules, flight, console, endpoint);
        a?;
        b?;
        c?;
        d
    }
}

/// The traffic splits (`--route`) and shadows (`--shadow`) of the prediction endpoint.
fn traffic(routes: &[String], shadows: &[String]) -> Result<crate::predict::Traffic> {
    let mut traffic = crate::predict::Traffic::default();
    for text in routes {
        let route = crate::predict::route::Route::parse(text)?;
        if traffic.routes.contains_key(&route.model) {
            return Err(Error::Invalid(format!("--route '{text}': {} has a route already; give one per model", route.model)));
        }
        traffic.routes.insert(route.model.clone(), route);
    }
    for text in shadows {
        let shadow = crate::predict::route::parse_shadow(text)?;
        traffic.shadows.entry(shadow.name.clone()).or_default().push(shadow);
    }
    Ok(traffic)
}

/// The users and roles of `sluice serve` (`--access FILE`), and a line describing them.
fn serve_access(access: Option<&Path>) -> Result<(Access, String)> {
    let access = access.ok_or_else(|| {
        Error::Invalid(
            "--flight, --http and --predict need --access FILE: the users and their roles (anonymous access only where that file allows it)"
                .into(),
        )
    })?;
    let config = AccessConfig::load(access)?;
    let rules = Access::new(&config).map_err(|e| Error::Invalid(format!("access file {}: {e}", access.display())))?;
    let anonymous = config.anonymous.map_or("refused".to_string(), |r| format!("allowed as {}", r.name()));
    Ok((rules, format!("{} users, anonymous {anonymous}", config.users.len())))
}

/// An in-process session over the lake's assets (small reads and writes of the servers).
fn local_session(lake: &Lake) -> Result<SessionContext> {
    Ok(sluice_engine::session::in_process(&sluice_engine::client_functions(), Some(lake))?)
}
