//! `sluice train`: a baseline model from a split dataset asset, trained on its train split,
//! early-stopped on validate, measured on test with the exported TorchScript module itself, and
//! registered with its metrics and lineage (dataset version, split, training parameters).

use std::path::PathBuf;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float32Type, Float64Type, Schema};
use datafusion::prelude::SessionContext;
use serde::Serialize;
use sluice_lake::delta::{AssetRef, Lake};
use tch::{CModule, Tensor};

use super::{Dataset, Task, TrainOptions, Trained, train_model};
use sluice_catalog::error::{Error, Result};
use sluice_catalog::models::{Input, ModelInfo, ModelVersion, Registry};
use sluice_datasets::split::SPLITS;
use sluice_catalog::sql::ident;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// A split asset (with a `split` column) or the prefix of `<input>_train`, `_validate`, `_test`.
    pub input: String,
    /// The label column.
    pub label: String,
    /// The feature columns, in the order the model takes them.
    pub features: Vec<String>,
    /// The task (default: classification for boolean or 0/1 labels, else regression).
    pub task: Option<Task>,
    /// Model and optimiser settings (its `task` is decided from the data when not given).
    pub options: TrainOptions,
    /// Where the TorchScript file is written.
    pub output: PathBuf,
    /// Register the model under this name.
    pub register: Option<String>,
    /// And point this alias at the new version.
    pub alias: Option<String>,
}

/// Metrics on one split.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Metrics {
    /// Classification.
    Classification {
        /// ROC AUC.
        auc: f64,
        /// Accuracy at 0.5.
        accuracy: f64,
        /// Log loss.
        log_loss: f64,
        /// Rows.
        rows: usize,
    },
    /// Regression.
    Regression {
        /// Root mean squared error.
        rmse: f64,
        /// Mean absolute error.
        mae: f64,
        /// Rows.
        rows: usize,
    },
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Classification { auc, accuracy, log_loss, rows } => {
                write!(f, "AUC {auc:.4}, accuracy {accuracy:.4}, log loss {log_loss:.4} ({rows} rows)")
            }
            Self::Regression { rmse, mae, rows } => write!(f, "RMSE {rmse:.4}, MAE {mae:.4} ({rows} rows)"),
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The dataset versions read (`name@version`).
    pub inputs: Vec<String>,
    /// The task learnt.
    pub task: Task,
    /// Rows per split.
    pub rows: [usize; 3],
    /// Epochs and validation loss.
    pub trained: Trained,
    /// Metrics on validate and test, measured with the saved module.
    pub validate: Metrics,
    /// On test.
    pub test: Metrics,
    /// The TorchScript file.
    pub output: PathBuf,
    /// The registered version, when registered.
    pub registered: Option<ModelVersion>,
}

/// Where the three splits are read from.
struct Splits {
    /// `FROM` of each split (train, validate, test).
    from: [String; 3],
    /// The versions read.
    inputs: Vec<String>,
    /// The columns.
    schema: std::sync::Arc<Schema>,
    /// The split lineage of the dataset, when it has one.
    lineage: Option<serde_json::Value>,
}

