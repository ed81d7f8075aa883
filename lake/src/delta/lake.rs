//! The assets location of a lake: open, list, resolve, tag and vacuum Delta tables in it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake_core::logstore::{StorageConfig, default_logstore};
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use super::names::{AssetRef, At, check_name};
use crate::datastore::Datastore;
use crate::error::{Error, Result};

/// Where a lake keeps its assets, and the object store that reaches it.
#[derive(Clone)]
pub struct Lake {
    /// The assets root, ending with `/`; asset `a` is the Delta table at `<root>a/`.
    root: Url,
    /// `scheme://authority` of the object store (`file:///` for local directories), as
    /// registered in every session.
    store_url: Url,
    /// The store, rooted at `store_url`.
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("root", &self.root.as_str()).finish()
    }
}

/// One data file of an asset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path inside the object store (not the table), as DataFusion's object-store paths are.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Values of the partition columns (Delta's string form; None is NULL).
    pub partition_values: BTreeMap<String, Option<String>>,
    /// Rows in the file, where the log records it.
    pub num_records: Option<u64>,
}

/// A resolved asset version: what a reader scans.
#[derive(Debug, Clone)]
pub struct AssetVersion {
    /// The asset's name.
    pub name: String,
    /// The Delta version.
    pub version: u64,
    /// The table's location.
    pub url: Url,
    /// `scheme://authority` of its object store.
    pub store_url: Url,
    /// All columns, in the asset's order (partition columns included).
    pub schema: SchemaRef,
    /// The partition columns.
    pub partition_columns: Vec<String>,
    /// The data files of this version.
    pub files: Vec<DataFile>,
}

impl AssetVersion {
    /// Rows in this version (files without a count count as zero).
    pub fn rows(&self) -> u64 {
        self.files.iter().filter_map(|f| f.num_records).sum()
    }
    /// Bytes of data in this version.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// One line of `sluice asset list`.
#[derive(Debug, Clone, Serialize)]
pub struct AssetSummary {
    /// The asset's name.
    pub name: String,
    /// Its latest version.
    pub version: u64,
    /// Rows in the latest version.
    pub rows: u64,
    /// Data files in the latest version.
    pub files: usize,
    /// Bytes in the latest version.
    pub bytes: u64,
    /// Tags and the versions they point at.
    pub tags: BTreeMap<String, u64>,
}

/// One version in an asset's history, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// The Delta version.
    pub version: u64,
    /// Commit time, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// What made it (`WRITE`, `CREATE TABLE`, `VACUUM END`, ...).
    pub operation: String,
    /// The lineage Sluice recorded with the commit (job run, inputs, row counts).
    pub lineage: Option<serde_json::Value>,
}

/// What `vacuum` removed (or would remove, on a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    /// Whether nothing was deleted.
    pub dry_run: bool,
    /// Files deleted (or to delete), inside the table.
    pub files: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct TagFile {
    version: u64,
}

/// Key of Sluice's lineage in a commit's `commitInfo`.
pub(crate) const LINEAGE_KEY: &str = "sluice";

impl Lake {
    /// A lake whose assets live at `root` in `store` (rooted at `store_url`).
    pub fn new(root: &Url, store_url: Url, store: Arc<dyn ObjectStore>) -> Self {
        let mut root = root.clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        Self { root, store_url, store }
    }

