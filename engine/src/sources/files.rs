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

use sluice_connectors::quarantine::{self, Counts, QuarantineTarget};

use super::plan::SourcePlan;

/// Where rejected records go: the target and its object store (resolved in each site's runtime).
#[derive(Debug, Clone)]
pub struct Quarantine {
    /// The folders and limits.
    pub target: QuarantineTarget,
    /// The store the folders are in.
    pub store: Arc<dyn ObjectStore>,
}

impl Quarantine {
    /// The quarantine of `target`, its store found in `runtime`.
    pub fn resolve(target: QuarantineTarget, runtime: &datafusion::execution::runtime_env::RuntimeEnv) -> Result<Self> {
        let url = ObjectStoreUrl::parse(&target.store_url)?;
        Ok(Self { store: runtime.object_store(&url)?, target })
    }
}

/// The file source of a planned read: opens "file" `i` by reading partition `i`.
#[derive(Debug, Clone)]
pub struct SourceFiles {
    plan: SourcePlan,
    /// Columns read (all when None): only these are selected from the source.
    projection: Option<Vec<usize>>,
    /// Where rejected records go; without one, a rejected record fails the read.
    quarantine: Option<Quarantine>,
    table_schema: TableSchema,
    metrics: ExecutionPlanMetricsSet,
    batch_size: usize,
    /// The key of the client's progress counter, when it watches the read.
    progress: Option<String>,
}

/// Rejects are written out in files of at most this many rows, so a source of mostly bad
/// records does not hold them all in memory.
const REJECTS_PER_FILE: usize = 10_000;

impl SourceFiles {
    /// The file source of `plan`, reading the columns in `projection` (all when None); its
    /// "file schema" is those columns.
    pub fn new(plan: SourcePlan, projection: Option<Vec<usize>>, quarantine: Option<Quarantine>) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(plan.schema().project(p)?),
            None => plan.schema(),
        };
        let table_schema = TableSchema::from(schema);
        Ok(Self {
            plan,
            projection,
            quarantine,
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
            batch_size: 8192,
            progress: None,
        })
    }

    /// The read counted into the progress counter under `key` (when this process has it).
    pub fn with_progress(self, key: Option<String>) -> Self {
        Self { progress: key, ..self }
    }

    /// The key of the progress counter.
    pub fn progress(&self) -> Option<&String> {
        self.progress.as_ref()
    }

    /// Where rejected records go.
    pub fn quarantine(&self) -> Option<&QuarantineTarget> {
        self.quarantine.as_ref().map(|q| &q.target)
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
        let config = FileScanConfigBuilder::new(self.plan.store_url(), Arc::new(self))
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
        object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        Ok(Arc::new(SourceOpener { files: self.clone(), store: object_store }))
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

/// Opens a source's partitions, with the store its files are in.
struct SourceOpener {
    files: SourceFiles,
    store: Arc<dyn ObjectStore>,
}

impl FileOpener for SourceOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let partition = partition_of(file.path().as_ref())?;
        let files = &self.files;
        let inner = files.plan.read_partition(partition, files.projection.clone(), files.batch_size, self.store.clone());
        let label = files.plan.label();
        let quarantine = files.quarantine.clone();
        let progress = files.progress.as_deref().and_then(super::progress::find);
        let stream = async_stream::try_stream! {
            let mut inner = inner;
            let mut counts = Counts::default();
            let mut rejects = Vec::new();
            let mut file_no = 0;
            while let Some(chunk) = inner.next().await {
                let chunk = chunk.map_err(|e| DataFusionError::External(Box::new(e)))?;
                counts.read += chunk.read;
                counts.rejected += chunk.rejects.len() as u64;
                if let Some(progress) = &progress {
                    progress.add_records(chunk.read);
                }
                let Some(q) = &quarantine else {
                    if let Some(first) = chunk.rejects.first() {
                        Err(DataFusionError::Execution(format!(
                            "source {label}: bad record at {}: {}; add a [quarantine] section to the job to keep bad \
                             records aside instead of failing",
                            first.location, first.reason
                        )))?;
                    }
                    if let Some(batch) = chunk.batch {
                        yield batch;
                    }
                    continue;
                };
                rejects.extend(chunk.rejects);
                let over = q.target.max_errors.is_some_and(|max| counts.rejected > max);
                if rejects.len() >= REJECTS_PER_FILE || over {
                    // On the way out, the counts too: the summary says how far the read got.
                    write_rejects(q, partition, &mut file_no, &mut rejects, over.then_some(counts)).await?;
                }
                if over {
                    Err(DataFusionError::Execution(format!(
                        "source {label}: more than {} bad records in partition {partition} (max_errors); each one \
                         is in the quarantine asset with its location and reason",
                        q.target.max_errors.unwrap_or_default()
                    )))?;
                }
                if let Some(batch) = chunk.batch {
                    yield batch;
                }
            }
            if let Some(q) = &quarantine {
                write_rejects(q, partition, &mut file_no, &mut rejects, Some(counts)).await?;
            }
            if let Some(progress) = &progress {
                progress.partition_done();
            }
            tracing::info!(
                source = %label, partition, rows = counts.read - counts.rejected, rejected = counts.rejected, "read partition"
            );
        };
        let stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecordBatch>> + Send>> = Box::pin(stream);
        Ok(Box::pin(async move { Ok(stream) }))
    }
}

/// Writes the rejects held (as file `file_no` of the partition) and, at the end, the counts.
async fn write_rejects(
    q: &Quarantine,
    partition: usize,
    file_no: &mut usize,
    rejects: &mut Vec<sluice_connectors::json::Reject>,
    counts: Option<Counts>,
) -> Result<()> {
    quarantine::write_partition(&q.store, &q.target, partition, *file_no, rejects, counts)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    rejects.clear();
    *file_no += 1;
    Ok(())
}

/// Whether `any` is a source file scan config, with its source.
pub fn as_source_scan(any: &dyn Any) -> Option<(&FileScanConfig, &SourceFiles)> {
    let config = any.downcast_ref::<FileScanConfig>()?;
    let source: &dyn Any = config.file_source().as_ref();
    Some((config, source.downcast_ref::<SourceFiles>()?))
}
