//! `sluice score`: a TorchScript model over a data asset on the cluster, into a predictions asset
//! with the key columns, the prediction, the model's name and version, the run id and the
//! scoring time.
//!
//! The input version's files are cut into chunks when the run starts and the plan is saved in the
//! run's folder; each chunk is scored on the cluster into its own folder and marked done. A run
//! that failed or was killed is resumed with `--resume`: done chunks are not scored again, and
//! the predictions asset is committed once, when every chunk is done. Bad rows (a NULL or NaN
//! feature) fail the run, go to `<output>_rejected` with the reason, or get a NULL prediction;
//! past `max_errors` the run fails before scoring anything.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sluice_lake::delta::{AssetRef, AssetVersion, Lake, WriteMode};
use sluice_engine::assets::{AssetTable, WriteOptions, WriteSummary, commit_folder_with, stage_asset};

use sluice_catalog::error::{Error, Result};
use sluice_catalog::jobfile::ErrorThreshold;
use sluice_catalog::models::{ModelRef, ModelVersion, Registry};
use sluice_monitor::compare::{ColumnDrift, Thresholds};
use sluice_monitor::profile::{Column, Kind};
use sluice_engine::profile::{ColumnSpec, Profile, ProfileSpec};
use sluice_catalog::sql::ident;

/// What to do with a row whose features cannot be scored (NULL or NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail the run (before scoring), naming how many rows and one of them.
    Fail,
    /// Leave the row out of the predictions and keep it in `<output>_rejected` with the reason.
    Quarantine,
    /// Keep the row with a NULL prediction.
    Null,
}

impl std::str::FromStr for OnError {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail" | "error" => Ok(Self::Fail),
            "quarantine" | "skip" => Ok(Self::Quarantine),
            "null" => Ok(Self::Null),
            other => Err(Error::Invalid(format!("on_error '{other}': use fail, quarantine or null"))),
        }
    }
}

/// The `[score]` table of a job file (the sink names the predictions asset).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreConfig {
    /// The input asset (`name`, `name@7`, `name@tag`).
    pub input: String,
    /// A registered `name[@version|@alias]` or a TorchScript file.
    pub model: String,
    /// Key columns copied to the predictions.
    pub key: Vec<String>,
    /// Feature columns (default: the registered model's inputs).
    #[serde(default)]
    pub features: Vec<String>,
    /// Rows per forward pass (default 8192).
    pub batch_size: Option<usize>,
    /// `fail` (default), `quarantine` or `null`.
    pub on_error: Option<String>,
    /// A count or a percentage (`"1%"`).
    pub max_errors: Option<ErrorThreshold>,
    /// Chunks (default 8).
    pub chunks: Option<usize>,
    /// Drift of the run's inputs and predictions against the model's training data.
    #[serde(default)]
    pub monitor: MonitorOptions,
}

/// Drift measured in the scoring pass (the `[score.monitor]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorOptions {
    /// Measure drift (default true when a reference is known).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The reference data (`name[@version]`); default: the registered model's training split.
    pub reference: Option<String>,
    /// What each column is held to.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// A URL that gets a JSON POST when a run drifts.
    pub webhook: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self { enabled: true, reference: None, thresholds: Thresholds::default(), webhook: None }
    }
}

impl ScoreConfig {
    /// Checks what can be checked before anything runs.
    pub fn check(&self) -> Result<()> {
        AssetRef::parse(&self.input).map_err(|e| Error::Invalid(format!("input: {e}")))?;
        if self.key.is_empty() {
            return Err(Error::Invalid("key: name the key columns copied to the predictions".into()));
        }
        self.on_error.as_deref().map(str::parse::<OnError>).transpose()?;
        Ok(())
    }

    /// The run this table describes, writing `output`.
    pub fn spec(&self, output: &str, resume: bool) -> Result<ScoreSpec> {
        Ok(ScoreSpec {
            input: self.input.clone(),
            model: self.model.clone(),
            features: self.features.clone(),
            key: self.key.clone(),
            output: output.to_string(),
            batch_size: self.batch_size.unwrap_or(8192),
            on_error: self.on_error.as_deref().map(str::parse).transpose()?.unwrap_or(OnError::Fail),
            max_errors: self.max_errors,
            chunks: self.chunks.unwrap_or(8),
            resume,
            monitor: self.monitor.clone(),
        })
    }
}

/// What to score and how.
#[derive(Debug, Clone)]
pub struct ScoreSpec {
    /// The input asset (`name`, `name@7`, `name@tag`).
    pub input: String,
    /// The model: a registered `name[@version|@alias]` or a TorchScript file.
    pub model: String,
    /// Feature columns in the model's order (default: the registered inputs).
    pub features: Vec<String>,
    /// Key columns copied to the predictions.
    pub key: Vec<String>,
    /// The predictions asset.
    pub output: String,
    /// Rows per forward pass (and per batch on the executors).
    pub batch_size: usize,
    /// Bad rows.
    pub on_error: OnError,
    /// The run fails when more rows than this are bad (quarantine and null).
    pub max_errors: Option<ErrorThreshold>,
    /// Chunks the input is cut into (a resumed run skips the done ones).
    pub chunks: usize,
    /// Resume the latest unfinished run of this output.
    pub resume: bool,
    /// Drift against the training data, measured in the same pass.
    pub monitor: MonitorOptions,
}

