//! The REST source against a CRM-like API served by this test: next-link, cursor and offset
//! pagination; OAuth2 tokens that expire mid-read and a fixed bearer token; a 429 with
//! Retry-After, a 500, a page slower than the timeout and a malformed page, each once; a record
//! that does not fit its columns; incremental re-runs by LastModifiedDate in a SOQL query (and
//! with an API that ignores it); tokens that expire during a Retry-After wait.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use common::{ok, root, sluice_cmd};
use serde_json::{Value, json};

const SECRET: &str = "client-s3cret";
const BEARER: &str = "fixed-bearer-token";
const PAGE: usize = 10;

/// The API's state: accounts, issued tokens and their uses, faults still to inject.
#[derive(Default)]
struct Crm {
    accounts: Vec<Value>,
    tokens: HashMap<String, u32>,
    issued: u32,
    faults: HashSet<&'static str>,
    log: Vec<String>,
    /// Tokens die this long after they are issued (instead of after 3 uses).
    lifetime: Option<Duration>,
    /// When each token was issued.
    born: HashMap<String, Instant>,
    /// Whether the token endpoint tells `expires_in`.
    tells_expiry: bool,
    /// Whether the query endpoint ignores the SOQL WHERE (returns every account).
    ignores_where: bool,
    /// Requests answered 401.
    refused: u32,
    /// The offset page starting here is sent with text after its JSON.
    trailing_at: Option<usize>,
    /// The offset style also wants this key, as header `X-Api-Key` and query parameter `api_key`.
    api_key: Option<String>,
}

type Shared = Arc<Mutex<Crm>>;

fn account(i: usize, modified: &str) -> Value {
    let revenue = if i == 17 { json!("lots") } else { json!(i as f64 * 1000.0) };
    json!({
        "Id": format!("001{i:05}"),
        "Name": format!("Account {i}"),
        "AnnualRevenue": revenue,
        "BillingAddress": { "City": format!("City {}", i % 4), "Country": "NL" },
        "LastModifiedDate": modified,
    })
}

fn authorized(crm: &mut Crm, headers: &HeaderMap) -> bool {
    let Some(token) = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    if token == BEARER {
        return true;
    }
    if let Some(lifetime) = crm.lifetime {
        let alive = crm.born.get(token).is_some_and(|born| born.elapsed() < lifetime);
        crm.refused += u32::from(!alive);
        return alive;
    }
    // OAuth2 tokens are good for 3 requests: every read of more than 3 pages sees one expire.
    match crm.tokens.get_mut(token) {
        Some(uses) if *uses < 3 => {
            *uses += 1;
            true
        }
        _ => false,
    }
}

async fn token(State(crm): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut crm = crm.lock().unwrap();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        return (StatusCode::UNAUTHORIZED, "invalid_client").into_response();
    }
    crm.issued += 1;
    let token = format!("tok-{}", crm.issued);
    crm.tokens.insert(token.clone(), 0);
    crm.born.insert(token.clone(), Instant::now());
    let mut body = json!({ "access_token": token, "token_type": "Bearer" });
    match crm.lifetime {
        None => body["expires_in"] = json!(3600),
        Some(lifetime) if crm.tells_expiry => body["expires_in"] = json!(lifetime.as_secs_f64()),
        Some(_) => {}
    }
    axum::Json(body).into_response()
}

/// The time in a SOQL `WHERE LastModifiedDate > <time>` (None without one, or when the API
/// ignores it).
fn soql_since(crm: &Crm, q: Option<&String>) -> Option<String> {
    let q = q?;
    let (_, after) = q.split_once("WHERE LastModifiedDate > ")?;
    (!crm.ignores_where).then(|| after.split_whitespace().next().unwrap().to_string())
}

/// The accounts modified after `since`, ordered by Id.
fn selected(crm: &Crm, since: Option<&String>) -> Vec<Value> {
    let since = since.map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap());
    crm.accounts
        .iter()
        .filter(|a| {
            since.is_none_or(|s| chrono::DateTime::parse_from_rfc3339(a["LastModifiedDate"].as_str().unwrap()).unwrap() > s)
        })
        .cloned()
        .collect()
}

