//! Assets by name in SQL: `SELECT * FROM accounts`, `accounts@7`, `accounts@prod`.
//!
//! The session's default schema is wrapped: tables registered in it win, and any other name
//! that parses as an asset reference is resolved in the lake when a query is planned, so each
//! query pins the version that was current (or tagged) at that moment.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::prelude::SessionContext;
use sluice_lake::delta::{AssetRef, Lake};

use super::table::AssetTable;

/// The default schema, with the lake's assets behind it.
#[derive(Debug)]
pub struct AssetSchema {
    inner: Arc<dyn SchemaProvider>,
    lake: Lake,
}

#[async_trait]
impl SchemaProvider for AssetSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.inner.table(name).await? {
            return Ok(Some(table));
        }
        let Ok(asset) = AssetRef::parse(name) else { return Ok(None) };
        let latest = AssetRef { name: asset.name.clone(), at: sluice_lake::delta::At::Latest };
        // A plain name that is no asset is just an unknown table; a pinned one is an error.
        if asset == latest && !self.lake.exists(&asset.name).await.map_err(external)? {
            return Ok(None);
        }
        let version = self.lake.resolve(&asset).await.map_err(external)?;
        tracing::debug!(asset = %asset, version = version.version, files = version.files.len(), "resolved asset");
        Ok(Some(Arc::new(AssetTable::new(&version)?)))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

fn external(e: sluice_connectors::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Makes the lake's assets readable by name in `ctx`'s SQL.
pub fn register(ctx: &SessionContext, lake: &Lake) -> datafusion::error::Result<()> {
    let options = ctx.state().config().options().catalog.clone();
    let catalog = ctx
        .catalog(&options.default_catalog)
        .ok_or_else(|| DataFusionError::Plan(format!("the session has no catalog '{}'", options.default_catalog)))?;
    let inner = catalog
        .schema(&options.default_schema)
        .ok_or_else(|| DataFusionError::Plan(format!("the session has no schema '{}'", options.default_schema)))?;
    catalog.register_schema(&options.default_schema, Arc::new(AssetSchema { inner, lake: lake.clone() }))?;
    Ok(())
}
