//! Parquet data sets in a directory: one `part-NNNNN.parquet` file per written chunk.

mod sink;

pub use sink::{ParquetDirWriter, WriteStats};
