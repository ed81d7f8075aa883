//! The web console of `sluice serve --http`: runs (cancel for operators), data assets (versions,
//! schema, profile, lineage), models, drift (reference against current histograms per column,
//! each metric over the runs) and the cluster; `/metrics` exports the latest drift of each
//! monitored model as Prometheus gauges. Server-rendered HTML with SVG charts.
//!
//! The same users and roles as Flight ([`crate::Access`]): `Authorization: Basic` or
//! `Bearer`, or a session cookie from the sign-in form or a `?token=` link (which is exchanged for
//! a session and dropped from the address). Readers see everything; operators also act.

mod html;
mod pages;
mod svg;

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use datafusion::prelude::SessionContext;
use sluice_lake::delta::Lake;

use sluice_catalog::error::Result;
use sluice_catalog::runs::Catalog;
use crate::{Access, Permission, Principal};

/// Name of the session cookie.
const COOKIE: &str = "sluice_session";

/// What the console reads and acts on.
pub struct Console {
    /// The lake: assets, their history, run folders.
    pub lake: Lake,
    /// A session on the cluster, for profiles of assets.
    pub ctx: SessionContext,
    /// An in-process session with the lake's assets, for small reads (drift reports).
    pub local: SessionContext,
    /// The run catalog.
    pub runs: Arc<Catalog>,
    /// Users and roles.
    pub access: Access,
    /// The scheduler's address (`df://host:port`), for the cluster page.
    pub scheduler: Option<String>,
    /// Executors running in this process (an embedded cluster): their devices and counters.
    pub executors: Vec<sluice_engine::cluster::EmbeddedExecutor>,
    /// Each asset's latest version and its lineage, for the lineage graphs.
    pub lineage: std::sync::Mutex<std::collections::HashMap<String, (u64, serde_json::Value)>>,
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/assets", get(assets))
        .route("/assets/{name}", get(asset))
        .route("/models", get(models))
        .route("/models/{name}", get(model))
        .route("/drift", get(drift_list))
        .route("/drift/{name}", get(drift))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .with_state(console)
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| sluice_catalog::error::Error::Invalid(format!("the console stopped: {e}")))
}

type Shared = State<Arc<Console>>;

/// Why a request was turned away.
enum Refused {
    /// No credentials: to the sign-in page.
    SignIn,
    /// Wrong credentials.
    Denied(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => Redirect::to("/login").into_response(),
            Self::Denied(why) => (StatusCode::UNAUTHORIZED, why).into_response(),
        }
    }
}

/// Who sent the request, or why they are turned away (HTML pages go to sign-in).
fn who(c: &Console, headers: &HeaderMap) -> std::result::Result<Principal, Refused> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(&format!("{COOKIE}=")).map(|t| format!("Bearer {t}")));
    match c.access.authenticate(authorization.or(cookie).as_deref()) {
        Ok(p) => Ok(p),
        Err(_) if headers.get(header::AUTHORIZATION).is_none() => Err(Refused::SignIn),
        Err(denied) => Err(Refused::Denied(denied.message().to_string())),
    }
}

/// A `?token=` link: exchanged for a session cookie, and the address without it.
#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Signs in with `?token=` when present (redirecting to `path` without it), else `None`.
fn token_login(c: &Console, path: &str, query: &TokenQuery) -> Option<Response> {
    let token = query.token.as_deref()?;
    Some(match c.access.authenticate(Some(&format!("Bearer {token}"))).and_then(|p| c.access.open_session(&p)) {
        Ok(session) => with_session(Redirect::to(path).into_response(), &session),
        Err(denied) => (StatusCode::UNAUTHORIZED, Html(html::page("Sign in", "", None, &login_body(Some(denied.message()))))).into_response(),
    })
}

