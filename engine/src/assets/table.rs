//! An asset version as a DataFusion table: a Parquet scan of exactly that version's files.
//!
//! The file list is resolved once, on the client at planning time, and travels with the plan
//! (see [`super::codec`]), so the scheduler and executors read the version the client pinned
//! without reading the Delta log again.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use serde::{Deserialize, Serialize};
use sluice_lake::delta::{AssetVersion, DataFile};

use crate::profile::{ProfileExec, ProfileSpec};

/// What a scan of one asset version needs; serialised into the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetScan {
    /// The asset's name.
    pub name: String,
    /// The pinned version.
    pub version: u64,
    /// `scheme://authority` of the object store holding the files.
    pub store_url: String,
    /// Partition columns (last in the table's schema).
    pub partition_columns: Vec<String>,
    /// The files of the version.
    pub files: Vec<DataFile>,
    /// Columns to sketch while they are read (a scoring run's inputs and outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSpec>,
}

/// A table over one asset version.
#[derive(Debug)]
pub struct AssetTable {
    scan: AssetScan,
    /// Data columns, then partition columns.
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
}

impl AssetTable {
    /// The table of a resolved asset version.
    pub fn new(version: &AssetVersion) -> datafusion::error::Result<Self> {
        let data = version.schema.fields().iter().filter(|f| !version.partition_columns.contains(f.name()));
        let parts = version.partition_columns.iter().map(|p| version.schema.field_with_name(p).cloned());
        let mut fields: Vec<_> = data.map(|f| f.as_ref().clone()).collect();
        for part in parts {
            fields.push(part?);
        }
        let scan = AssetScan {
            name: version.name.clone(),
            version: version.version,
            store_url: version.store_url.to_string(),
            partition_columns: version.partition_columns.clone(),
            files: version.files.clone(),
            profile: None,
        };
        Self::from_scan(scan, Arc::new(Schema::new(fields)))
    }

    /// Rebuilds the table from its serialised scan and its schema (data columns, then
    /// partition columns), as the plan carries them.
    pub fn from_scan(scan: AssetScan, schema: SchemaRef) -> datafusion::error::Result<Self> {
        let n_data = schema.fields().len().checked_sub(scan.partition_columns.len()).ok_or_else(|| {
            DataFusionError::Internal(format!("asset {}: schema shorter than its partition columns", scan.name))
        })?;
        let file_schema = Arc::new(Schema::new(schema.fields()[..n_data].to_vec()));
        let partition_fields = schema.fields()[n_data..].to_vec();
        Ok(Self { scan, schema, file_schema, partition_fields })
    }

    /// The same table, sketching `spec`'s columns as they are read (see [`crate::profile`]).
    pub fn with_profile(mut self, spec: ProfileSpec) -> Self {
        self.scan.profile = Some(spec);
        self
    }

    /// The serialisable part.
    pub fn scan_spec(&self) -> &AssetScan {
        &self.scan
    }

    /// `name@version`, as lineage records it.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.scan.name, self.scan.version)
    }

    /// The files whose partition values can satisfy `filters` (those on partition columns
    /// only); every file when no filter applies or pruning cannot be evaluated.
    fn prune<'a>(&'a self, state: &dyn Session, filters: &[Expr]) -> Vec<&'a DataFile> {
        let all: Vec<&DataFile> = self.scan.files.iter().collect();
        let names: Vec<&str> = self.partition_fields.iter().map(|f| f.name().as_str()).collect();
        let applicable: Vec<&Expr> = filters
            .iter()
            .filter(|f| {
                let cols = f.column_refs();
                !cols.is_empty() && cols.iter().all(|c| names.contains(&c.name.as_str()))
            })
            .collect();
        if applicable.is_empty() {
            return all;
        }
        match self.partition_mask(state, &applicable) {
            Ok(mask) => all.into_iter().zip(mask).filter_map(|(f, keep)| keep.then_some(f)).collect(),
            Err(e) => {
                tracing::debug!(asset = %self.scan.name, error = %e, "partition pruning skipped");
                all
            }
        }
    }

    /// Evaluates `filters` on one row of partition values per file.
    fn partition_mask(&self, state: &dyn Session, filters: &[&Expr]) -> datafusion::error::Result<Vec<bool>> {
        let n = self.scan.files.len();
        let mut columns = Vec::new();
        for (i, field) in self.partition_fields.iter().enumerate() {
            let values = self
                .scan
                .files
                .iter()
                .map(|file| self.partitioned_file(file).map(|pf| pf.partition_values[i].clone()))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let array = ScalarValue::iter_to_array(values)?;
            columns.push(arrow::compute::cast(&array, field.data_type())?);
        }
        let schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(schema)?;
        let mut mask = vec![true; n];
        for filter in filters {
            let expr = state.create_physical_expr((*filter).clone(), &df_schema)?;
            let result = expr.evaluate(&batch)?.into_array(n)?;
            let result = result
                .as_boolean_opt()
                .ok_or_else(|| DataFusionError::Internal("partition filter is not boolean".into()))?;
            for (i, keep) in mask.iter_mut().enumerate() {
                *keep &= result.is_valid(i) && result.value(i);
            }
        }
        Ok(mask)
    }

    fn partitioned_file(&self, file: &DataFile) -> datafusion::error::Result<PartitionedFile> {
        let mut pf = PartitionedFile::new(file.path.clone(), file.size);
        pf.partition_values = self
            .partition_fields
            .iter()
            .map(|field| match file.partition_values.get(field.name()).cloned().flatten() {
                Some(text) => ScalarValue::try_from_string(text, field.data_type()),
                None => ScalarValue::try_from(field.data_type()),
            })
            .collect::<datafusion::error::Result<_>>()?;
        Ok(pf)
    }
}

#[async_trait]
impl TableProvider for AssetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Filters stay above the scan: those on partition columns also prune files here, the
        // rest are pushed into the Parquet reader by the physical optimizer (row groups and
        // pages pruned by statistics).
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let files = self.prune(state, filters);
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let table_schema = TableSchemaBuilder::new(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = format.file_source(table_schema);
        let groups = state.config().target_partitions().clamp(1, files.len());
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        let mut by_size = files;
        by_size.sort_by_key(|f| std::cmp::Reverse(f.size));
        let mut group_bytes = vec![0u64; groups];
        for file in by_size {
            // Largest first into the lightest group: groups of similar size.
            let lightest = (0..groups).min_by_key(|&g| group_bytes[g]).unwrap_or(0);
            group_bytes[lightest] += file.size;
            file_groups[lightest].push(self.partitioned_file(file)?);
        }
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(&self.scan.store_url)?, source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        let scan = format.create_physical_plan(state, config).await?;
        Ok(match &self.scan.profile {
            Some(spec) => Arc::new(ProfileExec::over_scan(scan, spec.clone())),
            None => scan,
        })
    }
}
