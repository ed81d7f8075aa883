//! The model registry: a model is a name with immutable, numbered versions (a TorchScript or
//! ONNX file plus metadata: inputs, outputs, metrics, lineage to the dataset versions and the
//! training parameters) and aliases such as `production` and `staging` that move between versions.
//!
//! It lives in the lake's store, next to the assets, under `_models/<name>/`:
//! `versions/<n>/model.json` (written once: its existence is the version's), the model file
//! beside it, `versions/<n>/archived.json` once archived, and `aliases/<alias>.json`. Versions
//! are numbered by creating `model.json` only if absent, so two registrations never share one.

pub mod resolve;

use std::collections::BTreeMap;
use std::path::{Path as LocalPath, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sluice_lake::delta::Lake;

use crate::error::{Error, Result};

/// A feature the model takes, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// The column's name.
    pub name: String,
    /// Its type as the model reads it (`float`).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// What is known about a model when it is registered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `classification`, `regression` or anything the user says.
    #[serde(default)]
    pub task: Option<String>,
    /// `torchscript` or `onnx` (versions registered before ONNX support hold none: TorchScript).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The features, in the order `predict` takes them.
    pub inputs: Vec<Input>,
    /// Names of the values per row it returns.
    pub outputs: Vec<String>,
    /// Metrics by split: `{"test": {"auc": 0.91}}`.
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Where it came from: dataset versions, split, training parameters.
    #[serde(default)]
    pub lineage: serde_json::Map<String, serde_json::Value>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// One registered version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The model's name.
    pub name: String,
    /// Its version, from 1.
    pub version: u64,
    /// When it was registered (RFC 3339, UTC).
    pub registered: String,
    /// The model file's name in the version's folder.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The loaded module's id (`stem@sha256-prefix`).
    pub id: String,
    /// Inputs, outputs, metrics, lineage.
    #[serde(flatten)]
    pub info: ModelInfo,
    /// When it was archived, if it was.
    #[serde(skip_deserializing, default)]
    pub archived: Option<String>,
}

/// Drift settings kept with a model: what its scoring runs are held to unless a run says
/// otherwise (a run's own distance or p-value other than the default, its column thresholds and
/// webhook win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMonitor {
    /// Largest normalized Wasserstein / Jensen-Shannon distance that is not drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    /// Smallest KS / chi-squared p-value that is not drift (small references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Per column.
    #[serde(default)]
    pub columns: BTreeMap<String, f64>,
    /// A URL that gets a JSON POST when a run drifts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// The host of a webhook URL, the only part of it ever shown.
pub fn webhook_host(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| "the webhook".into())
}

/// Which version: `churn` (the latest not archived), `churn@3`, `churn@production`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model's name.
    pub name: String,
    /// The version or alias.
    pub at: ModelAt,
}

/// A version or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAt {
    /// The newest version that is not archived.
    Latest,
    /// A version number.
    Version(u64),
    /// An alias.
    Alias(String),
}

impl ModelRef {
    /// Parses `name`, `name@7` or `name@alias`.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, at) = match text.split_once('@') {
            None => (text, ModelAt::Latest),
            Some((name, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                (name, ModelAt::Version(v.parse().map_err(|_| Error::Invalid(format!("'{text}': version too large")))?))
            }
            Some((name, alias)) => {
                check_name(alias, "alias")?;
                (name, ModelAt::Alias(alias.to_string()))
            }
        };
        check_name(name, "model name")?;
        Ok(Self { name: name.to_string(), at })
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            ModelAt::Latest => write!(f, "{}", self.name),
            ModelAt::Version(v) => write!(f, "{}@{v}", self.name),
            ModelAt::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// Names of models and aliases: a letter, then letters, digits, `_` or `-`.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 128;
    if ok && name != "latest" {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "'{name}' is not a valid {what}: use a letter first, then letters, digits, '_' or '-' (not 'latest')"
        )))
    }
}

/// An alias and where it points.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AliasRecord {
    version: u64,
    moved: String,
    #[serde(default)]
    previous: Option<u64>,
}

/// The registry of a lake.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The registry's folder on this machine when the lake is local.
    local: Option<PathBuf>,
    /// `scheme://authority` of the lake's store.
    store_url: url::Url,
}

