//! The `train` and `score` commands; [`score`] also runs a job file's `[score]`.

use std::path::PathBuf;

use clap::Args;
use sluice_catalog::cli::parse_column_threshold;
use sluice_catalog::record::{recorded, recorded_with};
use sluice_engine::cli::{ClusterArgs, Say};

use crate::score::{MonitorOptions, ScoreSpec};
use crate::{Error, Result};

/// `sluice train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A split asset (from `sluice split`) or the prefix of NAME_train / NAME_validate / NAME_test.
    input: String,
    /// The label column.
    #[arg(long)]
    label: String,
    /// The feature columns, comma-separated, in the order the model takes them.
    #[arg(long, value_delimiter = ',', required = true)]
    features: Vec<String>,
    /// classification or regression (default: from the label).
    #[arg(long)]
    task: Option<String>,
    /// mlp or linear (logistic for classification).
    #[arg(long, default_value = "mlp")]
    model: String,
    /// Hidden layer widths of the MLP.
    #[arg(long, value_delimiter = ',', default_value = "32,16")]
    hidden: Vec<i64>,
    /// Most epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Epochs without improvement on validate before stopping.
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Rows per step.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 3e-3)]
    learning_rate: f64,
    /// Seed of weights and shuffling.
    #[arg(long, default_value_t = 42)]
    seed: i64,
    /// The TorchScript file to write (default: models/NAME.pt).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Register the model under this name.
    #[arg(long)]
    register: Option<String>,
    /// Point this alias (e.g. staging) at the registered version.
    #[arg(long, requires = "register")]
    alias: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl TrainArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let lake = self.cluster.workspace.lake()?;
        let hidden = match self.model.as_str() {
            "mlp" => self.hidden,
            "linear" | "logistic" => Vec::new(),
            other => return Err(Error::Invalid(format!("--model {other}: use mlp or linear"))),
        };
        let stem = self.register.clone().unwrap_or_else(|| self.input.replace('@', "_"));
        let epochs = self.epochs;
        let spec = crate::train::job::TrainSpec {
            input: self.input,
            label: self.label,
            features: self.features,
            task: self.task.as_deref().map(str::parse).transpose()?,
            options: crate::train::TrainOptions {
                hidden,
                max_epochs: epochs,
                patience: self.patience,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                seed: self.seed,
                ..Default::default()
            },
            output: self.output.unwrap_or_else(|| PathBuf::from(format!("models/{stem}.pt"))),
            register: self.register,
            alias: self.alias,
        };
        let (ctx, _cluster) = self.cluster.session().await?;
        let bar = sluice_catalog::progress::bar(epochs as u64, "training", "epochs");
        let work = crate::train::job::run(&ctx, &lake, &spec, |epoch, loss| {
            bar.set_position(epoch as u64);
            bar.set_message(format!("validation loss {loss:.4}"));
        });
        let r = recorded(&lake, "train", &spec.input, None, work, |r| {
            let output = r.registered.as_ref().map(|v| format!("model {}@{}", v.name, v.version));
            (Some(r.rows.iter().sum::<usize>() as u64), output.or_else(|| Some(r.output.display().to_string())), None)
        })
        .await;
        bar.finish_and_clear();
        let r = r?;
        say.out(format!("trained      {} on {} ({} / {} / {} rows)", r.task, r.inputs.join(", "), r.rows[0], r.rows[1], r.rows[2]));
        say.out(format!(
            "epochs       {} (best {}, validation loss {:.4})",
            r.trained.epochs, r.trained.best_epoch, r.trained.validation_log_loss
        ));
        say.out(format!("validate     {}", r.validate));
        say.out(format!("test         {}", r.test));
        say.out(format!("saved        {}", r.output.display()));
        if let Some(v) = &r.registered {
            let alias = spec.alias.as_deref().map(|a| format!(" (@{a})")).unwrap_or_default();
            say.out(format!("registered   {}@{}{alias}", v.name, v.version));
        }
        Ok(())
    }
}