/// A run's plan, saved in its folder so a resumed run does exactly the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    run_id: String,
    input: String,
    input_version: u64,
    model_ref: String,
    model_name: String,
    model_version: Option<u64>,
    model_id: String,
    model_path: String,
    features: Vec<String>,
    /// Names of the model's outputs, when registered (several become named columns too).
    #[serde(default)]
    outputs: Vec<String>,
    /// The SQL of each feature (a list column becomes a fixed-size list of its length).
    #[serde(default)]
    feature_sql: Vec<String>,
    key: Vec<String>,
    on_error: OnError,
    batch_size: usize,
    scored_at: String,
    chunks: Vec<Vec<String>>,
    /// The run's constants (model, version, run id, time) are partition values of the asset,
    /// kept once in its log, not written on every row (false: an asset laid out otherwise).
    #[serde(default)]
    constants_as_partitions: bool,
    /// What the run profiles for drift, when it has a reference.
    #[serde(default)]
    monitor: Option<MonitorPlan>,
}

/// Drift measurement of a run: the reference, the columns and their bins (from the reference's
/// profile, saved in the run's folder as `_reference.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MonitorPlan {
    /// The reference, as reports name it.
    reference: String,
    /// Feature columns and their bins.
    inputs: Vec<ColumnSpec>,
    /// Prediction columns and their bins.
    outputs: Vec<ColumnSpec>,
    thresholds: Thresholds,
    webhook: Option<String>,
}

/// The columns whose value is the same on every row of a run, last in the predictions.
const RUN_COLUMNS: [&str; 4] = ["model", "model_version", "run_id", "scored_at"];

/// What a scoring run did.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    /// The run.
    pub run_id: String,
    /// Whether it resumed an earlier attempt.
    pub resumed: bool,
    /// The input version scored.
    pub input: String,
    /// `name@version (id)` of the model.
    pub model: String,
    /// Chunks in all, and those scored by this attempt (the rest were done before).
    pub chunks: (usize, usize),
    /// Rows read.
    pub rows: u64,
    /// Bad rows (quarantined, NULL-predicted).
    pub bad_rows: u64,
    /// The predictions version.
    pub predictions: Option<WriteSummary>,
    /// The rejected rows' version, when rows were quarantined.
    pub rejected: Option<WriteSummary>,
    /// Seconds from start to commit.
    pub seconds: f64,
    /// Drift of the inputs and predictions, or why it was not measured.
    pub drift: Result<RunDrift, String>,
}

/// The drift a scoring run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunDrift {
    /// The reference compared with (`asset@version`, and the rows taken).
    pub reference: String,
    /// Rows profiled in the scoring pass.
    pub rows: u64,
    /// A row per feature and prediction column.
    pub columns: Vec<ColumnDrift>,
    /// The report appended to `<predictions>_drift`.
    pub report: WriteSummary,
    /// What the webhook answered, when one was called.
    pub webhook: Option<String>,
}

impl RunDrift {
    /// Whether any column drifted.
    pub fn drifted(&self) -> bool {
        self.columns.iter().any(|c| c.drifted)
    }
}