fn storage(e: object_store::Error, what: &str) -> Error {
    Error::Invalid(format!("model registry: {what}: {e}"))
}

impl Registry {
    /// The registry kept in `lake`'s store.
    pub fn open(lake: &Lake) -> Result<Self> {
        let root_url = lake.root().join("_models/").map_err(|e| Error::Invalid(format!("model registry: {e}")))?;
        let root = lake.store_path(&root_url)?;
        let local = (lake.store_url().scheme() == "file").then(|| PathBuf::from(format!("/{root}")));
        Ok(Self { store: lake.store(), root, local, store_url: lake.store_url().clone() })
    }

    fn path(&self, parts: &[&str]) -> Path {
        parts.iter().fold(self.root.clone(), |p, part| p.join(*part))
    }

    /// Registers the model file `file` (TorchScript or ONNX) as the next version of `name`. The
    /// file must load and take `info.inputs` features; it is stored with its format's extension.
    pub async fn register(&self, name: &str, file: &LocalPath, mut info: ModelInfo) -> Result<ModelVersion> {
        check_name(name, "model name")?;
        let shown = file.display().to_string();
        let model = sluice_udfs::model::Model::load(&shown)
            .map_err(|e| Error::Invalid(format!("{shown} cannot be registered: it does not load as a model ({e})")))?;
        let format = model.format().name();
        if let Some(wanted) = info.format.as_deref()
            && wanted != format
        {
            return Err(Error::Invalid(format!(
                "{shown}: --format {wanted} was given, but the file's format is {format}; drop --format or give the right file"
            )));
        }
        info.format = Some(format.to_string());
        if info.inputs.is_empty() {
            return Err(Error::Invalid(format!(
                "model '{name}': name its inputs (the feature columns, in order), e.g. --inputs \"tenure float, spend float\""
            )));
        }
        let shape = model.probe(info.inputs.len()).map_err(|e| {
            Error::Invalid(format!("{shown} does not take {} inputs: {e}", info.inputs.len()))
        })?;
        if info.outputs.is_empty() {
            // An ONNX model names its outputs itself (a classifier's label and probabilities).
            info.outputs = if let Some(names) = model.output_names().filter(|n| n.len() == shape.outputs) {
                names
            } else if shape.outputs == 1 {
                vec!["prediction".to_string()]
            } else {
                (1..=shape.outputs).map(|i| format!("output_{i}")).collect()
            };
        } else if info.outputs.len() != shape.outputs {
            return Err(Error::Invalid(format!(
                "{shown} returns {} values per row, but {} output names were given ({})",
                shape.outputs,
                info.outputs.len(),
                info.outputs.join(", ")
            )));
        }
        let bytes = std::fs::read(file).map_err(Error::io(format!("reading {shown}")))?;
        let mut version = self.versions_of(name).await?.last().map_or(1, |v| v.version + 1);
        loop {
            let stem = format!("model-{}.{}", uuid_like(), model.format().extension());
            let record = ModelVersion {
                name: name.to_string(),
                version,
                registered: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                file: stem.clone(),
                bytes: bytes.len() as u64,
                id: model.id().to_string(),
                info: info.clone(),
                archived: None,
            };
            let number = version.to_string();
            let model_path = self.path(&[name, "versions", &number, &stem]);
            self.store
                .put(&model_path, PutPayload::from(bytes.clone()))
                .await
                .map_err(|e| storage(e, &format!("writing {name} version {version}")))?;
            let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
            let meta = self.path(&[name, "versions", &number, "model.json"]);
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.store.put_opts(&meta, PutPayload::from(json), create).await {
                Ok(_) => return Ok(record),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    // Someone registered this number first: ours is the next.
                    let _ = self.store.delete(&model_path).await;
                    version += 1;
                }
                Err(e) => return Err(storage(e, &format!("writing {name} version {version}"))),
            }
        }
    }

    /// The registered models' names.
    pub async fn names(&self) -> Result<Vec<String>> {
        let listing = match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e, "listing models")),
        };
        let mut names: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    /// Every version of `name`, oldest first, with archive marks.
    pub async fn versions_of(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let prefix = self.path(&[name, "versions"]);
        let files: Vec<_> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(files) => files,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(storage(e, &format!("listing versions of {name}"))),
        };
        let mut versions = Vec::new();
        for meta in files.iter().filter(|o| o.location.filename() == Some("model.json")) {
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(|e| storage(e, &format!("reading {}", meta.location)))?
                .bytes()
                .await
                .map_err(|e| storage(e, &format!("reading {}", meta.location)))?;
            let mut version: ModelVersion = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("model registry: {} is not a version record: {e}", meta.location)))?;
            let archived = self.path(&[name, "versions", &version.version.to_string(), "archived.json"]);
            if files.iter().any(|o| o.location == archived) {
                let text = self.store.get(&archived).await.map_err(|e| storage(e, "reading archive mark"))?;
                let text = text.bytes().await.map_err(|e| storage(e, "reading archive mark"))?;
                version.archived = Some(String::from_utf8_lossy(&text).trim().trim_matches('"').to_string());
            }
            versions.push(version);
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    /// The aliases of `name` and the versions they point at.
    pub async fn aliases(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        let prefix = self.path(&[name, "aliases"]);
        let files: Vec<_> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(files) => files,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(storage(e, &format!("listing aliases of {name}"))),
        };
        let mut out = BTreeMap::new();
        for file in files {
            let Some(alias) = file.location.filename().and_then(|f| f.strip_suffix(".json")).map(str::to_string) else {
                continue;
            };
            let bytes = self.store.get(&file.location).await.map_err(|e| storage(e, "reading an alias"))?;
            let bytes = bytes.bytes().await.map_err(|e| storage(e, "reading an alias"))?;
            let record: AliasRecord = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("model registry: alias {name}@{alias} is unreadable: {e}")))?;
            out.insert(alias, record.version);
        }
        Ok(out)
    }

    /// The version `reference` names; archived versions are refused.
    pub async fn resolve(&self, reference: &ModelRef) -> Result<ModelVersion> {
        let versions = self.versions_of(&reference.name).await?;
        if versions.is_empty() {
            let known = self.names().await?;
            return Err(Error::Invalid(format!(
                "no model named '{}' is registered{}; register one with `sluice model register` or `sluice train \
                 --register`",
                reference.name,
                if known.is_empty() { String::new() } else { format!(" (models: {})", known.join(", ")) }
            )));
        }
        let wanted = match &reference.at {
            ModelAt::Latest => versions.iter().rev().find(|v| v.archived.is_none()).map(|v| v.version).ok_or_else(
                || Error::Invalid(format!("every version of model '{}' is archived", reference.name)),
            )?,
            ModelAt::Version(v) => *v,
            ModelAt::Alias(alias) => {
                let aliases = self.aliases(&reference.name).await?;
                *aliases.get(alias).ok_or_else(|| {
                    Error::Invalid(format!(
                        "model '{}' has no alias '{alias}'{}; set it with `sluice model promote {}@VERSION {alias}`",
                        reference.name,
                        if aliases.is_empty() {
                            String::new()
                        } else {
                            format!(" (aliases: {})", aliases.keys().cloned().collect::<Vec<_>>().join(", "))
                        },
                        reference.name
                    ))
                })?
            }
        };
        let version = versions.into_iter().find(|v| v.version == wanted).ok_or_else(|| {
            Error::Invalid(format!("model '{}' has no version {wanted}", reference.name))
        })?;
        if let Some(at) = &version.archived {
            return Err(Error::Invalid(format!(
                "{reference} is version {} of '{}', archived {at}; use another version",
                version.version, version.name
            )));
        }
        Ok(version)
    }

    /// The drift settings kept with model `name` for every version's scoring runs, if set.
    pub async fn monitor_settings(&self, name: &str) -> Result<Option<ModelMonitor>> {
        let found = match self.store.get(&self.path(&[name, "monitor.json"])).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(storage(e, &format!("reading the monitoring settings of {name}"))),
        };
        let bytes = found.bytes().await.map_err(|e| storage(e, "reading monitoring settings"))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("model registry: the monitoring settings of {name} are unreadable: {e}")))
    }

    /// Keeps `settings` with model `name` (it must be registered).
    pub async fn set_monitor_settings(&self, name: &str, settings: &ModelMonitor) -> Result<()> {
        self.resolve(&ModelRef { name: name.to_string(), at: ModelAt::Latest }).await?;
        let json = serde_json::to_vec_pretty(settings).map_err(|e| Error::Invalid(e.to_string()))?;
        self.store
            .put(&self.path(&[name, "monitor.json"]), PutPayload::from(json))
            .await
            .map_err(|e| storage(e, &format!("saving the monitoring settings of {name}")))?;
        Ok(())
    }

    /// Points `alias` of `name` at `version`; returns where it pointed before.
    pub async fn promote(&self, name: &str, version: u64, alias: &str) -> Result<Option<u64>> {
        check_name(alias, "alias")?;
        self.resolve(&ModelRef { name: name.to_string(), at: ModelAt::Version(version) }).await?;
        let previous = self.aliases(name).await?.get(alias).copied();
        let record = AliasRecord {
            version,
            moved: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            previous,
        };
        let json = serde_json::to_vec(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        self.store
            .put(&self.path(&[name, "aliases", &format!("{alias}.json")]), PutPayload::from(json))
            .await
            .map_err(|e| storage(e, &format!("moving {name}@{alias}")))?;
        Ok(previous)
    }

    /// Archives a version: it can no longer be resolved or promoted. A version an alias points at
    /// is refused (move the alias first).
    pub async fn archive(&self, name: &str, version: u64) -> Result<()> {
        self.resolve(&ModelRef { name: name.to_string(), at: ModelAt::Version(version) }).await?;
        let pointing: Vec<String> =
            self.aliases(name).await?.into_iter().filter(|(_, v)| *v == version).map(|(a, _)| a).collect();
        if !pointing.is_empty() {
            return Err(Error::Invalid(format!(
                "{name}@{version} is {}; promote another version to {} first",
                pointing.iter().map(|a| format!("@{a}")).collect::<Vec<_>>().join(" and "),
                if pointing.len() == 1 { "it" } else { "them" }
            )));
        }
        let at = serde_json::to_vec(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        self.store
            .put(&self.path(&[name, "versions", &version.to_string(), "archived.json"]), PutPayload::from(at))
            .await
            .map_err(|e| storage(e, &format!("archiving {name}@{version}")))?;
        Ok(())
    }

    /// What `predict` is given for the version: its path in a local lake, else its lake URI with
    /// its digest, which every executor fetches into its own cache (see `sluice_udfs::fetch`).
    pub fn scoring_path(&self, version: &ModelVersion) -> Result<String> {
        let parts = [version.name.as_str(), "versions", &version.version.to_string(), version.file.as_str()];
        if let Some(local) = &self.local {
            return Ok(parts.iter().fold(local.clone(), |p, part| p.join(part)).display().to_string());
        }
        let digest = version.id.rsplit_once('@').map(|(_, d)| d).filter(|d| d.len() >= 8).ok_or_else(|| {
            Error::Invalid(format!("model {}@{}: its id '{}' holds no digest", version.name, version.version, version.id))
        })?;
        Ok(sluice_udfs::fetch::model_uri(&self.store_url, self.path(&parts).as_ref(), digest))
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Parses `"tenure float, spend float"` (or `"tenure, spend"`: floats) into inputs.
pub fn parse_inputs(text: &str) -> Result<Vec<Input>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.split_whitespace();
            let name = parts.next().unwrap_or_default().to_string();
            let data_type = parts.next().unwrap_or("float").to_string();
            if parts.next().is_some() {
                return Err(Error::Invalid(format!("input '{item}': write 'name' or 'name type'")));
            }
            Ok(Input { name, data_type })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_bad_names_say_what_is_allowed() {
        assert_eq!(ModelRef::parse("churn").unwrap().at, ModelAt::Latest);
        assert_eq!(ModelRef::parse("churn@3").unwrap().at, ModelAt::Version(3));
        assert_eq!(ModelRef::parse("churn@production").unwrap().at, ModelAt::Alias("production".into()));
        assert_eq!(ModelRef::parse("churn@production").unwrap().to_string(), "churn@production");
        assert!(ModelRef::parse("9churn").unwrap_err().to_string().contains("letter first"));
        assert!(ModelRef::parse("churn@").is_err());
        assert!(ModelRef::parse("churn@latest").is_err());
        let inputs = parse_inputs("tenure float, spend").unwrap();
        assert_eq!(inputs[1], Input { name: "spend".into(), data_type: "float".into() });
    }
}