/// `sluice score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The input asset: NAME, NAME@VERSION or NAME@TAG.
    input: String,
    /// A registered model (NAME, NAME@VERSION, NAME@ALIAS) or a TorchScript file.
    #[arg(long)]
    model: String,
    /// Key columns copied to the predictions, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    key: Vec<String>,
    /// Feature columns in the model's order (default: the registered model's inputs).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// The predictions asset (default: INPUT_predictions).
    #[arg(long)]
    output: Option<String>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8192)]
    batch_size: usize,
    /// Rows with a NULL or NaN feature: fail, quarantine (to OUTPUT_rejected) or null.
    #[arg(long, default_value = "fail")]
    on_error: String,
    /// Fail when more rows than this are bad: a count or a percentage ("2.5%").
    #[arg(long)]
    max_errors: Option<String>,
    /// Chunks the input is cut into; a resumed run skips the chunks already done.
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Resume the latest unfinished run of OUTPUT (same input version, model version, plan).
    #[arg(long)]
    resume: bool,
    /// Drift reference (NAME[@VERSION]); default: the registered model's training split.
    #[arg(long)]
    reference: Option<String>,
    /// Largest normalized Wasserstein / Jensen-Shannon distance that is not drift.
    #[arg(long, default_value_t = 0.1)]
    drift_threshold: f64,
    /// A column's own threshold, COLUMN=VALUE (repeatable).
    #[arg(long = "column-threshold", value_parser = parse_column_threshold)]
    column_thresholds: Vec<(String, f64)>,
    /// A URL that gets a JSON POST when the run drifts.
    #[arg(long, env = "SLUICE_DRIFT_WEBHOOK")]
    webhook: Option<String>,
    /// Do not measure drift.
    #[arg(long)]
    no_monitor: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl ScoreArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let thresholds = sluice_monitor::compare::Thresholds {
            distance: self.drift_threshold,
            columns: self.column_thresholds.into_iter().collect(),
            ..Default::default()
        };
        let monitor =
            MonitorOptions { enabled: !self.no_monitor, reference: self.reference, thresholds, webhook: self.webhook };
        let input = self.input;
        let spec = ScoreSpec {
            monitor,
            output: self.output.unwrap_or_else(|| format!("{}_predictions", input.split('@').next().unwrap_or(&input))),
            input: input.clone(),
            model: self.model,
            features: self.features,
            key: self.key,
            batch_size: self.batch_size,
            on_error: self.on_error.parse()?,
            max_errors: self.max_errors.as_deref().map(str::parse).transpose()?,
            chunks: self.chunks,
            resume: self.resume,
        };
        score(spec, &self.cluster, None, &input, say).await
    }
}

/// Runs a scoring job (from `sluice score` or a job file's `[score]`), recorded in the run
/// catalog as `name`, and shows its summary.
pub async fn score(spec: ScoreSpec, cluster: &ClusterArgs, run_id: Option<String>, name: &str, say: Say) -> Result<()> {
    let lake = cluster.workspace.lake()?;
    let (ctx, _cluster) = cluster.session().await?;
    let bar = sluice_catalog::progress::bar(spec.chunks as u64, "scoring", "chunks");
    let work = crate::score::run(&ctx, &lake, &spec, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    let r = recorded_with(&lake, "score", name, run_id, Some(bar.clone()), work, |r| {
        let p = r.predictions.as_ref();
        let drift = r.drift.as_ref().ok().map(|d| sluice_monitor::compare::drifted_columns(&d.columns));
        (p.map(|p| p.rows), p.map(|p| format!("{}@{}", p.asset, p.version)), drift)
    })
    .await;
    bar.finish_and_clear();
    let r = r?;
    say.out(format!("run          {}{}", r.run_id, if r.resumed { " (resumed)" } else { "" }));
    say.out(format!("model        {}", r.model));
    say.out(format!("input        {}: {} rows, {} with a NULL or NaN feature", r.input, r.rows, r.bad_rows));
    say.out(format!("chunks       {} scored now, {} done before", r.chunks.1, r.chunks.0 - r.chunks.1));
    if let Some(p) = &r.predictions {
        say.out(format!(
            "predictions  {}@{}: {} rows in {} files in {:.1} s ({:.0} rows/s)",
            p.asset,
            p.version,
            p.rows,
            p.files,
            r.seconds,
            p.rows as f64 / r.seconds.max(1e-9)
        ));
    }
    if let Some(q) = &r.rejected {
        say.out(format!("rejected     {}@{}: {} rows with the reason", q.asset, q.version, q.rows));
    }
    match &r.drift {
        Ok(d) => {
            say.out(format!("reference    {} ({} rows profiled in the scoring pass)", d.reference, d.rows));
            say.block(sluice_monitor::compare::table(&d.columns));
            say.out(format!("report       {}@{}", d.report.asset, d.report.version));
            if let Some(answer) = &d.webhook {
                say.out(format!("webhook      {answer}"));
            }
        }
        Err(why) => say.out(format!("drift        {why}")),
    }
    Ok(())
}