/// Scores as `spec` says; `on_chunk(done, total)` after each chunk.
pub async fn run(
    ctx: &SessionContext,
    lake: &Lake,
    spec: &ScoreSpec,
    mut on_chunk: impl FnMut(usize, usize),
) -> Result<ScoreReport> {
    let started = std::time::Instant::now();
    let store = lake.store();
    let output_url = lake.asset_url(&spec.output)?;
    let (plan, reference, resumed) = match spec.resume.then_some(()).map(|_| unfinished(lake, &spec.output)) {
        Some(found) => match found.await? {
            Some(plan) => (plan, None::<std::result::Result<Profile, String>>, true),
            None => {
                return Err(Error::Invalid(format!(
                    "--resume: {} has no unfinished scoring run; start one without --resume",
                    spec.output
                )));
            }
        },
        None => {
            let (plan, reference) = new_plan(ctx, lake, spec).await?;
            (plan, Some(reference), false)
        }
    };
    let run_url = output_url
        .join(&format!("run-{}/", plan.run_id))
        .map_err(|e| Error::Invalid(format!("scoring run folder: {e}")))?;
    let put = |name: &str, bytes: Vec<u8>| {
        let path = run_url.join(name).map_err(|e| Error::Invalid(e.to_string())).and_then(|u| Ok(lake.store_path(&u)?));
        let store = store.clone();
        async move {
            store.put(&path?, PutPayload::from(bytes)).await.map_err(|e| Error::Invalid(format!("scoring run: {e}")))?;
            Ok::<_, Error>(())
        }
    };
    if !resumed {
        put("_plan.json", serde_json::to_vec_pretty(&plan).map_err(|e| Error::Invalid(e.to_string()))?).await?;
    }
    let not_monitored = match (&plan.monitor, &reference) {
        (Some(_), _) => None,
        (None, Some(Err(why))) => Some(why.clone()),
        (None, _) => Some("this run was planned without drift measurement".to_string()),
    };
    if let (Some(_), Some(Ok(profile)), false) = (&plan.monitor, &reference, resumed) {
        put("_reference.json", serde_json::to_vec(profile).map_err(|e| Error::Invalid(e.to_string()))?).await?;
    }

    let version = lake.resolve(&AssetRef::parse(&format!("{}@{}", plan.input, plan.input_version))?).await?;
    let input = format!("{}@{}", version.name, version.version);
    let bad = bad_condition(&version, &plan.features)?;
    // Bad rows are counted up front only when a threshold needs the count before scoring; with
    // `fail`, predict itself refuses a NULL or NaN feature, and the count is made for the message.
    let counted = if plan.on_error != OnError::Fail && spec.max_errors.is_some() {
        let (rows, bad_rows) = count_bad(ctx, &input, &bad).await?;
        check_bad_rows(ctx, spec, &plan, &input, &bad, rows, bad_rows).await?;
        Some((rows, bad_rows))
    } else {
        None
    };

    // Score each chunk not done yet into its own folder.
    ctx.sql(&format!("SET datafusion.execution.batch_size = {}", plan.batch_size.max(1))).await?.collect().await?;
    let done = done_chunks(lake, &run_url).await?;
    let total = plan.chunks.len();
    let mut scored = 0;
    for (k, files) in plan.chunks.iter().enumerate() {
        if done.contains(&k) {
            on_chunk(k + 1, total);
            continue;
        }
        let folder = run_url.join(&format!("chunk-{k}/")).map_err(|e| Error::Invalid(e.to_string()))?;
        remove_folder(lake, &folder).await?; // a killed attempt's partial files
        let table = format!("__score_{}_{k}", plan.run_id.to_ascii_lowercase().replace('-', "_"));
        let subset = AssetVersion {
            files: version.files.iter().filter(|f| files.contains(&f.path)).cloned().collect(),
            ..version.clone()
        };
        let scan = AssetTable::new(&subset)?;
        let scan = match &plan.monitor {
            Some(m) => scan.with_profile(ProfileSpec {
                inputs: m.inputs.clone(),
                outputs: m.outputs.clone(),
                target: folder.join("_profile/").map_err(|e| Error::Invalid(e.to_string()))?.to_string(),
            }),
            None => scan,
        };
        ctx.register_table(table.as_str(), std::sync::Arc::new(scan))?;
        let sql = scoring_sql(&plan, &table, &bad, !plan.constants_as_partitions);
        let written = async { ctx.sql(&sql).await?.write_parquet(folder.as_str(), Default::default(), Some(write_options(ctx))).await };
        let written = written.await;
        ctx.deregister_table(table.as_str())?;
        let reported = match written {
            Ok(batches) => reported_rows(&batches),
            Err(e) => {
                if plan.on_error == OnError::Fail {
                    // A bad row stopped the chunk: say how many there are, and what to do.
                    let (rows, bad_rows) = count_bad(ctx, &input, &bad).await?;
                    check_bad_rows(ctx, spec, &plan, &input, &bad, rows, bad_rows).await?;
                }
                return Err(e.into());
            }
        };
        settle_chunk(lake, &spec.output, &folder, reported).await?;
        put(&format!("chunk-{k}/_done"), Vec::new()).await?;
        scored += 1;
        on_chunk(k + 1, total);
    }

    // Every chunk is done: one commit of all of them.
    let schema = ctx.sql(&scoring_sql(&plan, &ident(&input), &bad, true)).await?.schema().as_arrow().clone();
    let lineage = serde_json::json!({
        "run_id": plan.run_id,
        "job": "sluice score",
        "inputs": [input],
        "mode": "append",
        "models": [{
            "reference": plan.model_ref,
            "name": plan.model_name,
            "version": plan.model_version,
            "id": plan.model_id,
        }],
        "score": { "chunks": total, "resumed": resumed, "on_error": plan.on_error },
    });
    let constants = if plan.constants_as_partitions { run_constants(&plan)? } else { Vec::new() };
    let schema = std::sync::Arc::new(schema);
    let predictions = commit_folder_with(lake, &spec.output, &run_url, schema, &constants, lineage).await?;
    put("_committed", Vec::new()).await?;
    let written_rows = predictions.as_ref().map_or(0, |p| p.rows);
    // Quarantined rows are counted by writing them (one more read of the input, not two).
    let rejected = match (plan.on_error, counted) {
        (OnError::Quarantine, Some((_, 0))) => None,
        (OnError::Quarantine, _) => write_rejected(ctx, lake, &plan, &input, &bad, &spec.output).await?,
        _ => None,
    };
    let (rows, bad_rows) = match (counted, plan.on_error, &predictions) {
        (Some(counts), _, _) => counts,
        (None, OnError::Null, Some(p)) => {
            let at = format!("{}@{}", p.asset, p.version);
            let nulls = one_row(ctx, &format!("SELECT COUNT(*) FROM {} WHERE prediction IS NULL", ident(&at))).await?[0];
            (written_rows, nulls)
        }
        (None, OnError::Quarantine, _) => {
            let bad_rows = rejected.as_ref().map_or(0, |r| r.rows);
            (written_rows + bad_rows, bad_rows)
        }
        _ => (written_rows, 0),
    };
    let drift = match (&plan.monitor, not_monitored) {
        (Some(m), _) => match measure_drift(lake, &plan, m, &run_url, &input, predictions.as_ref(), &spec.output).await {
            Ok(drift) => Ok(drift),
            Err(e) => {
                tracing::warn!(error = %e, "drift not measured");
                Err(format!("not measured: {e}"))
            }
        },
        (None, why) => Err(why.unwrap_or_default()),
    };
    Ok(ScoreReport {
        run_id: plan.run_id.clone(),
        resumed,
        input,
        model: match plan.model_version {
            Some(v) => format!("{}@{v} ({})", plan.model_name, plan.model_id),
            None => format!("{} ({})", plan.model_path, plan.model_id),
        },
        chunks: (total, scored),
        rows,
        bad_rows,
        predictions,
        rejected,
        seconds: started.elapsed().as_secs_f64(),
        drift,
    })
}

