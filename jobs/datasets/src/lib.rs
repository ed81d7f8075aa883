//! Building data sets: asset writes from SQL ([`assets`]), declarative preparation with rules
//! and de-duplication ([`prepare`]), and reproducible, leak-free train/validate/test splits
//! ([`split`]); the `asset` and `split` commands ([`cli`]).

pub mod assets;
pub mod cli;
pub mod prepare;
pub mod split;

pub use sluice_catalog::{Error, Result, error};
