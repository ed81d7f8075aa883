//! `sluice monitor`: drift of current data against a reference, and prediction quality once
//! labels arrive; [`quality`] also runs a job file's `[quality]`.

use clap::Subcommand;
use sluice_catalog::record::recorded;
use sluice_engine::cli::{ClusterArgs, Say};

use crate::quality::QualitySpec;
use crate::{Error, Result};

/// `sluice monitor`.
#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Compare columns of CURRENT with REFERENCE (assets: NAME, NAME@VERSION, NAME@TAG): PSI,
    /// Jensen-Shannon, KS and normalized Wasserstein for numbers, Jensen-Shannon, PSI and
    /// chi-squared for categories; prints a table and which columns drifted.
    Drift {
        /// The reference, e.g. the training split: churn_train@3.
        reference: String,
        /// The data to check, e.g. this week's inputs: events.
        current: String,
        /// Numeric columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Categorical columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        categorical: Vec<String>,
        /// Drift when normalized Wasserstein (numbers) or Jensen-Shannon distance (categories) is above this.
        #[arg(long, default_value_t = 0.1)]
        threshold: f64,
        /// Append the report (a row per column) to this asset, e.g. drift_reports.
        #[arg(long, value_name = "ASSET")]
        report: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Join PREDICTIONS with labels that arrived later and measure them per time window (AUC,
    /// accuracy, log loss; RMSE, MAE) against the model's test metrics in the registry.
    Quality {
        /// The predictions asset: NAME or NAME@VERSION.
        predictions: String,
        /// The labels: an asset keyed like the predictions.
        #[arg(long)]
        labels: String,
        /// Key columns, comma-separated, the same in both.
        #[arg(long, value_delimiter = ',', required = true)]
        key: Vec<String>,
        /// The label column.
        #[arg(long)]
        label: String,
        /// The prediction column.
        #[arg(long, default_value = "prediction")]
        prediction: String,
        /// hour, day, week, month or none.
        #[arg(long, default_value = "day")]
        window: String,
        /// The predictions' time column the windows are cut on.
        #[arg(long, default_value = "scored_at")]
        time_column: String,
        /// A SQL condition on the joined rows (p. predictions, l. labels), e.g. "p.split = 'test'".
        #[arg(long = "where")]
        filter: Option<String>,
        /// The model whose test metrics are the reference (default: the one that made the predictions).
        #[arg(long)]
        model: Option<String>,
        /// Append the report (a row per window) to this asset.
        #[arg(long, value_name = "ASSET")]
        report: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

impl MonitorCommand {
    pub async fn run(self, say: Say) -> Result<()> {
        match self {
            MonitorCommand::Drift { reference, current, columns, categorical, threshold, report, cluster } => {
                if columns.is_empty() && categorical.is_empty() {
                    return Err(Error::Invalid(
                        "name the columns to compare: --columns a,b (numbers) and/or --categorical c".into(),
                    ));
                }
                let (ctx, _cluster) = cluster.session().await?;
                let thresholds = crate::compare::Thresholds { distance: threshold, ..Default::default() };
                let drift = crate::compare::compare(&ctx, &reference, &current, &columns, &categorical, &thresholds).await?;
                say.block(crate::compare::table(&drift));
                if let Some(asset) = report {
                    let lake = cluster.workspace.lake()?;
                    let mut labels = Vec::new();
                    for (label, r) in [("reference", &reference), ("current", &current)] {
                        let v = lake.resolve(&sluice_engine::AssetRef::parse(r)?).await?;
                        labels.push((label, format!("{}@{}", v.name, v.version)));
                    }
                    let written =
                        crate::compare::write_report(&lake, &asset, "sluice monitor drift", &labels, &drift).await?;
                    say.out(format!("report       {}@{}: {} rows", written.asset, written.version, written.rows));
                }
                Ok(())
            }
            MonitorCommand::Quality {
                predictions,
                labels,
                key,
                label,
                prediction,
                window,
                time_column,
                filter,
                model,
                report,
                cluster,
            } => {
                let name = predictions.clone();
                let spec =
                    QualitySpec { predictions, labels, key, label, prediction, window, time_column, filter, model };
                quality(&spec, report.as_deref(), &cluster, None, &name, say).await
            }
        }
    }
}

/// Runs a quality check (from `sluice monitor quality` or a job file's `[quality]`), recorded in
/// the run catalog as `name`; shows the table and appends it to `report` when given.
pub async fn quality(
    spec: &QualitySpec,
    report: Option<&str>,
    cluster: &ClusterArgs,
    run_id: Option<String>,
    name: &str,
    say: Say,
) -> Result<()> {
    let lake = cluster.workspace.lake()?;
    let (ctx, _cluster) = cluster.session().await?;
    let work = async {
        let measured = crate::quality::quality(&ctx, &lake, spec).await?;
        let written = match report {
            Some(asset) => Some(crate::quality::write_report(&lake, asset, &measured).await?),
            None => None,
        };
        Ok::<_, Error>((measured, written))
    };
    let (measured, written) = recorded(&lake, "quality", name, run_id, work, |(m, w)| {
        (Some(m.overall.rows), w.as_ref().map(|w| format!("{}@{}", w.asset, w.version)), None)
    })
    .await?;
    let model = measured.model.as_ref().map(|m| format!(" (model {m})")).unwrap_or_default();
    say.out(format!("predictions  {}{model}", measured.predictions));
    say.out(format!("labels       {} joined on {} ({})", measured.labels, spec.key.join(", "), measured.task));
    say.block(crate::quality::table(&measured));
    if let Some(w) = written {
        say.out(format!("report       {}@{}: {} rows", w.asset, w.version, w.rows));
    }
    Ok(())
}
