//! `sluice stream`: a stream job file run until Ctrl-C or SIGTERM, its status shown every few
//! seconds and, with `--metrics`, served to Prometheus.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use sluice_engine::cli::{Say, WorkspaceArg};

use crate::{Error, Result, StreamJob, StreamStatus};

/// `sluice stream`.
#[derive(Args, Debug)]
pub struct StreamArgs {
    /// The job file (TOML), e.g. examples/kafka_score_events.toml.
    job: PathBuf,
    /// Serve the status as Prometheus metrics on /metrics (and /healthz) at HOST:PORT.
    #[arg(long, env = "SLUICE_STREAM_METRICS", value_name = "HOST:PORT")]
    metrics: Option<String>,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

impl StreamArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let spec = StreamJob::load(&self.job)?;
        let lake = self.workspace.lake()?;
        say.out(format!(
            "stream       {} reading {} as group {} (Ctrl-C or SIGTERM stop after the batch in hand)",
            spec.job.name,
            spec.input.topics.join(", "),
            spec.group()
        ));
        let latest = Arc::new(Mutex::new(StreamStatus::default()));
        if let Some(address) = &self.metrics {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(Error::io(format!("binding the metrics endpoint to {address}")))?;
            let bound = listener.local_addr().map_err(Error::io("reading the metrics endpoint's address"))?;
            say.out(format!("metrics      http://{bound}/metrics"));
            let (latest, name) = (latest.clone(), spec.job.name.clone());
            let text = move || {
                let status = latest.lock().map(|s| s.clone()).unwrap_or_default();
                sluice_engine::metrics::render(&[("job", &name)], &status.metrics())
            };
            tokio::spawn(sluice_engine::metrics::serve(listener, Arc::new(text)));
        }
        let mut print = |status: &StreamStatus| {
            say.note(format!("status       {status}"));
            if let Ok(mut latest) = latest.lock() {
                *latest = status.clone();
            }
        };
        let total = crate::run(&spec, Some(&lake), sluice_engine::cli::stopped(), &mut print).await?;
        say.out(format!("stopped      {total}; {:.1} s in all, {:.1} s busy", total.seconds, total.busy_seconds));
        Ok(())
    }
}
