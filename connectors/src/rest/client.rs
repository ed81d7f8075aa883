//! One API client: auth headers, token refresh before a token's `expires_in` runs out and on a
//! 401, retries of 429 (after Retry-After), 5xx, timeouts and malformed bodies, with capped
//! exponential backoff.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

use super::config::{RestAuth, RestConnection};
use crate::error::{Error, Result};

/// A page fetched: its JSON, or its body when it never parsed.
pub enum Fetched {
    /// The page's JSON.
    Json(Value),
    /// The body did not parse as JSON, on every try.
    Malformed {
        /// The body of the last try.
        body: String,
        /// Why it did not parse.
        reason: String,
    },
}

/// A client of one API for one source.
pub struct Client {
    source: String,
    connection: RestConnection,
    base: Url,
    http: reqwest::Client,
    token: Option<Token>,
    max_backoff: Duration,
    /// `connection.headers`, their secrets read and marked sensitive.
    headers: reqwest::header::HeaderMap,
}

/// An OAuth2 access token and when to fetch the next one.
struct Token {
    value: String,
    /// A little before `expires_in` runs out (None when the endpoint gave no lifetime).
    renew_at: Option<Instant>,
}

impl Token {
    fn fresh(&self) -> bool {
        self.renew_at.is_none_or(|at| Instant::now() < at)
    }
}

