//! The workspace file (`sluice.toml`): named datastores and their connection settings.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::secret::SecretRef;
use crate::error::{Error, Result};

/// The workspace configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Named datastores, e.g. `[datastores.raw]`.
    #[serde(default)]
    pub datastores: BTreeMap<String, DatastoreConfig>,
    /// Where data assets live, `[assets]`.
    #[serde(default)]
    pub assets: AssetsConfig,
}

/// Where the workspace's data assets live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetsConfig {
    /// A datastore name (its URL is the assets root), a URL inside a datastore, or a local
    /// directory (relative paths are relative to the current directory).
    #[serde(default = "default_assets_location")]
    pub location: String,
}

impl Default for AssetsConfig {
    fn default() -> Self {
        Self { location: default_assets_location() }
    }
}

fn default_assets_location() -> String {
    "lake".to_string()
}

/// Connection settings of one datastore. Secrets are references (`{ env = ".." }` or
/// `{ file = ".." }`), never clear text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Where it is: `az://container/prefix`, `https://ACCOUNT.blob.core.windows.net/container/prefix`,
    /// `abfss://filesystem@ACCOUNT.dfs.core.windows.net/prefix`, `s3://bucket/prefix` or `file:///path`.
    pub url: String,
    /// Use the local Azure Storage emulator (Azurite) with its well-known development account
    /// (endpoint from `AZURITE_BLOB_STORAGE_URL`, default `http://127.0.0.1:10000`).
    #[serde(default = "default_false")]
    pub emulator: bool,
    /// Azure storage account, where the URL does not name it (`az://container/...`).
    pub account: Option<String>,
    /// Azure account key.
    pub account_key: Option<SecretRef>,
    /// Azure SAS token.
    pub sas_token: Option<SecretRef>,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret access key.
    pub secret_access_key: Option<SecretRef>,
    /// S3 region.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store (http allowed).
    pub endpoint: Option<String>,
}

fn default_false() -> bool {
    false
}

impl WorkspaceConfig {
    /// Parses `text` read from `origin`; errors name the file, the line and the key.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))
    }

    /// The workspace of a command: the file `explicit` names (it must exist), else `sluice.toml`
    /// in the current directory when there is one, else an empty workspace.
    pub fn discover(explicit: Option<&Path>) -> Result<Self> {
        match explicit {
            Some(path) => Self::load(path),
            None if Path::new("sluice.toml").is_file() => Self::load(Path::new("sluice.toml")),
            None => Ok(Self::default()),
        }
    }

    /// Reads and parses the workspace file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_datastores_and_names_bad_keys() {
        let ws = WorkspaceConfig::parse(
            r#"
            [datastores.raw]
            url = "az://raw/landing"
            emulator = true

            [datastores.curated]
            url = "abfss://curated@acct.dfs.core.windows.net/lake"
            account_key = { env = "CURATED_KEY" }
            "#,
            "sluice.toml",
        )
        .unwrap();
        assert_eq!(ws.datastores.len(), 2);
        assert!(ws.datastores["raw"].emulator);

        let e = WorkspaceConfig::parse("[datastores.raw]\nurl = \"az://raw\"\nacount = \"typo\"\n", "ws.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ws.toml") && e.contains("acount") && e.contains("line 3"), "{e}");
    }
}
