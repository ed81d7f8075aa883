//! What the capability crates share: the error type ([`error`]), progress bars ([`progress`]),
//! running statements ([`sql`]), the model registry ([`models`]), the run catalog ([`runs`]),
//! reading job files ([`jobfile`]), classifier metrics ([`metrics`]), work recorded as runs
//! ([`record`]) and the `sql`, `runs` and `model` commands ([`cli`]).

pub mod cli;
pub mod error;
pub mod jobfile;
pub mod metrics;
pub mod models;
pub mod progress;
pub mod record;
pub mod runs;
pub mod sql;

pub use error::{Context, Error, Result};