/// The drift of a finished run: the executors' partial profiles merged, compared with the
/// reference's, the report appended to `<output>_drift`, and the webhook called when a column
/// drifted.
async fn measure_drift(
    lake: &Lake,
    plan: &Plan,
    m: &MonitorPlan,
    run_url: &url::Url,
    input: &str,
    predictions: Option<&WriteSummary>,
    output: &str,
) -> Result<RunDrift> {
    use sluice_monitor::{compare, profile};
    let (reference, current) = profile::run_profiles(lake, run_url).await?;
    let columns = compare::compare_profiles(&reference, &current, &m.thresholds)?;
    let model = match plan.model_version {
        Some(v) => format!("{}@{v}", plan.model_name),
        None => plan.model_name.clone(),
    };
    let written = predictions.map(|p| format!("{}@{}", p.asset, p.version)).unwrap_or_default();
    let labels = [
        ("run_id", plan.run_id.clone()),
        ("model", model.clone()),
        ("input", input.to_string()),
        ("predictions", written.clone()),
        ("reference", m.reference.clone()),
    ];
    let report = compare::write_report(lake, &format!("{output}_drift"), "sluice score", &labels, &columns).await?;
    let mut drift = RunDrift { reference: m.reference.clone(), rows: current.rows, columns, report, webhook: None };
    if let (true, Some(url)) = (drift.drifted(), &m.webhook) {
        let payload = serde_json::json!({
            "event": "drift",
            "run_id": plan.run_id,
            "model": model,
            "input": input,
            "predictions": written,
            "reference": m.reference,
            "report": format!("{}@{}", drift.report.asset, drift.report.version),
            "drifted": drift.columns.iter().filter(|c| c.drifted).map(|c| serde_json::json!({
                "column": c.column, "metric": c.metric, "value": c.value, "threshold": c.threshold,
            })).collect::<Vec<_>>(),
        });
        drift.webhook = Some(sluice_monitor::notify(url, &payload).await);
    }
    Ok(drift)
}

/// The reference of a run's drift measurement, its columns and bins, and its profile; or why
/// drift is not measured (the run goes on without it).
#[allow(clippy::too_many_arguments)]
async fn plan_monitor(
    ctx: &SessionContext,
    lake: &Lake,
    options: &MonitorOptions,
    registered: Option<&ModelVersion>,
    model_path: &str,
    features: &[String],
    feature_sql: &[String],
    outputs: &[String],
) -> std::result::Result<(MonitorPlan, Profile), String> {
    use sluice_monitor::profile;
    if !options.enabled {
        return Err("switched off".into());
    }
    // The reference: named, or the training split the registry's lineage points at.
    let (asset, rows) = match (&options.reference, registered) {
        (Some(r), _) => (r.clone(), None),
        (None, Some(v)) => sluice_monitor::profile::training_split(v).ok_or_else(|| {
            format!("{}@{} has no training data in its lineage; name a reference with --reference", v.name, v.version)
        })?,
        (None, None) => return Err("the model is a file with no training lineage; name a reference with --reference".into()),
    };
    // The model's own settings, under what the run says.
    let mut thresholds = options.thresholds.clone();
    let mut webhook = options.webhook.clone();
    if let Some(v) = registered
        && let Ok(Some(kept)) = Registry::open(lake).map_err(|e| e.to_string())?.monitor_settings(&v.name).await
    {
        let defaults = Thresholds::default();
        if thresholds.distance == defaults.distance {
            thresholds.distance = kept.distance.unwrap_or(defaults.distance);
        }
        if thresholds.p_value == defaults.p_value {
            thresholds.p_value = kept.p_value.unwrap_or(defaults.p_value);
        }
        for (column, t) in kept.columns {
            thresholds.columns.entry(column).or_insert(t);
        }
        webhook = webhook.or(kept.webhook);
    }
    let measure = async {
        let version = lake.resolve(&AssetRef::parse(&asset)?).await?;
        let pinned = format!("{}@{}", version.name, version.version);
        let plain: Vec<(&String, &String)> = features.iter().zip(feature_sql).filter(|(f, sql)| **sql == ident(f)).collect();
        let bad = bad_condition(&version, &plain.iter().map(|(f, _)| (*f).clone()).collect::<Vec<_>>())?;
        let from = sluice_monitor::profile::reference_rows(&pinned, rows.as_deref(), &bad);
        let mut columns: Vec<Column> = plain.iter().map(|(f, _)| Column::named(f)).collect();
        let call = format!("predict('{}', {})", model_path.replace('\'', "''"), feature_sql.join(", "));
        if outputs.len() > 1 {
            columns.extend(outputs.iter().enumerate().map(|(i, name)| Column {
                name: name.clone(),
                sql: format!("({call})[{}]", i + 1),
                kind: Kind::Numeric,
            }));
        } else {
            // A model with several unnamed outputs predicts a list: only its features are profiled.
            let probe = ctx.sql(&format!("SELECT {call} AS prediction FROM {from} LIMIT 0")).await?;
            if probe.schema().field(0).data_type().is_numeric() {
                columns.push(Column { name: "prediction".into(), sql: call, kind: Kind::Numeric });
            }
        }
        let profile = profile::reference_profile(ctx, lake, &version.name, &from, &columns).await?;
        let specs: Vec<ColumnSpec> = profile.columns.iter().map(|c| ColumnSpec { name: c.name.clone(), binning: c.binning.clone() }).collect();
        let label = match &rows {
            Some(split) => format!("{pinned} (split = '{split}', {} rows)", profile.rows),
            None => format!("{pinned} ({} rows)", profile.rows),
        };
        let plan = MonitorPlan {
            reference: label,
            inputs: specs[..plain.len()].to_vec(),
            outputs: specs[plain.len()..].to_vec(),
            thresholds: thresholds.clone(),
            webhook: webhook.clone(),
        };
        Ok::<_, Error>((plan, profile))
    };
    measure.await.map_err(|e| format!("reference {asset}: {e}"))
}


