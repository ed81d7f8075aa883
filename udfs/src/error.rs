//! Errors of Sluice's scalar functions, and their conversion at the DataFusion boundary.

use datafusion::error::DataFusionError;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a Sluice UDF. Variants other than [`Error::Torch`] are bad input
/// (a wrong path, wrong columns, NULLs) and say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file cannot be read.
    #[error(
        "predict: cannot read model '{path}': {source}. The path is opened by the client \
         (to plan) and by every executor (to score): give a path that exists on all of them"
    )]
    ModelNotFound {
        /// Path as given to `predict`.
        path: String,
        /// Why the read failed.
        source: std::io::Error,
    },
    /// The file exists but is not a TorchScript module libtorch can load.
    #[error(
        "predict: '{path}' is not a loadable TorchScript model ({message}). Save it with \
         torch.jit.script(model).save(path) or torch.jit.trace(model, example).save(path)"
    )]
    ModelLoad {
        /// Path as given to `predict`.
        path: String,
        /// libtorch's message.
        message: String,
    },
    /// The file looks like an ONNX model but ONNX Runtime cannot load it.
    #[error(
        "predict: '{path}' is not a loadable ONNX model ({message}). Export it with torch.onnx.export, \
         skl2onnx.convert_sklearn or onnxmltools (convert_lightgbm, convert_xgboost), zipmap off for classifiers"
    )]
    OnnxLoad {
        /// Path as given to `predict`.
        path: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The ONNX Runtime library is missing or unusable.
    #[error("predict: {0}")]
    OnnxRuntime(String),
    /// ONNX Runtime failed while running a model that loaded and probed fine.
    #[error("predict: model '{model}' failed in ONNX Runtime: {message}")]
    Onnx {
        /// Model id.
        model: String,
        /// What went wrong.
        message: String,
    },
    /// The call does not fit the model: argument count or types.
    #[error("{0}")]
    BadCall(String),
    /// A row cannot be scored (for example a NULL feature).
    #[error("{0}")]
    BadRow(String),
    /// libtorch failed while running a model that loaded and probed fine.
    #[error("predict: model '{model}' failed: {message}")]
    Torch {
        /// Model id.
        model: String,
        /// libtorch's message.
        message: String,
    },
    /// An Arrow kernel failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            // Planning-time misuse reads best as a plan error; runtime bad rows as execution errors.
            Error::BadCall(m) => DataFusionError::Plan(m),
            Error::Arrow(e) => DataFusionError::ArrowError(Box::new(e), None),
            other => DataFusionError::Execution(other.to_string()),
        }
    }
}
