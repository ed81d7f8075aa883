//! Data assets in the engine: read by name in SQL ([`catalog`]), scanned as Parquet at a pinned
//! version ([`table`]) and written as new Delta
//! versions by the executors ([`write`]). [`crate::codec`] carries them across the cluster.

pub mod catalog;
pub mod files;
pub mod merge;
pub mod table;
pub mod write;

pub use catalog::register;
pub use merge::MergeCounts;
pub use table::AssetTable;
pub use write::{StagedWrite, WriteOptions, WriteSummary, commit_folder, commit_folder_with, stage_asset, write_asset};
