//! A planned source read as a table.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use sluice_connectors::mysql::MysqlPlan;
use sluice_connectors::postgres::PostgresPlan;

use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;

use super::files::SourceFiles;

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

/// A table over a planned source read.
#[derive(Debug)]
pub struct SourceTable {
    plan: SourcePlan,
    schema: SchemaRef,
}

impl SourceTable {
    /// The table of `plan`.
    pub fn new(plan: SourcePlan) -> Self {
        let schema = plan.schema();
        Self { plan, schema }
    }

    /// The planned read.
    pub fn plan(&self) -> &SourcePlan {
        &self.plan
    }
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let partitions: Vec<usize> = (0..self.plan.partitions()).collect();
        let scan = SourceFiles::new(self.plan.clone()).scan(&partitions);
        match projection {
            None => Ok(scan),
            Some(columns) => {
                let exprs = columns
                    .iter()
                    .map(|&i| {
                        let name = self.schema.field(i).name().clone();
                        (Arc::new(Column::new(&name, i)) as Arc<dyn datafusion::physical_expr::PhysicalExpr>, name)
                    })
                    .collect::<Vec<_>>();
                Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
            }
        }
    }
}