/// A new run's plan: the model and input version pinned, the files cut into chunks.
async fn new_plan(ctx: &SessionContext, lake: &Lake, spec: &ScoreSpec) -> Result<(Plan, std::result::Result<Profile, String>)> {
    let mut registered = None;
    let looks_like_file = spec.model.contains(['/', '\\']) || spec.model.ends_with(".pt") || spec.model.ends_with(".onnx");
    let (model_name, model_version, model_path, model_id, registered_inputs, outputs) = if looks_like_file {
        let model = sluice_udfs::model::Model::load(&spec.model)
            .map_err(|e| Error::Invalid(format!("model {}: {e}", spec.model)))?;
        let stem = std::path::Path::new(&spec.model).file_stem().map(|s| s.to_string_lossy().into_owned());
        (stem.unwrap_or_default(), None, spec.model.clone(), model.id().to_string(), Vec::new(), Vec::new())
    } else {
        let registry = Registry::open(lake)?;
        let version = registry.resolve(&ModelRef::parse(&spec.model)?).await?;
        let path = registry.scoring_path(&version)?;
        let inputs = version.info.inputs.iter().map(|i| i.name.clone()).collect();
        let outputs = version.info.outputs.clone();
        registered = Some(version.clone());
        (version.name.clone(), Some(version.version), path, version.id.clone(), inputs, outputs)
    };
    let features = if spec.features.is_empty() { registered_inputs } else { spec.features.clone() };
    if features.is_empty() {
        return Err(Error::Invalid(format!(
            "name the feature columns with --features (model {} is a file, so its inputs are not registered)",
            spec.model
        )));
    }
    let version = lake.resolve(&AssetRef::parse(&spec.input)?).await?;
    let have = || version.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    for column in features.iter().chain(&spec.key) {
        if version.schema.field_with_name(column).is_err() {
            return Err(Error::Invalid(format!(
                "{}@{} has no column '{column}'; its columns are {}",
                version.name,
                version.version,
                have()
            )));
        }
    }
    if spec.key.is_empty() {
        return Err(Error::Invalid("name the key columns copied to the predictions with --key".into()));
    }
    if version.files.is_empty() {
        return Err(Error::Invalid(format!("{}@{} has no rows to score", version.name, version.version)));
    }
    // A vector stored as a list (Delta has no fixed-size lists) is given to the model as a
    // fixed-size list of its length, which every row must have.
    let mut feature_sql = Vec::new();
    for f in &features {
        let c = ident(f);
        let is_list = matches!(
            version.schema.field_with_name(f).map(|x| x.data_type().clone()),
            Ok(DataType::List(_) | DataType::LargeList(_))
        );
        if !is_list {
            feature_sql.push(c);
            continue;
        }
        let pinned = ident(&format!("{}@{}", version.name, version.version));
        let lengths = one_row(ctx, &format!("SELECT MIN(array_length({c})), MAX(array_length({c})) FROM {pinned}")).await?;
        if lengths[0] != lengths[1] || lengths[0] == 0 {
            return Err(Error::Invalid(format!(
                "feature '{f}' holds lists of {} to {} numbers; a model takes the same number on every row",
                lengths[0], lengths[1]
            )));
        }
        feature_sql.push(format!("arrow_cast({c}, 'FixedSizeList({}, Float32)')", lengths[0]));
    }
    // Chunks of about equal size, each a set of whole files.
    let n = spec.chunks.clamp(1, version.files.len());
    let mut files: Vec<_> = version.files.iter().collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut chunks: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); n];
    for file in files {
        if let Some(chunk) = chunks.iter_mut().min_by_key(|c| c.0) {
            chunk.0 += file.size;
            chunk.1.push(file.path.clone());
        }
    }
    // A new predictions asset keeps the run's constants in its log; one laid out otherwise
    // (written before, or by another tool) gets them on every row.
    let constants_as_partitions = !lake.exists(&spec.output).await?
        || lake.resolve(&AssetRef::parse(&spec.output)?).await?.partition_columns == RUN_COLUMNS;
    if !constants_as_partitions {
        tracing::info!(asset = %spec.output, "predictions asset is not partitioned by {}: writing them on every row",
            RUN_COLUMNS.join(", "));
    }
    let monitored =
        plan_monitor(ctx, lake, &spec.monitor, registered.as_ref(), &model_path, &features, &feature_sql, &outputs).await;
    let (monitor, reference) = match monitored {
        Ok((plan, profile)) => (Some(plan), Ok(profile)),
        Err(why) => {
            if spec.monitor.enabled {
                tracing::warn!(reason = %why, "drift will not be measured");
            }
            (None, Err(why))
        }
    };
    let plan = Plan {
        run_id: sluice_engine::assets::write::run_id(),
        input: version.name.clone(),
        input_version: version.version,
        model_ref: spec.model.clone(),
        model_name,
        model_version,
        model_id,
        model_path,
        features,
        outputs,
        feature_sql,
        key: spec.key.clone(),
        on_error: spec.on_error,
        batch_size: spec.batch_size,
        scored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        chunks: chunks.into_iter().map(|c| c.1).collect(),
        constants_as_partitions,
        monitor,
    };
    Ok((plan, reference))
}

