//! Datastores: named object-storage locations (Azure Blob, ADLS Gen2, S3, local directories)
//! that every site of a cluster registers, so one URL reads and writes the same data anywhere.

mod config;
mod secret;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use url::Url;

pub use config::{AssetsConfig, DatastoreConfig, WorkspaceConfig};
pub use secret::{Secret, SecretRef, Setting};

use crate::error::{Error, Result};

/// An opened datastore: its object store and the URL prefix it answers for.
#[derive(Debug, Clone)]
pub struct Datastore {
    /// Name in the workspace file.
    pub name: String,
    /// Base location, as configured.
    pub url: Url,
    /// `scheme://authority` under which the store is registered (None for local files, which
    /// every session reads already).
    pub store: Option<(Url, Arc<dyn ObjectStore>)>,
}

impl Datastore {
    /// Builds the object store of datastore `name`. Errors name the datastore and the setting,
    /// never a secret's value.
    pub fn open(name: &str, config: &DatastoreConfig) -> Result<Self> {
        let bad = |msg: String| Error::Config(format!("datastores.{name}: {msg}"));
        let url = Url::parse(&config.url).map_err(|e| {
            bad(format!(
                "url '{}' is not a URL ({e}); use az://container/prefix, abfss://fs@ACCOUNT.dfs.core.windows.net/prefix, \
                 https://ACCOUNT.blob.core.windows.net/container, s3://bucket/prefix or file:///path",
                config.url
            ))
        })?;
        let secret = |key: &str, r: &Option<SecretRef>| -> Result<Option<Secret>> {
            r.as_ref().map(|r| r.resolve(&format!("datastores.{name}.{key}")).map_err(Error::Config)).transpose()
        };
        let root = Url::parse(&format!(
            "{}://{}",
            url.scheme(),
            &url[url::Position::BeforeUsername..url::Position::AfterPort]
        ))
        .map_err(|e| bad(format!("cannot derive the store root of '{}': {e}", config.url)))?;
        let store: Option<Arc<dyn ObjectStore>> = match url.scheme() {
            "file" => None,
            "az" | "abfs" | "abfss" | "adl" | "azure" | "https" => {
                let mut b =
                    MicrosoftAzureBuilder::new().with_url(config.url.clone()).with_use_emulator(config.emulator);
                if let Some(account) = &config.account {
                    b = b.with_account(account);
                }
                if let Some(key) = secret("account_key", &config.account_key)? {
                    b = b.with_access_key(key.expose());
                }
                if let Some(sas) = secret("sas_token", &config.sas_token)? {
                    b = b.with_config(object_store::azure::AzureConfigKey::SasKey, sas.expose());
                }
                Some(Arc::new(b.build().map_err(|e| bad(format!("cannot configure Azure storage: {e}")))?))
            }
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env().with_url(config.url.clone());
                if let Some(id) = &config.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(key) = secret("secret_access_key", &config.secret_access_key)? {
                    b = b.with_secret_access_key(key.expose());
                }
                if let Some(region) = &config.region {
                    b = b.with_region(region);
                }
                if let Some(endpoint) = &config.endpoint {
                    b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                Some(Arc::new(b.build().map_err(|e| bad(format!("cannot configure S3 storage: {e}")))?))
            }
            other => return Err(bad(format!("unsupported scheme '{other}' in '{}'", config.url))),
        };
        Ok(Self { name: name.to_string(), url, store: store.map(|s| (root, s)) })
    }

    /// Opens every datastore of a workspace.
    pub fn open_all(workspace: &WorkspaceConfig) -> Result<Vec<Datastore>> {
        workspace.datastores.iter().map(|(name, config)| Datastore::open(name, config)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_each_kind_and_refuses_clear_text_secrets() {
        let open = |url: &str| Datastore::open("d", &DatastoreConfig { url: url.into(), ..Default::default() });
        assert!(open("file:///tmp/lake").unwrap().store.is_none());
        let az =
            Datastore::open("d", &DatastoreConfig { url: "az://raw/x".into(), emulator: true, ..Default::default() })
                .unwrap();
        assert_eq!(az.store.unwrap().0.as_str(), "az://raw");
        let adls = open("abfss://fs@acct.dfs.core.windows.net/lake").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(adls.store.unwrap().0.as_str(), "abfss://fs@acct.dfs.core.windows.net");
        let e = open("ftp://x/y").unwrap_err().to_string();
        assert!(e.contains("datastores.d: unsupported scheme 'ftp'"), "{e}");

        let config = DatastoreConfig {
            url: "az://raw".into(),
            account: Some("acct".into()),
            account_key: Some(SecretRef::Plain("topsecret".into())),
            ..Default::default()
        };
        let e = Datastore::open("raw", &config).unwrap_err().to_string();
        assert!(e.contains("datastores.raw.account_key") && !e.contains("topsecret"), "{e}");
    }
}
