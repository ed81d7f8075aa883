//! Secrets in configuration: named by reference (an environment variable or a file), never
//! written in clear text, and redacted wherever they could be printed.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// How a secret is given in a config file: `{ env = "NAME" }` or `{ file = "PATH" }`. A plain
/// string is read (so the error can say where it is) but refused by [`SecretRef::resolve`].
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// Read from an environment variable or a file.
    Ref {
        /// Environment variable holding the secret.
        env: Option<String>,
        /// File holding the secret (surrounding whitespace is trimmed).
        file: Option<PathBuf>,
    },
    /// A secret written in clear text: refused.
    Plain(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Ref { env, file } => f.debug_struct("SecretRef").field("env", env).field("file", file).finish(),
            SecretRef::Plain(_) => f.write_str("SecretRef(<clear text, refused>)"),
        }
    }
}

/// Serialised as the reference only (it travels in plans so each site resolves it itself); a
/// clear-text secret is never serialised.
impl serde::Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let SecretRef::Ref { env, file } = self {
            if let Some(env) = env {
                map.serialize_entry("env", env)?;
            }
            if let Some(file) = file {
                map.serialize_entry("file", file)?;
            }
        }
        map.end()
    }
}

impl SecretRef {
    /// Reads the secret. `key` names the setting in errors (for example `datastores.raw.key`);
    /// the secret's value never appears in them.
    pub fn resolve(&self, key: &str) -> Result<Secret, String> {
        match self {
            SecretRef::Plain(_) => Err(format!(
                "{key}: secrets are not read from the config in clear text; write {key} = {{ env = \"VARIABLE\" }} \
                 or {key} = {{ file = \"/path/to/secret\" }}"
            )),
            SecretRef::Ref { env: Some(var), file: None } => std::env::var(var)
                .map(Secret)
                .map_err(|_| format!("{key}: environment variable {var} is not set (or not UTF-8)")),
            SecretRef::Ref { env: None, file: Some(path) } => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim().to_string()))
                .map_err(|e| format!("{key}: cannot read secret file {}: {e}", path.display())),
            SecretRef::Ref { .. } => Err(format!("{key}: give exactly one of env = \"VARIABLE\" or file = \"PATH\"")),
        }
    }
}

/// A setting that may be a secret: a plain string (`"application/json"`), or a reference
/// (`{ env = "API_KEY" }`, `{ file = "/run/secrets/key" }`) whose value is read where it is used
/// and redacted wherever it could be shown. Travels in plans as written (references, not values).
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Setting {
    /// Written in the config: not secret.
    Text(String),
    /// Read from the environment or a file: secret.
    Secret(SecretRef),
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Text(text) => write!(f, "{text:?}"),
            Setting::Secret(secret) => secret.fmt(f),
        }
    }
}

impl From<&str> for Setting {
    fn from(text: &str) -> Self {
        Setting::Text(text.to_string())
    }
}

impl Setting {
    /// Whether the value is a secret (to be redacted where it could be shown).
    pub fn is_secret(&self) -> bool {
        matches!(self, Setting::Secret(_))
    }

    /// The value; `key` names the setting in errors (which never hold a secret's value).
    pub fn resolve(&self, key: &str) -> Result<Secret, String> {
        match self {
            Setting::Text(text) => Ok(Secret(text.clone())),
            Setting::Secret(secret) => secret.resolve(key),
        }
    }
}

/// A resolved secret. `Debug` and `Display` print `<redacted>`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to a client library; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_from_env_and_file_and_never_prints() {
        // SAFETY: a variable unique to this test, set before it is read.
        unsafe { std::env::set_var("SLUICE_TEST_SECRET_X", "s3cr3t-value") };
        let s = SecretRef::Ref { env: Some("SLUICE_TEST_SECRET_X".into()), file: None }.resolve("k").unwrap();
        assert_eq!(s.expose(), "s3cr3t-value");
        assert!(!format!("{s:?} {s}").contains("s3cr3t"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(SecretRef::Ref { env: None, file: Some(path) }.resolve("k").unwrap().expose(), "from-file");

        let plain = SecretRef::Plain("hunter2".into());
        let e = plain.resolve("datastores.raw.key").unwrap_err();
        assert!(e.contains("not read from the config in clear text") && !e.contains("hunter2"), "{e}");
        assert!(!format!("{plain:?}").contains("hunter2"));
        let e = SecretRef::Ref { env: Some("SLUICE_TEST_UNSET_VAR".into()), file: None }.resolve("k").unwrap_err();
        assert!(e.contains("SLUICE_TEST_UNSET_VAR is not set"), "{e}");
    }

    #[test]
    fn settings_are_text_or_secret_references_that_travel_as_references() {
        #[derive(Deserialize)]
        struct Headers {
            headers: std::collections::BTreeMap<String, Setting>,
        }
        // SAFETY: a variable unique to this test, set before it is read.
        unsafe { std::env::set_var("SLUICE_TEST_SETTING_KEY", "k3y") };
        let parsed: Headers =
            toml::from_str("headers = { Accept = \"application/json\", X-Api-Key = { env = \"SLUICE_TEST_SETTING_KEY\" } }").unwrap();
        let (accept, key) = (&parsed.headers["Accept"], &parsed.headers["X-Api-Key"]);
        assert!(!accept.is_secret() && key.is_secret());
        assert_eq!(accept.resolve("h").unwrap().expose(), "application/json");
        assert_eq!(key.resolve("h").unwrap().expose(), "k3y");
        let travelled = serde_json::to_string(&parsed.headers).unwrap();
        assert_eq!(travelled, r#"{"Accept":"application/json","X-Api-Key":{"env":"SLUICE_TEST_SETTING_KEY"}}"#);
        assert!(!format!("{:?}", parsed.headers).contains("k3y"));
        let back: std::collections::BTreeMap<String, Setting> = serde_json::from_str(&travelled).unwrap();
        assert_eq!(back["X-Api-Key"].resolve("h").unwrap().expose(), "k3y");
    }
}