    /// Opens the assets location `location`: the name of a datastore (its URL), a URL inside one
    /// of `datastores`, a `file://` URL or a local directory.
    pub fn open(location: &str, datastores: &[Datastore]) -> Result<Self> {
        if let Some(ds) = datastores.iter().find(|d| d.name == location) {
            return Self::in_datastore(&ds.url, ds);
        }
        if let Ok(url) = Url::parse(location)
            && url.scheme() != "file"
            && url.scheme().len() > 1
        {
            let ds = datastores
                .iter()
                .find(|d| d.url.scheme() == url.scheme() && d.url.authority() == url.authority())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "assets location '{location}' is not inside any datastore of the workspace; add one for it \
                         ([datastores.NAME] url = \"{}://{}\" and its credentials) or name a datastore",
                        url.scheme(),
                        url.authority()
                    ))
                })?;
            return Self::in_datastore(&url, ds);
        }
        let dir = match Url::parse(location) {
            Ok(url) if url.scheme() == "file" => url
                .to_file_path()
                .map_err(|()| Error::Config(format!("assets location '{location}' is not a local path")))?,
            _ => std::path::PathBuf::from(location),
        };
        // Not created here: local stores create folders as files are written.
        let dir = match dir.canonicalize() {
            Ok(dir) => dir,
            Err(_) => std::path::absolute(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?,
        };
        let root = Url::from_directory_path(&dir)
            .map_err(|()| Error::Config(format!("assets location '{}' is not an absolute path", dir.display())))?;
        Ok(Self::new(&root, local_store_url()?, Arc::new(LocalFileSystem::new())))
    }

    fn in_datastore(url: &Url, ds: &Datastore) -> Result<Self> {
        match &ds.store {
            Some((store_url, store)) => Ok(Self::new(url, store_url.clone(), store.clone())),
            None => Self::open(url.as_str(), &[]),
        }
    }

    /// The assets root.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// `scheme://authority` of the object store holding the assets.
    pub fn store_url(&self) -> &Url {
        &self.store_url
    }

    /// The object store holding the assets (rooted at [`Lake::store_url`]).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Where asset `name` lives.
    pub fn asset_url(&self, name: &str) -> Result<Url> {
        check_name(name, "asset name")?;
        self.root.join(&format!("{name}/")).map_err(|e| Error::Asset(format!("asset '{name}': {e}")))
    }

    /// The path inside the object store of a URL in this lake.
    pub fn store_path(&self, url: &Url) -> Result<Path> {
        let mut path = url.path().trim_start_matches('/').to_string();
        // `https://ACCOUNT.blob.core.windows.net/container/...`: the store is the container's.
        if url.scheme() == "https" {
            path = path.split_once('/').map(|(_, rest)| rest.to_string()).unwrap_or_default();
        }
        Path::from_url_path(&path).map_err(|e| Error::Asset(format!("'{url}' is not a valid object path: {e}")))
    }

    /// The Delta table of asset `name` (its log not yet read).
    pub(crate) fn table(&self, name: &str) -> Result<DeltaTable> {
        let location = self.asset_url(name)?;
        let config = StorageConfig::default();
        let prefixed = object_store::prefix::PrefixStore::new(self.store.clone(), self.store_path(&location)?);
        let log_store = default_logstore(Arc::new(prefixed), self.store.clone(), &location, &config);
        Ok(DeltaTable::new(log_store))
    }

    /// The Delta table of asset `name` at `version` (latest when None), or None when there is
    /// no asset of that name.
    pub(crate) async fn load(&self, name: &str, version: Option<u64>) -> Result<Option<DeltaTable>> {
        if !self.has_log(name).await? {
            return Ok(None);
        }
        let mut table = self.table(name)?;
        let loaded = match version {
            None => table.load().await,
            Some(v) => table.load_version(v).await,
        };
        match loaded {
            Ok(()) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) if version.is_some() => {
                let latest = Box::pin(self.load(name, None)).await?.and_then(|t| t.version());
                match (latest, version) {
                    (Some(latest), Some(v)) if v > latest => Err(Error::Asset(format!(
                        "asset '{name}' has versions 0 to {latest}; version {v} does not exist"
                    ))),
                    (None, _) => Ok(None),
                    _ => Err(self.delta_error(name, e)),
                }
            }
            Err(e) => Err(self.delta_error(name, e)),
        }
    }

    pub(crate) fn delta_error(&self, name: &str, e: DeltaTableError) -> Error {
        Error::Asset(format!("asset '{name}' at {}: {e}", self.root))
    }

    fn missing(&self, name: &str) -> Error {
        Error::Asset(format!(
            "asset '{name}' does not exist in {}; `sluice asset list` shows the assets there",
            self.root
        ))
    }

    /// Whether asset `name` exists (has a committed version).
    pub async fn exists(&self, name: &str) -> Result<bool> {
        self.has_log(name).await
    }

    /// Whether asset `name` has a Delta log (one listing request).
    async fn has_log(&self, name: &str) -> Result<bool> {
        let log = self.store_path(&self.asset_url(name)?)?.join("_delta_log");
        match self.store.list_with_delimiter(Some(&log)).await {
            Ok(listing) => Ok(!listing.objects.is_empty()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::Asset(format!("asset '{name}': cannot read {}: {e}", self.root))),
        }
    }

    /// Resolves `asset` (`name`, `name@7`, `name@tag`) to the files of that version.
    pub async fn resolve(&self, asset: &AssetRef) -> Result<AssetVersion> {
        let version = match &asset.at {
            At::Latest => None,
            At::Version(v) => Some(*v),
            At::Tag(tag) => Some(self.tag_version(&asset.name, tag).await?),
        };
        let table = self.load(&asset.name, version).await?.ok_or_else(|| self.missing(&asset.name))?;
        self.version_of(&asset.name, &table).await
    }

    async fn version_of(&self, name: &str, table: &DeltaTable) -> Result<AssetVersion> {
        let err = |e| self.delta_error(name, e);
        let snapshot = table.snapshot().map_err(err)?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| Error::Asset(format!("asset '{name}': its schema has no Arrow form: {e}")))?;
        let url = self.asset_url(name)?;
        let table_path = self.store_path(&url)?;
        let files = table
            .get_active_add_actions_by_predicate(None)
            .map_ok(|view| DataFile {
                path: table_path.parts().chain(view.object_store_path().parts()).collect::<Path>().to_string(),
                size: u64::try_from(view.size()).unwrap_or_default(),
                partition_values: view.partition_values_map().into_iter().collect(),
                num_records: view.num_records().map(|n| n as u64),
            })
            .try_collect::<Vec<_>>()
            .await
            .map_err(err)?;
        Ok(AssetVersion {
            name: name.to_string(),
            version: snapshot.version(),
            url,
            store_url: self.store_url.clone(),
            schema: Arc::new(schema),
            partition_columns: snapshot.metadata().partition_columns().to_vec(),
            files,
        })
    }

    /// Every asset in the lake with its latest version, by name.
    pub async fn list(&self) -> Result<Vec<AssetSummary>> {
        let root = self.store_path(&self.root)?;
        let listing = match self.store.list_with_delimiter(Some(&root)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::Asset(format!("cannot list assets in {}: {e}", self.root))),
        };
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename() else { continue };
            if check_name(name, "asset").is_err() {
                continue;
            }
            let Some(table) = self.load(name, None).await? else { continue };
            let v = self.version_of(name, &table).await?;
            out.push(AssetSummary {
                name: name.to_string(),
                version: v.version,
                rows: v.rows(),
                files: v.files.len(),
                bytes: v.bytes(),
                tags: self.tags(name).await?,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The history of asset `name`, newest first (at most `limit` versions).
    pub async fn history(&self, name: &str, limit: Option<usize>) -> Result<Vec<VersionInfo>> {
        let table = self.load(name, None).await?.ok_or_else(|| self.missing(name))?;
        let latest = table.version().unwrap_or_default();
        let infos: Vec<_> = table.history(limit).try_collect().await.map_err(|e| self.delta_error(name, e))?;
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| VersionInfo {
                version: latest.saturating_sub(i as u64),
                timestamp_ms: info.timestamp,
                operation: info.operation.clone().unwrap_or_default(),
                lineage: info.info.get(LINEAGE_KEY).cloned(),
            })
            .collect())
    }

    fn tag_path(&self, name: &str, tag: Option<&str>) -> Result<Path> {
        let base = self.store_path(&self.asset_url(name)?)?.join("_sluice").join("tags");
        Ok(match tag {
            Some(tag) => base.join(tag),
            None => base,
        })
    }

    /// Points `tag` of asset `name` at `version` (the latest when None); returns the version.
    pub async fn tag(&self, name: &str, tag: &str, version: Option<u64>) -> Result<u64> {
        check_name(tag, "tag")?;
        if tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Asset(format!("tag '{tag}' would read as a version number; start it with a letter")));
        }
        let table = self.load(name, version).await?.ok_or_else(|| self.missing(name))?;
        let version = table.version().unwrap_or_default();
        let body = serde_json::to_vec(&TagFile { version }).map_err(|e| Error::Asset(e.to_string()))?;
        self.store
            .put(&self.tag_path(name, Some(tag))?, PutPayload::from(body))
            .await
            .map_err(|e| Error::Asset(format!("asset '{name}': cannot write tag '{tag}': {e}")))?;
        Ok(version)
    }

    /// The tags of asset `name` and their versions.
    pub async fn tags(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        let base = self.tag_path(name, None)?;
        let metas: Vec<_> = match self.store.list(Some(&base)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Error::Asset(format!("asset '{name}': cannot list tags: {e}"))),
        };
        let mut out = BTreeMap::new();
        for meta in metas {
            if let Some(tag) = meta.location.filename() {
                out.insert(tag.to_string(), self.tag_version(name, tag).await?);
            }
        }
        Ok(out)
    }

    async fn tag_version(&self, name: &str, tag: &str) -> Result<u64> {
        let path = self.tag_path(name, Some(tag))?;
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        match bytes {
            Ok(bytes) => serde_json::from_slice::<TagFile>(&bytes)
                .map(|t| t.version)
                .map_err(|e| Error::Asset(format!("asset '{name}': tag '{tag}' is unreadable ({e}); set it again"))),
            Err(object_store::Error::NotFound { .. }) => {
                let known: Vec<String> = Box::pin(self.tags(name)).await?.into_keys().collect();
                Err(Error::Asset(format!(
                    "asset '{name}' has no tag '{tag}' (tags: {}); `sluice asset tag {name}@VERSION {tag}` sets it",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )))
            }
            Err(e) => Err(Error::Asset(format!("asset '{name}': cannot read tag '{tag}': {e}"))),
        }
    }

    /// Deletes files of asset `name` that no version within `retain` needs: files replaced by
    /// overwrites and files of writes that failed or were killed before their commit.
    pub async fn vacuum(&self, name: &str, retain: Duration, dry_run: bool) -> Result<VacuumReport> {
        let table = self.load(name, None).await?.ok_or_else(|| self.missing(name))?;
        let retention = chrono::Duration::from_std(retain)
            .map_err(|e| Error::Asset(format!("retention {retain:?} is too long: {e}")))?;
        let (_, metrics) = table
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| self.delta_error(name, e))?;
        let mut files = metrics.files_deleted;
        files.sort();
        Ok(VacuumReport { dry_run, files })
    }

    /// Files under asset `name` that no version of it references (for tests and `vacuum`'s
    /// dry run): data files a failed write left behind.
    pub async fn unreferenced_files(&self, name: &str) -> Result<Vec<String>> {
        let report = self.vacuum(name, Duration::ZERO, true).await?;
        Ok(report.files)
    }
}

/// The object-store URL of local files.
fn local_store_url() -> Result<Url> {
    Url::parse("file:///").map_err(|e| Error::Config(e.to_string()))
}