/// The latest run of `output` that saved a plan and was not committed.
async fn unfinished(lake: &Lake, output: &str) -> Result<Option<Plan>> {
    let store = lake.store();
    let dir = lake.store_path(&lake.asset_url(output)?)?;
    let listing = match store.list_with_delimiter(Some(&dir)).await {
        Ok(listing) => listing,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::Invalid(format!("listing runs of {output}: {e}"))),
    };
    let mut runs: Vec<_> = listing
        .common_prefixes
        .into_iter()
        .filter(|p| p.filename().is_some_and(|f| f.starts_with("run-")))
        .collect();
    runs.sort();
    for run in runs.into_iter().rev() {
        if store.head(&run.clone().join("_committed")).await.is_ok() {
            continue;
        }
        let Ok(plan) = store.get(&run.clone().join("_plan.json")).await else { continue };
        let bytes = plan.bytes().await.map_err(|e| Error::Invalid(format!("reading {run}/_plan.json: {e}")))?;
        let plan: Plan = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{run}/_plan.json is not a scoring plan: {e}")))?;
        return Ok(Some(plan));
    }
    Ok(None)
}

async fn done_chunks(lake: &Lake, run_url: &url::Url) -> Result<BTreeSet<usize>> {
    let store = lake.store();
    let dir = lake.store_path(run_url)?;
    let files: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap_or_default();
    Ok(files
        .iter()
        .filter(|m| m.location.filename() == Some("_done"))
        .filter_map(|m| {
            let parts: Vec<_> = m.location.parts().collect();
            let folder = parts.get(parts.len().checked_sub(2)?)?.as_ref().to_string();
            folder.strip_prefix("chunk-")?.parse().ok()
        })
        .collect())
}

/// Rows a write reported (DataFusion's `count` rows).
fn reported_rows(batches: &[arrow::record_batch::RecordBatch]) -> Option<u64> {
    let mut total = 0;
    for batch in batches {
        let counts = batch.column(0).as_any().downcast_ref::<arrow::array::UInt64Array>()?;
        total += counts.iter().flatten().sum::<u64>();
    }
    Some(total)
}

/// Leaves in a chunk's folder only the files of the write that succeeded. When an executor is
/// lost while it writes, Ballista runs the write again elsewhere and the lost attempt's files
/// stay behind; DataFusion names each attempt's files `WRITEID_N.parquet`, so the attempt whose
/// rows equal the reported count is kept and the others are deleted.
async fn settle_chunk(lake: &Lake, output: &str, folder: &url::Url, reported: Option<u64>) -> Result<()> {
    let attempt_of = |path: &str| {
        let name = path.rsplit('/').next().unwrap_or(path);
        name.split_once('_').map_or(name, |(id, _)| id).to_string()
    };
    // The usual case, one attempt, is told from the names alone (no footer is read).
    let listed: Vec<_> = lake
        .store()
        .list(Some(&lake.store_path(folder)?))
        .try_collect()
        .await
        .map_err(|e| Error::Invalid(format!("scoring {output}: listing {folder}: {e}")))?;
    let names: BTreeSet<String> = listed
        .iter()
        .filter(|m| m.location.extension() == Some("parquet"))
        .map(|m| attempt_of(m.location.as_ref()))
        .collect();
    if names.len() <= 1 {
        return Ok(());
    }
    let files = lake.collect_written(output, folder, &[]).await?;
    let mut attempts: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    for file in files {
        let entry = attempts.entry(attempt_of(&file.path)).or_default();
        entry.0 += file.num_records.unwrap_or(0);
        entry.1.push(file.path);
    }
    let keep = reported.and_then(|rows| attempts.iter().find(|(_, (n, _))| *n == rows).map(|(id, _)| id.clone()));
    let Some(keep) = keep else {
        remove_folder(lake, folder).await?;
        return Err(Error::Invalid(format!(
            "scoring {output}: the files of a chunk in {folder} come from {} attempts and none holds the {} rows the \
             cluster reported (an executor was lost while writing); they were removed: run again with --resume",
            attempts.len(),
            reported.map_or("(unknown)".to_string(), |r| r.to_string())
        )));
    };
    let store = lake.store();
    for (attempt, (rows, paths)) in attempts.into_iter().filter(|(id, _)| *id != keep) {
        tracing::warn!(chunk = %folder, attempt = %attempt, rows, files = paths.len(), "removing the files of a lost write attempt");
        for path in paths {
            let path = object_store::path::Path::from(path.as_str());
            store.delete(&path).await.map_err(|e| Error::Invalid(format!("removing {path}: {e}")))?;
        }
    }
    Ok(())
}