/// Injects each fault once, on the page it belongs to.
async fn fault(crm: &Shared, page: usize) -> Option<Response> {
    let fault = {
        let mut crm = crm.lock().unwrap();
        // Each page's faults, the first one still to inject is.
        let candidates: &[&'static str] = match page {
            2 => &["429", "lag"],
            3 => &["500", "429 again"],
            4 => &["slow"],
            5 => &["malformed"],
            _ => return None,
        };
        let &fault = candidates.iter().find(|f| crm.faults.contains(**f))?;
        crm.faults.remove(fault);
        crm.log.push(format!("{fault} on page {page}"));
        fault
    };
    Some(match fault {
        "429" | "429 again" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response(),
        "500" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "{\"records\": []}").into_response()
        }
        // A slow page that outlives a short token, then answered as usual.
        "lag" => {
            tokio::time::sleep(Duration::from_millis(1300)).await;
            return None;
        }
        _ => (StatusCode::OK, "{\"records\": [{\"Id\": ").into_response(),
    })
}

/// Next-link style, as Salesforce: `GET /services/data/query?q=SELECT ... WHERE LastModifiedDate > ..`
/// then the `nextRecordsUrl`s.
async fn query(State(crm): State<Shared>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if !authorized(&mut crm.lock().unwrap(), &headers) {
        return (StatusCode::UNAUTHORIZED, "[{\"errorCode\": \"INVALID_SESSION_ID\"}]").into_response();
    }
    if let Some(response) = fault(&crm, page).await {
        return response;
    }
    let mut crm = crm.lock().unwrap();
    let since = soql_since(&crm, q.get("q"));
    if page == 1 {
        let query = q.get("q").cloned().unwrap_or_default();
        crm.log.push(format!("query {query}"));
    }
    let all = selected(&crm, since.as_ref());
    let records: Vec<_> = all.iter().skip((page - 1) * PAGE).take(PAGE).cloned().collect();
    let done = page * PAGE >= all.len();
    let mut body = json!({ "totalSize": all.len(), "done": done, "records": records });
    if !done {
        let mut next = url::Url::parse("http://x/services/data/query/more").unwrap();
        next.query_pairs_mut().append_pair("page", &(page + 1).to_string());
        if let Some(query) = q.get("q") {
            next.query_pairs_mut().append_pair("q", query);
        }
        body["nextRecordsUrl"] = json!(format!("{}?{}", next.path(), next.query().unwrap()));
    }
    axum::Json(body).into_response()
}

