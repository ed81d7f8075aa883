//! Registered models that live in object storage: `predict` takes their lake URI
//! (`az://container/lake/_models/churn/versions/3/churn.pt#sha256=<prefix>`), and each process
//! that scores (client or executor, on any machine) fetches the file itself, once, into its own
//! cache keyed by the digest, and checks the digest before using it. The stores are the ones the
//! process's runtime has for its datastores ([`register_store`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

type Stores = RwLock<HashMap<String, Arc<dyn ObjectStore>>>;

fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Makes the store at `root` (`scheme://authority`) available for fetching models.
pub fn register_store(root: &url::Url, store: Arc<dyn ObjectStore>) {
    let key = format!("{}://{}", root.scheme(), root.authority());
    stores().write().unwrap_or_else(|p| p.into_inner()).insert(key, store);
}

/// Whether `path` names a model in object storage (not a local file).
pub fn is_remote(path: &str) -> bool {
    path.split_once("://").is_some_and(|(scheme, _)| scheme != "file" && !scheme.is_empty())
}

/// The lake URI of a model file: `store_url` (`scheme://authority`), the file's path in that
/// store, and the hex prefix of its SHA-256 that every fetch is checked against.
pub fn model_uri(store_url: &url::Url, path: &str, sha256_prefix: &str) -> String {
    format!("{}://{}/{}#sha256={sha256_prefix}", store_url.scheme(), store_url.authority(), path.trim_start_matches('/'))
}

/// The directory fetched models are kept in: `SLUICE_MODEL_CACHE`, else `SLUICE_CACHE/models`,
/// else `~/.cache/sluice/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("SLUICE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")))
        .unwrap_or_else(std::env::temp_dir)
        .join("models")
}

/// A local copy of the model at `uri`: from the cache when this process (or another on this
/// machine) fetched it before, else fetched now, checked against the URI's digest and cached.
pub fn localize(uri: &str) -> Result<PathBuf> {
    let bad = |why: String| Error::BadCall(format!("predict: model '{uri}': {why}"));
    let (location, digest) = uri.split_once("#sha256=").ok_or_else(|| {
        bad("a model in object storage is named with its digest (`...#sha256=<hex>`); name registered models \
             as NAME@VERSION or NAME@ALIAS and Sluice writes that for you"
            .into())
    })?;
    if digest.len() < 8 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("'{digest}' is no SHA-256 hex prefix")));
    }
    let url = url::Url::parse(location).map_err(|e| bad(format!("not a URL: {e}")))?;
    let file = url.path_segments().and_then(|mut s| s.next_back()).filter(|f| !f.is_empty()).unwrap_or("model.pt");
    let cached = cache_dir().join(digest.to_ascii_lowercase()).join(file);
    if cached.exists() {
        return Ok(cached);
    }
    let root = format!("{}://{}", url.scheme(), url.authority());
    let store = stores().read().unwrap_or_else(|p| p.into_inner()).get(&root).cloned().ok_or_else(|| {
        bad(format!(
            "no datastore of this process reaches {root}; every executor needs the workspace's datastores \
             (the same workspace file or SLUICE_WORKSPACE as the client)"
        ))
    })?;
    let path = object_store::path::Path::from_url_path(url.path()).map_err(|e| bad(format!("bad path: {e}")))?;
    let fetch = async {
        let got = store.get(&path).await?;
        got.bytes().await
    };
    // The UDF runs on a runtime thread: fetching blocks this task only, as reading a local model does.
    let bytes = match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(fetch))
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start a runtime to fetch it: {e}")))?
            .block_on(fetch),
    }
    .map_err(|e| bad(format!("cannot fetch it from the lake: {e}")))?;
    let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if !actual.starts_with(&digest.to_ascii_lowercase()) {
        return Err(bad(format!(
            "the file in the lake has SHA-256 {actual}, not the registered {digest}...; it was changed after it was \
             registered: register it again as a new version"
        )));
    }
    let dir = cached.parent().unwrap_or(&cached);
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the model cache {}: {e}", dir.display())))?;
    // Unique per fetch: two tasks of one executor may fetch the same model at once.
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = dir.join(format!(".{file}.{}-{n}.partial", std::process::id()));
    std::fs::write(&partial, &bytes).map_err(|e| bad(format!("cannot write {}: {e}", partial.display())))?;
    std::fs::rename(&partial, &cached).map_err(|e| bad(format!("cannot write {}: {e}", cached.display())))?;
    tracing::info!(model = %uri, cache = %cached.display(), bytes = bytes.len(), "fetched model from the lake");
    Ok(cached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    #[test]
    fn a_fetch_is_checked_against_the_digest_and_cached_by_it() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: set before any fetch in this test binary; other tests do not read it.
        unsafe { std::env::set_var("SLUICE_MODEL_CACHE", dir.path()) };
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let bytes = b"not really a model, only bytes".to_vec();
        let path = object_store::path::Path::from("lake/_models/m/versions/1/m.pt");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(store.put(&path, PutPayload::from(bytes.clone()))).unwrap();
        let root = url::Url::parse("memory://fetch-test").unwrap();
        register_store(&root, store.clone());
        let hex: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();

        let wrong = model_uri(&root, path.as_ref(), "0123456789ab");
        let e = localize(&wrong).unwrap_err().to_string();
        assert!(e.contains("changed after it was registered") && e.contains(&hex), "{e}");
        assert!(!dir.path().join("0123456789ab").join("m.pt").exists(), "a bad copy is not kept");

        let uri = model_uri(&root, path.as_ref(), &hex[..12]);
        assert!(is_remote(&uri) && !is_remote("/tmp/m.pt") && !is_remote("file:///tmp/m.pt"));
        let local = localize(&uri).unwrap();
        assert_eq!(local, dir.path().join(&hex[..12]).join("m.pt"));
        assert_eq!(std::fs::read(&local).unwrap(), bytes);
        // Cached: found again even with the file gone from the store.
        runtime.block_on(store.delete(&path)).unwrap();
        assert_eq!(localize(&uri).unwrap(), local);

        let e = localize("s3://nowhere/m.pt#sha256=0123456789ab").unwrap_err().to_string();
        assert!(e.contains("no datastore of this process reaches s3://nowhere"), "{e}");
        let e = localize("memory://fetch-test/m.pt").unwrap_err().to_string();
        assert!(e.contains("named with its digest"), "{e}");
    }
}
