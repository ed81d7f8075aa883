//! A planned source read as a table.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::files::SourceFiles;
use super::plan::SourcePlan;

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
        // Only the columns the query needs are selected from the source.
        let partitions: Vec<usize> = (0..self.plan.partitions()).collect();
        Ok(SourceFiles::new(self.plan.clone(), projection.cloned())?.scan(&partitions))
    }
}
