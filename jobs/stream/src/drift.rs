//! Drift on the hot path: each micro-batch's events and scores go into the sketches of the
//! current window (the same sketches as a batch scoring run's); when a window holds its
//! `window_events`, it is compared with the reference (the model's training split, profiled once
//! with its predictions) and a new window starts. The latest window's verdicts are on the
//! status line and the stream's metrics.

use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use serde::Deserialize;
use sluice_lake::delta::{AssetRef, Lake};
use sluice_engine::profile::{ColumnSpec, Profile};

use sluice_catalog::error::{Error, Result};
use sluice_catalog::models::resolve::ModelUse;
use sluice_catalog::models::{ModelRef, Registry};
use sluice_monitor::compare::{ColumnDrift, Thresholds, compare_profiles};
use sluice_monitor::profile::{Column, Kind, reference_profile, reference_rows, training_split};
use sluice_catalog::sql::ident;

/// The `[monitor]` table of a stream job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMonitor {
    /// The reference (`name[@version]`); default: the training split of the model the SQL
    /// scores with, from the registry's lineage.
    pub reference: Option<String>,
    /// Event columns to watch (default: the model's inputs).
    #[serde(default)]
    pub columns: Vec<String>,
    /// The result column with the score (default `score`, else `prediction`).
    pub score: Option<String>,
    /// Events per window (default 10,000).
    #[serde(default = "default_window")]
    pub window_events: u64,
    /// What each column is held to.
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_window() -> u64 {
    10_000
}

/// The window being filled and the verdicts of the last full one.
pub struct WindowDrift {
    reference: Profile,
    inputs: Vec<ColumnSpec>,
    score: Option<(String, ColumnSpec)>,
    window_events: u64,
    thresholds: Thresholds,
    current: Profile,
    scores: Profile,
    /// Windows compared so far.
    pub windows: u64,
    /// The last full window's drift, column by column.
    pub latest: Vec<ColumnDrift>,
}

impl WindowDrift {
    /// Profiles the reference (once per reference and model version; kept with the reference)
    /// for the model `models` names.
    pub async fn open(ctx: &SessionContext, lake: &Lake, monitor: &StreamMonitor, models: &[ModelUse], results: &[String]) -> Result<Self> {
        let [model] = models else {
            return Err(Error::Invalid(format!(
                "[monitor] watches the scores of one registered model; output.sql uses {}",
                models.len()
            )));
        };
        let version = Registry::open(lake)?.resolve(&ModelRef::parse(&format!("{}@{}", model.name, model.version))?).await?;
        let features: Vec<String> = if monitor.columns.is_empty() {
            version.info.inputs.iter().map(|i| i.name.clone()).collect()
        } else {
            monitor.columns.clone()
        };
        let (asset, split) = match &monitor.reference {
            Some(r) => (r.clone(), None),
            None => training_split(&version).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}@{} has no training data in its lineage; name one with [monitor] reference = \"ASSET\"",
                    version.name, version.version
                ))
            })?,
        };
        let resolved = lake.resolve(&AssetRef::parse(&asset)?).await?;
        let pinned = format!("{}@{}", resolved.name, resolved.version);
        let input_names: Vec<String> = version.info.inputs.iter().map(|i| i.name.clone()).collect();
        let inputs: Vec<String> = input_names.iter().map(|i| ident(i)).collect();
        let bad = sluice_score::score::bad_condition(&resolved, &input_names)?;
        let from = reference_rows(&pinned, split.as_deref(), &bad);
        let mut columns: Vec<Column> = features.iter().map(|f| Column::named(f)).collect();
        let score = match &monitor.score {
            Some(score) => score.clone(),
            None => ["score", "prediction"].into_iter().find(|c| results.iter().any(|r| r == c)).unwrap_or("score").to_string(),
        };
        let call = format!("predict('{}', {})", model.path.replace('\'', "''"), inputs.join(", "));
        columns.push(Column { name: score.clone(), sql: call, kind: Kind::Numeric });
        let reference = reference_profile(ctx, lake, &resolved.name, &from, &columns).await?;
        let specs: Vec<ColumnSpec> =
            reference.columns.iter().map(|c| ColumnSpec { name: c.name.clone(), binning: c.binning.clone() }).collect();
        let (inputs, score_spec) = specs.split_at(features.len());
        tracing::info!(reference = %pinned, rows = reference.rows, window = monitor.window_events, "drift windows against");
        Ok(Self {
            current: Profile::new(inputs),
            scores: Profile::new(score_spec),
            inputs: inputs.to_vec(),
            score: score_spec.first().map(|s| (score.clone(), s.clone())),
            reference,
            window_events: monitor.window_events.max(1),
            thresholds: monitor.thresholds.clone(),
            windows: 0,
            latest: Vec::new(),
        })
    }

    /// Fails unless the events have the watched columns and the results the score.
    pub fn check(&self, events: &arrow::datatypes::Schema, results: &[String]) -> Result<()> {
        for spec in &self.inputs {
            if events.field_with_name(&spec.name).is_err() {
                return Err(Error::Invalid(format!("[monitor] column '{}' is not in input.schema", spec.name)));
            }
        }
        match &self.score {
            Some((score, _)) if !results.iter().any(|r| r == score) => Err(Error::Invalid(format!(
                "[monitor] score column '{score}' is not a column of output.sql's results ({}); set [monitor] score",
                results.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Adds a micro-batch's events and result rows; compares and starts a new window when this
    /// one is full.
    pub fn add(&mut self, events: &RecordBatch, results: &[RecordBatch]) -> Result<()> {
        self.current.add(events)?;
        if self.score.is_some() {
            for batch in results {
                self.scores.add(batch)?;
            }
        }
        if self.current.rows >= self.window_events {
            let mut window = std::mem::replace(&mut self.current, Profile::new(&self.inputs));
            let specs: Vec<ColumnSpec> = self.score.iter().map(|(_, s)| s.clone()).collect();
            let scores = std::mem::replace(&mut self.scores, Profile::new(&specs));
            window.columns.extend(scores.columns);
            self.latest = compare_profiles(&self.reference, &window, &self.thresholds)?;
            self.windows += 1;
            let drifted: Vec<&str> = self.latest.iter().filter(|c| c.drifted).map(|c| c.column.as_str()).collect();
            tracing::info!(window = self.windows, events = window.rows, drifted = %drifted.join(", "), "drift window");
        }
        Ok(())
    }
}
