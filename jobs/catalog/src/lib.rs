//! What the capability crates share: the error type ([`error`]), progress bars ([`progress`]),
//! running statements ([`sql`]), the model registry ([`models`]), the run catalog ([`runs`]),
//! reading job files ([`jobfile`]) and classifier metrics ([`metrics`]).

pub mod error;
pub mod jobfile;
pub mod metrics;
pub mod models;
pub mod progress;
pub mod runs;
pub mod sql;

pub use error::{Error, Result};
