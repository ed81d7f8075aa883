//! Committing a write: the Parquet files a job wrote under the asset become one new Delta
//! version, at once. Files of a write that never commits stay invisible until `vacuum`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::Schema;
use deltalake_core::DeltaTableError;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Add, MetadataExt, StructType};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, MergePredicate, SaveMode};
use futures::TryStreamExt;
use object_store::path::Path;
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use url::Url;

use super::lake::{DataFile, LINEAGE_KEY, Lake};
use super::schema::{evolve, to_delta};
use crate::error::{Error, Result};

/// How a write changes an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// The new version holds the earlier rows and the new ones.
    #[default]
    Append,
    /// The new version holds only the new rows.
    Overwrite,
    /// The new rows replace the earlier rows with the same key and the others are appended
    /// (an upsert; see the engine's merge).
    Merge,
}

impl WriteMode {
    /// The mode's name, as job files and lineage write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Overwrite => "overwrite",
            Self::Merge => "merge",
        }
    }
}

impl std::str::FromStr for WriteMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "append" => Ok(Self::Append),
            "overwrite" => Ok(Self::Overwrite),
            "merge" => Ok(Self::Merge),
            other => Err(Error::Config(format!("write mode '{other}' is not known; use append, overwrite or merge"))),
        }
    }
}

/// The files one write produced, before they are committed.
#[derive(Debug, Clone)]
pub struct NewFiles {
    /// The written data's schema, partition columns included.
    pub schema: Arc<Schema>,
    /// The partition columns (the folders `col=value/` the files are in).
    pub partition_by: Vec<String>,
    /// The files.
    pub files: Vec<DataFile>,
}

