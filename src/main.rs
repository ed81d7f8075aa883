//! `sluice`: the command line. Each command's arguments and work live in the crate of its
//! capability (`sluice_<crate>::cli`); this file parses, dispatches and prints.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_engine::cli::{ExecutorArgs, SchedulerArgs, Say};
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
    Demo(sluice_demo::cli::DemoArgs),
    /// Run one SQL statement (with predict, split_hash, ...) and print the result as a table.
    Sql(sluice_catalog::cli::SqlArgs),
    /// Run an ETL job file: sources -> SQL transform -> a new version of a data asset.
    Run(sluice_ingest::cli::RunArgs),
    /// Score Kafka events as they arrive: a stream job file ([input] topics, [output] SQL and
    /// topic, [land] asset), run until Ctrl-C or SIGTERM, which commit what was processed.
    Stream(sluice_stream::cli::StreamArgs),
    /// Submit a job file to run in the background (on --cluster when given); prints its run id.
    Submit(sluice_ingest::cli::SubmitArgs),
    /// Serve the workspace: run job files on their cron schedules (`[job] schedule`; each run
    /// its own process, recorded in the run catalog, never two runs of one job at once) and, with
    /// --flight, Arrow Flight SQL and Flight for remote clients, behind the users of --access.
    Serve(sluice_server::cli::ServeArgs),
    /// The run catalog: every run's status, rows, duration and error (list, show, cancel).
    Runs {
        #[command(subcommand)]
        command: sluice_catalog::cli::RunsCommand,
    },
    /// Split an asset into train / validate / test, reproducibly (same rows in the same split on
    /// every run, cluster size and file layout) and without leakage; writes a report with it.
    Split(sluice_datasets::cli::SplitArgs),
    /// Train a baseline model (logistic/linear or a small MLP) on a split asset: train split,
    /// early stopping on validate, metrics on test; saved as TorchScript, optionally registered.
    Train(sluice_score::cli::TrainArgs),
    /// Score a data asset with a model on the cluster into a predictions asset (key columns,
    /// prediction, model name and version, run id, scoring time), resumable with --resume.
    Score(sluice_score::cli::ScoreArgs),
    /// The model registry: register, list, show, promote, archive.
    Model {
        #[command(subcommand)]
        command: sluice_catalog::cli::ModelCommand,
    },
    /// Data assets: versioned Delta tables in the lake (list, show, versions, tag, write, vacuum).
    Asset {
        #[command(subcommand)]
        command: sluice_datasets::cli::AssetCommand,
    },
    /// Model monitoring: drift of current data against a reference (the training data).
    Monitor {
        #[command(subcommand)]
        command: sluice_monitor::cli::MonitorCommand,
    },
    /// Run a Ballista scheduler with Sluice's functions.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor with Sluice's functions, attached to a scheduler.
    Executor(ExecutorArgs),
}

/// Results on stdout, notes on stderr.
const SAY: Say = Say::new(|line| println!("{line}"), |line| eprintln!("{line}"));

async fn run(command: Command) -> Result<()> {
    let asked = match &command {
        Command::Executor(args) => args.device.clone(),
        _ => None,
    };
    let device =
        sluice_engine::init_torch(asked.as_deref()).map_err(anyhow::Error::msg).context("choosing the model device")?;
    tracing::info!(%device, "models run on");
    match command {
        Command::Demo(args) => args.run(SAY).await?,
        Command::Sql(args) => args.run(SAY).await?,
        Command::Run(args) => args.run(SAY).await?,
        Command::Stream(args) => args.run(SAY).await?,
        Command::Submit(args) => args.run(SAY).await?,
        Command::Serve(args) => args.run(SAY).await?,
        Command::Runs { command } => command.run(SAY).await?,
        Command::Split(args) => args.run(SAY).await?,
        Command::Train(args) => args.run(SAY).await?,
        Command::Score(args) => args.run(SAY).await?,
        Command::Model { command } => command.run(SAY).await?,
        Command::Asset { command } => command.run(SAY).await?,
        Command::Monitor { command } => command.run(SAY).await?,
        Command::Scheduler(args) => args.run().await?,
        Command::Executor(args) => args.run(&device).await?,
    }
    Ok(())
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,sluice=info,sluice_engine=info,sluice_catalog=info,sluice_monitor=info,sluice_datasets=info,\
             sluice_score=info,sluice_stream=info,sluice_ingest=info,sluice_server=info,sluice_demo=info,sluice_udfs=warn",
        )
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Each cause once: library errors often repeat their source in their own message.
fn message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
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
    // SIGTERM). A stream, and a prediction endpoint, stop themselves on those signals, after
    // committing what they processed (the endpoint: its request log).
    let graceful = match &cli.command {
        Command::Stream(_) => true,
        Command::Serve(args) => args.stops_itself(),
        _ => false,
    };
    let result = runtime.block_on(async {
        if graceful {
            return run(cli.command).await;
        }
        tokio::select! {
            result = run(cli.command) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = sluice_engine::cli::terminated() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        }
    });
    // Do not wait on work still running in the background (an interrupted stage, executors).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}
