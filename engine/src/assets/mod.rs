//! Data assets in the engine: read by name in SQL ([`catalog`]), scanned as Parquet at a pinned
//! version ([`table`]), carried across the cluster ([`codec`]) and written as new Delta
//! versions by the executors ([`write`]).

pub mod catalog;
pub mod codec;
pub mod table;
pub mod write;

pub use catalog::register;
pub use codec::logical_codec;
pub use table::AssetTable;
pub use write::{WriteOptions, WriteSummary, write_asset};
