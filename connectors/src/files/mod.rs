//! Files in a datastore or a local directory, read on the executors: newline-delimited JSON and
//! CSV (plain or gzip) in byte-range pieces, every record decoded leniently so a bad one is
//! quarantined instead of failing the read; unstructured files (images, PDFs, audio) as rows of
//! metadata and bytes. (Parquet files are read by DataFusion's own scan.)

pub mod binary;
pub mod csv;
mod lines;
mod ndjson;
mod piece;
mod plan;

pub use binary::BinaryOptions;
pub use csv::CsvOptions;
pub use plan::{FilesPlan, Format, Listing, Piece, plan, read_partition};
