//! Model monitoring: how far current inputs and predictions have drifted from the data a model
//! was trained on: the metrics ([`drift`]), profiles of data sets ([`profile`]) and their
//! comparison ([`compare`]); and prediction quality once labels arrive ([`quality`]); the
//! `monitor` command ([`cli`]).

pub mod cli;
pub mod compare;
pub mod drift;
pub mod profile;
pub mod quality;

pub use sluice_catalog::{Error, Result, error};

/// Posts `payload` as JSON to the webhook `url`; returns what happened, naming only the host (a
/// webhook URL often carries a token). Failures are reported, never fatal to the run.
pub async fn notify(url: &str, payload: &serde_json::Value) -> String {
    let host = webhook_host(url);
    let client = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build() {
        Ok(client) => client,
        Err(e) => return format!("webhook not called: {}", e.without_url()),
    };
    let body = payload.to_string();
    let answer = match client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await {
        Ok(r) if r.status().is_success() => format!("{host} answered {}", r.status()),
        Ok(r) => format!("{host} refused it: {}", r.status()),
        Err(e) => format!("{host} unreachable: {}", e.without_url()),
    };
    tracing::info!(webhook = %answer, "drift webhook");
    answer
}

pub use sluice_catalog::models::webhook_host;
