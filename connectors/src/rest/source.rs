//! Planning and reading a REST source: the client samples the first page for the columns and
//! fixes the incremental window; each partition walks its pages.

use arrow::datatypes::{Schema, SchemaRef};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use url::Url;

use super::client::{Client, Fetched};
use super::config::{Pagination, RUN_START, RestConnection, RestRead, WATERMARK};
use sluice_lake::datastore::Setting;
use crate::error::{Error, Result};
use crate::json::{Decoded, JsonOptions, RecordDecoder, Reject};

/// A planned read of a REST source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestPlan {
    /// The source's name.
    pub source: String,
    /// How to reach the API.
    pub connection: RestConnection,
    /// What to read.
    pub read: RestRead,
    /// The records' columns.
    pub schema: Schema,
    /// Separator nested objects are flattened with, when they are.
    pub flatten: Option<String>,
    /// Whether numbers written as strings are parsed (else the records are rejected).
    #[serde(default)]
    pub coerce: bool,
    /// Columns every record must hold (key and required columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// Parallel readers.
    pub partitions: usize,
    /// Incremental window: records modified after `since` (the previous run's start)...
    pub since: Option<String>,
    /// ...up to this run's start, which the next run starts from.
    pub upto: Option<String>,
}

impl RestPlan {
    /// The records' schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.schema.clone())
    }

    /// What lineage records as the input.
    pub fn lineage(&self) -> String {
        let url = Url::parse(&self.connection.url).and_then(|base| base.join(&self.read.path));
        let mut text = format!("rest:{}", url.map_or_else(|_| self.read.path.clone(), String::from));
        if let Some(inc) = &self.read.incremental {
            text.push_str(&format!(
                " {} in ({}, {}]",
                inc.field,
                self.since.as_deref().unwrap_or("-inf"),
                self.upto.as_deref().unwrap_or("+inf")
            ));
        }
        text
    }

    /// `text` with the incremental window's placeholders filled in.
    fn fill(&self, text: &str) -> String {
        let Some(inc) = &self.read.incremental else { return text.to_string() };
        let since = self.since.as_deref().unwrap_or(&inc.initial);
        let upto = self.upto.as_deref().unwrap_or_default();
        text.replace(WATERMARK, since).replace(RUN_START, upto)
    }

    /// `url`'s path and query as page labels show them: the values of secret query parameters
    /// are `<redacted>` (also where the API echoes them in next-page links).
    pub fn shown(&self, url: &Url) -> String {
        let secret: Vec<&str> = self.read.query.iter().filter(|(_, v)| v.is_secret()).map(|(k, _)| k.as_str()).collect();
        let query = match url.query() {
            None => String::new(),
            Some(_) if secret.is_empty() => format!("?{}", url.query().unwrap_or_default()),
            Some(_) => {
                let mut shown = url::form_urlencoded::Serializer::new(String::new());
                for (name, value) in url.query_pairs() {
                    let value = if secret.contains(&name.as_ref()) { "<redacted>".into() } else { value };
                    shown.append_pair(&name, &value);
                }
                format!("?{}", shown.finish())
            }
        };
        format!("{}{query}", url.path())
    }

    /// The URL of page `k` (0-based) of offset or page pagination, or of the first page.
    fn page_url(&self, client: &Client, k: u64) -> Result<Url> {
        let mut url = client.url(&self.fill(&self.read.path))?;
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &self.read.query {
                match value {
                    Setting::Text(text) => query.append_pair(name, &self.fill(text)),
                    Setting::Secret(_) => {
                        let key = format!("sources.{}.read.query.{name}", self.source);
                        query.append_pair(name, value.resolve(&key).map_err(Error::Config)?.expose())
                    }
                };
            }
            if let (Some(inc), Some(since)) = (&self.read.incremental, &self.since)
                && let Some(param) = &inc.param
            {
                query.append_pair(param, since);
            }
            if let (Some(inc), Some(upto)) = (&self.read.incremental, &self.upto)
                && let Some(param) = &inc.until_param
            {
                query.append_pair(param, upto);
            }
            match &self.read.pagination {
                Pagination::Offset { param, limit_param, limit } => {
                    query.append_pair(param, &(k * limit).to_string());
                    query.append_pair(limit_param, &limit.to_string());
                }
                Pagination::Page { param, size_param, size, first } => {
                    query.append_pair(param, &(first + k).to_string());
                    query.append_pair(size_param, &size.to_string());
                }
                _ => {}
            }
        }
        Ok(url)
    }
}

