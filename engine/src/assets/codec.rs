//! Carries asset tables across the wire: Ballista's logical codec, plus [`AssetTable`].
//!
//! Set on the client (session config), the scheduler (`override_logical_codec`) and the
//! executors, so a plan that reads `accounts@7` decodes to the same file list everywhere.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use super::table::{AssetScan, AssetTable};

/// Marks an encoded [`AssetTable`] (the rest is its [`AssetScan`] as JSON).
const MAGIC: &[u8] = b"sluice.asset.v1\n";

/// Ballista's logical codec extended with asset tables.
#[derive(Debug)]
pub struct AssetCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl Default for AssetCodec {
    fn default() -> Self {
        Self { inner: Arc::new(BallistaLogicalExtensionCodec::default()) }
    }
}

/// The codec every site uses.
pub fn logical_codec() -> Arc<dyn LogicalExtensionCodec> {
    Arc::new(AssetCodec::default())
}

impl LogicalExtensionCodec for AssetCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(MAGIC) {
            Some(json) => {
                let scan: AssetScan = serde_json::from_slice(json).map_err(|e| {
                    DataFusionError::Internal(format!("cannot decode the asset table '{table_ref}': {e}"))
                })?;
                Ok(Arc::new(AssetTable::from_scan(scan, schema)?))
            }
            None => self.inner.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match node.downcast_ref::<AssetTable>() {
            Some(table) => {
                buf.extend_from_slice(MAGIC);
                serde_json::to_writer(buf, table.scan_spec())
                    .map_err(|e| DataFusionError::Internal(format!("cannot encode the asset table '{table_ref}': {e}")))
            }
            None => self.inner.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}
