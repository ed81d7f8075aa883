//! `sluice run` (a job file: ETL, a live subscription, a `[score]` or a `[quality]` job) and
//! `sluice submit` (the same in the background, recorded in the run catalog).

use std::path::PathBuf;

use clap::Args;
use sluice_catalog::cli::accounted;
use sluice_catalog::record::{recorded, spawn_run};
use sluice_catalog::runs::{Catalog, default_location, new_id};
use sluice_engine::cli::{ClusterArgs, Say};

use crate::stream::BatchSummary;
use crate::{JobFile, JobSummary, Result, StreamEvent};

/// `sluice run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job file (TOML), e.g. examples/postgres_customers.toml.
    job: PathBuf,
    /// The run's id in the run catalog (set by `sluice submit`).
    #[arg(long, hide = true)]
    run_id: Option<String>,
    /// A `[score]` job: resume its latest unfinished run.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl RunArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        // Validated before anything starts.
        let spec = JobFile::load(&self.job)?;
        let cluster = &self.cluster;
        let lake = cluster.workspace.lake()?;
        if let Some(config) = &spec.score {
            let score = config.spec(&spec.sink.asset, self.resume)?;
            return sluice_score::cli::score(score, cluster, self.run_id, &spec.job.name, say).await;
        }
        if let Some(config) = &spec.quality {
            return sluice_monitor::cli::quality(config, Some(&spec.sink.asset), cluster, self.run_id, &spec.job.name, say)
                .await;
        }
        if crate::is_stream(&spec) {
            // A live subscription lands in micro-batches in this process, until stopped.
            let mut print = |event: &StreamEvent| match event {
                StreamEvent::Resumed { messages, spool } => {
                    say.out(format!("resumed      {messages} messages an earlier run received but did not land ({spool})"))
                }
                StreamEvent::Subscribed { topics } => {
                    say.out(format!("subscribed   {} (Ctrl-C stops after the batch in hand)", topics.join(", ")))
                }
                StreamEvent::Batch(b) => say.out(format!(
                    "batch {:<6} {} read = {} landed{} + {} quarantined + {} duplicates in {:.2} s",
                    b.number,
                    b.read,
                    b.landed,
                    b.version.map(|v| format!(" as {}@{v}", spec.sink.asset)).unwrap_or_default(),
                    b.quarantined,
                    b.duplicates,
                    b.seconds
                )),
            };
            let batches = crate::run_stream(&lake, &spec, &mut print).await?;
            let sum = |f: fn(&BatchSummary) -> u64| batches.iter().map(f).sum::<u64>();
            let parts =
                [(sum(|b| b.landed), "landed"), (sum(|b| b.quarantined), "quarantined"), (sum(|b| b.duplicates), "duplicates")];
            let read = accounted(sum(|b| b.read), &parts, "filtered by the transform");
            say.out(format!("stopped      {} batches: {read}", batches.len()));
            return Ok(());
        }
        let (ctx, _cluster) = cluster.session().await?;
        let ctx = ctx.enable_url_table();
        let work = crate::run(&ctx, &lake, &spec, &self.job);
        let s = recorded(&lake, "run", &spec.job.name, self.run_id, work, |s| {
            (Some(s.write.rows), Some(format!("{}@{}", s.write.asset, s.write.version)), None)
        })
        .await?;
        summary(&s, say);
        Ok(())
    }
}

/// What an ETL run did, line by line.
fn summary(s: &JobSummary, say: Say) {
    let w = &s.write;
    say.out(format!("job          {}", s.job));
    for (source, parts) in &s.partitions {
        if *parts > 0 {
            say.out(format!("source       {source}: {parts} partitions read on the executors"));
        }
    }
    say.out(format!("inputs       {}", w.inputs.join(", ")));
    say.out(format!(
        "landed       {}@{}: {} rows in {} files ({}) in {:.1} s ({:.0} rows/s)",
        w.asset,
        w.version,
        w.rows,
        w.files,
        sluice_datasets::assets::bytes(w.bytes),
        w.seconds,
        w.rows as f64 / w.seconds.max(1e-9)
    ));
    if let Some(m) = &w.merged {
        say.out(format!("merged       {m}"));
    }
    // A merge rewrites rows of other keys too: what landed are the new rows.
    let landed = w.merged.map_or(w.rows, |m| m.rows);
    if let Some(c) = &s.records {
        // Read (by the readers), quarantined (by the quarantine) and landed (the written files'
        // footers) are counted apart; what is left is what the transform dropped.
        let parts = [(landed, "landed"), (c.rejected, "quarantined")];
        say.out(format!("records      {}", accounted(c.read, &parts, "dropped (duplicates, transform filters)")));
    }
    if let Some(q) = &s.quarantine {
        say.out(format!("quarantined  {}@{}: {} records with location, raw text and reason", q.asset, q.version, q.rows));
    }
    if let Some(p) = &s.prepare {
        let r = &p.prepared;
        say.out(format!(
            "prepared     {} rows: {} older duplicates dropped, {} broke a rule, {} landed",
            r.rows_in,
            r.duplicates,
            r.violating(),
            w.rows
        ));
        for (rule, n) in &r.violations {
            say.out(format!("  rule       {rule}: {n} rows"));
        }
        if let Some(v) = &p.violations {
            say.out(format!("violations   {}@{}: {} rows, each with the rule it broke (_rule)", v.asset, v.version, v.rows));
        }
        if let Some(label) = r.profile.get("label") {
            say.out(format!("label        {} {}", label["column"].as_str().unwrap_or_default(), label["counts"]));
        }
        say.out(format!("profile      rows, NULLs, distinct values, min/max per column, recorded with {}@{}", w.asset, w.version));
    }
}

/// `sluice submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job file (TOML).
    job: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl SubmitArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let spec = JobFile::load(&self.job)?;
        let lake = self.cluster.workspace.lake()?;
        let catalog = Catalog::open(&default_location(lake.root())).await?;
        let id = new_id();
        let (child, log) = spawn_run(&self.job, &id, &self.cluster)?;
        catalog.start("run", &spec.job.name, Some(id.clone()), Some(child.id())).await?;
        say.out(&id);
        say.note(format!("submitted    {} as run {id} (log {}); see `sluice runs show {id}`", spec.job.name, log.display()));
        Ok(())
    }
}
