//! Connection settings of a PostgreSQL source (what to read is a [`crate::relational::TableRead`]).

use serde::{Deserialize, Serialize};

use sluice_lake::datastore::SecretRef;

/// How to reach the database. The password is a secret reference, resolved where the
/// connection is opened (the client to plan, each executor to read).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnection {
    /// Host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password: `{ env = "PGPASSWORD" }` or `{ file = "/run/secrets/pg" }` (none: trust/peer auth).
    pub password: Option<SecretRef>,
    /// Database name.
    pub database: String,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: u64,
    /// TLS: `{ mode = "verify-full", ca = "/path/ca.pem" }` (default: plain TCP).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsOptions>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "postgres".into()
}
fn default_connect_timeout() -> u64 {
    10
}
