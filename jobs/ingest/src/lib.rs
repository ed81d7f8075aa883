//! ETL jobs: `sluice run jobs/NAME.toml` reads sources, transforms with SQL and lands the rows
//! as a new version of a data asset; `sluice submit` runs one in the background and `sluice serve`
//! on its cron schedule ([`schedule`]). The commands' arguments are in [`cli`].

pub mod cli;
pub mod config;
pub mod run;
pub mod stream;
pub mod schedule;

pub use sluice_catalog::{Error, Result, error};

pub use config::{ErrorThreshold, JobFile};
pub use run::{JobSummary, run};
pub use stream::{StreamEvent, is_stream, run_stream};
