//! A planned source read as a table.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::TableProviderFilterPushDown;
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
    progress: Option<String>,
}

impl SourceTable {
    /// The table of `plan`; records it rejects go to `quarantine` (without one they fail the read).
    pub fn new(plan: SourcePlan, quarantine: Option<QuarantineTarget>) -> Self {
        let schema = plan.schema();
        Self { plan, quarantine, schema, progress: None }
    }

    /// The table, its reads counted into `progress` (see [`super::progress::track`]).
    pub fn with_progress(self, key: String) -> Self {
        Self { progress: Some(key), ..self }
    }

    /// The planned read.
    pub fn plan(&self) -> &SourcePlan {
        &self.plan
    }

    /// The key of the progress counter its reads count into.
    pub fn progress(&self) -> Option<&String> {
        self.progress.as_ref()
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

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: DataFusion checks the rows again, so the source may return more, never fewer.
        Ok(filters
            .iter()
            .map(|f| match self.plan.filter_sql(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Only the columns the query needs are selected from the source.
        let partitions: Vec<usize> = (0..self.plan.partitions()).collect();
        let quarantine = match &self.quarantine {
            Some(target) => Some(Quarantine::resolve(target.clone(), state.runtime_env())?),
            None => None,
        };
        let plan = self.plan.clone().with_filters(filters);
        let files = SourceFiles::new(plan, projection.cloned(), quarantine)?.with_progress(self.progress.clone());
        Ok(files.scan(&partitions))
    }
}
