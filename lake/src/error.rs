//! Errors of reading and writing data: the lake's and the connectors'.

use std::path::PathBuf;

/// Result with the data [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while reading from a source or writing to a sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Parquet encoding or decoding failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The file involved.
        path: PathBuf,
        /// The Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// A configuration file or setting is invalid; the message names the file, key and fix.
    #[error("{0}")]
    Config(String),
    /// A source could not be reached or read; the message names the source and where.
    #[error("{0}")]
    Source(String),
    /// A sink (a serving table, a topic) could not be written; the message names it and where.
    #[error("{0}")]
    Sink(String),
    /// A data asset could not be resolved, read or committed; the message names the asset.
    #[error("{0}")]
    Asset(String),
    /// A batch does not match the schema of the data set it is written to.
    #[error("{0}")]
    Schema(String),
}
