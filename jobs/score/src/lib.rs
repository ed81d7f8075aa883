//! Batch scoring on the cluster ([`score`]) and baseline model training ([`train`]).

pub mod score;
pub mod train;

pub use sluice_catalog::{Error, Result, error};
