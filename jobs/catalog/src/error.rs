//! Errors of Sluice's jobs.

/// Result with the jobs' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while a job runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option is invalid; the message names it and what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The engine failed (cluster start-up or connection).
    #[error(transparent)]
    Engine(#[from] sluice_engine::Error),
    /// A query failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Landing data failed.
    #[error(transparent)]
    Connector(#[from] sluice_connectors::Error),
    /// A model could not be loaded or probed.
    #[error(transparent)]
    Model(#[from] sluice_udfs::Error),
    /// libtorch failed while training or saving a model (its message, without the C++ stack).
    #[error("training: {0}")]
    Torch(String),
    /// Arrow failed while building or reading batches.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something failed while doing what `context` says.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// What failed.
        source: Box<Error>,
    },
}

/// Adds what was being done to an error, like `anyhow::Context`, keeping the crate's type.
pub trait Context<T> {
    /// The error of `self`, if any, as "`context`: error".
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// [`Context::context`] with the text made only when there is an error.
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context { context: context.into(), source: Box::new(e.into()) })
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context { context: context().into(), source: Box::new(e.into()) })
    }
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(sluice_udfs::model::first_line(&e.to_string()))
    }
}
