//! Session settings shared by the client, the scheduler and the executors, and the client session.

use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use sluice_lake::datastore::Datastore;
use sluice_lake::delta::Lake;
use sluice_udfs::Functions;

use crate::error::{Error, Result};
use crate::runtime;

/// The Ballista session config with Sluice's settings and codec (asset tables cross the wire).
///
/// `pushdown_filters`: DataFusion 55 otherwise pushes projection UDFs such as `predict` into the
/// Parquet scan and scores rows that a later filter drops; with filters evaluated inside the
/// scan, only surviving rows reach the model.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(crate::codec::logical_codec())
        .with_ballista_physical_extension_codec(crate::codec::physical_codec());
    config.options_mut().execution.parquet.pushdown_filters = true;
    config
}

/// Builds the scheduler's session for a job: Ballista's defaults plus Sluice's functions, object
/// stores and planner (profiles of scoring runs). Used as the scheduler's session builder.
pub fn scheduler_session_state(
    config: SessionConfig,
    functions: &Functions,
    datastores: &[Datastore],
) -> datafusion::error::Result<SessionState> {
    let mut state = ballista_core::utils::default_session_builder(config)?;
    let runtime: Arc<RuntimeEnv> = runtime::runtime_env(None, datastores)?;
    state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime)
        .with_query_planner(crate::profile::profiling_planner())
        .build();
    for udf in &functions.scalar {
        datafusion::execution::FunctionRegistry::register_udf(&mut state, udf.clone())?;
    }
    datafusion::execution::FunctionRegistry::register_udaf(&mut state, crate::profile::sketch_udaf())?;
    Ok(state)
}

/// Parses `df://host:port` (or `host:port`) into the scheduler URL Ballista takes.
pub fn scheduler_url(cluster: &str) -> Result<String> {
    let rest = cluster.strip_prefix("df://").unwrap_or(cluster);
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        Error::Config(format!("--cluster '{cluster}': expected df://HOST:PORT, for example df://127.0.0.1:50050"))
    })?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(Error::Config(format!(
            "--cluster '{cluster}': expected df://HOST:PORT with a port number, for example df://127.0.0.1:50050"
        )));
    }
    Ok(format!("df://{host}:{port}"))
}

/// A client session against the scheduler at `cluster` (`df://host:port`), with Sluice's
/// functions registered for planning and the datastores' object stores for listing files.
pub async fn connect(cluster: &str, functions: &Functions, datastores: &[Datastore]) -> Result<SessionContext> {
    let url = scheduler_url(cluster)?;
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_default_features()
        .with_config(session_config())
        .with_runtime_env(runtime::runtime_env(None, datastores)?)
        .build();
    let ctx = SessionContext::remote_with_state(&url, state).await?;
    // After `remote_with_state`: Ballista's upgrade resets the scalar function list.
    register_functions(&ctx, functions);
    Ok(ctx)
}

/// An in-process session (no cluster) with the same functions as the cluster's sessions
/// (`predict` and the other scalar functions, the `sluice_sketch` aggregate) and, given a lake,
/// its object store and asset tables: for the stream consumers, the servers' small reads and
/// writes, and reports.
pub fn in_process(functions: &Functions, lake: Option<&Lake>) -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(session_config());
    register_functions(&ctx, functions);
    if let Some(lake) = lake {
        ctx.register_object_store(lake.store_url(), lake.store());
        sluice_udfs::fetch::register_store(lake.store_url(), lake.store());
        crate::assets::register(&ctx, lake)?;
    }
    Ok(ctx)
}

/// Registers Sluice's scalar functions and the `sluice_sketch` aggregate on `ctx`.
fn register_functions(ctx: &SessionContext, functions: &Functions) {
    for udf in &functions.scalar {
        ctx.register_udf(udf.as_ref().clone());
    }
    ctx.register_udaf(crate::profile::sketch_udaf().as_ref().clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_urls() {
        assert_eq!(scheduler_url("df://127.0.0.1:50050").unwrap(), "df://127.0.0.1:50050");
        assert_eq!(scheduler_url("localhost:1").unwrap(), "df://localhost:1");
        let e = scheduler_url("df://nohost").unwrap_err().to_string();
        assert!(e.contains("expected df://HOST:PORT"), "{e}");
        assert!(scheduler_url("df://h:notaport").is_err());
    }

    #[test]
    fn filters_are_pushed_into_scans() {
        assert!(session_config().options().execution.parquet.pushdown_filters);
    }
}
