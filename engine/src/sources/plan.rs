//! A source read planned on the client: what every partition read needs, for each kind.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::StreamExt;
use futures::stream::BoxStream;
use datafusion::object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use sluice_connectors::files::FilesPlan;
use sluice_connectors::json::Reject;
use sluice_connectors::mysql::MysqlPlan;
use sluice_connectors::postgres::PostgresPlan;
use sluice_connectors::relational::Dialect;
use sluice_connectors::rest::RestPlan;

/// A source read planned on the client; serialised into plans as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one per source, made once
pub enum SourcePlan {
    /// PostgreSQL partition reads.
    Postgres(PostgresPlan),
    /// MySQL / MariaDB partition reads.
    Mysql(MysqlPlan),
    /// Files (NDJSON, CSV, binary), in pieces.
    Files(FilesPlan),
    /// Pages of a REST/JSON API.
    Rest(RestPlan),
}

/// Part of a partition's read: the rows that landed, the records rejected, and how many
/// records that was in all.
#[derive(Debug)]
pub struct ReadChunk {
    /// Rows (None when every record of the chunk was rejected).
    pub batch: Option<RecordBatch>,
    /// Records that could not be parsed or typed.
    pub rejects: Vec<Reject>,
    /// Records read (rows + rejects).
    pub read: u64,
}

impl SourcePlan {
    /// The rows' schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Self::Postgres(p) => p.schema(),
            Self::Mysql(p) => p.schema(),
            Self::Files(p) => p.schema(),
            Self::Rest(p) => p.schema(),
        }
    }
    /// The kind of source (`postgres`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
            Self::Files(p) => p.kind(),
            Self::Rest(_) => "rest",
        }
    }
    /// The source's name and table, for file paths and logs.
    pub fn label(&self) -> String {
        match self {
            Self::Postgres(p) => format!("{}.{}", p.source, p.label),
            Self::Mysql(p) => format!("{}.{}", p.source, p.label),
            Self::Files(p) => p.source.clone(),
            Self::Rest(p) => p.source.clone(),
        }
    }
    /// The object store the read needs on the executors (files sources).
    pub fn store_url(&self) -> ObjectStoreUrl {
        match self {
            Self::Files(p) => ObjectStoreUrl::parse(&p.store_url).unwrap_or_else(|_| ObjectStoreUrl::local_filesystem()),
            _ => ObjectStoreUrl::local_filesystem(),
        }
    }
    /// Streams partition `partition`, with the columns in `projection` (all when None); files
    /// come from `store`.
    pub fn read_partition(
        &self,
        partition: usize,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
        store: Arc<dyn ObjectStore>,
    ) -> BoxStream<'static, sluice_connectors::Result<ReadChunk>> {
        let rows = |batch: sluice_connectors::Result<RecordBatch>| {
            batch.map(|b| ReadChunk { read: b.num_rows() as u64, batch: Some(b), rejects: Vec::new() })
        };
        match self {
            Self::Postgres(p) => {
                sluice_connectors::postgres::read_partition(p.clone(), partition, projection, batch_rows).map(rows).boxed()
            }
            Self::Mysql(p) => {
                sluice_connectors::mysql::read_partition(p.clone(), partition, projection, batch_rows).map(rows).boxed()
            }
            Self::Rest(p) => sluice_connectors::rest::read_partition(p.clone(), partition)
                .map(move |decoded| project(decoded, projection.as_deref()))
                .boxed(),
            Self::Files(p) => sluice_connectors::files::read_partition(p.clone(), store, partition, batch_rows, projection)
                .map(|decoded| decoded.map(|(decoded, read)| ReadChunk { batch: decoded.batch, rejects: decoded.rejects, read }))
                .boxed(),
        }
    }

    /// Parallel reads.
    pub fn partitions(&self) -> usize {
        match self {
            Self::Postgres(p) => p.partitions.len(),
            Self::Mysql(p) => p.partitions.len(),
            Self::Files(p) => p.partitions.len(),
            Self::Rest(p) => p.partitions,
        }
    }
    /// What lineage records as the input.
    pub fn lineage(&self) -> String {
        match self {
            Self::Postgres(p) => p.lineage(),
            Self::Mysql(p) => p.lineage(),
            Self::Files(p) => p.lineage(),
            Self::Rest(p) => p.lineage(),
        }
    }
    /// The condition sent to the source for `filter`, when the source takes conditions and this
    /// one can be sent (see [`super::pushdown`]).
    pub fn filter_sql(&self, filter: &datafusion::logical_expr::Expr) -> Option<String> {
        match self {
            Self::Postgres(p) => super::pushdown::to_sql(filter, Dialect::Postgres, &|c| p.filter_class(c)),
            Self::Mysql(p) => super::pushdown::to_sql(filter, Dialect::Mysql, &|c| p.filter_class(c)),
            Self::Files(_) | Self::Rest(_) => None,
        }
    }

    /// The plan with the conditions of `filters` that can be sent to the source sent.
    pub fn with_filters(mut self, filters: &[datafusion::logical_expr::Expr]) -> Self {
        let sent: Vec<String> = filters.iter().filter_map(|f| self.filter_sql(f)).collect();
        let condition = (!sent.is_empty()).then(|| sent.join(" AND "));
        match &mut self {
            Self::Postgres(p) => p.filter = condition,
            Self::Mysql(p) => p.filter = condition,
            Self::Files(_) | Self::Rest(_) => {}
        }
        self
    }

    /// The watermark the next run starts from, when the read is incremental.
    pub fn next_watermark(&self) -> Option<(String, Option<String>)> {
        match self {
            Self::Postgres(p) => p.watermark.as_ref().map(|w| (w.column.clone(), w.upto.clone())),
            Self::Mysql(p) => p.watermark.as_ref().map(|(column, _, upto)| (column.clone(), upto.clone())),
            Self::Files(_) => None,
            Self::Rest(p) => p.read.incremental.as_ref().map(|i| (i.field.clone(), p.upto.clone())),
        }
    }
}

/// Records decoded as the query's columns: every column is decoded (so a record's fate does not
/// depend on the query), then only the query's are kept.
fn project(
    decoded: sluice_connectors::Result<(sluice_connectors::json::Decoded, u64)>,
    projection: Option<&[usize]>,
) -> sluice_connectors::Result<ReadChunk> {
    let (decoded, read) = decoded?;
    let batch = match (decoded.batch, projection) {
        (Some(b), Some(p)) => Some(
            b.project(p).map_err(|e| sluice_connectors::Error::Schema(format!("projecting decoded records: {e}")))?,
        ),
        (batch, _) => batch,
    };
    Ok(ReadChunk { batch, rejects: decoded.rejects, read })
}
