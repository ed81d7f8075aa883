//! Sluice's scalar functions for DataFusion and Ballista: scoring with TorchScript and ONNX
//! models (`predict`) and stable hashing for reproducible splits (`split_hash`).
//!
//! [`functions`] is the registry: the engine registers its result on the client, the scheduler
//! and every executor, which is where Ballista needs a UDF to be known.

pub mod device;
pub mod error;
pub mod fetch;
pub mod model;
pub mod onnx;
pub mod predict;
pub mod split_hash;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;

pub use error::{Error, Result};
pub use model::Model;
pub use predict::{PredictStats, PredictUdf};
pub use split_hash::SplitHashUdf;

/// Sluice's functions, as registered at one site.
#[derive(Debug, Clone)]
pub struct Functions {
    /// The `predict` instance of this site, whose counters show the rows it scored.
    pub predict: Arc<PredictUdf>,
    /// Every scalar function, ready to register.
    pub scalar: Vec<Arc<ScalarUDF>>,
}

/// Builds every Sluice scalar function for `site` (for example `client`, `scheduler` or an
/// executor id).
pub fn functions(site: &str) -> Functions {
    let predict = Arc::new(PredictUdf::new(site));
    let scalar = vec![
        Arc::new(ScalarUDF::new_from_shared_impl(predict.clone())),
        Arc::new(ScalarUDF::from(SplitHashUdf::default())),
    ];
    Functions { predict, scalar }
}
