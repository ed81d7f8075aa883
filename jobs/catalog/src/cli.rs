//! The commands of what the capability crates share: `sql`, `runs` and `model`; and the
//! command-line helpers the other crates' commands use.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sluice_engine::cli::{ClusterArgs, Say, WorkspaceArg};

use crate::error::{Context, Error, Result};
use crate::models::{ModelAt, ModelInfo, ModelRef, Registry, parse_inputs, webhook_host};
use crate::runs::{Catalog, default_location};

/// `sluice sql`.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The statement. Files can be queried by path: SELECT * FROM 'data/*.parquet'.
    sql: String,
    /// Register a Parquet file or directory as a table: --table name=path (repeatable).
    #[arg(long = "table", value_name = "NAME=PATH")]
    tables: Vec<String>,
    /// Rows to print at most.
    #[arg(long, default_value_t = 50)]
    max_rows: usize,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl SqlArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let (ctx, _cluster) = self.cluster.session().await?;
        for spec in &self.tables {
            let (name, path) = spec
                .split_once('=')
                .ok_or_else(|| Error::Invalid(format!("--table '{spec}': expected NAME=PATH, e.g. --table sales=data/sales/")))?;
            ctx.register_parquet(name, path, Default::default())
                .await
                .with_context(|| format!("--table {name}: cannot register Parquet at {path}"))?;
        }
        let ctx = ctx.enable_url_table();
        let (sql, models) = crate::models::resolve::resolve_sql(&self.cluster.workspace.lake()?, &self.sql).await?;
        for m in &models {
            say.note(format!("model        {} = {} version {} ({})", m.reference, m.name, m.version, m.id));
        }
        let batches = crate::sql::run(&ctx, &sql).await?;
        say.block(crate::sql::format_table(&batches, self.max_rows)?);
        Ok(())
    }
}

/// `sluice runs`.
#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// The latest runs, newest first.
    List {
        /// Runs to show at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// One run in full.
    Show {
        /// The run id.
        id: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Stop a running run (its process on this machine gets SIGTERM; nothing is committed).
    Cancel {
        /// The run id.
        id: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
}

async fn open_catalog(workspace: &WorkspaceArg) -> Result<Catalog> {
    Catalog::open(&default_location(workspace.lake()?.root())).await
}

fn pretty(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("showing as JSON: {e}")))
}

impl RunsCommand {
    pub async fn run(self, say: Say) -> Result<()> {
        match self {
            RunsCommand::List { limit, workspace } => {
                let catalog = open_catalog(&workspace).await?;
                let runs = catalog.list(limit).await?;
                if runs.is_empty() {
                    say.out(format!("no runs yet in {}", catalog.location()));
                }
                say.out(format!(
                    "{:<26} {:<6} {:<24} {:<10} {:>10} {:>9}  output / error",
                    "run", "kind", "name", "status", "rows", "seconds"
                ));
                for r in runs {
                    let rows = r.rows.map(|n| n.to_string()).unwrap_or_default();
                    let detail = r.error.clone().or(r.output.clone()).unwrap_or_default();
                    let mut detail = detail.lines().next().unwrap_or_default().to_string();
                    match r.drift.as_deref() {
                        Some("none") => detail.push_str(" (no drift)"),
                        Some(columns) => detail.push_str(&format!(" (DRIFT: {columns})")),
                        None => {}
                    }
                    say.out(format!(
                        "{:<26} {:<6} {:<24} {:<10} {:>10} {:>9.1}  {detail}",
                        r.id,
                        r.kind,
                        r.name,
                        r.status,
                        rows,
                        r.seconds()
                    ));
                }
            }
            RunsCommand::Show { id, workspace } => say.out(pretty(&open_catalog(&workspace).await?.get(&id).await?)?),
            RunsCommand::Cancel { id, workspace } => {
                let run = open_catalog(&workspace).await?.cancel(&id).await?;
                say.out(format!("cancel asked for run {} ({} {}, process {} on {})", run.id, run.kind, run.name, run.pid, run.host));
            }
        }
        Ok(())
    }
}

