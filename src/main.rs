//! `sluice`: the command line. Parses arguments, starts or connects to a cluster, and hands the
//! work to the capability crates under jobs/; nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sluice_engine::assets::WriteOptions;
use sluice_engine::{
    AssetRef, Datastore, EmbeddedCluster, EmbeddedOptions, ExecutorOptions, Lake, SchedulerOptions, SessionContext,
    WorkspaceConfig,
};
use sluice_demo::{self as demo, DemoOptions};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Data ingestion and batch scoring on Ballista, with TorchScript models as SQL functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole batch path on synthetic churn data: land, features, split, train, score.
    Demo {
        /// Accounts to generate (orders and device events scale with it).
        #[arg(long, default_value_t = 2_000_000)]
        rows: usize,
        /// Output directory (lake/, models/, predictions/ are replaced).
        #[arg(long, default_value = "sluice-demo")]
        out: PathBuf,
        /// Seed of the data and the split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Put the lake in a datastore of the workspace, e.g. az://container/demo (default: OUT/lake).
        #[arg(long, value_name = "URL")]
        lake: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run one SQL statement (with predict, split_hash, ...) and print the result as a table.
    Sql {
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
    },
    /// Run an ETL job file: sources -> SQL transform -> a new version of a data asset.
    Run {
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
    },
    /// Score Kafka events as they arrive: a stream job file ([input] topics, [output] SQL and
    /// topic, [land] asset), run until Ctrl-C or SIGTERM, which commit what was processed.
    Stream {
        /// The job file (TOML), e.g. examples/kafka_score_events.toml.
        job: PathBuf,
        /// Serve the status as Prometheus metrics on /metrics (and /healthz) at HOST:PORT.
        #[arg(long, env = "SLUICE_STREAM_METRICS", value_name = "HOST:PORT")]
        metrics: Option<String>,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Submit a job file to run in the background (on --cluster when given); prints its run id.
    Submit {
        /// The job file (TOML).
        job: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Serve the workspace: run job files on their cron schedules (`[job] schedule`; each run
    /// its own process, recorded in the run catalog, never two runs of one job at once) and, with
    /// --flight, Arrow Flight SQL and Flight for remote clients, behind the users of --access.
    Serve {
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
    },
    /// The run catalog: every run's status, rows, duration and error (list, show, cancel).
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Split an asset into train / validate / test, reproducibly (same rows in the same split on
    /// every run, cluster size and file layout) and without leakage; writes a report with it.
    Split {
        /// The input asset: NAME, NAME@VERSION or NAME@TAG.
        input: String,
        /// The output asset (with a `split` column), or the prefix of three (--layout assets).
        #[arg(long)]
        output: Option<String>,
        /// random (hash of the key), stratified (per label value), group (whole entities) or time.
        #[arg(long, default_value = "random")]
        method: String,
        /// The row key, comma-separated columns (random, stratified).
        #[arg(long, value_delimiter = ',')]
        key: Vec<String>,
        /// The label: kept in proportion (stratified) and reported per split.
        #[arg(long)]
        label: Option<String>,
        /// The entity column whose rows stay together (group).
        #[arg(long)]
        group: Option<String>,
        /// The event-time column (time).
        #[arg(long)]
        time: Option<String>,
        /// Time: where validate and test start, T1,T2 (default: the ratios' quantiles).
        #[arg(long, value_delimiter = ',', num_args = 2)]
        cuts: Option<Vec<String>>,
        /// Train, validate, test fractions (or train, test).
        #[arg(long, default_value = "0.7,0.15,0.15")]
        ratios: String,
        /// Seed of the hash.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// column (one asset with a split column) or assets (NAME_train, NAME_validate, NAME_test).
        #[arg(long, default_value = "column")]
        layout: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Train a baseline model (logistic/linear or a small MLP) on a split asset: train split,
    /// early stopping on validate, metrics on test; saved as TorchScript, optionally registered.
    Train {
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
    },
    /// Score a data asset with a model on the cluster into a predictions asset (key columns,
    /// prediction, model name and version, run id, scoring time), resumable with --resume.
    Score {
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
    },
    /// The model registry: register, list, show, promote, archive.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Data assets: versioned Delta tables in the lake (list, show, versions, tag, write, vacuum).
    Asset {
        #[command(subcommand)]
        command: AssetCommand,
    },
    /// Model monitoring: drift of current data against a reference (the training data).
    Monitor {
        #[command(subcommand)]
        command: MonitorCommand,
    },
    /// Run a Ballista scheduler with Sluice's functions.
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Host name executors and clients use to reach this scheduler.
        #[arg(long, default_value = "127.0.0.1")]
        external_host: String,
        /// Port for gRPC, REST and Flight SQL.
        #[arg(long, default_value_t = 50050)]
        port: u16,
        /// Seconds without a heartbeat before an executor is considered lost and its tasks run
        /// elsewhere; keep it a few times the executors' --heartbeat.
        #[arg(long, default_value_t = sluice_engine::cluster::DEFAULT_EXECUTOR_TIMEOUT_SECONDS)]
        executor_timeout: u64,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Run a Ballista executor with Sluice's functions, attached to a scheduler.
    Executor {
        /// Scheduler address, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: String,
        /// Executor id (default: executor-PID).
        #[arg(long)]
        id: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Host name others use to fetch this executor's results.
        #[arg(long, default_value = "127.0.0.1")]
        external_host: String,
        /// Arrow Flight port (0: any free port).
        #[arg(long, default_value_t = 50051)]
        flight_port: u16,
        /// gRPC port the scheduler pushes tasks to (0: any free port).
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once (default: all cores).
        #[arg(long)]
        vcores: Option<usize>,
        /// Directory for shuffle and spill files.
        #[arg(long)]
        work_dir: Option<String>,
        /// Seconds to wait for the scheduler at start-up.
        #[arg(long, default_value_t = 30)]
        connect_timeout: u16,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, default_value_t = sluice_engine::cluster::DEFAULT_HEARTBEAT_SECONDS)]
        heartbeat: u64,
        /// Serve Prometheus metrics on /metrics and a health check on /healthz at this port.
        #[arg(long, value_name = "PORT")]
        metrics_port: Option<u16>,
        /// Device the models of this executor run on: auto (a GPU where there is one), cpu,
        /// cuda or cuda:N (default: SLUICE_DEVICE, else auto). It is part of the default id.
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
}

#[derive(Subcommand, Debug)]
enum AssetCommand {
    /// Every asset with its latest version, rows, files, size and tags.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// One version of an asset (NAME, NAME@VERSION or NAME@TAG): location, schema, files.
    Show {
        /// The asset reference.
        asset: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// The versions of an asset, newest first, with what made each (job, inputs, rows).
    Versions {
        /// The asset's name.
        name: String,
        /// Versions to show at most.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Point a tag at a version: `sluice asset tag accounts@7 prod` (latest without @VERSION).
    Tag {
        /// NAME or NAME@VERSION.
        asset: String,
        /// The tag (a letter first, then letters, digits, '_' or '-').
        tag: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Run a query on the cluster and commit its rows as a new version of an asset.
    Write {
        /// The asset's name (created on its first write).
        name: String,
        /// The query whose rows are written.
        #[arg(long)]
        sql: String,
        /// append (default), overwrite, or merge (rows replace the asset's rows of the same --key).
        #[arg(long, default_value = "append")]
        mode: String,
        /// Merge: the key columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        key: Vec<String>,
        /// Merge: a boolean column of the query; true removes the key from the asset.
        #[arg(long)]
        delete_column: Option<String>,
        /// Partition columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
        /// Sort order, comma-separated (`col` or `col DESC`).
        #[arg(long, value_delimiter = ',')]
        sort_by: Vec<String>,
        /// Aim for files of about this size, e.g. 128MB.
        #[arg(long)]
        target_file_size: Option<String>,
        /// Parquet compression: zstd(LEVEL), snappy, lz4, uncompressed.
        #[arg(long, default_value = "zstd(3)")]
        compression: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Commit existing Parquet files (a local directory) as a new version of an asset, byte for
    /// byte: they are copied into the asset's folder, not rewritten.
    Import {
        /// The asset's name (created on its first version).
        name: String,
        /// A local directory of Parquet files with one schema.
        dir: PathBuf,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Delete files no version needs any more (replaced by overwrites, or left by failed writes).
    Vacuum {
        /// The asset's name.
        name: String,
        /// Keep files younger than this many hours (writes still running are younger).
        #[arg(long, default_value_t = 168)]
        retain_hours: u64,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
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

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Register a TorchScript file as the next version of a model.
    Register {
        /// The model's name.
        name: String,
        /// The TorchScript file (torch.jit.save / torch.jit.trace output).
        file: PathBuf,
        /// The inputs, in order: "tenure float, spend float".
        #[arg(long)]
        inputs: String,
        /// Names of the values it returns per row (default: prediction).
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

#[derive(Subcommand, Debug)]
enum MonitorCommand {
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

#[derive(Args, Debug, Clone)]
struct ClusterArgs {
    /// A running scheduler, df://HOST:PORT; without it an embedded cluster starts on loopback.
    #[arg(long, env = "SLUICE_CLUSTER")]
    cluster: Option<String>,
    /// Executors of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

#[derive(Args, Debug, Clone)]
struct WorkspaceArg {
    /// Workspace file with the datastores (default: ./sluice.toml when present).
    #[arg(long = "workspace", env = "SLUICE_WORKSPACE", value_name = "FILE")]
    path: Option<PathBuf>,
    /// Where data assets live: a datastore name, a URL in one, or a directory (default: the
    /// workspace's [assets] location, else ./lake).
    #[arg(long = "assets", env = "SLUICE_ASSETS", value_name = "LOCATION")]
    assets: Option<String>,
}

impl WorkspaceArg {
    fn datastores(&self) -> Result<Vec<Datastore>> {
        let config = WorkspaceConfig::discover(self.path.as_deref())?;
        Ok(Datastore::open_all(&config)?)
    }

    fn lake(&self) -> Result<Lake> {
        let config = WorkspaceConfig::discover(self.path.as_deref())?;
        let datastores = Datastore::open_all(&config)?;
        let location = self.assets.clone().unwrap_or(config.assets.location);
        Lake::open(&location, &datastores).with_context(|| format!("opening the assets location '{location}'"))
    }
}

/// A session on the cluster the arguments name, with the lake's assets readable by name; keeps
/// an embedded cluster alive while held.
async fn session(args: &ClusterArgs) -> Result<(SessionContext, Option<EmbeddedCluster>)> {
    let (ctx, cluster) = cluster_session(args).await?;
    sluice_engine::assets::register(&ctx, &args.workspace.lake()?)?;
    Ok((ctx, cluster))
}

async fn cluster_session(args: &ClusterArgs) -> Result<(SessionContext, Option<EmbeddedCluster>)> {
    let functions = sluice_engine::client_functions();
    let datastores = args.workspace.datastores()?;
    match &args.cluster {
        Some(url) => {
            let ctx = sluice_engine::connect(url, &functions, &datastores)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            Ok((ctx, None))
        }
        None => {
            let cluster =
                EmbeddedCluster::start(EmbeddedOptions { executors: args.executors, datastores, ..Default::default() })
                    .await
                    .context("starting the embedded cluster")?;
            let ctx = cluster.connect(&functions).await?;
            eprintln!("embedded cluster: scheduler {} with {} executors", cluster.url(), cluster.executors().len());
            Ok((ctx, Some(cluster)))
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,sluice=info,sluice_engine=info,sluice_catalog=info,sluice_monitor=info,sluice_datasets=info,sluice_score=info,sluice_stream=info,sluice_ingest=info,sluice_server=info,sluice_demo=info,sluice_udfs=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> Result<()> {
    let asked = match &cli.command {
        Command::Executor { device, .. } => device.clone(),
        _ => None,
    };
    let device =
        sluice_engine::init_torch(asked.as_deref()).map_err(anyhow::Error::msg).context("choosing the model device")?;
    tracing::info!(%device, "models run on");
    match cli.command {
        Command::Demo { rows, out, seed, lake, cluster } => {
            let (ctx, _cluster) = session(&cluster).await?;
            let summary = demo::run(&ctx, &DemoOptions { rows, out, seed, lake }).await?;
            println!("\n{}", summary.table);
            let total: f64 = summary.stages.iter().map(|s| s.elapsed.as_secs_f64()).sum();
            println!("model        {} ({})", summary.model_id, summary.model_path.display());
            println!("predictions  {} ({} rows, one per test-split account)", summary.predictions, summary.test.rows);
            println!(
                "test         AUC {:.4}  accuracy {:.4}  log loss {:.4}  churn rate {:.3}",
                summary.test.auc, summary.test.accuracy, summary.test.log_loss, summary.test.positive_rate
            );
            println!("total        {total:.1} s");
        }
        Command::Sql { sql, tables, max_rows, cluster } => {
            let (ctx, _cluster) = session(&cluster).await?;
            for spec in &tables {
                let (name, path) = spec
                    .split_once('=')
                    .with_context(|| format!("--table '{spec}': expected NAME=PATH, e.g. --table sales=data/sales/"))?;
                ctx.register_parquet(name, path, Default::default())
                    .await
                    .with_context(|| format!("--table {name}: cannot register Parquet at {path}"))?;
            }
            let ctx = ctx.enable_url_table();
            let (sql, models) = sluice_catalog::models::resolve::resolve_sql(&cluster.workspace.lake()?, &sql).await?;
            for m in &models {
                eprintln!("model        {} = {} version {} ({})", m.reference, m.name, m.version, m.id);
            }
            let batches = sluice_catalog::sql::run(&ctx, &sql).await?;
            print!("{}", sluice_catalog::sql::format_table(&batches, max_rows)?);
        }
        Command::Asset { command } => asset(command).await?,
        Command::Stream { job, metrics, workspace } => {
            let spec = sluice_stream::StreamJob::load(&job)?;
            let lake = workspace.lake()?;
            println!(
                "stream       {} reading {} as group {} (Ctrl-C or SIGTERM stop after the batch in hand)",
                spec.job.name,
                spec.input.topics.join(", "),
                spec.group()
            );
            let latest = std::sync::Arc::new(std::sync::Mutex::new(sluice_stream::StreamStatus::default()));
            if let Some(address) = metrics {
                let listener = tokio::net::TcpListener::bind(&address)
                    .await
                    .with_context(|| format!("binding the metrics endpoint to {address}"))?;
                println!("metrics      http://{}/metrics", listener.local_addr()?);
                let (latest, name) = (latest.clone(), spec.job.name.clone());
                let text = move || {
                    let status = latest.lock().map(|s| s.clone()).unwrap_or_default();
                    sluice_engine::metrics::render(&[("job", &name)], &status.metrics())
                };
                tokio::spawn(sluice_engine::metrics::serve(listener, std::sync::Arc::new(text)));
            }
            let mut print = |status: &sluice_stream::StreamStatus| {
                eprintln!("status       {status}");
                if let Ok(mut latest) = latest.lock() {
                    *latest = status.clone();
                }
            };
            let total = sluice_stream::run(&spec, Some(&lake), stopped(), &mut print).await?;
            println!("stopped      {total}; {:.1} s in all, {:.1} s busy", total.seconds, total.busy_seconds);
        }
        Command::Run { job, run_id, resume, cluster } => {
            // Validated before anything starts.
            let spec = sluice_ingest::JobFile::load(&job)?;
            let lake = cluster.workspace.lake()?;
            if let Some(config) = &spec.score {
                return score(config.spec(&spec.sink.asset, resume)?, &cluster, run_id, &spec.job.name).await;
            }
            if let Some(config) = &spec.quality {
                return quality(config, Some(&spec.sink.asset), &cluster, run_id, &spec.job.name).await;
            }
            if sluice_ingest::is_stream(&spec) {
                // A live subscription lands in micro-batches in this process, until stopped.
                let mut print = |event: &sluice_ingest::StreamEvent| match event {
                    sluice_ingest::StreamEvent::Resumed { messages, spool } => {
                        println!("resumed      {messages} messages an earlier run received but did not land ({spool})")
                    }
                    sluice_ingest::StreamEvent::Subscribed { topics } => {
                        println!("subscribed   {} (Ctrl-C stops after the batch in hand)", topics.join(", "))
                    }
                    sluice_ingest::StreamEvent::Batch(b) => println!(
                        "batch {:<6} {} read = {} landed{} + {} quarantined + {} duplicates in {:.2} s",
                        b.number,
                        b.read,
                        b.landed,
                        b.version.map(|v| format!(" as {}@{v}", spec.sink.asset)).unwrap_or_default(),
                        b.quarantined,
                        b.duplicates,
                        b.seconds
                    ),
                };
                let batches = sluice_ingest::run_stream(&lake, &spec, &mut print).await?;
                let sum = |f: fn(&sluice_ingest::stream::BatchSummary) -> u64| batches.iter().map(f).sum::<u64>();
                let parts = [(sum(|b| b.landed), "landed"), (sum(|b| b.quarantined), "quarantined"), (sum(|b| b.duplicates), "duplicates")];
                println!("stopped      {} batches: {}", batches.len(), accounted(sum(|b| b.read), &parts, "filtered by the transform"));
                return Ok(());
            }
            let (ctx, _cluster) = session(&cluster).await?;
            let ctx = ctx.enable_url_table();
            let work = sluice_ingest::run(&ctx, &lake, &spec, &job);
            let s = recorded(&lake, "run", &spec.job.name, run_id, work, |s| {
                (Some(s.write.rows), Some(format!("{}@{}", s.write.asset, s.write.version)), None)
            })
            .await?;
            let w = &s.write;
            println!("job          {}", s.job);
            for (source, parts) in &s.partitions {
                if *parts > 0 {
                    println!("source       {source}: {parts} partitions read on the executors");
                }
            }
            println!("inputs       {}", w.inputs.join(", "));
            println!(
                "landed       {}@{}: {} rows in {} files ({}) in {:.1} s ({:.0} rows/s)",
                w.asset,
                w.version,
                w.rows,
                w.files,
                sluice_datasets::assets::bytes(w.bytes),
                w.seconds,
                w.rows as f64 / w.seconds.max(1e-9)
            );
            if let Some(m) = &w.merged {
                println!("merged       {m}");
            }
            // A merge rewrites rows of other keys too: what landed are the new rows.
            let landed = w.merged.map_or(w.rows, |m| m.rows);
            if let Some(c) = &s.records {
                // Read (by the readers), quarantined (by the quarantine) and landed (the written
                // files' footers) are counted apart; what is left is what the transform dropped.
                println!("records      {}", accounted(c.read, &[(landed, "landed"), (c.rejected, "quarantined")], "dropped (duplicates, transform filters)"));
            }
            if let Some(q) = &s.quarantine {
                println!("quarantined  {}@{}: {} records with location, raw text and reason", q.asset, q.version, q.rows);
            }
            if let Some(p) = &s.prepare {
                let r = &p.prepared;
                println!(
                    "prepared     {} rows: {} older duplicates dropped, {} broke a rule, {} landed",
                    r.rows_in,
                    r.duplicates,
                    r.violating(),
                    w.rows
                );
                for (rule, n) in &r.violations {
                    println!("  rule       {rule}: {n} rows");
                }
                if let Some(v) = &p.violations {
                    println!("violations   {}@{}: {} rows, each with the rule it broke (_rule)", v.asset, v.version, v.rows);
                }
                if let Some(label) = r.profile.get("label") {
                    println!("label        {} {}", label["column"].as_str().unwrap_or_default(), label["counts"]);
                }
                println!("profile      rows, NULLs, distinct values, min/max per column, recorded with {}@{}", w.asset, w.version);
            }
        }
        Command::Split {
            input,
            output,
            method,
            key,
            label,
            group,
            time,
            cuts,
            ratios,
            seed,
            layout,
            cluster,
        } => {
            let lake = cluster.workspace.lake()?;
            let name = AssetRef::parse(&input)?.name;
            let spec = sluice_datasets::split::SplitSpec {
                output: output.unwrap_or_else(|| format!("{name}_split")),
                input,
                method: method.parse()?,
                key,
                label,
                group,
                time,
                cuts: cuts.map(|c| [c[0].clone(), c[1].clone()]),
                ratios: sluice_datasets::split::parse_ratios(&ratios)?,
                seed,
                layout: layout.parse()?,
            };
            let (ctx, _cluster) = session(&cluster).await?;
            let work = sluice_datasets::split::run(&ctx, &lake, &spec);
            let r = recorded(&lake, "split", &spec.input, None, work, |r| {
                let outputs = r.outputs.iter().map(|w| format!("{}@{}", w.asset, w.version)).collect::<Vec<_>>();
                (Some(r.rows.iter().sum()), Some(outputs.join(", ")), None)
            })
            .await?;
            let [train, validate, test] = r.ratios;
            println!("split        {} ({} by {}, seed {}, {train}/{validate}/{test})", r.input, r.method, r.overlap_by, r.seed);
            if let Some([t1, t2]) = &r.cuts {
                println!("cuts         validate from {t1}, test from {t2}");
            }
            for (i, part) in sluice_datasets::split::SPLITS.iter().enumerate() {
                let labels = r
                    .labels
                    .iter()
                    .map(|(value, n)| format!("{value}: {}", n[i]))
                    .collect::<Vec<_>>()
                    .join(", ");
                let share = r.rows[i] as f64 * 100.0 / r.rows.iter().sum::<u64>().max(1) as f64;
                let labels = if labels.is_empty() { String::new() } else { format!("  ({labels})") };
                println!("{part:<12} {} rows, {share:.1}%{labels}", r.rows[i]);
            }
            let meaning = match r.cuts {
                Some(_) => "rows of an earlier split at or after the start of a later one".to_string(),
                None => format!("{} in more than one split", r.overlap_by),
            };
            println!("overlap      {} ({meaning}; must be 0)", r.overlap);
            for w in &r.outputs {
                println!("written      {}@{}: {} rows in {} files", w.asset, w.version, w.rows, w.files);
            }
            if r.overlap > 0 {
                anyhow::bail!("the split overlaps: {} {} are in more than one split", r.overlap, r.overlap_by);
            }
        }
        Command::Train {
            input,
            label,
            features,
            task,
            model,
            hidden,
            epochs,
            patience,
            batch_size,
            learning_rate,
            seed,
            output,
            register,
            alias,
            cluster,
        } => {
            let lake = cluster.workspace.lake()?;
            let hidden = match model.as_str() {
                "mlp" => hidden,
                "linear" | "logistic" => Vec::new(),
                other => anyhow::bail!("--model {other}: use mlp or linear"),
            };
            let stem = register.clone().unwrap_or_else(|| input.replace('@', "_"));
            let spec = sluice_score::train::job::TrainSpec {
                input,
                label,
                features,
                task: task.as_deref().map(str::parse).transpose()?,
                options: sluice_score::train::TrainOptions {
                    hidden,
                    max_epochs: epochs,
                    patience,
                    batch_size,
                    learning_rate,
                    seed,
                    ..Default::default()
                },
                output: output.unwrap_or_else(|| PathBuf::from(format!("models/{stem}.pt"))),
                register,
                alias,
            };
            let (ctx, _cluster) = session(&cluster).await?;
            let bar = sluice_catalog::progress::bar(epochs as u64, "training", "epochs");
            let work = sluice_score::train::job::run(&ctx, &lake, &spec, |epoch, loss| {
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
            println!("trained      {} on {} ({} / {} / {} rows)", r.task, r.inputs.join(", "), r.rows[0], r.rows[1], r.rows[2]);
            println!(
                "epochs       {} (best {}, validation loss {:.4})",
                r.trained.epochs, r.trained.best_epoch, r.trained.validation_log_loss
            );
            println!("validate     {}", r.validate);
            println!("test         {}", r.test);
            println!("saved        {}", r.output.display());
            if let Some(v) = &r.registered {
                let alias = spec.alias.as_deref().map(|a| format!(" (@{a})")).unwrap_or_default();
                println!("registered   {}@{}{alias}", v.name, v.version);
            }
        }
        Command::Score {
            input,
            model,
            key,
            features,
            output,
            batch_size,
            on_error,
            max_errors,
            chunks,
            resume,
            reference,
            drift_threshold,
            column_thresholds,
            webhook,
            no_monitor,
            cluster,
        } => {
            let thresholds = sluice_monitor::compare::Thresholds {
                distance: drift_threshold,
                columns: column_thresholds.into_iter().collect(),
                ..Default::default()
            };
            let monitor = sluice_score::score::MonitorOptions { enabled: !no_monitor, reference, thresholds, webhook };
            let spec = sluice_score::score::ScoreSpec {
                monitor,
                output: output.unwrap_or_else(|| format!("{}_predictions", input.split('@').next().unwrap_or(&input))),
                input,
                model,
                features,
                key,
                batch_size,
                on_error: on_error.parse()?,
                max_errors: max_errors.as_deref().map(str::parse).transpose()?,
                chunks,
                resume,
            };
            let name = spec.input.clone();
            score(spec, &cluster, None, &name).await?;
        }
        Command::Model { command } => model(command).await?,
        Command::Monitor { command: MonitorCommand::Drift { reference, current, columns, categorical, threshold, report: save, cluster } } => {
            if columns.is_empty() && categorical.is_empty() {
                anyhow::bail!("name the columns to compare: --columns a,b (numbers) and/or --categorical c");
            }
            let (ctx, _cluster) = session(&cluster).await?;
            let thresholds = sluice_monitor::compare::Thresholds { distance: threshold, ..Default::default() };
            let report = sluice_monitor::compare::compare(&ctx, &reference, &current, &columns, &categorical, &thresholds).await?;
            print!("{}", sluice_monitor::compare::table(&report));
            if let Some(asset) = save {
                let lake = cluster.workspace.lake()?;
                let pinned = |r: &str| {
                    let lake = lake.clone();
                    let r = r.to_string();
                    async move {
                        let v = lake.resolve(&sluice_engine::AssetRef::parse(&r)?).await?;
                        anyhow::Ok(format!("{}@{}", v.name, v.version))
                    }
                };
                let labels = [("reference", pinned(&reference).await?), ("current", pinned(&current).await?)];
                let written =
                    sluice_monitor::compare::write_report(&lake, &asset, "sluice monitor drift", &labels, &report).await?;
                println!("report       {}@{}: {} rows", written.asset, written.version, written.rows);
            }
        }
        Command::Monitor {
            command:
                MonitorCommand::Quality { predictions, labels, key, label, prediction, window, time_column, filter, model, report, cluster },
        } => {
            let spec = sluice_monitor::quality::QualitySpec {
                predictions: predictions.clone(),
                labels,
                key,
                label,
                prediction,
                window,
                time_column,
                filter,
                model,
            };
            quality(&spec, report.as_deref(), &cluster, None, &predictions).await?;
        }
        Command::Runs { command } => runs(command).await?,
        Command::Submit { job, cluster } => {
            let spec = sluice_ingest::JobFile::load(&job)?;
            let lake = cluster.workspace.lake()?;
            let catalog = sluice_catalog::runs::Catalog::open(&sluice_catalog::runs::default_location(lake.root())).await?;
            let id = sluice_catalog::runs::new_id();
            let (child, log) = spawn_run(&job, &id, &cluster)?;
            catalog.start("run", &spec.job.name, Some(id.clone()), Some(child.id())).await?;
            println!("{id}");
            eprintln!("submitted    {} as run {id} (log {}); see `sluice runs show {id}`", spec.job.name, log.display());
        }
        Command::Serve { jobs, stop_after, flight, http, access, tls_cert, tls_key, cluster } => {
            if jobs.is_empty() && flight.is_none() && http.is_none() {
                anyhow::bail!("nothing to serve: give job files with a schedule, --flight HOST:PORT, --http HOST:PORT, or several");
            }
            let mut scheduled = Vec::new();
            for path in &jobs {
                let spec = sluice_ingest::JobFile::load(path)?;
                let schedule = spec
                    .job
                    .schedule()?
                    .with_context(|| format!("{}: no job.schedule to serve it on", path.display()))?;
                println!("serving      {} ({}: '{}' in {})", spec.job.name, path.display(), schedule.expression, schedule.timezone);
                scheduled.push(sluice_ingest::schedule::Scheduled { path: path.clone(), name: spec.job.name, schedule });
            }
            let lake = cluster.workspace.lake()?;
            let catalog = sluice_catalog::runs::Catalog::open(&sluice_catalog::runs::default_location(lake.root())).await?;
            let tls = tls_cert.zip(tls_key).map(|(cert, key)| sluice_server::Tls { cert, key });
            // One cluster session (and one set of users and sessions) for Flight and the console.
            let shared = match flight.is_some() || http.is_some() {
                true => Some((serve_access(access.as_deref())?, session(&cluster).await?)),
                false => None,
            };
            let scheduler_url = shared.as_ref().and_then(|(_, (_, embedded))| {
                embedded.as_ref().map(|e| e.url()).or_else(|| cluster.cluster.clone())
            });
            let flight = match (&flight, &shared) {
                (Some(address), Some((access, (ctx, _)))) => {
                    Some(flight_server(address, access, tls.is_some(), &cluster, &lake, ctx.clone()).await?)
                }
                _ => None,
            };
            let console = match (&http, &shared) {
                (Some(address), Some(((rules, users), (ctx, embedded)))) => {
                    let listener = tokio::net::TcpListener::bind(address.as_str())
                        .await
                        .with_context(|| format!("binding the console to {address}"))?;
                    println!("console      http://{}/ (web console and /metrics; {users})", listener.local_addr()?);
                    let console = sluice_server::console::Console {
                        lake: lake.clone(),
                        ctx: ctx.clone(),
                        local: local_session(&lake)?,
                        runs: std::sync::Arc::new(sluice_catalog::runs::Catalog::open(&sluice_catalog::runs::default_location(lake.root())).await?),
                        access: rules.clone(),
                        scheduler: scheduler_url,
                        executors: embedded.as_ref().map(|e| e.executors().to_vec()).unwrap_or_default(),
                        lineage: Default::default(),
                    };
                    Some((listener, std::sync::Arc::new(console)))
                }
                _ => None,
            };
            let launch = |job: &sluice_ingest::schedule::Scheduled, id: &str| {
                spawn_run(&job.path, id, &cluster).map(|(child, _)| child).map_err(|e| sluice_catalog::Error::Invalid(format!("{e:#}")))
            };
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
                sluice_ingest::schedule::serve(scheduled, &catalog, launch, stop_after, |event| {
                    use sluice_ingest::schedule::ServeEvent;
                    match event {
                        ServeEvent::Next { job, at } => println!("next         {job} at {at}"),
                        ServeEvent::Started { job, run, catch_up } => {
                            println!("started      {job} run {run}{}", if catch_up { " (catching up a missed time)" } else { "" })
                        }
                        ServeEvent::Skipped { job, running } => println!("skipped      {job}: run {running} is still running"),
                        ServeEvent::Ended { job, run, status } => println!("ended        {job} run {run}: {status}"),
                    }
                })
                .await
            };
            let flight = async {
                match flight {
                    Some((listener, server)) => sluice_server::serve_flight(listener, tls.as_ref(), server, stop()).await,
                    None => Ok(()),
                }
            };
            let console = async {
                match console {
                    Some((listener, console)) => sluice_server::console::serve(listener, console, stop()).await,
                    None => Ok(()),
                }
            };
            let (a, b, c) = tokio::join!(schedules, flight, console);
            a?;
            b?;
            c?;
        }
        Command::Scheduler { bind, external_host, port, executor_timeout, workspace } => {
            sluice_engine::cluster::run_scheduler(SchedulerOptions {
                bind_host: bind,
                external_host,
                port,
                executor_timeout_seconds: executor_timeout,
                datastores: workspace.datastores()?,
            })
            .await?;
        }
        Command::Executor {
            scheduler,
            id,
            bind,
            external_host,
            flight_port,
            grpc_port,
            vcores,
            work_dir,
            connect_timeout,
            heartbeat,
            metrics_port,
            device: _,
            workspace,
        } => {
            let (host, port) = scheduler
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .with_context(|| format!("--scheduler '{scheduler}': expected HOST:PORT, e.g. 127.0.0.1:50050"))?;
            let defaults = ExecutorOptions::default();
            sluice_engine::cluster::run_executor(ExecutorOptions {
                // The id says where models run, e.g. executor-123-cuda0 (listed by the scheduler).
                id: id.unwrap_or_else(|| match device.as_str() {
                    "cpu" => defaults.id,
                    gpu => format!("{}-{}", defaults.id, gpu.replace(':', "")),
                }),
                bind_host: bind,
                external_host,
                flight_port,
                grpc_port,
                scheduler_host: host,
                scheduler_port: port,
                vcores: vcores.unwrap_or(defaults.vcores),
                work_dir,
                connect_timeout_seconds: connect_timeout,
                datastores: workspace.datastores()?,
                heartbeat_seconds: heartbeat,
                metrics_port,
            })
            .await?;
        }
    }
    Ok(())
}

/// Runs a quality check (from `sluice monitor quality` or a job file's `[quality]`), recorded in
/// the run catalog as `name`; prints the table and appends it to `report` when given.
async fn quality(
    spec: &sluice_monitor::quality::QualitySpec,
    report: Option<&str>,
    cluster: &ClusterArgs,
    run_id: Option<String>,
    name: &str,
) -> Result<()> {
    let lake = cluster.workspace.lake()?;
    let (ctx, _cluster) = session(cluster).await?;
    let work = async {
        let measured = sluice_monitor::quality::quality(&ctx, &lake, spec).await?;
        let written = match report {
            Some(asset) => Some(sluice_monitor::quality::write_report(&lake, asset, &measured).await?),
            None => None,
        };
        Ok::<_, sluice_catalog::Error>((measured, written))
    };
    let (measured, written) = recorded(&lake, "quality", name, run_id, work, |(m, w)| {
        (Some(m.overall.rows), w.as_ref().map(|w| format!("{}@{}", w.asset, w.version)), None)
    })
    .await?;
    println!("predictions  {}{}", measured.predictions, measured.model.as_ref().map(|m| format!(" (model {m})")).unwrap_or_default());
    println!("labels       {} joined on {} ({})", measured.labels, spec.key.join(", "), measured.task);
    print!("{}", sluice_monitor::quality::table(&measured));
    if let Some(w) = written {
        println!("report       {}@{}: {} rows", w.asset, w.version, w.rows);
    }
    Ok(())
}

/// A number of seconds from 0 up to a few years (`--for inf` or `-1` would panic as a duration).
fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..10.0 * 365.0 * 86400.0).contains(&s) => Ok(s),
        _ => Err(format!("'{text}': give a number of seconds from 0 up to a few years, e.g. 3600")),
    }
}

/// `COLUMN=VALUE` of `--column-threshold`.
fn parse_column_threshold(text: &str) -> std::result::Result<(String, f64), String> {
    let (column, value) = text.split_once('=').ok_or_else(|| format!("'{text}': expected COLUMN=VALUE, for example tenure=0.2"))?;
    let value: f64 = value.trim().parse().map_err(|_| format!("'{text}': the threshold after '=' must be a number"))?;
    Ok((column.trim().to_string(), value))
}

/// Runs a scoring job (from `sluice score` or a job file's `[score]`), recorded in the run
/// catalog as `name`, and prints its summary.
async fn score(spec: sluice_score::score::ScoreSpec, cluster: &ClusterArgs, run_id: Option<String>, name: &str) -> Result<()> {
    let lake = cluster.workspace.lake()?;
    let (ctx, _cluster) = session(cluster).await?;
    let bar = sluice_catalog::progress::bar(spec.chunks as u64, "scoring", "chunks");
    let work = sluice_score::score::run(&ctx, &lake, &spec, |done, total| {
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
    println!("run          {}{}", r.run_id, if r.resumed { " (resumed)" } else { "" });
    println!("model        {}", r.model);
    println!("input        {}: {} rows, {} with a NULL or NaN feature", r.input, r.rows, r.bad_rows);
    println!("chunks       {} scored now, {} done before", r.chunks.1, r.chunks.0 - r.chunks.1);
    if let Some(p) = &r.predictions {
        println!(
            "predictions  {}@{}: {} rows in {} files in {:.1} s ({:.0} rows/s)",
            p.asset,
            p.version,
            p.rows,
            p.files,
            r.seconds,
            p.rows as f64 / r.seconds.max(1e-9)
        );
    }
    if let Some(q) = &r.rejected {
        println!("rejected     {}@{}: {} rows with the reason", q.asset, q.version, q.rows);
    }
    match &r.drift {
        Ok(d) => {
            println!("reference    {} ({} rows profiled in the scoring pass)", d.reference, d.rows);
            print!("{}", sluice_monitor::compare::table(&d.columns));
            println!("report       {}@{}", d.report.asset, d.report.version);
            if let Some(answer) = &d.webhook {
                println!("webhook      {answer}");
            }
        }
        Err(why) => println!("drift        {why}"),
    }
    Ok(())
}

/// The users and roles of `sluice serve` (`--access FILE`), and a line describing them.
fn serve_access(access: Option<&std::path::Path>) -> Result<(sluice_server::Access, String)> {
    let access = access.context(
        "--flight and --http need --access FILE: the users and their roles (anonymous access only where that file allows it)",
    )?;
    let config = sluice_server::AccessConfig::load(access)?;
    let rules = sluice_server::Access::new(&config).with_context(|| format!("access file {}", access.display()))?;
    let anonymous = config.anonymous.map_or("refused".to_string(), |r| format!("allowed as {}", r.name()));
    Ok((rules, format!("{} users, anonymous {anonymous}", config.users.len())))
}

/// An in-process session over the lake's assets (small reads and writes of the servers).
fn local_session(lake: &Lake) -> Result<SessionContext> {
    Ok(sluice_engine::session::in_process(&sluice_engine::client_functions(), Some(lake))?)
}

/// Binds the Flight endpoint of `sluice serve` and builds its server: queries on the cluster
/// session `ctx`, assets read and written here.
async fn flight_server(
    address: &str,
    (rules, users): &(sluice_server::Access, String),
    tls: bool,
    cluster: &ClusterArgs,
    lake: &Lake,
    ctx: SessionContext,
) -> Result<(tokio::net::TcpListener, sluice_server::FlightServer)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the Flight endpoint to {address}"))?;
    let runs = sluice_catalog::runs::Catalog::open(&sluice_catalog::runs::default_location(lake.root())).await?;
    let args = cluster.clone();
    let launch: sluice_server::Launch = std::sync::Arc::new(move |job: &std::path::Path, id: &str| {
        spawn_run(job, id, &args).map(|(child, _)| child).map_err(|e| sluice_catalog::Error::Invalid(format!("{e:#}")))
    });
    let server = sluice_server::FlightServer::new(
        ctx,
        local_session(lake)?,
        lake.clone(),
        rules.clone(),
        std::sync::Arc::new(runs),
        Some(launch),
    )?;
    let scheme = if tls { "grpc+tls" } else { "grpc" };
    println!("flight       {scheme}://{} (Flight SQL and Flight; {users})", listener.local_addr()?);
    Ok((listener, server))
}

/// Starts `sluice run JOB --run-id ID` in the background with the same cluster and workspace,
/// its output in a log file; returns the process and the log's path.
fn spawn_run(job: &std::path::Path, id: &str, cluster: &ClusterArgs) -> Result<(std::process::Child, PathBuf)> {
    let logs = std::env::temp_dir().join("sluice-runs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log = logs.join(format!("{id}.log"));
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("run").arg(job).args(["--run-id", id]).args(["--executors", &cluster.executors.to_string()]);
    if let Some(url) = &cluster.cluster {
        command.args(["--cluster", url]);
    }
    if let Some(path) = &cluster.workspace.path {
        command.arg("--workspace").arg(path);
    }
    if let Some(assets) = &cluster.workspace.assets {
        command.args(["--assets", assets]);
    }
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting the run")?;
    Ok((child, log))
}

/// Runs `work`, recorded in the run catalog: running while it runs, then how it ended, with the
/// rows and output `summary` takes from its result. A catalog that cannot be opened is a warning.
async fn recorded<T, E>(
    lake: &Lake,
    kind: &str,
    name: &str,
    id: Option<String>,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
    summary: impl Fn(&T) -> (Option<u64>, Option<String>, Option<String>),
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
{
    recorded_with(lake, kind, name, id, None, work, summary).await
}

/// [`recorded`], with the position of `bar` written to the run's record every second while it
/// runs (the console's progress of a running run).
async fn recorded_with<T, E>(
    lake: &Lake,
    kind: &str,
    name: &str,
    id: Option<String>,
    bar: Option<sluice_catalog::progress::ProgressBar>,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
    summary: impl Fn(&T) -> (Option<u64>, Option<String>, Option<String>),
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
{
    use sluice_catalog::runs::{Catalog, Status, default_location};
    let catalog = match Catalog::open(&default_location(lake.root())).await {
        Ok(catalog) => Some(catalog),
        Err(e) => {
            eprintln!("warning: {e}; this run is not recorded");
            None
        }
    };
    let mut run = None;
    if let Some(catalog) = &catalog {
        match catalog.start(kind, name, id, None).await {
            Ok(id) => run = Some(id),
            Err(e) => eprintln!("warning: {e}; this run is not recorded"),
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
                        let now = sluice_catalog::progress::describe(&bar);
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
            eprintln!("warning: {e}; the end of run {id} is not recorded");
        }
    }
    result
}

async fn runs(command: RunsCommand) -> Result<()> {
    use sluice_catalog::runs::{Catalog, default_location};
    let open = |w: &WorkspaceArg| {
        let lake = w.lake();
        async move { anyhow::Ok(Catalog::open(&default_location(lake?.root())).await?) }
    };
    match command {
        RunsCommand::List { limit, workspace } => {
            let catalog = open(&workspace).await?;
            let runs = catalog.list(limit).await?;
            if runs.is_empty() {
                println!("no runs yet in {}", catalog.location());
            }
            println!("{:<26} {:<6} {:<24} {:<10} {:>10} {:>9}  output / error", "run", "kind", "name", "status", "rows", "seconds");
            for r in runs {
                let rows = r.rows.map(|n| n.to_string()).unwrap_or_default();
                let detail = r.error.clone().or(r.output.clone()).unwrap_or_default();
                let mut detail = detail.lines().next().unwrap_or_default().to_string();
                match r.drift.as_deref() {
                    Some("none") => detail.push_str(" (no drift)"),
                    Some(columns) => detail.push_str(&format!(" (DRIFT: {columns})")),
                    None => {}
                }
                println!("{:<26} {:<6} {:<24} {:<10} {:>10} {:>9.1}  {detail}", r.id, r.kind, r.name, r.status, rows, r.seconds());
            }
        }
        RunsCommand::Show { id, workspace } => {
            let run = open(&workspace).await?.get(&id).await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
        }
        RunsCommand::Cancel { id, workspace } => {
            let run = open(&workspace).await?.cancel(&id).await?;
            println!("cancel asked for run {} ({} {}, process {} on {})", run.id, run.kind, run.name, run.pid, run.host);
        }
    }
    Ok(())
}

async fn model(command: ModelCommand) -> Result<()> {
    use sluice_catalog::models::{ModelAt, ModelInfo, ModelRef, Registry, parse_inputs};
    let registry = |w: &WorkspaceArg| -> Result<Registry> { Ok(Registry::open(&w.lake()?)?) };
    match command {
        ModelCommand::Register { name, file, inputs, outputs, task, metrics, description, alias, workspace } => {
            let registry = registry(&workspace)?;
            let metrics = match metrics {
                None => Default::default(),
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => anyhow::bail!("--metrics must be a JSON object, e.g. '{{\"test\": {{\"auc\": 0.9}}}}'"),
                },
            };
            let info = ModelInfo { task, inputs: parse_inputs(&inputs)?, outputs, metrics, lineage: Default::default(), description };
            let v = registry.register(&name, &file, info).await?;
            if let Some(alias) = &alias {
                registry.promote(&name, v.version, alias).await?;
            }
            println!(
                "registered   {}@{}{} ({}, {} inputs -> {})",
                v.name,
                v.version,
                alias.map(|a| format!(" (@{a})")).unwrap_or_default(),
                v.id,
                v.info.inputs.len(),
                v.info.outputs.join(", ")
            );
        }
        ModelCommand::List { workspace } => {
            let registry = registry(&workspace)?;
            let names = registry.names().await?;
            if names.is_empty() {
                println!("no models yet; `sluice train --register NAME` or `sluice model register NAME FILE` adds one");
            }
            for name in names {
                let versions = registry.versions_of(&name).await?;
                let aliases = registry.aliases(&name).await?;
                let latest = versions.last().map_or(0, |v| v.version);
                let aliases = aliases.iter().map(|(a, v)| format!("@{a}={v}")).collect::<Vec<_>>().join(" ");
                println!("{name:<20} latest {latest:<4} versions {:<4} {aliases}", versions.len());
            }
        }
        ModelCommand::Show { model, workspace } => {
            let registry = registry(&workspace)?;
            let reference = ModelRef::parse(&model)?;
            if reference.at == ModelAt::Latest {
                let aliases = registry.aliases(&reference.name).await?;
                let versions = registry.versions_of(&reference.name).await?;
                if versions.is_empty() {
                    anyhow::bail!("no model named '{}' is registered", reference.name);
                }
                for v in versions {
                    let pointing: Vec<String> =
                        aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| format!("@{a}")).collect();
                    let test = v.info.metrics.get("test").map(|m| m.to_string()).unwrap_or_default();
                    let archived = v.archived.as_ref().map(|a| format!(" archived {a}")).unwrap_or_default();
                    println!("{}@{:<4} {} {} {test}{archived}", v.name, v.version, v.registered, pointing.join(" "));
                }
            } else {
                let v = registry.resolve(&reference).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
        ModelCommand::Promote { model, alias, workspace } => {
            let registry = registry(&workspace)?;
            let reference = ModelRef::parse(&model)?;
            if reference.at == ModelAt::Latest {
                anyhow::bail!("name the version to promote: {}@VERSION", reference.name);
            }
            let version = registry.resolve(&reference).await?.version;
            let previous = registry.promote(&reference.name, version, &alias).await?;
            let was = previous.map(|p| format!(" (was {p})")).unwrap_or_default();
            println!("{}@{alias} -> version {version}{was}", reference.name);
        }
        ModelCommand::Archive { model, workspace } => {
            let registry = registry(&workspace)?;
            let reference = ModelRef::parse(&model)?;
            let ModelAt::Version(version) = reference.at else {
                anyhow::bail!("name the version to archive: {}@VERSION", reference.name);
            };
            registry.archive(&reference.name, version).await?;
            println!("archived     {}@{version}", reference.name);
        }
        ModelCommand::Monitor { name, drift_threshold, p_value, column_thresholds, webhook, workspace } => {
            let registry = registry(&workspace)?;
            let mut settings = registry.monitor_settings(&name).await?.unwrap_or_default();
            let changed = drift_threshold.is_some() || p_value.is_some() || !column_thresholds.is_empty() || webhook.is_some();
            settings.distance = drift_threshold.or(settings.distance);
            settings.p_value = p_value.or(settings.p_value);
            settings.columns.extend(column_thresholds);
            settings.webhook = webhook.or(settings.webhook);
            if changed {
                registry.set_monitor_settings(&name, &settings).await?;
            }
            let columns: Vec<String> = settings.columns.iter().map(|(c, t)| format!("{c}={t}")).collect();
            println!("model        {name}{}", if changed { " (saved)" } else { "" });
            println!("distance     {}", settings.distance.map_or("default (0.1)".into(), |d| d.to_string()));
            println!("p-value      {}", settings.p_value.map_or("default (0.05)".into(), |p| p.to_string()));
            println!("columns      {}", if columns.is_empty() { "-".into() } else { columns.join(", ") });
            let host = settings.webhook.as_deref().map(sluice_monitor::webhook_host);
            println!("webhook      {}", host.map_or("-".into(), |h| format!("set ({h})")));
        }
    }
    Ok(())
}

async fn asset(command: AssetCommand) -> Result<()> {
    use sluice_datasets::assets as jobs;
    match command {
        AssetCommand::List { workspace } => print!("{}", jobs::list_table(&workspace.lake()?.list().await?)),
        AssetCommand::Show { asset, workspace } => {
            let lake = workspace.lake()?;
            let asset = AssetRef::parse(&asset)?;
            let version = lake.resolve(&asset).await?;
            print!("{}", jobs::show(&version, &lake.tags(&asset.name).await?));
        }
        AssetCommand::Versions { name, limit, workspace } => {
            print!("{}", jobs::versions_table(&workspace.lake()?.history(&name, limit).await?));
        }
        AssetCommand::Tag { asset, tag, workspace } => {
            let asset = AssetRef::parse(&asset)?;
            let version = match asset.at {
                sluice_engine::At::Latest => None,
                sluice_engine::At::Version(v) => Some(v),
                sluice_engine::At::Tag(t) => anyhow::bail!("tag a version number, not the tag '{t}': NAME@VERSION"),
            };
            let version = workspace.lake()?.tag(&asset.name, &tag, version).await?;
            println!("{}@{tag} -> version {version}", asset.name);
        }
        AssetCommand::Write { name, sql, mode, key, delete_column, partition_by, sort_by, target_file_size, compression, cluster } => {
            let lake = cluster.workspace.lake()?;
            let (ctx, _cluster) = session(&cluster).await?;
            let ctx = ctx.enable_url_table();
            let options = WriteOptions {
                mode: mode.parse()?,
                key,
                delete_column,
                partition_by,
                sort_by,
                target_file_bytes: target_file_size.as_deref().map(parse_size).transpose()?,
                compression,
                job: "sluice asset write".into(),
                lineage: Default::default(),
            };
            let (s, models) = sluice_datasets::assets::write(&ctx, &lake, &name, &sql, &options).await?;
            for m in &models {
                println!("model        {} = {} version {} ({})", m.reference, m.name, m.version, m.id);
            }
            println!(
                "{}@{}: {} rows in {} files ({}) in {:.1} s; inputs: {}",
                s.asset,
                s.version,
                s.rows,
                s.files,
                jobs::bytes(s.bytes),
                s.seconds,
                if s.inputs.is_empty() { "none".to_string() } else { s.inputs.join(", ") }
            );
            if let Some(m) = &s.merged {
                println!("merged       {m}");
            }
        }
        AssetCommand::Import { name, dir, workspace } => {
            let lake = workspace.lake()?;
            let s = sluice_datasets::assets::import(&lake, &name, &dir).await?;
            println!("{}@{}: {} rows in {} files ({}) imported from {}", s.asset, s.version, s.rows, s.files, jobs::bytes(s.bytes), dir.display());
        }
        AssetCommand::Vacuum { name, retain_hours, dry_run, workspace } => {
            let retain = std::time::Duration::from_secs(retain_hours.saturating_mul(3600));
            let report = workspace.lake()?.vacuum(&name, retain, dry_run).await?;
            print!("{}", jobs::vacuum_report(&name, &report));
        }
    }
    Ok(())
}

/// `128MB`, `1GiB`, `500k`, `1048576` as bytes.
/// `N read = A landed + B quarantined [+ R rest]` from counts taken apart; when the parts add up
/// to more than was read (a transform that makes rows), it says so instead of an equation.
fn accounted(read: u64, parts: &[(u64, &str)], rest: &str) -> String {
    let total: u64 = parts.iter().map(|(n, _)| n).sum();
    let listed = parts.iter().map(|(n, what)| format!("{n} {what}")).collect::<Vec<_>>();
    match read.checked_sub(total) {
        Some(0) => format!("{read} read = {}", listed.join(" + ")),
        Some(left) => format!("{read} read = {} + {left} {rest}", listed.join(" + ")),
        None => format!("{read} read; {} ({} more than read: the transform makes rows)", listed.join(", "), total - read),
    }
}

fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("size '{text}': expected a number and a unit, e.g. 128MB"))?;
    let scale = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => anyhow::bail!("size '{text}': unknown unit '{other}'; use B, KB, MB or GB"),
    };
    Ok((num * scale) as u64)
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Executors listen for Ctrl-C and SIGTERM to stop cleanly, which replaces the default
    // handlers: exit here (nothing is committed by a run cut short; `sluice runs cancel` sends
    // SIGTERM).
    // A stream stops itself on those signals, after committing what it processed.
    let graceful = matches!(cli.command, Command::Stream { .. });
    let result = runtime.block_on(async {
        if graceful {
            return run(cli).await;
        }
        tokio::select! {
            result = run(cli) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = terminated() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        }
    });
    // Do not wait on work still running in the background (an interrupted stage, executors).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Library errors often repeat their source in their own message: print each cause once.
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message.push_str(": ");
                    message.push_str(&cause);
                }
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
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
