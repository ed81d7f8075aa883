//! Carries Sluice's tables and scans across the wire: Ballista's codecs, plus asset tables and
//! source reads.
//!
//! Set on the client (session config), the scheduler (`override_logical_codec`,
//! `override_physical_codec`) and the executors, so a plan that reads `accounts@7` decodes to
//! the same file list everywhere, and a source read to the same partitions.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::assets::table::{AssetScan, AssetTable};
use crate::profile::{PROFILE_SCAN, ProfileExec, SKETCH, sketch_udaf};
use crate::sources::files::{Quarantine, SourceFiles, as_source_scan};
use sluice_connectors::quarantine::QuarantineTarget;
use crate::sources::{SourcePlan, SourceTable};

/// Marks an encoded [`AssetTable`] (the rest is its [`AssetScan`] as JSON).
const MAGIC: &[u8] = b"sluice.asset.v1\n";
/// Marks an encoded [`SourceTable`] (the rest is its [`SourcePlan`] as JSON).
const SOURCE_TABLE: &[u8] = b"sluice.source.v1\n";
/// Marks an encoded source scan (the rest is a [`ScanSpec`] as JSON).
const SOURCE_SCAN: &[u8] = b"sluice.scan.v1\n";

fn json_error(what: &str, e: serde_json::Error) -> DataFusionError {
    DataFusionError::Internal(format!("cannot encode or decode {what}: {e}"))
}

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
        if let Some(json) = buf.strip_prefix(MAGIC) {
            let scan: AssetScan =
                serde_json::from_slice(json).map_err(|e| json_error(&format!("the asset table '{table_ref}'"), e))?;
            return Ok(Arc::new(AssetTable::from_scan(scan, schema)?));
        }
        if let Some(json) = buf.strip_prefix(SOURCE_TABLE) {
            let spec: TableSpec =
                serde_json::from_slice(json).map_err(|e| json_error(&format!("the source '{table_ref}'"), e))?;
            let table = SourceTable::new(spec.plan, spec.quarantine);
            return Ok(Arc::new(match spec.progress {
                Some(key) => table.with_progress(key),
                None => table,
            }));
        }
        self.inner.try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(table) = node.downcast_ref::<AssetTable>() {
            buf.extend_from_slice(MAGIC);
            return serde_json::to_writer(buf, table.scan_spec())
                .map_err(|e| json_error(&format!("the asset table '{table_ref}'"), e));
        }
        if let Some(table) = node.downcast_ref::<SourceTable>() {
            buf.extend_from_slice(SOURCE_TABLE);
            let spec = TableSpec {
                plan: table.plan().clone(),
                quarantine: table.quarantine().cloned(),
                progress: table.progress().cloned(),
            };
            return serde_json::to_writer(buf, &spec)
                .map_err(|e| json_error(&format!("the source '{table_ref}'"), e));
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
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
        if name == SKETCH {
            return Ok(sketch_udaf());
        }
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

/// A source table as it travels.
#[derive(serde::Serialize, serde::Deserialize)]
struct TableSpec {
    plan: SourcePlan,
    quarantine: Option<QuarantineTarget>,
    #[serde(default)]
    progress: Option<String>,
}

/// A source scan as it travels: the planned read and the partitions this scan reads (all of them
/// in the stage plan; the task's own slice once the scheduler restricted it).
#[derive(serde::Serialize, serde::Deserialize)]
struct ScanSpec {
    plan: SourcePlan,
    projection: Option<Vec<usize>>,
    partitions: Vec<usize>,
    quarantine: Option<QuarantineTarget>,
    #[serde(default)]
    progress: Option<String>,
}

/// Ballista's physical codec extended with source scans.
#[derive(Debug)]
pub struct ScanCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
}

impl Default for ScanCodec {
    fn default() -> Self {
        Self { inner: Arc::new(BallistaPhysicalExtensionCodec::default()) }
    }
}

/// The physical codec every site uses.
pub fn physical_codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(ScanCodec::default())
}

impl PhysicalExtensionCodec for ScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(json) = buf.strip_prefix(PROFILE_SCAN) {
            let input = inputs.first().ok_or_else(|| DataFusionError::Internal("a profile step without input".into()))?;
            return Ok(Arc::new(ProfileExec::decode(json, Arc::clone(input))?));
        }
        match buf.strip_prefix(SOURCE_SCAN) {
            Some(json) => {
                let spec: ScanSpec = serde_json::from_slice(json).map_err(|e| json_error("a source scan", e))?;
                let quarantine = match spec.quarantine {
                    Some(target) => Some(Quarantine::resolve(target, ctx.runtime_env().as_ref())?),
                    None => None,
                };
                Ok(SourceFiles::new(spec.plan, spec.projection, quarantine)?.with_progress(spec.progress).scan(&spec.partitions))
            }
            None => self.inner.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(exec) = node.downcast_ref::<ProfileExec>() {
            return exec.encode(buf);
        }
        if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
            let source: &dyn std::any::Any = exec.data_source().as_ref();
            if let Some((config, files)) = as_source_scan(source) {
                let spec = ScanSpec {
                    plan: files.plan().clone(),
                    projection: files.projection().cloned(),
                    partitions: SourceFiles::partitions_of(config)?,
                    quarantine: files.quarantine().cloned(),
                    progress: files.progress().cloned(),
                };
                buf.extend_from_slice(SOURCE_SCAN);
                return serde_json::to_writer(buf, &spec).map_err(|e| json_error("a source scan", e));
            }
        }
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        if name == SKETCH {
            return Ok(sketch_udaf());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_connectors::postgres::{PgColumn, PgKind, PostgresConnection, PostgresPlan};

    #[test]
    fn source_tables_and_scans_round_trip() {
        let plan = SourcePlan::Postgres(PostgresPlan {
            source: "crm".into(),
            connection: PostgresConnection {
                host: "h".into(),
                port: 1,
                user: "u".into(),
                password: None,
                database: "d".into(),
                connect_timeout_s: 1,
                tls: Some(sluice_connectors::tls::TlsOptions {
                    mode: sluice_connectors::tls::TlsMode::VerifyCa,
                    ca: Some("/etc/ca.pem".into()),
                }),
            },
            from: "\"t\"".into(),
            label: "t".into(),
            columns: vec![PgColumn { name: "id".into(), kind: PgKind::Int8 }],
            partitions: vec!["TRUE".into(), "FALSE".into()],
            watermark: None,
            filter: Some("\"id\" > 1".into()),
        });
        let table: Arc<dyn TableProvider> = Arc::new(SourceTable::new(plan.clone(), None));
        let mut buf = Vec::new();
        let codec = AssetCodec::default();
        codec.try_encode_table_provider(&TableReference::bare("t"), table.clone(), &mut buf).unwrap();
        let ctx = TaskContext::default();
        let back = codec.try_decode_table_provider(&buf, &TableReference::bare("t"), table.schema(), &ctx).unwrap();
        assert_eq!(back.downcast_ref::<SourceTable>().unwrap().plan().partitions(), 2);
    }
}
