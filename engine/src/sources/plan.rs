//! A source read planned on the client: what every partition read needs, for each kind.

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use sluice_connectors::mysql::MysqlPlan;
use sluice_connectors::postgres::PostgresPlan;

/// A source read planned on the client; serialised into plans as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SourcePlan {
    /// PostgreSQL partition reads.
    Postgres(PostgresPlan),
    /// MySQL / MariaDB partition reads.
    Mysql(MysqlPlan),
}

impl SourcePlan {
    /// The rows' schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Self::Postgres(p) => p.schema(),
            Self::Mysql(p) => p.schema(),
        }
    }
    /// The kind of source (`postgres`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
        }
    }
    /// The source's name and table, for file paths and logs.
    pub fn label(&self) -> String {
        match self {
            Self::Postgres(p) => format!("{}.{}", p.source, p.label),
            Self::Mysql(p) => format!("{}.{}", p.source, p.label),
        }
    }
    /// Streams partition `partition`, with the columns in `projection` (all when None).
    pub fn read_partition(
        &self,
        partition: usize,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> futures::stream::BoxStream<'static, sluice_connectors::Result<arrow::array::RecordBatch>> {
        use futures::StreamExt;
        match self {
            Self::Postgres(p) => {
                sluice_connectors::postgres::read_partition(p.clone(), partition, projection, batch_rows).boxed()
            }
            Self::Mysql(p) => {
                sluice_connectors::mysql::read_partition(p.clone(), partition, projection, batch_rows).boxed()
            }
        }
    }

    /// Parallel reads.
    pub fn partitions(&self) -> usize {
        match self {
            Self::Postgres(p) => p.partitions.len(),
            Self::Mysql(p) => p.partitions.len(),
        }
    }
    /// What lineage records as the input.
    pub fn lineage(&self) -> String {
        match self {
            Self::Postgres(p) => p.lineage(),
            Self::Mysql(p) => p.lineage(),
        }
    }
    /// The watermark the next run starts from, when the read is incremental.
    pub fn next_watermark(&self) -> Option<(String, Option<String>)> {
        match self {
            Self::Postgres(p) => p.watermark.as_ref().map(|w| (w.column.clone(), w.upto.clone())),
            Self::Mysql(p) => p.watermark.as_ref().map(|(column, _, upto)| (column.clone(), upto.clone())),
        }
    }
}