fn with_session(mut response: Response, session: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict")) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// A page for `p`, or an error page naming what failed.
fn respond(title: &str, active: &str, p: &Principal, body: Result<String>) -> Response {
    match body {
        Ok(body) => Html(html::page(title, active, Some(p), &body)).into_response(),
        Err(e) => {
            let body = format!(r#"<div class="error">{}</div>"#, html::escape(&e.to_string()));
            (StatusCode::INTERNAL_SERVER_ERROR, Html(html::page(title, active, Some(p), &body))).into_response()
        }
    }
}

fn login_body(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| format!(r#"<p class="error">{}</p>"#, html::escape(e)));
    format!(
        r#"{error}<form method="post" action="/login" class="card" style="max-width:320px">
<p><label>User<br><input name="user" autocomplete="username" required></label></p>
<p><label>Password<br><input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit" style="background:#2e6da4">Sign in</button></p></form>"#
    )
}

async fn login_form() -> Html<String> {
    Html(html::page("Sign in", "", None, &login_body(None)))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login(State(c): Shared, Form(form): Form<LoginForm>) -> Response {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", form.user, form.password));
    match c.access.authenticate(Some(&format!("Basic {basic}"))).and_then(|p| c.access.open_session(&p)) {
        Ok(session) => with_session(Redirect::to("/runs").into_response(), &session),
        Err(denied) => (StatusCode::UNAUTHORIZED, Html(html::page("Sign in", "", None, &login_body(Some(denied.message()))))).into_response(),
    }
}

async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("sluice_session=; Path=/; Max-Age=0"));
    response
}

/// Resolves the caller (a `?token=` link first), then renders `body` for them.
macro_rules! page {
    ($c:expr, $headers:expr, $query:expr, $path:expr, $title:expr, $active:expr, |$p:ident| $body:expr) => {{
        if let Some(r) = token_login(&$c, $path, &$query) {
            return r;
        }
        let $p = match who(&$c, &$headers) {
            Ok(p) => p,
            Err(r) => return r.into_response(),
        };
        let body = $body;
        respond($title, $active, &$p, body)
    }};
}

async fn runs(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    page!(c, headers, q, "/runs", "Runs", "/runs", |p| pages::runs(&c, &p).await)
}

async fn run(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>, Path(id): Path<String>) -> Response {
    let path = format!("/runs/{}", html::segment(&id));
    page!(c, headers, q, &path, &format!("Run {id}"), "/runs", |p| pages::run(&c, &p, &id).await)
}

async fn cancel(State(c): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let p = match who(&c, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    if let Err(denied) = p.check(Permission::Operate) {
        let body = format!(r#"<div class="error">{}</div>"#, html::escape(denied.message()));
        return (StatusCode::FORBIDDEN, Html(html::page("Not allowed", "/runs", Some(&p), &body))).into_response();
    }
    match c.runs.cancel(&id).await {
        Ok(_) => {
            tracing::info!(run = %id, user = %p.user, "run cancelled from the console");
            Redirect::to(&format!("/runs/{}", html::segment(&id))).into_response()
        }
        Err(e) => {
            let body = format!(r#"<div class="error">{}</div>"#, html::escape(&e.to_string()));
            (StatusCode::CONFLICT, Html(html::page("Cannot cancel", "/runs", Some(&p), &body))).into_response()
        }
    }
}

async fn assets(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    page!(c, headers, q, "/assets", "Data assets", "/assets", |p| pages::assets(&c).await)
}

async fn asset(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>, Path(name): Path<String>) -> Response {
    let path = format!("/assets/{}", html::segment(&name));
    page!(c, headers, q, &path, &format!("Asset {name}"), "/assets", |p| pages::asset(&c, &name).await)
}

async fn models(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    page!(c, headers, q, "/models", "Models", "/models", |p| pages::models(&c).await)
}

async fn model(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>, Path(name): Path<String>) -> Response {
    let path = format!("/models/{}", html::segment(&name));
    page!(c, headers, q, &path, &format!("Model {name}"), "/models", |p| pages::model(&c, &name).await)
}

async fn drift_list(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    page!(c, headers, q, "/drift", "Drift", "/drift", |p| pages::drift_list(&c).await)
}

async fn drift(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>, Path(name): Path<String>) -> Response {
    let path = format!("/drift/{}", html::segment(&name));
    page!(c, headers, q, &path, &format!("Drift: {name}"), "/drift", |p| pages::drift(&c, &name).await)
}

async fn cluster(State(c): Shared, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    page!(c, headers, q, "/cluster", "Cluster", "/cluster", |p| pages::cluster(&c).await)
}

async fn metrics(State(c): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = who(&c, &headers) {
        return r.into_response();
    }
    match pages::metrics(&c).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
