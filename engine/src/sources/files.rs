//! A planned source read as a file scan: each planned partition is one "file" of a
//! `FileScanConfig`, so Ballista hands each task exactly its own partitions (it restricts the file
//! groups of a scan to the task's slice), and DataFusion streams it like any file.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpenFuture, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::ObjectStore;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::DisplayFormatType;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::StreamExt;

use super::plan::SourcePlan;

/// The file source of a planned read: opens "file" `i` by reading partition `i`.
#[derive(Debug, Clone)]
pub struct SourceFiles {
    plan: SourcePlan,
    /// Columns read (all when None): only these are selected from the source.
    projection: Option<Vec<usize>>,
    table_schema: TableSchema,
    metrics: ExecutionPlanMetricsSet,
    batch_size: usize,
}

impl SourceFiles {
    /// The file source of `plan`, reading the columns in `projection` (all when None); its
    /// "file schema" is those columns.
    pub fn new(plan: SourcePlan, projection: Option<Vec<usize>>) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(plan.schema().project(p)?),
            None => plan.schema(),
        };
        let table_schema = TableSchema::from(schema);
        Ok(Self { plan, projection, table_schema, metrics: ExecutionPlanMetricsSet::new(), batch_size: 8192 })
    }

    /// The columns read.
    pub fn projection(&self) -> Option<&Vec<usize>> {
        self.projection.as_ref()
    }

    /// The planned read.
    pub fn plan(&self) -> &SourcePlan {
        &self.plan
    }

    /// A scan of the partitions `partitions` (one file group each).
    pub fn scan(self, partitions: &[usize]) -> Arc<DataSourceExec> {
        let label = self.plan.label();
        let groups = partitions
            .iter()
            .map(|i| FileGroup::new(vec![PartitionedFile::new(format!("sluice-source/{label}/{i}"), 1)]))
            .collect();
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(self))
            .with_file_groups(groups)
            .build();
        DataSourceExec::from_data_source(config)
    }

    /// The partitions a scan reads, from its file groups (what the codec carries).
    pub fn partitions_of(config: &FileScanConfig) -> Result<Vec<usize>> {
        config.file_groups.iter().flat_map(|g| g.iter()).map(|f| partition_of(f.path().as_ref())).collect()
    }
}

fn partition_of(path: &str) -> Result<usize> {
    path.rsplit('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| DataFusionError::Internal(format!("not a source partition: {path}")))
}

impl FileSource for SourceFiles {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        Ok(Arc::new(self.clone()))
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(Self { batch_size, ..self.clone() })
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        self.plan.kind()
    }

    fn fmt_extra(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, ", source={}", self.plan.lineage())
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn supports_repartitioning(&self) -> bool {
        // A partition is one query; it cannot be split by byte ranges.
        false
    }
}

impl FileOpener for SourceFiles {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let partition = partition_of(file.path().as_ref())?;
        let inner = self.plan.read_partition(partition, self.projection.clone(), self.batch_size);
        let label = self.plan.label();
        let stream = async_stream::try_stream! {
            let mut inner = inner;
            let mut rows = 0u64;
            while let Some(batch) = inner.next().await {
                let batch = batch.map_err(|e| DataFusionError::External(Box::new(e)))?;
                rows += batch.num_rows() as u64;
                yield batch;
            }
            tracing::info!(source = %label, partition, rows, "read partition");
        };
        let stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecordBatch>> + Send>> = Box::pin(stream);
        Ok(Box::pin(async move { Ok(stream) }))
    }
}

/// Whether `any` is a source file scan config, with its source.
pub fn as_source_scan(any: &dyn Any) -> Option<(&FileScanConfig, &SourceFiles)> {
    let config = any.downcast_ref::<FileScanConfig>()?;
    let source: &dyn Any = config.file_source().as_ref();
    Some((config, source.downcast_ref::<SourceFiles>()?))
}
