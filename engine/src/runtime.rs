//! Runtime environments (object stores, spill directories) for every site of a cluster.
//!
//! The same function builds the client's, the scheduler's and each executor's runtime, so a URL
//! that resolves in one place resolves in all of them: local files always, and every datastore
//! of the workspace under its `scheme://authority`.

use std::sync::Arc;

use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use sluice_lake::datastore::Datastore;

/// A runtime environment with the datastores' object stores; `spill_dir` holds temporary files.
pub fn runtime_env(spill_dir: Option<&str>, datastores: &[Datastore]) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(dir) = spill_dir {
        builder = builder.with_temp_file_path(dir);
    }
    let env = builder.build_arc()?;
    for datastore in datastores {
        if let Some((root, store)) = &datastore.store {
            env.register_object_store(root, store.clone());
            // Registered models in this store are fetched by `predict` itself.
            sluice_udfs::fetch::register_store(root, store.clone());
        }
    }
    Ok(env)
}