async fn remove_folder(lake: &Lake, url: &url::Url) -> Result<()> {
    let store = lake.store();
    let files: Vec<_> = store.list(Some(&lake.store_path(url)?)).try_collect().await.unwrap_or_default();
    for file in files {
        store.delete(&file.location).await.map_err(|e| Error::Invalid(format!("clearing {url}: {e}")))?;
    }
    Ok(())
}

/// The SQL condition of a row that cannot be scored: a NULL feature, or NaN in a float one.
pub fn bad_condition(version: &AssetVersion, features: &[String]) -> Result<String> {
    let mut parts = Vec::new();
    for f in features {
        let field = version.schema.field_with_name(f).map_err(|e| Error::Invalid(e.to_string()))?;
        let c = ident(f);
        match field.data_type() {
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                parts.push(format!("{c} IS NULL OR isnan({c})"));
            }
            t if t.is_numeric() || t == &DataType::Boolean => parts.push(format!("{c} IS NULL")),
            // A vector feature: a NULL list is bad here; NULL or NaN elements are refused by predict.
            DataType::FixedSizeList(item, _) | DataType::List(item) | DataType::LargeList(item)
                if item.data_type().is_numeric() =>
            {
                parts.push(format!("{c} IS NULL"))
            }
            t => {
                return Err(Error::Invalid(format!(
                    "feature '{f}' is {t}, not a number; cast or encode it in a query first"
                )));
            }
        }
    }
    Ok(format!("({})", parts.join(" OR ")))
}

/// The predictions of the rows of `table`: keys, prediction (and one column per named output),
/// then the run's constants when `constants` (else they are partition values, added at commit).
fn scoring_sql(plan: &Plan, table: &str, bad: &str, constants: bool) -> String {
    let keys = plan.key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let features = if plan.feature_sql.len() == plan.features.len() {
        plan.feature_sql.join(", ")
    } else {
        plan.features.iter().map(|f| ident(f)).collect::<Vec<_>>().join(", ")
    };
    let call = format!("predict('{}', {features})", plan.model_path.replace('\'', "''"));
    let (prediction, filter) = match plan.on_error {
        OnError::Fail => (call, String::new()),
        OnError::Null => (format!("CASE WHEN {bad} THEN NULL ELSE {call} END"), String::new()),
        OnError::Quarantine => (call, format!(" WHERE NOT {bad}")),
    };
    let scored = format!("SELECT {keys}, {prediction} AS prediction FROM {table}{filter}");
    // A model with several outputs: the list, and one named column per output.
    let mut columns = vec!["*".to_string()];
    if plan.outputs.len() > 1 {
        columns.extend(plan.outputs.iter().enumerate().map(|(i, name)| format!("prediction[{}] AS {}", i + 1, ident(name))));
    }
    if constants {
        let version = plan.model_version.map_or("CAST(NULL AS BIGINT)".to_string(), |v| v.to_string());
        columns.push(format!("'{}' AS model", plan.model_name.replace('\'', "''")));
        columns.push(format!("{version} AS model_version"));
        columns.push(format!("'{}' AS run_id", plan.run_id));
        columns.push(format!("CAST('{}' AS TIMESTAMP) AS scored_at", plan.scored_at));
    }
    if columns.len() == 1 {
        return scored;
    }
    format!("SELECT {} FROM ({scored})", columns.join(", "))
}

/// The run's constants as Delta partition values, in [`RUN_COLUMNS`]' order.
fn run_constants(plan: &Plan) -> Result<Vec<(String, Option<String>)>> {
    let at = chrono::DateTime::parse_from_rfc3339(&plan.scored_at)
        .map_err(|e| Error::Invalid(format!("scoring plan: scored_at '{}': {e}", plan.scored_at)))?;
    let values = [
        Some(plan.model_name.clone()),
        plan.model_version.map(|v| v.to_string()),
        Some(plan.run_id.clone()),
        Some(at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
    ];
    Ok(RUN_COLUMNS.iter().map(|c| c.to_string()).zip(values).collect())
}

/// Parquet settings of the predictions: no dictionary (keys and scores are nearly all distinct,
/// so trying one first only costs time).
fn write_options(ctx: &SessionContext) -> datafusion::config::TableParquetOptions {
    let mut options = ctx.state().default_table_options().parquet;
    options.global.dictionary_enabled = Some(false);
    options
}

async fn one_row(ctx: &SessionContext, sql: &str) -> Result<Vec<u64>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let batch = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| Error::Invalid(format!("no result: {sql}")))?;
    (0..batch.num_columns())
        .map(|c| {
            let column = arrow::compute::cast(batch.column(c), &DataType::Int64)?;
            let column = column.as_primitive::<Int64Type>();
            Ok(if column.is_null(0) { 0 } else { u64::try_from(column.value(0)).unwrap_or_default() })
        })
        .collect()
}