impl Client {
    /// A client of `connection` for source `source`.
    pub fn new(source: &str, connection: &RestConnection) -> Result<Self> {
        let base = Url::parse(&connection.url)
            .map_err(|e| Error::Config(format!("source '{source}': url '{}': {e}", connection.url)))?;
        let key = |name: &str| format!("sources.{source}.connection.{name}");
        let timeout = crate::seconds(&key("timeout_s"), connection.timeout_s)?.max(Duration::from_millis(1));
        let max_backoff = crate::seconds(&key("max_backoff_s"), connection.max_backoff_s)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Source(format!("source '{source}': HTTP client: {e}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, setting) in &connection.headers {
            let key = key(&format!("headers.{name}"));
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Config(format!("{key}: '{name}' is not a valid HTTP header name")))?;
            let value = setting.resolve(&key).map_err(Error::Config)?;
            let mut value = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                Error::Config(format!("{key}: the value holds characters an HTTP header cannot carry (line breaks, control characters)"))
            })?;
            value.set_sensitive(setting.is_secret());
            headers.insert(header, value);
        }
        Ok(Self { source: source.to_string(), connection: connection.clone(), base, http, token: None, max_backoff, headers })
    }

    /// `path` (relative or absolute) against the base URL.
    pub fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::Config(format!("source '{}': '{path}': {e}", self.source)))
    }

    fn error(&self, what: String) -> Error {
        Error::Source(format!("source '{}': {what}", self.source))
    }

    /// The bearer token to send, fetching one for OAuth2 when there is none.
    async fn bearer(&mut self) -> Result<Option<String>> {
        match &self.connection.auth {
            None => Ok(None),
            Some(RestAuth::Bearer { token }) => {
                let key = format!("sources.{}.connection.auth.bearer.token", self.source);
                Ok(Some(token.resolve(&key).map_err(|e| self.error(e))?.expose().to_string()))
            }
            Some(RestAuth::Oauth2 { .. }) => {
                if !self.token.as_ref().is_some_and(Token::fresh) {
                    if self.token.is_some() {
                        tracing::info!(source = %self.source, "token past its expires_in; fetching a new one");
                    }
                    self.token = Some(self.fetch_token().await?);
                }
                Ok(self.token.as_ref().map(|t| t.value.clone()))
            }
        }
    }

    async fn fetch_token(&self) -> Result<Token> {
        let Some(RestAuth::Oauth2 { token_url, client_id, client_secret, scope }) = &self.connection.auth else {
            return Err(self.error("no OAuth2 settings".into()));
        };
        let key = format!("sources.{}.connection.auth.oauth2.client_secret", self.source);
        let secret = client_secret.resolve(&key).map_err(|e| self.error(e))?;
        let url = self.url(token_url)?;
        let mut form = vec![("grant_type", "client_credentials"), ("client_id", client_id.as_str())];
        form.push(("client_secret", secret.expose()));
        if let Some(scope) = scope {
            form.push(("scope", scope.as_str()));
        }
        let mut last = String::new();
        for attempt in 0..=self.connection.max_retries {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            let asked = Instant::now();
            let response = match self.http.post(url.clone()).form(&form).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = without_url(&e);
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                last = format!("HTTP {status}");
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(self.error(format!(
                    "the token endpoint {url} refused the client credentials (HTTP {status}): {}; check client_id \
                     and client_secret",
                    snippet(&body)
                )));
            }
            let json: Value = serde_json::from_str(&body)
                .map_err(|e| self.error(format!("the token endpoint {url} answered with no JSON: {e}")))?;
            let value = json
                .get("access_token")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| self.error(format!("the token endpoint {url} answered without an access_token")))?;
            // `expires_in` counts from the answer; renewing a tenth early (at most 30 s) keeps a
            // request from leaving with a token that dies on the way.
            let lifetime = json
                .get("expires_in")
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
                .and_then(|s| Duration::try_from_secs_f64(s).ok());
            let renew_at = lifetime.map(|l| asked + l - (l / 10).min(Duration::from_secs(30)));
            return Ok(Token { value, renew_at });
        }
        Err(self.error(format!("the token endpoint {url} failed {} times; last: {last}", self.connection.max_retries + 1)))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let seconds = 0.2 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32);
        Duration::from_secs_f64(seconds).min(self.max_backoff)
    }

    /// GETs `url` as JSON, retrying what can succeed on a later try; `page` names it in errors.
    pub async fn get(&mut self, url: &Url, page: &str) -> Result<Fetched> {
        let mut refreshed = false;
        let mut malformed = None;
        let mut last = String::new();
        let mut attempt = 0;
        while attempt <= self.connection.max_retries {
            let mut request = self.http.get(url.clone()).headers(self.headers.clone());
            if let Some(token) = self.bearer().await? {
                request = request.bearer_auth(token);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = if e.is_timeout() { "timed out".into() } else { without_url(&e) };
                    tracing::warn!(source = %self.source, page, error = %last, "request failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt)).await;
                    refreshed = false;
                    continue;
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && matches!(self.connection.auth, Some(RestAuth::Oauth2 { .. })) {
                if refreshed {
                    return Err(self.error(format!("{page}: HTTP 401 even with a fresh OAuth2 token; check the client's access")));
                }
                // The token expired: fetch a new one, without using up a retry. `refreshed` holds
                // until the next wait, after which even a fresh token may have expired.
                tracing::info!(source = %self.source, page, "token refused; fetching a new one");
                self.token = None;
                refreshed = true;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(&response).unwrap_or_else(|| self.backoff(attempt + 1));
                let wait = wait.min(self.max_backoff);
                last = format!("HTTP 429 (rate limited; waited {:.1} s)", wait.as_secs_f64());
                tracing::warn!(source = %self.source, page, wait_s = wait.as_secs_f64(), "rate limited");
                attempt += 1;
                tokio::time::sleep(wait).await;
                refreshed = false;
                continue;
            }
            if status.is_server_error() {
                last = format!("HTTP {status}");
                tracing::warn!(source = %self.source, page, %status, "server error; retrying");
                attempt += 1;
                tokio::time::sleep(self.backoff(attempt)).await;
                refreshed = false;
                continue;
            }
            let body = match response.text().await {
                Ok(body) => body,
                Err(e) => {
                    last = if e.is_timeout() { "timed out reading the body".into() } else { without_url(&e) };
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt)).await;
                    refreshed = false;
                    continue;
                }
            };
            if !status.is_success() {
                let hint = match status {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "; check the source's auth settings",
                    StatusCode::NOT_FOUND => "; check the url and path",
                    _ => "",
                };
                return Err(self.error(format!("{page}: HTTP {status}: {}{hint}", snippet(&body))));
            }
            match serde_json::from_str(&body) {
                Ok(json) => return Ok(Fetched::Json(json)),
                Err(e) => {
                    // Maybe cut off in transit: try again before giving up on the page.
                    last = format!("malformed JSON: {e}");
                    tracing::warn!(source = %self.source, page, error = %e, "malformed page; retrying");
                    malformed = Some((body, format!("the page is not valid JSON: {e}")));
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt)).await;
                    refreshed = false;
                }
            }
        }
        if let Some((body, reason)) = malformed {
            return Ok(Fetched::Malformed { body, reason });
        }
        Err(self.error(format!("{page}: failed {} times; last: {last}", self.connection.max_retries + 1)))
    }
}

/// Retry-After in seconds (the HTTP-date form is rare in APIs and treated as absent, as is a
/// value that is no duration).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Duration::try_from_secs_f64(value.trim().parse::<f64>().ok()?).ok()
}

/// A transport error without its URL (which may carry query parameters the user did not write).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the request");
    }
    text
}

fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}
