//! Asset references as users write them: `accounts`, `accounts@7`, `accounts@prod`.

use std::fmt;

use crate::error::{Error, Result};

/// Which version of an asset a reference pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The newest committed version.
    Latest,
    /// A Delta version number.
    Version(u64),
    /// A tag set with `sluice asset tag`.
    Tag(String),
}

/// A parsed asset reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRef {
    /// The asset's name.
    pub name: String,
    /// The version it pins.
    pub at: At,
}

impl AssetRef {
    /// Parses `name`, `name@7` or `name@tag`; errors say what a valid reference looks like.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, at) = match text.split_once('@') {
            None => (text, At::Latest),
            Some((name, "")) => {
                return Err(Error::Asset(format!(
                    "asset reference '{text}': nothing after '@'; write {name}@VERSION (a number) or {name}@TAG"
                )));
            }
            Some((name, v)) if v.bytes().all(|b| b.is_ascii_digit()) => {
                let version = v
                    .parse::<u64>()
                    .map_err(|e| Error::Asset(format!("asset reference '{text}': version '{v}' is not valid ({e})")))?;
                (name, At::Version(version))
            }
            Some((name, tag)) => {
                check_name(tag, "tag")?;
                (name, At::Tag(tag.to_string()))
            }
        };
        check_name(name, "asset name")?;
        Ok(Self { name: name.to_string(), at })
    }
}

impl fmt::Display for AssetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            At::Latest => write!(f, "{}", self.name),
            At::Version(v) => write!(f, "{}@{v}", self.name),
            At::Tag(t) => write!(f, "{}@{t}", self.name),
        }
    }
}

/// Asset names and tags: a letter first, then letters, digits, `_` or `-` (at most 128), so they
/// are valid folder names on every store and never start with `_` (Delta's hidden folders).
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Asset(format!(
            "{what} '{name}' is not valid: start with a letter, then use letters, digits, '_' or '-' (at most 128)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_tags_and_explains_bad_names() {
        assert_eq!(AssetRef::parse("accounts").unwrap().at, At::Latest);
        assert_eq!(AssetRef::parse("accounts@7").unwrap().at, At::Version(7));
        let tagged = AssetRef::parse("accounts@prod").unwrap();
        assert_eq!((tagged.name.as_str(), tagged.at.clone()), ("accounts", At::Tag("prod".into())));
        assert_eq!(tagged.to_string(), "accounts@prod");
        let e = AssetRef::parse("accounts@").unwrap_err().to_string();
        assert!(e.contains("nothing after '@'"), "{e}");
        let e = AssetRef::parse("_delta_log").unwrap_err().to_string();
        assert!(e.contains("asset name '_delta_log' is not valid"), "{e}");
        assert!(AssetRef::parse("a/b").is_err());
    }
}
