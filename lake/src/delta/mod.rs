//! Data assets: named, versioned Delta Lake tables in the lake's assets location.
//!
//! An asset `accounts` lives at `<assets root>/accounts/` as a Delta table: every write adds one
//! Delta version (committed once, on success), readers pin `accounts@7` or `accounts@prod` (a tag),
//! and any Delta reader (Spark, Databricks, Synapse, DuckDB, pandas) reads the same rows.
//! [`Lake`] opens, lists, commits, tags and vacuums assets; the engine plans the reads and writes.

mod commit;
mod lake;
mod names;
mod schema;

pub use commit::{NewFiles, WriteMode};
pub use lake::{AssetSummary, AssetVersion, DataFile, Lake, VacuumReport, VersionInfo};
pub use names::{AssetRef, At, check_name};
pub use schema::{delta_compatible, evolve};
