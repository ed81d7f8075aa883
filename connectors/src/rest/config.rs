//! Settings of a REST/JSON source: the connection (base URL, auth, retries) apart from what to
//! read (path, where the records are, pagination, incremental field).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use sluice_lake::datastore::{SecretRef, Setting};

/// How to reach the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConnection {
    /// Base URL; the read's path and next-page links resolve against it.
    pub url: String,
    /// Authentication (default: none).
    #[serde(default)]
    pub auth: Option<RestAuth>,
    /// Extra request headers: text, or secret references (`X-Api-Key = { env = "CRM_KEY" }`),
    /// sent as sensitive headers and never shown.
    #[serde(default)]
    pub headers: BTreeMap<String, Setting>,
    /// Seconds one request may take before it is retried (default 30).
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Retries of a request that failed with 429, 5xx, a timeout or a malformed body (default 5).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Longest wait between retries, in seconds, also capping a server's Retry-After (default 30).
    #[serde(default = "default_backoff")]
    pub max_backoff_s: f64,
}

/// Authentication of a REST source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RestAuth {
    /// A fixed bearer token.
    Bearer {
        /// The token (`{ env = "NAME" }` or `{ file = "PATH" }`).
        token: SecretRef,
    },
    /// OAuth2 client credentials: a token is fetched from `token_url`, and fetched again when
    /// the API says it expired (401).
    Oauth2 {
        /// The token endpoint (absolute, or relative to the base URL).
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret (`{ env = "NAME" }` or `{ file = "PATH" }`).
        client_secret: SecretRef,
        /// Scope to ask for.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// What to read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestRead {
    /// Path of the first page, relative to the base URL.
    pub path: String,
    /// Query parameters of every request: text, or secret references (`api_key = { env =
    /// "CRM_KEY" }`), whose values are redacted in page labels, quarantine locations and logs.
    #[serde(default)]
    pub query: BTreeMap<String, Setting>,
    /// Where the records are in a page, as a dotted path (`records`, `data.items`); empty when
    /// the page is the array.
    #[serde(default)]
    pub records: String,
    /// How pages follow each other (default: one page).
    #[serde(default)]
    pub pagination: Pagination,
    /// Only records modified since the last run's start.
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// Parallel readers of offset or page pagination (page `k` is read by reader `k mod n`;
    /// default 1).
    #[serde(default)]
    pub partitions: Option<usize>,
}

/// Pagination styles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One page.
    #[default]
    None,
    /// Each page names the next one's URL (Salesforce `nextRecordsUrl`); absent or null at the end.
    NextLink {
        /// Dotted path of the link in the page.
        field: String,
    },
    /// Each page carries a cursor passed back as a query parameter; absent or null at the end.
    Cursor {
        /// Dotted path of the cursor in the page.
        field: String,
        /// The query parameter taking it.
        param: String,
    },
    /// `?offset=200&limit=100`; a page with fewer records than the limit is the last.
    Offset {
        /// The offset parameter.
        #[serde(default = "default_offset_param")]
        param: String,
        /// The page-size parameter.
        #[serde(default = "default_limit_param")]
        limit_param: String,
        /// Records per page.
        #[serde(default = "default_page_size")]
        limit: u64,
    },
    /// `?page=3&per_page=100`; a page with fewer records than the size is the last.
    Page {
        /// The page-number parameter.
        #[serde(default = "default_page_param")]
        param: String,
        /// The page-size parameter.
        #[serde(default = "default_size_param")]
        size_param: String,
        /// Records per page.
        #[serde(default = "default_page_size")]
        size: u64,
        /// Number of the first page.
        #[serde(default = "default_first_page")]
        first: u64,
    },
}

/// Incremental reads by a modified-since filter: the previous run's start goes into a query
/// parameter (`param`), or into the query itself where `read.path` or a `read.query` value
/// holds `${watermark}` (a SOQL `WHERE LastModifiedDate > ${watermark}`); `${run_start}` there is
/// this run's start. Either way the records whose `field` falls outside (previous start, this
/// start] are dropped on arrival, so an API that ignores the filter lands nothing twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// The query parameter taking the last run's start time (RFC 3339), e.g. `modified_since`;
    /// leave it out when the query template takes `${watermark}`.
    #[serde(default)]
    pub param: Option<String>,
    /// The query parameter taking this run's start time, if the API has an upper bound.
    #[serde(default)]
    pub until_param: Option<String>,
    /// The records' modified-time field (filtered on, and recorded in lineage).
    pub field: String,
    /// What `${watermark}` is on the first run (default `1970-01-01T00:00:00Z`: everything).
    #[serde(default = "default_initial_watermark")]
    pub initial: String,
}

/// The placeholder of the previous run's start in a query template.
pub const WATERMARK: &str = "${watermark}";
/// The placeholder of this run's start.
pub const RUN_START: &str = "${run_start}";

fn default_initial_watermark() -> String {
    "1970-01-01T00:00:00Z".into()
}

impl RestRead {
    /// Whether the path or a query value takes the watermark.
    pub fn templated(&self) -> bool {
        self.path.contains(WATERMARK)
            || self.query.values().any(|v| matches!(v, Setting::Text(text) if text.contains(WATERMARK)))
    }
}

fn default_timeout() -> f64 {
    30.0
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> f64 {
    30.0
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_size_param() -> String {
    "per_page".into()
}
fn default_page_size() -> u64 {
    100
}
fn default_first_page() -> u64 {
    1
}
