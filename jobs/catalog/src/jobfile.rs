//! Reading job files, shared by every kind of job: `${NAME}` / `${NAME:-default}` filled from
//! the environment, TOML errors led by the line of the key they name, and the error threshold
//! (`max_errors`) jobs take.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Whether a job file's text (variables replaced) is a Kafka stream job: it has
/// `[input] topics`, which ETL and scoring jobs do not.
pub fn is_stream_job(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("input").and_then(|i| i.as_table()).map(|i| i.contains_key("topics")))
        .unwrap_or(false)
}

/// A limit on bad records.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "RawThreshold")]
pub enum ErrorThreshold {
    /// At most this many.
    Count(u64),
    /// At most this share, written as `"2.5%"`.
    Percent(f64),
}

/// A threshold as written: `100`, `"100"` (from `${VAR}`) or `"2.5%"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawThreshold {
    Count(u64),
    Text(String),
}

impl TryFrom<RawThreshold> for ErrorThreshold {
    type Error = String;
    fn try_from(raw: RawThreshold) -> std::result::Result<Self, String> {
        let text = match raw {
            RawThreshold::Count(n) => return Ok(Self::Count(n)),
            RawThreshold::Text(text) => text,
        };
        let t = text.trim();
        if let Ok(n) = t.parse::<u64>() {
            return Ok(Self::Count(n));
        }
        t.strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .map(Self::Percent)
            .ok_or_else(|| format!("max_errors: '{text}' is neither a count (100) nor a percentage (\"2.5%\")"))
    }
}

impl std::str::FromStr for ErrorThreshold {
    type Err = crate::error::Error;
    fn from_str(text: &str) -> Result<Self> {
        Self::try_from(RawThreshold::Text(text.to_string())).map_err(crate::error::Error::Invalid)
    }
}

impl ErrorThreshold {
    /// Whether `bad` of `read` records passes the limit.
    pub fn exceeded(&self, bad: u64, read: u64) -> bool {
        match *self {
            Self::Count(max) => bad > max,
            Self::Percent(p) => read > 0 && (bad as f64) * 100.0 > p * read as f64,
        }
    }
}

impl std::fmt::Display for ErrorThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n} records"),
            Self::Percent(p) => write!(f, "{p}% of the records read"),
        }
    }
}

/// A TOML error, led by the line of the unknown key it names: inside a source (whose kind decides
/// its keys) the parser can only point at the source's section.
fn with_key_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.to_string();
    let key = message.split("unknown field `").nth(1).and_then(|rest| rest.split('`').next());
    let line = key.and_then(|key| {
        let start = e.span().map_or(0, |s| s.start);
        let before = text[..start.min(text.len())].lines().count().max(1);
        text.lines().enumerate().skip(before.saturating_sub(1)).find_map(|(i, l)| {
            let at = l.find(key)?;
            let boundary = l[..at].chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let after = l[at + key.len()..].trim_start();
            (boundary && after.starts_with('=')).then_some(i + 1)
        })
    });
    match (key, line) {
        (Some(key), Some(line)) => format!("line {line}: unknown key `{key}`\n{message}"),
        _ => message,
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment variables.
/// The text of the job file at `path`.
pub fn read_job_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::io(format!("reading job file {}", path.display())))
}

/// A job file's text as `T`: `${NAME}` and `${NAME:-default}` replaced by environment variables
/// first; errors name `origin`, the line and the key.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    let text = interpolate(text).map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
    toml::from_str(&text).map_err(|e| Error::Invalid(format!("{origin}: {}", with_key_line(&text, &e))))
}

/// `text` with `${NAME}` and `${NAME:-default}` replaced by environment variables (the
/// incremental placeholders `${watermark}` and `${run_start}` are kept).
pub fn interpolate(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            // Up to 40 characters of it (by character: the text may be any UTF-8), and its line.
            let line = text.len() - rest.len() + start;
            let line = text[..line].matches('\n').count() + 1;
            let shown: String = rest[start..].chars().take(40).collect();
            format!("line {line}: unclosed ${{ in '{shown}': write ${{NAME}} or ${{NAME:-default}}")
        })?;
        let inner = &after[..end];
        // The incremental window's placeholders are filled by the source at each run.
        if matches!(inner, "watermark" | "run_start") {
            out.push_str(&rest[start..start + 2 + end + 1]);
            rest = &after[end + 1..];
            continue;
        }
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name), default) {
            (Ok(value), _) => out.push_str(&value),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                return Err(format!("${{{name}}} is not set; set it, or write ${{{name}:-default}}"));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

