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
    /// The access file: users, their roles and credentials (required with --flight and --http).
    #[arg(long, env = "SLUICE_ACCESS", value_name = "FILE")]
    access: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the Flight endpoint; needs --tls-key.
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
    pub async fn run(self, say: Say) -> Result<()> {
        let ServeArgs { jobs, stop_after, flight, http, access, tls_cert, tls_key, cluster } = self;
        if jobs.is_empty() && flight.is_none() && http.is_none() {
            return Err(Error::Invalid(
                "nothing to serve: give job files with a schedule, --flight HOST:PORT, --http HOST:PORT, or several".into(),
            ));
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
        let (a, b, c) = tokio::join!(schedules, flight, console);
        a?;
        b?;
        c
    }
}

/// The users and roles of `sluice serve` (`--access FILE`), and a line describing them.
fn serve_access(access: Option<&Path>) -> Result<(Access, String)> {
    let access = access.ok_or_else(|| {
        Error::Invalid(
            "--flight and --http need --access FILE: the users and their roles (anonymous access only where that file allows it)"
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
