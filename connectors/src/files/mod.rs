//! Files in a datastore or a local directory: newline-delimited JSON (plain or gzip) read
//! leniently in byte-range pieces on the executors. (CSV and Parquet files are read by
//! DataFusion's own scans.)

mod lines;
pub mod ndjson;

pub use ndjson::{NdjsonPlan, Piece, plan, read_partition};
