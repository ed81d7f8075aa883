//! Settings of a PostgreSQL source: the connection, then what to read from it.

use serde::{Deserialize, Serialize};

use crate::datastore::SecretRef;

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
}

/// What to read: a table (partitioned by a column's range or by its physical pages) or a query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRead {
    /// `schema.table` or `table`.
    pub table: Option<String>,
    /// A query instead of a table (read as one partition unless `partition_column` is set).
    pub query: Option<String>,
    /// An integer, date or timestamp column whose range is split into `partitions` reads.
    pub partition_column: Option<String>,
    /// Parallel reads (default 4); each is one task on some executor.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// A column that grows with every insert and update (e.g. `updated_at`): re-runs read only
    /// rows above the watermark the previous version recorded.
    pub watermark_column: Option<String>,
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
fn default_partitions() -> usize {
    4
}