async fn splits(lake: &Lake, input: &str) -> Result<Splits> {
    let asset = AssetRef::parse(input)?;
    let split_lineage = |history: Vec<sluice_lake::delta::VersionInfo>, version: u64| {
        history.into_iter().find(|v| v.version == version).and_then(|v| v.lineage?.get("split").cloned())
    };
    if lake.exists(&asset.name).await? {
        let version = lake.resolve(&asset).await?;
        let pinned = format!("{}@{}", version.name, version.version);
        if version.schema.field_with_name("split").is_err() {
            return Err(Error::Invalid(format!(
                "{pinned} has no split column; make a split with `sluice split {}`",
                version.name
            )));
        }
        let from = SPLITS.map(|s| format!("{} WHERE split = '{s}'", ident(&pinned)));
        let lineage = split_lineage(lake.history(&version.name, None).await?, version.version);
        return Ok(Splits { from, inputs: vec![pinned], schema: version.schema.clone(), lineage });
    }
    let mut from = Vec::new();
    let mut inputs = Vec::new();
    let mut schema = None;
    let mut lineage = None;
    for part in SPLITS {
        let name = format!("{}_{part}", asset.name);
        if !lake.exists(&name).await? {
            return Err(Error::Invalid(format!(
                "'{input}' is neither a split asset (with a split column) nor the prefix of {input}_train, \
                 {input}_validate and {input}_test ({name} is missing); make them with `sluice split`"
            )));
        }
        let version = lake.resolve(&AssetRef::parse(&name)?).await?;
        let pinned = format!("{}@{}", version.name, version.version);
        from.push(ident(&pinned));
        inputs.push(pinned);
        lineage = lineage.or(split_lineage(lake.history(&version.name, None).await?, version.version));
        schema.get_or_insert(version.schema.clone());
    }
    let from: [String; 3] = [from[0].clone(), from[1].clone(), from[2].clone()];
    let schema = schema.ok_or_else(|| Error::Invalid(format!("{input}: no splits")))?;
    Ok(Splits { from, inputs, schema, lineage })
}

