//! Sluice's engine: DataFusion and Ballista wired with Sluice's functions and object stores.
//!
//! [`cluster`] starts schedulers and executors (separately or embedded), [`session`] builds the
//! client session that plans with the same functions, [`runtime`] holds the object stores every
//! site shares, [`cli`] the arguments every command takes (workspace, cluster) and the cluster
//! commands.

pub mod assets;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod metrics;
pub mod profile;
pub mod runtime;
pub mod session;
pub mod sources;

pub use cluster::{EmbeddedCluster, EmbeddedOptions, ExecutorOptions, SchedulerOptions};
pub use error::{Error, Result};
pub use session::connect;

pub use datafusion::prelude::SessionContext;
pub use sluice_lake::datastore::{Datastore, WorkspaceConfig};
pub use sluice_lake::delta::{AssetRef, At, Lake, WriteMode};
pub use sluice_udfs::Functions;

/// Sluice's functions as the client registers them (its `predict` counters stay at zero unless
/// something is evaluated on the client).
pub fn client_functions() -> Functions {
    sluice_udfs::functions("client")
}

/// Prepares libtorch for this process: loads its CUDA backend where a GPU and the CUDA libraries
/// are present (so `tch::Device::cuda_if_available()` picks the GPU), and returns the device
/// `predict` will use: `device` (an executor's `--device`), else as `SLUICE_DEVICE` resolves here.
pub fn init_torch(device: Option<&str>) -> std::result::Result<String, String> {
    sluice_udfs::device::load_cuda_backend();
    match device {
        Some(name) => sluice_udfs::device::choose_device(name),
        None => sluice_udfs::device::default_device(),
    }
    .map(sluice_udfs::device::device_name)
}
