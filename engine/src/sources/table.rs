//! A planned source read as a table.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use sluice_connectors::quarantine::QuarantineTarget;

use super::files::{Quarantine, SourceFiles};
use super::plan::SourcePlan;

/// A table over a planned source read.
#[derive(Debug)]
pub struct SourceTable {
    plan: SourcePlan,
    quarantine: Option<QuarantineTarget>,
    schema: SchemaRef,
}

impl SourceTable {
    /// The table of `plan`; records it rejects go to `quarantine` (without one they fail the read).
    pub fn new(plan: SourcePlan, quarantine: Option<QuarantineTarget>) -> Self {
        let schema = plan.schema();
        Self { plan, quarantine, schema }
    }

    /// The planned read.
    pub fn plan(&self) -> &SourcePlan {
        &self.plan
    }

    /// Where rejected records go.
    pub fn quarantine(&self) -> Option<&QuarantineTarget> {
        self.quarantine.as_ref()
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
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Only the columns the query needs are selected from the source.
        let partitions: Vec<usize> = (0..self.plan.partitions()).collect();
        let quarantine = match &self.quarantine {
            Some(target) => Some(Quarantine::resolve(target.clone(), state.runtime_env())?),
            None => None,
        };
        Ok(SourceFiles::new(self.plan.clone(), projection.cloned(), quarantine)?.scan(&partitions))
    }
}
