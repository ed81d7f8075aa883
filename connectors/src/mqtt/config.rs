//! MQTT settings: the broker connection apart from what is read and how batches are cut.

use serde::{Deserialize, Serialize};

use sluice_lake::datastore::SecretRef;

/// How to reach the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConnection {
    /// Broker host (default 127.0.0.1).
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port (default 1883).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id; the broker keeps its session (and unacknowledged messages) across runs
    /// (default `sluice-<source>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, when the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`{ env = "NAME" }` or `{ file = "PATH" }`).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// TLS: `{ mode = "verify-full", ca = "/path/ca.pem" }` (default: plain TCP; brokers
    /// usually listen for TLS on 8883).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsOptions>,
}

/// What to subscribe to and how to cut micro-batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRead {
    /// Topic filters (`devices/+/events`).
    pub topics: Vec<String>,
    /// A micro-batch closes at this many messages (default 10000)...
    #[serde(default = "default_batch_messages")]
    pub batch_messages: usize,
    /// ...or this many seconds after its first message (default 5).
    #[serde(default = "default_batch_seconds")]
    pub batch_seconds: f64,
    /// Stop after this many seconds without a message (default or 0: run until stopped).
    #[serde(default)]
    pub stop_when_idle_s: Option<f64>,
    /// Stop after this many micro-batches (default: run until stopped).
    #[serde(default)]
    pub max_batches: Option<u64>,
    /// Where messages are kept from their acknowledgement until their batch lands (default
    /// `$SLUICE_SPOOL_DIR`, else `~/.local/state/sluice/mqtt`; one folder per client id inside).
    /// It must be on a disk that outlives the process: a message acknowledged to the broker
    /// exists only there until it lands.
    #[serde(default)]
    pub spool_dir: Option<String>,
    /// A message larger than this is quarantined (its size and first KiB), not landed
    /// (default 16 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_batch_messages() -> usize {
    10_000
}
fn default_batch_seconds() -> f64 {
    5.0
}
fn default_max_message_bytes() -> usize {
    16 << 20
}

impl MqttConnection {
    /// The client id: the broker keeps this session's messages under it.
    pub fn client_id(&self, source: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("sluice-{source}"))
    }
}

impl MqttRead {
    /// The spool folder of client `client_id`.
    pub fn spool_path(&self, client_id: &str) -> std::path::PathBuf {
        let base = match (&self.spool_dir, std::env::var_os("SLUICE_SPOOL_DIR"), std::env::var_os("HOME")) {
            (Some(dir), _, _) => std::path::PathBuf::from(dir),
            (None, Some(dir), _) => std::path::PathBuf::from(dir),
            (None, None, Some(home)) => std::path::PathBuf::from(home).join(".local/state/sluice/mqtt"),
            (None, None, None) => std::path::PathBuf::from(".sluice/mqtt"),
        };
        // A client id may hold any character; the folder name keeps the safe ones.
        let name: String = client_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        base.join(name)
    }
}