/// Fails the run, before scoring, when bad rows are not allowed or too many.
async fn check_bad_rows(
    ctx: &SessionContext,
    spec: &ScoreSpec,
    plan: &Plan,
    input: &str,
    bad: &str,
    rows: u64,
    bad_rows: u64,
) -> Result<()> {
    if bad_rows == 0 {
        return Ok(());
    }
    let over = spec.max_errors.is_some_and(|t| t.exceeded(bad_rows, rows));
    if plan.on_error != OnError::Fail && !over {
        return Ok(());
    }
    let keys = plan.key.iter().map(|k| format!("CAST({} AS VARCHAR)", ident(k))).collect::<Vec<_>>().join(", ");
    let example = ctx
        .sql(&format!("SELECT concat_ws(', ', {keys}) FROM {} WHERE {bad} LIMIT 1", ident(input)))
        .await?
        .collect()
        .await?;
    let example = example
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| arrow::util::display::array_value_to_string(b.column(0), 0).ok())
        .unwrap_or_default();
    let limit = match (plan.on_error, spec.max_errors) {
        (OnError::Fail, _) => "on_error = fail".to_string(),
        (_, Some(t)) => format!("max_errors = {t}"),
        _ => String::new(),
    };
    Err(Error::Invalid(format!(
        "{bad_rows} of {rows} rows of {input} have a NULL or NaN feature (e.g. key {example}), over {limit}; \
         no predictions were committed. Fill or filter them, or score with --on-error quarantine (rows kept aside with the \
         reason) or --on-error null (NULL prediction)"
    )))
}

/// Rows of `input`, and of those with a NULL or NaN feature.
async fn count_bad(ctx: &SessionContext, input: &str, bad: &str) -> Result<(u64, u64)> {
    let row = one_row(ctx, &format!("SELECT COUNT(*), COUNT(*) FILTER (WHERE {bad}) FROM {}", ident(input))).await?;
    Ok((row[0], row[1]))
}

/// The rows left out, with why, as a version of `<output>_rejected` (None when there are none).
async fn write_rejected(
    ctx: &SessionContext,
    lake: &Lake,
    plan: &Plan,
    input: &str,
    bad: &str,
    output: &str,
) -> Result<Option<WriteSummary>> {
    let columns =
        plan.key.iter().chain(&plan.features).map(|c| ident(c)).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>();
    let sql = format!(
        "SELECT {}, 'a feature is NULL or NaN' AS reason, '{}' AS run_id FROM {} WHERE {bad}",
        columns.join(", "),
        plan.run_id,
        ident(input)
    );
    let options = WriteOptions { mode: WriteMode::Append, job: "sluice score".into(), ..Default::default() };
    let staged = stage_asset(lake, &format!("{output}_rejected"), ctx.sql(&sql).await?, &options).await?;
    if staged.rows() == 0 {
        return Ok(None);
    }
    Ok(Some(staged.commit(lake).await?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::record_batch::RecordBatch;

    use super::*;

    fn parquet(path: &std::path::Path, rows: i64) {
        let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(0..rows)) as _)]).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn a_lost_write_attempts_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &[]).unwrap();
        let folder_path = dir.path().join("preds/run-x/chunk-0");
        std::fs::create_dir_all(&folder_path).unwrap();
        let folder = lake.asset_url("preds").unwrap().join("run-x/chunk-0/").unwrap();
        // One attempt alone is left as it is.
        parquet(&folder_path.join("AAAAAAAAAAAAAAAA_0.parquet"), 3);
        settle_chunk(&lake, "preds", &folder, Some(999)).await.unwrap();
        assert!(folder_path.join("AAAAAAAAAAAAAAAA_0.parquet").exists());
        // A second, complete attempt (4 rows reported): the first one's file goes.
        parquet(&folder_path.join("BBBBBBBBBBBBBBBB_0.parquet"), 2);
        parquet(&folder_path.join("BBBBBBBBBBBBBBBB_1.parquet"), 2);
        settle_chunk(&lake, "preds", &folder, Some(4)).await.unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&folder_path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["BBBBBBBBBBBBBBBB_0.parquet", "BBBBBBBBBBBBBBBB_1.parquet"]);
        // No attempt with the reported rows: nothing is kept, and the error says to resume.
        parquet(&folder_path.join("CCCCCCCCCCCCCCCC_0.parquet"), 1);
        let e = settle_chunk(&lake, "preds", &folder, Some(10)).await.unwrap_err().to_string();
        assert!(e.contains("--resume"), "{e}");
    }
}
