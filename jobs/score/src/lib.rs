//! Batch scoring on the cluster ([`score`]) and baseline model training ([`train`]); the `train`
//! and `score` commands ([`cli`]).

pub mod cli;
pub mod score;
pub mod train;

pub use sluice_catalog::{Error, Result, error};
