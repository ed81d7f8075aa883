//! Sluice's jobs: units of work described here and run on the engine.
//!
//! [`assets`] writes and lists data assets; [`etl`] runs job files; [`demo`] is the end-to-end batch path on synthetic data; [`sql`] runs statements;
//! [`score`] runs batch scoring jobs; [`split`] writes reproducible train/validate/test splits; [`train`] trains baseline tabular models with libtorch; [`metrics`] scores classifiers; [`models`] is the model registry; [`monitor`] measures drift; [`runs`] is the run catalog; [`schedule`] runs job files on cron schedules; [`server`] serves Flight SQL and Flight to remote clients; [`console`] is the web console.

pub mod assets;
pub mod console;
pub mod demo;
pub mod error;
pub mod etl;
pub mod hot;
pub mod metrics;
pub mod models;
pub mod monitor;
pub mod prepare;
pub mod runs;
pub mod schedule;
pub mod score;
pub mod server;
pub mod progress;
pub mod split;
pub mod sql;
pub mod train;

pub use error::{Error, Result};
