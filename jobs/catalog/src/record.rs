//! Work recorded in the run catalog while it runs, and runs started in a process of their own.

use std::path::{Path, PathBuf};

use sluice_engine::Lake;
use sluice_engine::cli::ClusterArgs;

use crate::error::{Context, Error, Result};
use crate::progress::ProgressBar;
use crate::runs::{Catalog, Status, default_location};

/// What a finished piece of work reports to its run: rows, output, drifted columns.
pub type Summary = (Option<u64>, Option<String>, Option<String>);

/// Runs `work`, recorded in the run catalog: running while it runs, then how it ended, with the
/// rows and output `summary` takes from its result. A catalog that cannot be opened is a warning.
pub async fn recorded<T, E>(
    lake: &Lake,
    kind: &str,
    name: &str,
    id: Option<String>,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
    summary: impl Fn(&T) -> Summary,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
{
    recorded_with(lake, kind, name, id, None, work, summary).await
}

/// [`recorded`], with the position of `bar` written to the run's record every second while it
/// runs (the console's progress of a running run).
pub async fn recorded_with<T, E>(
    lake: &Lake,
    kind: &str,
    name: &str,
    id: Option<String>,
    bar: Option<ProgressBar>,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
    summary: impl Fn(&T) -> Summary,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
{
    let catalog = match Catalog::open(&default_location(lake.root())).await {
        Ok(catalog) => Some(catalog),
        Err(e) => {
            tracing::warn!("{e}; this run is not recorded");
            None
        }
    };
    let mut run = None;
    if let Some(catalog) = &catalog {
        match catalog.start(kind, name, id, None).await {
            Ok(id) => run = Some(id),
            Err(e) => tracing::warn!("{e}; this run is not recorded"),
        }
    }
    let result = match (&catalog, &run, bar) {
        (Some(catalog), Some(id), Some(bar)) => {
            let mut work = std::pin::pin!(work);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut said = String::new();
            loop {
                tokio::select! {
                    result = &mut work => break result,
                    _ = tick.tick() => {
                        let now = crate::progress::describe(&bar);
                        if now != said && catalog.set_progress(id, &now).await.is_ok() {
                            said = now;
                        }
                    }
                }
            }
        }
        _ => work.await,
    };
    if let (Some(catalog), Some(id)) = (&catalog, &run) {
        let ended = match &result {
            Ok(t) => {
                let (rows, output, drift) = summary(t);
                match drift {
                    Some(drift) => catalog.mark_drift(id, &drift).await,
                    None => Ok(()),
                }
                .and(catalog.finish(id, Status::Succeeded, rows, output, None).await)
            }
            Err(e) => catalog.finish(id, Status::Failed, None, None, Some(e.to_string())).await,
        };
        if let Err(e) = ended {
            tracing::warn!("{e}; the end of run {id} is not recorded");
        }
    }
    result
}

/// Starts `sluice run JOB --run-id ID` in the background with the same cluster and workspace,
/// its output in a log file; returns the process and the log's path.
pub fn spawn_run(job: &Path, id: &str, cluster: &ClusterArgs) -> Result<(std::process::Child, PathBuf)> {
    let logs = std::env::temp_dir().join("sluice-runs");
    std::fs::create_dir_all(&logs).map_err(Error::io(format!("creating {}", logs.display())))?;
    let log = logs.join(format!("{id}.log"));
    let out = std::fs::File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
    let err = out.try_clone().map_err(Error::io(format!("opening {}", log.display())))?;
    let exe = std::env::current_exe().map_err(Error::io("finding the sluice binary"))?;
    let child = std::process::Command::new(exe)
        .arg("run")
        .arg(job)
        .args(["--run-id", id])
        .args(cluster.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(Error::io("starting the run"));
    Ok((child.context(format!("run of {}", job.display()))?, log))
}