/// Trains as `spec` says, on the cluster's data.
pub async fn run(
    ctx: &SessionContext,
    lake: &Lake,
    spec: &TrainSpec,
    on_epoch: impl FnMut(usize, f64),
) -> Result<TrainReport> {
    if spec.features.is_empty() {
        return Err(Error::Invalid("name the feature columns with --features a,b,c".into()));
    }
    let data = splits(lake, &spec.input).await?;
    let have = || data.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    for column in spec.features.iter().chain(std::iter::once(&spec.label)) {
        let field = data.schema.field_with_name(column).map_err(|_| {
            Error::Invalid(format!("{} has no column '{column}'; its columns are {}", data.inputs.join(", "), have()))
        })?;
        if !(field.data_type().is_numeric() || field.data_type() == &DataType::Boolean) {
            return Err(Error::Invalid(format!(
                "column '{column}' is {}, not a number or boolean; encode it first (CASE ... END, or a lookup)",
                field.data_type()
            )));
        }
    }
    let label_type = data.schema.field_with_name(&spec.label).map(|f| f.data_type().clone())?;

    // NULLs in the label or a feature stop training with where they are.
    for (i, from) in data.from.iter().enumerate() {
        let checks = spec
            .features
            .iter()
            .chain(std::iter::once(&spec.label))
            .map(|c| format!("COUNT(*) FILTER (WHERE {} IS NULL)", ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let batches = ctx.sql(&format!("SELECT {checks} FROM {from}")).await?.collect().await?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { continue };
        for (c, column) in spec.features.iter().chain(std::iter::once(&spec.label)).enumerate() {
            let nulls = batch.column(c).as_primitive::<arrow::datatypes::Int64Type>().value(0);
            if nulls > 0 {
                let what = if *column == spec.label { "label" } else { "feature" };
                return Err(Error::Invalid(format!(
                    "{what} column '{column}' is NULL in {nulls} rows of the {} split; drop or fill them \
                     (e.g. COALESCE) before training",
                    SPLITS[i]
                )));
            }
        }
    }

    let mut sets = Vec::new();
    for from in &data.from {
        sets.push(load(ctx, from, &spec.features, &spec.label).await?);
    }
    let [train, validate, test]: [Dataset; 3] =
        sets.try_into().map_err(|_| Error::Invalid("three splits expected".into()))?;
    for (set, name) in [(&train, "train"), (&validate, "validate"), (&test, "test")] {
        if set.rows() == 0 {
            return Err(Error::Invalid(format!(
                "the {name} split of {} has no rows; split with ratios that give every split rows",
                data.inputs.join(", ")
            )));
        }
    }
    let binary = train.labels.iter().chain(&validate.labels).all(|v| *v == 0.0 || *v == 1.0);
    let task = match spec.task {
        Some(Task::Classification) if !binary => {
            return Err(Error::Invalid(format!(
                "label '{}' has values other than 0 and 1; classification needs 0/1 or boolean labels (or use \
                 --task regression)",
                spec.label
            )));
        }
        Some(task) => task,
        None if label_type == DataType::Boolean || (label_type.is_integer() && binary) => Task::Classification,
        None => Task::Regression,
    };
    let options = TrainOptions { task, ..spec.options.clone() };
    let trained = train_model(&train, &validate, &options, &spec.output, on_epoch)?;

    // Measured with the file that was saved, as predict will run it.
    let module = CModule::load(&spec.output)?;
    let validate_metrics = measure(&module, &validate, task)?;
    let test_metrics = measure(&module, &test, task)?;

    let registered = match &spec.register {
        None => None,
        Some(name) => {
            let registry = Registry::open(lake)?;
            let info = ModelInfo {
                task: Some(task.to_string()),
                format: Some("torchscript".into()),
                inputs: spec.features.iter().map(|f| Input { name: f.clone(), data_type: "float".into() }).collect(),
                outputs: vec![match task {
                    Task::Classification => "probability".to_string(),
                    Task::Regression => "prediction".to_string(),
                }],
                metrics: serde_json::Map::from_iter([
                    ("validate".to_string(), serde_json::to_value(&validate_metrics).unwrap_or_default()),
                    ("test".to_string(), serde_json::to_value(&test_metrics).unwrap_or_default()),
                ]),
                lineage: serde_json::Map::from_iter([
                    ("datasets".to_string(), serde_json::json!(data.inputs)),
                    ("split".to_string(), data.lineage.clone().unwrap_or(serde_json::Value::Null)),
                    ("label".to_string(), serde_json::json!(spec.label)),
                    ("training".to_string(), serde_json::json!({ "options": options, "result": trained })),
                ]),
                description: format!("sluice train on {}", data.inputs.join(", ")),
            };
            let version = registry.register(name, &spec.output, info).await?;
            if let Some(alias) = &spec.alias {
                registry.promote(name, version.version, alias).await?;
            }
            Some(version)
        }
    };
    Ok(TrainReport {
        inputs: data.inputs,
        task,
        rows: [train.rows(), validate.rows(), test.rows()],
        trained,
        validate: validate_metrics,
        test: test_metrics,
        output: spec.output.clone(),
        registered,
    })
}

/// The rows of `from` as features and labels.
async fn load(ctx: &SessionContext, from: &str, features: &[String], label: &str) -> Result<Dataset> {
    let columns = features.iter().map(|f| format!("CAST({} AS FLOAT)", ident(f))).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT {columns}, CAST({} AS DOUBLE) FROM {from}", ident(label));
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut data = Dataset { width: features.len(), ..Default::default() };
    for batch in &batches {
        let cols: Vec<_> = (0..features.len()).map(|c| batch.column(c).as_primitive::<Float32Type>()).collect();
        let labels = batch.column(features.len()).as_primitive::<Float64Type>();
        for r in 0..batch.num_rows() {
            data.features.extend(cols.iter().map(|c| c.value(r)));
            data.labels.push(labels.value(r) as f32);
        }
    }
    Ok(data)
}

fn measure(module: &CModule, data: &Dataset, task: Task) -> Result<Metrics> {
    let x = Tensor::from_slice(&data.features).view([data.rows() as i64, data.width as i64]);
    let out = tch::no_grad(|| module.forward_ts(&[x]))?;
    let scores: Vec<f64> = Vec::<f32>::try_from(out.view([-1]))?.into_iter().map(f64::from).collect();
    Ok(match task {
        Task::Classification => {
            let labels: Vec<bool> = data.labels.iter().map(|l| *l >= 0.5).collect();
            let m = sluice_catalog::metrics::binary(&scores, &labels);
            Metrics::Classification { auc: m.auc, accuracy: m.accuracy, log_loss: m.log_loss, rows: m.rows }
        }
        Task::Regression => {
            let n = data.rows().max(1) as f64;
            let errors = scores.iter().zip(&data.labels).map(|(p, y)| p - f64::from(*y));
            let (sq, abs) = errors.fold((0.0, 0.0), |(s, a), e| (s + e * e, a + e.abs()));
            Metrics::Regression { rmse: (sq / n).sqrt(), mae: abs / n, rows: data.rows() }
        }
    })
}