/// Plans reading source `source`: the columns from `options` and the first page's records, and
/// the incremental window from `since` (the previous run's start) to now.
pub async fn plan(
    source: &str,
    connection: &RestConnection,
    read: &RestRead,
    options: &JsonOptions,
    since: Option<String>,
) -> Result<RestPlan> {
    let partitions = match read.pagination {
        Pagination::Offset { .. } | Pagination::Page { .. } => read.partitions.unwrap_or(1).max(1),
        _ if read.partitions.is_some_and(|p| p > 1) => {
            return Err(Error::Config(format!(
                "source '{source}': partitions > 1 needs offset or page pagination (next links and cursors are \
                 followed one page after another)"
            )));
        }
        _ => 1,
    };
    if let Some(inc) = &read.incremental {
        if inc.param.is_none() && !read.templated() {
            return Err(Error::Config(format!(
                "source '{source}': read.incremental needs `param` (a query parameter taking the last run's start) \
                 or {WATERMARK} in read.path or a read.query value (e.g. q = \"... WHERE {} > {WATERMARK}\")",
                inc.field
            )));
        }
        if window_bound(&inc.initial).is_none() {
            return Err(Error::Config(format!(
                "source '{source}': read.incremental.initial = '{}' is no RFC 3339 time (e.g. 1970-01-01T00:00:00Z)",
                inc.initial
            )));
        }
    }
    let upto = read.incremental.as_ref().map(|_| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let mut plan = RestPlan {
        source: source.to_string(),
        connection: connection.clone(),
        read: read.clone(),
        schema: Schema::empty(),
        flatten: options.flatten.clone(),
        coerce: options.coerce,
        required: options.required.clone(),
        partitions,
        since,
        upto,
    };
    let infer = options.infer.unwrap_or(true);
    let sample = if infer {
        let mut client = Client::new(source, connection)?;
        let url = plan.page_url(&client, 0)?;
        match client.get(&url, "page 1").await? {
            Fetched::Json(page) => records_of(&page, &read.records)
                .map(|records| records.iter().take(options.sample).map(Value::to_string).collect())
                .unwrap_or_default(),
            Fetched::Malformed { .. } => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let schema = options.schema_from(&sample).map_err(|e| Error::Config(format!("source '{source}': {e}")))?;
    options.decoder(schema.clone()).map_err(|e| Error::Config(format!("source '{source}': {e}")))?;
    plan.schema = schema.as_ref().clone();
    Ok(plan)
}

/// The records array at dotted `path` in `page`.
fn records_of<'a>(page: &'a Value, path: &str) -> std::result::Result<&'a Vec<Value>, String> {
    let found = lookup(page, path).ok_or_else(|| format!("no '{path}' in the page"))?;
    found.as_array().ok_or_else(|| format!("'{path}' is not an array of records"))
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').filter(|p| !p.is_empty()).try_fold(value, |v, key| v.get(key))
}

/// A time as APIs write them: RFC 3339, or Salesforce's `2026-11-24T08:00:00.000+0000`.
fn window_bound(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
}

/// Where a record falls against the incremental window.
enum Window {
    Inside,
    Outside,
    /// Its modified time is missing or no time: the reason.
    Unknown(String),
}

/// The incremental window of a plan, as times.
struct Bounds {
    field: String,
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    upto: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl Bounds {
    fn of(plan: &RestPlan) -> Option<Self> {
        let inc = plan.read.incremental.as_ref()?;
        Some(Self {
            field: inc.field.clone(),
            since: plan.since.as_deref().and_then(window_bound),
            upto: plan.upto.as_deref().and_then(window_bound),
        })
    }

    fn place(&self, record: &Value) -> Window {
        let Some(value) = lookup(record, &self.field).filter(|v| !v.is_null()) else {
            return Window::Unknown(format!(
                "no '{}': an incremental read cannot tell which run it belongs to",
                self.field
            ));
        };
        let Some(at) = value.as_str().and_then(window_bound) else {
            return Window::Unknown(format!("'{}' = {value} is no time (RFC 3339 expected)", self.field));
        };
        if self.since.is_some_and(|s| at <= s) || self.upto.is_some_and(|u| at > u) {
            Window::Outside
        } else {
            Window::Inside
        }
    }
}

/// Reads partition `partition` of `plan`: batches of the records of its pages, with the
/// records (or pages) rejected among them and the number of records read. An incremental
/// read drops the records outside its window (counted in a warning, not as read).
pub fn read_partition(plan: RestPlan, partition: usize) -> impl Stream<Item = Result<(Decoded, u64)>> + Send + 'static {
    let decoder = RecordDecoder::new(plan.schema(), plan.flatten.clone()).coercing(plan.coerce).requiring(&plan.required);
    let bounds = Bounds::of(&plan);
    async_stream::try_stream! {
        let decoder = decoder?;
        let mut outside = 0u64;
        let mut client = Client::new(&plan.source, &plan.connection)?;
        let stride = plan.partitions as u64;
        let mut k = partition as u64;
        let mut url = plan.page_url(&client, k)?;
        let mut number = 1u64;
        loop {
            let page = format!("page {} ({})", if stride > 1 { k + 1 } else { number }, plan.shown(&url));
            let json = match client.get(&url, &page).await? {
                Fetched::Json(json) => json,
                Fetched::Malformed { body, reason } => {
                    let reject = Reject { location: page.clone(), raw: body, reason };
                    yield (Decoded { batch: None, rejects: vec![reject] }, 1);
                    match plan.read.pagination {
                        Pagination::Offset { .. } | Pagination::Page { .. } => {
                            k += stride;
                            url = plan.page_url(&client, k)?;
                            continue;
                        }
                        _ => Err(Error::Source(format!(
                            "source '{}': {page} is not valid JSON after every retry, so the pages after it \
                             cannot be found; it is kept in the quarantine",
                            plan.source
                        )))?,
                    }
                    break;
                }
            };
            let records = records_of(&json, &plan.read.records)
                .map_err(|e| Error::Source(format!("source '{}': {page}: {e}; check `records`", plan.source)))?;
            let mut texts = Vec::with_capacity(records.len());
            let mut numbers = Vec::with_capacity(records.len());
            let mut unplaced = Vec::new();
            for (i, record) in records.iter().enumerate() {
                match bounds.as_ref().map_or(Window::Inside, |b| b.place(record)) {
                    Window::Inside => {
                        texts.push(record.to_string());
                        numbers.push(i + 1);
                    }
                    Window::Outside => outside += 1,
                    Window::Unknown(reason) => {
                        unplaced.push(Reject { location: format!("{page} record {}", i + 1), raw: record.to_string(), reason });
                    }
                }
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut decoded = decoder.decode(&refs, &|i| format!("{page} record {}", numbers[i]))?;
            // Read: the records inside the window and those that could not be placed.
            let count = (texts.len() + unplaced.len()) as u64;
            decoded.rejects.extend(unplaced);
            yield (decoded, count);
            let next = match &plan.read.pagination {
                Pagination::None => None,
                Pagination::NextLink { field } => {
                    lookup(&json, field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(|link| client.url(link)).transpose()?
                }
                Pagination::Cursor { field, param } => match lookup(&json, field).filter(|v| !v.is_null()) {
                    Some(cursor) => {
                        let cursor = cursor.as_str().map(str::to_string).unwrap_or_else(|| cursor.to_string());
                        let mut next = plan.page_url(&client, 0)?;
                        next.query_pairs_mut().append_pair(param, &cursor);
                        Some(next)
                    }
                    None => None,
                },
                Pagination::Offset { limit, .. } | Pagination::Page { size: limit, .. } => {
                    if count < *limit {
                        None
                    } else {
                        k += stride;
                        Some(plan.page_url(&client, k)?)
                    }
                }
            };
            match next {
                Some(next) => url = next,
                None => break,
            }
            number += 1;
        }
        if outside > 0 && let Some(b) = &bounds {
            tracing::warn!(source = %plan.source, partition, records = outside, field = %b.field,
                "the API sent records outside the incremental window (landed by an earlier run, or left to the next); dropped");
        }
    }
}