/// `sluice model`.
#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Register a TorchScript or ONNX file as the next version of a model.
    Register {
        /// The model's name.
        name: String,
        /// The model file: TorchScript (torch.jit.save output, .pt) or ONNX (.onnx: skl2onnx,
        /// onnxmltools, torch.onnx.export, tf2onnx output).
        file: PathBuf,
        /// The file's format; by default read from its name and content. Registering is refused
        /// when the file is not of the format given.
        #[arg(long, value_parser = ["torchscript", "onnx"])]
        format: Option<String>,
        /// The inputs, in order: "tenure float, spend float".
        #[arg(long)]
        inputs: String,
        /// Names of the values it returns per row (default: prediction; an ONNX model's own
        /// output names, e.g. label, probabilities_0, probabilities_1).
        #[arg(long, value_delimiter = ',')]
        outputs: Vec<String>,
        /// classification, regression, ...
        #[arg(long)]
        task: Option<String>,
        /// Metrics as JSON, e.g. '{"test": {"auc": 0.9}}'.
        #[arg(long)]
        metrics: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Point this alias at the new version.
        #[arg(long)]
        alias: Option<String>,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// The registered models with their latest version and aliases.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// One model's versions (NAME) or one version (NAME@VERSION, NAME@ALIAS) in full.
    Show {
        /// NAME, NAME@VERSION or NAME@ALIAS.
        model: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Point an alias at a version: `sluice model promote churn@3 production`.
    Promote {
        /// NAME@VERSION (or NAME@ALIAS: the version it points at).
        model: String,
        /// The alias (default: production).
        #[arg(default_value = "production")]
        alias: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Archive a version: it is no longer resolved or promoted.
    Archive {
        /// NAME@VERSION.
        model: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Drift settings kept with a model for its scoring runs (shown when no flag is given).
    Monitor {
        /// The model's name.
        name: String,
        /// Largest normalized Wasserstein / Jensen-Shannon distance that is not drift.
        #[arg(long)]
        drift_threshold: Option<f64>,
        /// Smallest KS / chi-squared p-value that is not drift (references of 1,000 rows or fewer).
        #[arg(long)]
        p_value: Option<f64>,
        /// A column's own threshold, COLUMN=VALUE (repeatable).
        #[arg(long = "column-threshold", value_parser = parse_column_threshold)]
        column_thresholds: Vec<(String, f64)>,
        /// A URL that gets a JSON POST when a run drifts.
        #[arg(long)]
        webhook: Option<String>,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
}

impl ModelCommand {
    pub async fn run(self, say: Say) -> Result<()> {
        let registry = |w: &WorkspaceArg| -> Result<Registry> { Registry::open(&w.lake()?) };
        match self {
            ModelCommand::Register { name, file, format, inputs, outputs, task, metrics, description, alias, workspace } => {
                let registry = registry(&workspace)?;
                let metrics = match metrics {
                    None => Default::default(),
                    Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(serde_json::Value::Object(map)) => map,
                        _ => return Err(Error::Invalid("--metrics must be a JSON object, e.g. '{\"test\": {\"auc\": 0.9}}'".into())),
                    },
                };
                let info = ModelInfo {
                    task,
                    format,
                    inputs: parse_inputs(&inputs)?,
                    outputs,
                    metrics,
                    lineage: Default::default(),
                    description,
                };
                let v = registry.register(&name, &file, info).await?;
                if let Some(alias) = &alias {
                    registry.promote(&name, v.version, alias).await?;
                }
                say.out(format!(
                    "registered   {}@{}{} ({}, {}, {} inputs -> {})",
                    v.name,
                    v.version,
                    alias.map(|a| format!(" (@{a})")).unwrap_or_default(),
                    v.id,
                    v.info.format.as_deref().unwrap_or("torchscript"),
                    v.info.inputs.len(),
                    v.info.outputs.join(", ")
                ));
            }
            ModelCommand::List { workspace } => {
                let registry = registry(&workspace)?;
                let names = registry.names().await?;
                if names.is_empty() {
                    say.out("no models yet; `sluice train --register NAME` or `sluice model register NAME FILE` adds one");
                }
                for name in names {
                    let versions = registry.versions_of(&name).await?;
                    let aliases = registry.aliases(&name).await?;
                    let latest = versions.last().map_or(0, |v| v.version);
                    let aliases = aliases.iter().map(|(a, v)| format!("@{a}={v}")).collect::<Vec<_>>().join(" ");
                    say.out(format!("{name:<20} latest {latest:<4} versions {:<4} {aliases}", versions.len()));
                }
            }
            ModelCommand::Show { model, workspace } => {
                let registry = registry(&workspace)?;
                let reference = ModelRef::parse(&model)?;
                if reference.at != ModelAt::Latest {
                    say.out(pretty(&registry.resolve(&reference).await?)?);
                    return Ok(());
                }
                let aliases = registry.aliases(&reference.name).await?;
                let versions = registry.versions_of(&reference.name).await?;
                if versions.is_empty() {
                    return Err(Error::Invalid(format!("no model named '{}' is registered", reference.name)));
                }
                for v in versions {
                    let pointing: Vec<String> =
                        aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| format!("@{a}")).collect();
                    let test = v.info.metrics.get("test").map(|m| m.to_string()).unwrap_or_default();
                    let archived = v.archived.as_ref().map(|a| format!(" archived {a}")).unwrap_or_default();
                    say.out(format!("{}@{:<4} {} {} {test}{archived}", v.name, v.version, v.registered, pointing.join(" ")));
                }
            }
            ModelCommand::Promote { model, alias, workspace } => {
                let registry = registry(&workspace)?;
                let reference = ModelRef::parse(&model)?;
                if reference.at == ModelAt::Latest {
                    return Err(Error::Invalid(format!("name the version to promote: {}@VERSION", reference.name)));
                }
                let version = registry.resolve(&reference).await?.version;
                let previous = registry.promote(&reference.name, version, &alias).await?;
                let was = previous.map(|p| format!(" (was {p})")).unwrap_or_default();
                say.out(format!("{}@{alias} -> version {version}{was}", reference.name));
            }
            ModelCommand::Archive { model, workspace } => {
                let registry = registry(&workspace)?;
                let reference = ModelRef::parse(&model)?;
                let ModelAt::Version(version) = reference.at else {
                    return Err(Error::Invalid(format!("name the version to archive: {}@VERSION", reference.name)));
                };
                registry.archive(&reference.name, version).await?;
                say.out(format!("archived     {}@{version}", reference.name));
            }
            ModelCommand::Monitor { name, drift_threshold, p_value, column_thresholds, webhook, workspace } => {
                let registry = registry(&workspace)?;
                let mut settings = registry.monitor_settings(&name).await?.unwrap_or_default();
                let changed =
                    drift_threshold.is_some() || p_value.is_some() || !column_thresholds.is_empty() || webhook.is_some();
                settings.distance = drift_threshold.or(settings.distance);
                settings.p_value = p_value.or(settings.p_value);
                settings.columns.extend(column_thresholds);
                settings.webhook = webhook.or(settings.webhook);
                if changed {
                    registry.set_monitor_settings(&name, &settings).await?;
                }
                let columns: Vec<String> = settings.columns.iter().map(|(c, t)| format!("{c}={t}")).collect();
                say.out(format!("model        {name}{}", if changed { " (saved)" } else { "" }));
                say.out(format!("distance     {}", settings.distance.map_or("default (0.1)".into(), |d| d.to_string())));
                say.out(format!("p-value      {}", settings.p_value.map_or("default (0.05)".into(), |p| p.to_string())));
                say.out(format!("columns      {}", if columns.is_empty() { "-".into() } else { columns.join(", ") }));
                let host = settings.webhook.as_deref().map(webhook_host);
                say.out(format!("webhook      {}", host.map_or("-".into(), |h| format!("set ({h})"))));
            }
        }
        Ok(())
    }
}

/// `COLUMN=VALUE` of `--column-threshold`.
pub fn parse_column_threshold(text: &str) -> std::result::Result<(String, f64), String> {
    let (column, value) =
        text.split_once('=').ok_or_else(|| format!("'{text}': expected COLUMN=VALUE, for example tenure=0.2"))?;
    let value: f64 = value.trim().parse().map_err(|_| format!("'{text}': the threshold after '=' must be a number"))?;
    Ok((column.trim().to_string(), value))
}

/// `N read = A landed + B quarantined [+ R rest]` from counts taken apart; when the parts add up
/// to more than was read (a transform that makes rows), it says so instead of an equation.
pub fn accounted(read: u64, parts: &[(u64, &str)], rest: &str) -> String {
    let total: u64 = parts.iter().map(|(n, _)| n).sum();
    let listed = parts.iter().map(|(n, what)| format!("{n} {what}")).collect::<Vec<_>>();
    match read.checked_sub(total) {
        Some(0) => format!("{read} read = {}", listed.join(" + ")),
        Some(left) => format!("{read} read = {} + {left} {rest}", listed.join(" + ")),
        None => format!("{read} read; {} ({} more than read: the transform makes rows)", listed.join(", "), total - read),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_lines_add_up_only_when_the_counts_do() {
        let parts = [(3, "landed"), (2, "quarantined")];
        assert_eq!(super::accounted(5, &parts, "dropped"), "5 read = 3 landed + 2 quarantined");
        assert_eq!(super::accounted(9, &parts, "dropped"), "9 read = 3 landed + 2 quarantined + 4 dropped");
        assert_eq!(
            super::accounted(4, &parts, "dropped"),
            "4 read; 3 landed, 2 quarantined (1 more than read: the transform makes rows)"
        );
    }
}
