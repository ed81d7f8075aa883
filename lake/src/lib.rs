//! Sluice's lake: where data lives. [`datastore`] opens the workspace's object stores (local,
//! Azure Blob and ADLS Gen2, S3) with their secrets; [`delta`] keeps data assets as versioned
//! Delta tables in them. [`error`] is shared with the connectors that read and write data.

pub mod datastore;
pub mod delta;
pub mod error;

pub use error::{Error, Result};