impl NewFiles {
    /// Rows in the new files.
    pub fn rows(&self) -> u64 {
        self.files.iter().filter_map(|f| f.num_records).sum()
    }
    /// Bytes in the new files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Commits that lost a race are rebuilt on the newer version and tried again this many times.
const MAX_ATTEMPTS: usize = 20;

impl Lake {
    /// Lists the Parquet files written under `prefix` (a folder inside asset `name`), with their
    /// partition values (from `col=value/` folders) and row counts (from their footers).
    #[allow(deprecated)] // ParquetObjectReader: the footer is all that is read
    pub async fn collect_written(&self, name: &str, prefix: &Url, partition_by: &[String]) -> Result<Vec<DataFile>> {
        let store = self.store();
        let dir = self.store_path(prefix)?;
        let metas: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::Asset(format!("asset '{name}': cannot list the files written to {prefix}: {e}")))?;
        let mut files = Vec::new();
        for meta in metas.into_iter().filter(|m| m.location.extension() == Some("parquet")) {
            let mut partition_values = BTreeMap::new();
            for part in meta.location.prefix_match(&dir).into_iter().flatten() {
                if let Some((col, value)) = part.as_ref().split_once('=')
                    && partition_by.iter().any(|p| p == col)
                {
                    let value = percent_decode(value);
                    let value = (value != "__HIVE_DEFAULT_PARTITION__").then_some(value);
                    partition_values.insert(col.to_string(), value);
                }
            }
            let reader = ParquetObjectReader::new(store.clone(), meta.location.clone()).with_file_size(meta.size);
            let footer = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(|e| {
                Error::Asset(format!("asset '{name}': written file {} is unreadable: {e}", meta.location))
            })?;
            files.push(DataFile {
                path: meta.location.to_string(),
                size: meta.size,
                partition_values,
                num_records: Some(footer.metadata().file_metadata().num_rows().max(0) as u64),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Commits `new` as one new version of asset `name` (creating the asset on its first
    /// write) and returns that version. `lineage` is stored with the commit. Concurrent writers
    /// never lose a commit: a commit that races another is rebuilt on the newer version.
    pub async fn commit(&self, name: &str, mode: WriteMode, new: &NewFiles, lineage: serde_json::Value) -> Result<u64> {
        let new_schema = to_delta(&new.schema)?;
        for col in &new.partition_by {
            if new_schema.field(col).is_none() {
                return Err(Error::Schema(format!("asset '{name}': partition column '{col}' is not in the data")));
            }
        }
        let table_path = self.store_path(&self.asset_url(name)?)?;
        let adds: Vec<Action> = new
            .files
            .iter()
            .map(|f| add_action(&table_path, f))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .map(Action::Add)
            .collect();
        let app_metadata = HashMap::from([(LINEAGE_KEY.to_string(), lineage)]);
        let mut last_error = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tracing::debug!(asset = name, attempt, "commit raced another writer; retrying on the newer version");
            }
            let result = match self.load(name, None).await? {
                None => self.create(name, &new_schema, new, adds.clone(), app_metadata.clone()).await,
                Some(table) => {
                    self.write_version(name, &table, mode, &new_schema, new, adds.clone(), app_metadata.clone()).await
                }
            };
            match result {
                Ok(version) => return Ok(version),
                Err(e) if is_race(&e) => last_error = Some(e),
                Err(e) => return Err(self.delta_error(name, e)),
            }
        }
        Err(Error::Asset(format!(
            "asset '{name}': gave up committing after {MAX_ATTEMPTS} attempts lost races with other writers ({}); \
             the written files stay invisible until `sluice asset vacuum {name}`",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// Commits `new` as version `base + 1` of asset `name`, removing the files `removed` (store
    /// paths of files of version `base`) in the same version: a merge's rewrite; with no `base`,
    /// as the asset's first version. None when another writer committed after `base` (or created
    /// the asset): the merge must be planned again on the newer version, whose rows may hold the
    /// same keys.
    pub async fn commit_replacing(
        &self,
        name: &str,
        base: Option<u64>,
        removed: &[String],
        new: &NewFiles,
        predicate: &str,
        lineage: serde_json::Value,
    ) -> Result<Option<u64>> {
        let clause = |action: &str| MergePredicate { action_type: action.into(), predicate: None };
        let operation = DeltaOperation::Merge {
            predicate: Some(predicate.to_string()),
            merge_predicate: Some(predicate.to_string()),
            matched_predicates: vec![clause("update")],
            not_matched_predicates: vec![clause("insert")],
            not_matched_by_source_predicates: Vec::new(),
        };
        let new_schema = to_delta(&new.schema)?;
        let table_path = self.store_path(&self.asset_url(name)?)?;
        let mut actions: Vec<Action> = new
            .files
            .iter()
            .map(|f| add_action(&table_path, f).map(Action::Add))
            .collect::<Result<Vec<_>>>()?;
        let Some(base) = base else {
            let app_metadata = HashMap::from([(LINEAGE_KEY.to_string(), lineage)]);
            return match self.create(name, &new_schema, new, actions, app_metadata).await {
                Ok(version) => Ok(Some(version)),
                Err(e) if is_race(&e) => Ok(None),
                Err(e) => Err(self.delta_error(name, e)),
            };
        };
        let table = self.load(name, Some(base)).await?.ok_or_else(|| {
            Error::Asset(format!("asset '{name}' has no version {base} to merge into"))
        })?;
        let result = async {
            let snapshot = table.snapshot()?;
            let current: Vec<String> = snapshot.metadata().partition_columns().to_vec();
            if current != new.partition_by {
                return Err(DeltaTableError::Generic(format!(
                    "the asset is partitioned by [{}] but this write by [{}]; write with the same partition columns",
                    current.join(", "),
                    new.partition_by.join(", ")
                )));
            }
            let schema_error = |e: Error| DeltaTableError::Generic(e.to_string());
            if let Some(grown) = evolve(name, &snapshot.schema(), &new_schema).map_err(schema_error)? {
                actions.push(Action::Metadata(snapshot.metadata().clone().with_schema(&grown)?));
            }
            let wanted: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
            let removes: Vec<Action> = table
                .get_active_add_actions_by_predicate(None)
                .try_filter(|view| {
                    let path = table_path.parts().chain(view.object_store_path().parts()).collect::<Path>().to_string();
                    futures::future::ready(wanted.contains(path.as_str()))
                })
                .map_ok(|f| Action::Remove(f.remove_action(true)))
                .try_collect()
                .await?;
            if removes.len() != wanted.len() {
                return Err(DeltaTableError::Generic(format!(
                    "{} of the {} files to replace are not in version {base}",
                    wanted.len() - removes.len(),
                    wanted.len()
                )));
            }
            actions.extend(removes);
            let committed = CommitBuilder::from(CommitProperties::default().with_max_retries(0))
                .with_actions(actions)
                .with_app_metadata(HashMap::from([(LINEAGE_KEY.to_string(), lineage)]))
                .build(Some(snapshot), table.log_store(), operation)
                .await?;
            Ok(committed.version())
        }
        .await;
        match result {
            Ok(version) => Ok(Some(version)),
            Err(e) if is_race(&e) => Ok(None),
            Err(e) => Err(self.delta_error(name, e)),
        }
    }

    async fn create(
        &self,
        name: &str,
        schema: &StructType,
        new: &NewFiles,
        adds: Vec<Action>,
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> std::result::Result<u64, DeltaTableError> {
        let table = self.table(name).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let created = CreateBuilder::new()
            .with_log_store(table.log_store())
            .with_table_name(name)
            .with_columns(schema.fields().cloned())
            .with_partition_columns(new.partition_by.clone())
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_actions(adds)
            .with_commit_properties(CommitProperties::default().with_metadata(app_metadata))
            .await?;
        Ok(created.version().unwrap_or_default())
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_version(
        &self,
        name: &str,
        table: &deltalake_core::DeltaTable,
        mode: WriteMode,
        new_schema: &StructType,
        new: &NewFiles,
        mut actions: Vec<Action>,
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> std::result::Result<u64, DeltaTableError> {
        let snapshot = table.snapshot()?;
        let current: Vec<String> = snapshot.metadata().partition_columns().to_vec();
        if current != new.partition_by {
            return Err(DeltaTableError::Generic(format!(
                "the asset is partitioned by [{}] but this write by [{}]; write with the same partition columns, \
                 or to a new asset",
                current.join(", "),
                new.partition_by.join(", ")
            )));
        }
        let schema_error = |e: Error| DeltaTableError::Generic(e.to_string());
        if let Some(grown) = evolve(name, &snapshot.schema(), new_schema).map_err(schema_error)? {
            actions.push(Action::Metadata(snapshot.metadata().clone().with_schema(&grown)?));
        }
        if mode == WriteMode::Overwrite {
            let removes: Vec<Action> = table
                .get_active_add_actions_by_predicate(None)
                .map_ok(|f| Action::Remove(f.remove_action(true)))
                .try_collect()
                .await?;
            actions.extend(removes);
        }
        let operation = DeltaOperation::Write {
            mode: match mode {
                WriteMode::Append | WriteMode::Merge => SaveMode::Append,
                WriteMode::Overwrite => SaveMode::Overwrite,
            },
            partition_by: (!new.partition_by.is_empty()).then(|| new.partition_by.clone()),
            predicate: None,
        };
        let committed = CommitBuilder::default()
            .with_actions(actions)
            .with_app_metadata(app_metadata)
            .build(Some(snapshot), table.log_store(), operation)
            .await?;
        Ok(committed.version())
    }
}

/// Whether a failed commit lost a race with another writer (and is worth rebuilding).
fn is_race(e: &DeltaTableError) -> bool {
    match e {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => {
            matches!(source, TransactionError::CommitConflict(_) | TransactionError::MaxCommitAttempts(_))
        }
        DeltaTableError::Generic(msg) => msg.contains("already exists"),
        other => other.to_string().contains("already exists"),
    }
}

fn add_action(table_path: &Path, file: &DataFile) -> Result<Add> {
    let path = Path::from(file.path.as_str());
    let relative: Vec<_> = path
        .prefix_match(table_path)
        .ok_or_else(|| Error::Asset(format!("file {} is not inside the asset at {table_path}", file.path)))?
        .collect();
    let relative = relative.iter().map(|p| p.as_ref()).collect::<Vec<_>>().join("/");
    let stats = serde_json::json!({ "numRecords": file.num_records.unwrap_or_default() });
    Ok(Add {
        path: relative,
        partition_values: file.partition_values.clone().into_iter().collect(),
        size: i64::try_from(file.size).unwrap_or(i64::MAX),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats.to_string()),
        ..Default::default()
    })
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