/// Cursor style: `{"data": [...], "meta": {"next_cursor": ".."}}`.
async fn cursor(State(crm): State<Shared>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut crm = crm.lock().unwrap();
    if !authorized(&mut crm, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let start: usize = q.get("cursor").map(|c| c.trim_start_matches("c-").parse().unwrap()).unwrap_or(0);
    let all = selected(&crm, None);
    let data: Vec<_> = all.iter().skip(start).take(PAGE).cloned().collect();
    let next = if start + PAGE < all.len() { json!(format!("c-{}", start + PAGE)) } else { Value::Null };
    axum::Json(json!({ "data": data, "meta": { "next_cursor": next } })).into_response()
}

/// Offset style: a bare array per page.
async fn offset(State(crm): State<Shared>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut crm = crm.lock().unwrap();
    if !authorized(&mut crm, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(key) = &crm.api_key {
        let header = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if header != Some(key.as_str()) || q.get("api_key") != Some(key) {
            return (StatusCode::FORBIDDEN, "api key missing").into_response();
        }
    }
    let offset: usize = q["offset"].parse().unwrap();
    let limit: usize = q["limit"].parse().unwrap();
    crm.log.push(format!("offset {offset}"));
    let all = selected(&crm, None);
    let page = Value::Array(all.iter().skip(offset).take(limit).cloned().collect());
    let tail = if crm.trailing_at == Some(offset) { " }{" } else { "" };
    ([("content-type", "application/json")], format!("{page}{tail}")).into_response()
}

/// Serves the API on a free port of loopback from a thread of its own; returns its URL.
fn serve(crm: Shared) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = Router::new()
                .route("/oauth/token", post(token))
                .route("/services/data/query", get(query))
                .route("/services/data/query/more", get(query))
                .route("/cursor", get(cursor))
                .route("/offset", get(offset))
                .with_state(crm);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

fn sluice(lake: &Path, url: &str) -> Command {
    let mut cmd = sluice_cmd();
    cmd.current_dir(root())
        .env("SLUICE_ASSETS", lake)
        .env("CRM_URL", url)
        .env("CRM_CLIENT_SECRET", SECRET)
        .env("CRM_TIMEOUT_S", "1");
    cmd
}

fn sql(lake: &Path, query: &str) -> String {
    let out = sluice_cmd().current_dir(root()).env("SLUICE_ASSETS", lake).args(["sql", query]).output().unwrap();
    ok(out, query)
}

#[test]
fn crm_pages_land_through_faults_and_reruns_read_only_modified_accounts() {
    let old = "2026-01-01T00:00:00Z";
    let crm: Shared = Arc::new(Mutex::new(Crm {
        accounts: (0..45).map(|i| account(i, old)).collect(),
        faults: ["429", "500", "slow", "malformed"].into_iter().collect(),
        ..Default::default()
    }));
    let url = serve(crm.clone());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");

    let stdout = ok(sluice(&lake, &url).args(["run", "examples/rest_crm_accounts.toml"]).output().unwrap(), "crm run 1");
    assert!(stdout.contains("crm_accounts@0: 44 rows"), "{stdout}");
    assert!(stdout.contains("records      45 read = 44 landed + 1 quarantined"), "{stdout}");
    {
        let crm = crm.lock().unwrap();
        assert!(crm.faults.is_empty(), "every fault was met: {:?}", crm.log);
        assert!(crm.issued >= 2, "the expired token was replaced: {} issued", crm.issued);
    }
    let table = sql(&lake, "SELECT COUNT(DISTINCT \"Id\"), SUM(\"AnnualRevenue\") FROM crm_accounts");
    let expected: f64 = (0..45).filter(|i| *i != 17).map(|i| i as f64 * 1000.0).sum();
    assert!(table.contains("| 44 ") && table.contains(&format!("{expected}")), "{table}");
    let city = sql(&lake, "SELECT COUNT(*) FROM crm_accounts WHERE \"BillingAddress_City\" = 'City 1'");
    assert_eq!(common::first_value(&city), "10", "{city}");
    let bad = sql(&lake, "SELECT location, reason FROM crm_accounts_quarantine");
    assert!(bad.contains("page 2") && bad.contains("record 8") && bad.contains("AnnualRevenue"), "{bad}");

    // The first run asked for everything after the initial watermark.
    assert!(crm.lock().unwrap().log.iter().any(|l| l.ends_with("WHERE LastModifiedDate > 1970-01-01T00:00:00Z ORDER BY Id")));

    // Two accounts change and one is added: the next run reads exactly those. (Their time is
    // after the first run's start, which the second run reads from, and before the second
    // run's start, which bounds its window.)
    let now = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::thread::sleep(Duration::from_millis(2100));
    {
        let mut crm = crm.lock().unwrap();
        crm.accounts[3]["Name"] = json!("Renamed");
        crm.accounts[3]["LastModifiedDate"] = json!(now);
        crm.accounts[40]["AnnualRevenue"] = json!(1.5);
        crm.accounts[40]["LastModifiedDate"] = json!(now);
        crm.accounts.push(account(45, &now));
    }
    let stdout = ok(sluice(&lake, &url).args(["run", "examples/rest_crm_accounts.toml"]).output().unwrap(), "crm run 2");
    assert!(stdout.contains("crm_accounts@1: 3 rows"), "{stdout}");
    assert!(stdout.contains("records      3 read = 3 landed + 0 quarantined"), "{stdout}");
    let renamed = sql(&lake, "SELECT COUNT(*) FROM crm_accounts WHERE \"Name\" = 'Renamed'");
    assert_eq!(common::first_value(&renamed), "1", "{renamed}");
    {
        // The watermark went into the query: the API was asked for the changed accounts only.
        let crm = crm.lock().unwrap();
        let last = crm.log.iter().rev().find(|l| l.starts_with("query ")).unwrap();
        assert!(!last.contains("1970") && last.contains("WHERE LastModifiedDate > 2"), "{last}");
    }

    // An API that ignores the WHERE sends every account again: only the changed ones land.
    std::thread::sleep(Duration::from_millis(1100));
    let later = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(1100));
    {
        let mut crm = crm.lock().unwrap();
        crm.ignores_where = true;
        crm.accounts[5]["LastModifiedDate"] = json!(later);
    }
    let stdout = ok(sluice(&lake, &url).args(["run", "examples/rest_crm_accounts.toml"]).output().unwrap(), "crm run 3");
    assert!(stdout.contains("crm_accounts@2: 1 rows"), "{stdout}");
    assert!(stdout.contains("records      1 read = 1 landed + 0 quarantined"), "{stdout}");
    let total = sql(&lake, "SELECT COUNT(*) FROM crm_accounts");
    assert_eq!(common::first_value(&total), "48", "44 + 3 + 1: {total}");
    crm.lock().unwrap().ignores_where = false;

    // The same API by cursor with a fixed bearer token, and by offset with two parallel readers.
    let job = std::fs::read_to_string(root().join("examples/rest_crm_accounts.toml")).unwrap();
    let auth = "[sources.accounts.connection.auth.oauth2]\ntoken_url = \"oauth/token\"\nclient_id = \"${CRM_CLIENT_ID:-sluice}\"\nclient_secret = { env = \"CRM_CLIENT_SECRET\" }";
    assert!(job.contains(auth), "the example's auth section moved");
    let variants = [
        (
            "cursor",
            "path = \"cursor\"\nrecords = \"data\"\npagination = { style = \"cursor\", field = \"meta.next_cursor\", param = \"cursor\" }",
        ),
        ("offset", "path = \"offset\"\npartitions = 2\npagination = { style = \"offset\", limit = 7 }"),
    ];
    for (name, read) in variants {
        let mut text = job.replace(auth, "[sources.accounts.connection.auth.bearer]\ntoken = { env = \"CRM_BEARER\" }");
        let start = text.find("path = \"services").unwrap();
        let end = text.find("\n[sink]").unwrap();
        text.replace_range(start..end, &format!("{read}\n"));
        let text = text.replace("${CRM_ASSET:-crm_accounts}", &format!("crm_{name}"));
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = sluice(&lake, &url).env("CRM_BEARER", BEARER).arg("run").arg(&path).output().unwrap();
        let stdout = ok(out, name);
        assert!(stdout.contains(&format!("crm_{name}@0: 45 rows")), "{name}: {stdout}");
        let ids = sql(&lake, &format!("SELECT COUNT(DISTINCT \"Id\") FROM crm_{name}"));
        assert_eq!(common::first_value(&ids), "45", "{name}: {ids}");
    }
    let offsets = crm.lock().unwrap().log.iter().filter(|l| l.starts_with("offset")).count();
    // Pages of 7 records: 6 full ones and a short one, the empty one after it (the other reader's
    // stop), and the first page once more, sampled for the columns when the job was planned.
    assert_eq!(offsets, 7 + 1 + 1, "each page read once by one reader");

    // A wrong secret is a clear error that never shows the secret.
    let out = sluice(&lake, &url)
        .env("CRM_CLIENT_SECRET", "wrong-secret-value")
        .args(["run", "examples/rest_crm_accounts.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("refused the client credentials"), "{stderr}");
    assert!(!stderr.contains("wrong-secret-value"), "{stderr}");
}

/// Tokens that live 1 s, a second page slower than that and a 429 with `Retry-After: 1` on the
/// third: the token dies before the third page's request (401, a new token, the 429) and again
/// during the wait (401), so the client fetches a new one on each 401 that follows a wait. Told
/// `expires_in` (2 s), it renews before the request after the wait, and no request is refused.
#[test]
fn tokens_that_expire_in_a_retry_after_wait_are_renewed() {
    for tells_expiry in [false, true] {
        let crm: Shared = Arc::new(Mutex::new(Crm {
            accounts: (0..25).map(|i| account(i, "2026-01-01T00:00:00Z")).collect(),
            faults: ["lag", "429 again"].into_iter().collect(),
            // Told, the token lives 2 s: renewed 0.2 s early, after the wait.
            lifetime: Some(Duration::from_secs(if tells_expiry { 2 } else { 1 })),
            tells_expiry,
            ..Default::default()
        }));
        let url = serve(crm.clone());
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let out = sluice(&lake, &url).env("CRM_TIMEOUT_S", "5").args(["run", "examples/rest_crm_accounts.toml"]).output().unwrap();
        let stdout = ok(out, &format!("expires_in told: {tells_expiry}"));
        assert!(stdout.contains("records      25 read = 24 landed + 1 quarantined"), "{stdout}");
        let crm = crm.lock().unwrap();
        assert!(crm.faults.is_empty(), "the slow page and the 429 were met: {:?}", crm.log);
        // The plan's sample of page 1 has a token of its own.
        let least = if tells_expiry { 3 } else { 4 };
        assert!(crm.issued >= least, "tokens renewed as they died: {} issued", crm.issued);
        if tells_expiry {
            assert_eq!(crm.refused, 0, "no request left with a token past its expires_in");
        } else {
            assert!(crm.refused >= 2, "the dead tokens were refused and replaced: {}", crm.refused);
        }
    }
}

/// An API page is one JSON document: one with text after it is quarantined whole (the pages after
/// it still land), and records without their de-duplication key, or with a null one, are
/// quarantined with the column named. The API key goes as a secret header and query parameter,
/// and appears in no page label, quarantine location or log.
#[test]
fn a_page_with_text_after_its_json_and_records_without_their_key_are_quarantined() {
    let mut accounts: Vec<Value> = (0..20).map(|i| account(i, "2026-01-01T00:00:00Z")).collect();
    accounts[3].as_object_mut().unwrap().remove("Id");
    accounts[4]["Id"] = Value::Null;
    const KEY: &str = "k3y-in-the-query";
    let crm: Shared =
        Arc::new(Mutex::new(Crm { accounts, trailing_at: Some(7), api_key: Some(KEY.into()), ..Default::default() }));
    let url = serve(crm.clone());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let job = dir.path().join("keyed.toml");
    std::fs::write(
        &job,
        "[job]\nname = \"keyed\"\n\n[sources.accounts]\nkind = \"rest\"\nschema = \"Id string, AnnualRevenue double\"\n\
         flatten = \"_\"\ndedup = { key = [\"Id\"] }\n\n[sources.accounts.connection]\nurl = \"${CRM_URL}\"\nmax_retries = 1\n\
         max_backoff_s = 0.2\nheaders = { X-Api-Key = { env = \"CRM_API_KEY\" }, Accept = \"application/json\" }\n\n[sources.accounts.connection.auth.bearer]\ntoken = { env = \"CRM_BEARER\" }\n\n\
         [sources.accounts.read]\npath = \"offset\"\nquery = { api_key = { env = \"CRM_API_KEY\" } }\npagination = { style = \"offset\", limit = 7 }\n\n[sink]\nasset = \"keyed\"\n",
    )
    .unwrap();
    let out = sluice(&lake, &url).env("CRM_BEARER", BEARER).env("CRM_API_KEY", KEY).env("SLUICE_LOG", "debug").arg("run").arg(&job).output().unwrap();
    let everything = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!everything.contains(KEY), "{everything}");
    let stdout = ok(out, "keyed run");
    // Page 1: 7 records, two without their Id; page 2 quarantined whole; page 3: 6 records, one
    // (17) whose revenue is no number.
    assert!(stdout.contains("records      14 read = 10 landed + 4 quarantined"), "{stdout}");
    let ids = sql(&lake, "SELECT COUNT(DISTINCT \"Id\") || '/' || COUNT(*) FROM keyed");
    assert_eq!(common::first_value(&ids), "10/10", "{ids}");
    let bad = sql(&lake, "SELECT location || ': ' || reason FROM keyed_quarantine ORDER BY location");
    assert!(bad.contains("record 4: 'Id' is missing, and every record must have it"), "{bad}");
    assert!(bad.contains("record 5: 'Id' is null, and every record must have it"), "{bad}");
    assert!(bad.contains("offset=7") && bad.contains("trailing characters"), "{bad}");
    assert!(bad.contains("api_key=%3Credacted%3E") && !bad.contains(KEY), "{bad}");
    let raw = sql(&lake, "SELECT raw FROM keyed_quarantine");
    assert!(!raw.contains(KEY), "{raw}");
}
