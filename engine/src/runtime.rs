//! Runtime environments (object stores, spill directories) for every site of a cluster.
//!
//! The same function builds the client's, the scheduler's and each executor's runtime, so a path
//! that resolves in one place resolves in all of them. Local files are always available.

use std::sync::Arc;

use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// A runtime environment with Sluice's object stores; `spill_dir` holds temporary files.
pub fn runtime_env(spill_dir: Option<&str>) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(dir) = spill_dir {
        builder = builder.with_temp_file_path(dir);
    }
    builder.build_arc()
}
