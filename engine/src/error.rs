//! Errors of the engine: starting clusters, connecting to them, running queries.

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while starting or talking to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; the message names it and what is allowed.
    #[error("{0}")]
    Config(String),
    /// The cluster did not come up.
    #[error("cluster start-up failed: {0}")]
    Startup(String),
    /// Ballista reported an error.
    #[error(transparent)]
    Ballista(#[from] ballista_core::error::BallistaError),
    /// DataFusion reported an error (planning or execution).
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A lake operation (assets, datastores) failed; the message names the asset.
    #[error(transparent)]
    Lake(#[from] sluice_connectors::Error),
    /// Writing an asset's files failed before its commit.
    #[error("{0}")]
    Write(String),
    /// Local I/O failed (work directories, ports).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
