//! Reading PostgreSQL in parallel: a plan of partition predicates made once on the client, and
//! one streaming read per partition, run wherever the engine schedules it.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use super::config::PostgresConnection;
use super::types::{Builder, PgKind};
use crate::error::{Error, Result};
use crate::relational::{FilterClass, TableRead, batch, ranges};

/// One column of the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgColumn {
    /// Its name.
    pub name: String,
    /// How it is read.
    pub kind: PgKind,
}

/// The rows a re-run reads: above the previous watermark, up to the one taken at planning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watermark {
    /// The watermark column.
    pub column: String,
    /// Its PostgreSQL type name (for literals).
    pub type_name: String,
    /// Rows strictly above this were not read before (None: first run).
    pub since: Option<String>,
    /// The column's maximum when the read was planned: the next run's `since`.
    pub upto: Option<String>,
}

/// What every partition read needs; made once on the client, carried in the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostgresPlan {
    /// The source's name in the job (for errors and lineage).
    pub source: String,
    /// The connection (the password stays a reference).
    pub connection: PostgresConnection,
    /// `FROM` clause: a quoted table or `(query) AS q`.
    pub from: String,
    /// The table or query, as the user named it.
    pub label: String,
    /// The columns.
    pub columns: Vec<PgColumn>,
    /// One predicate per partition.
    pub partitions: Vec<String>,
    /// Incremental bounds, when a watermark column is set.
    pub watermark: Option<Watermark>,
    /// A condition of the query sent to the source with every partition's read.
    #[serde(default)]
    pub filter: Option<String>,
}

impl PostgresPlan {
    /// The Arrow schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|c| Field::new(&c.name, c.kind.arrow(), true)).collect::<Vec<_>>(),
        ))
    }

    /// How column `name` may be compared in a condition sent to PostgreSQL.
    pub fn filter_class(&self, name: &str) -> Option<FilterClass> {
        let column = self.columns.iter().find(|c| c.name == name)?;
        Some(match &column.kind {
            PgKind::Int2 | PgKind::Int4 | PgKind::Int8 | PgKind::Float4 | PgKind::Float8 | PgKind::Numeric { .. } => {
                FilterClass::Number
            }
            PgKind::Text => FilterClass::TextEquality,
            PgKind::Bool => FilterClass::Bool,
            PgKind::Date => FilterClass::Date,
            PgKind::Timestamp => FilterClass::Timestamp(false),
            PgKind::Timestamptz => FilterClass::Timestamp(true),
            PgKind::Uuid | PgKind::Json | PgKind::Bytea | PgKind::Array(_) => FilterClass::NullOnly,
            PgKind::Unmapped(_) => return None,
        })
    }

    /// `source table` as lineage records it, with the watermark window.
    pub fn lineage(&self) -> String {
        let base = self.lineage_of_rows();
        match &self.filter {
            Some(filter) => format!("{base} where {filter}"),
            None => base,
        }
    }

    fn lineage_of_rows(&self) -> String {
        match &self.watermark {
            Some(w) => format!(
                "postgres:{}/{} {} in ({}, {}]",
                self.connection.database,
                self.label,
                w.column,
                w.since.as_deref().unwrap_or("-inf"),
                w.upto.as_deref().unwrap_or("-inf")
            ),
            None => format!("postgres:{}/{}", self.connection.database, self.label),
        }
    }
}

/// Opens a connection; errors name the source, host and database, never the password.
pub async fn connect(source: &str, conn: &PostgresConnection) -> Result<Client> {
    connect_to(&format!("source '{source}'"), &format!("sources.{source}.password"), conn).await
}

/// Opens a connection for `what` (e.g. `source 'crm'`); `password_key` names the password
/// setting in errors.
pub(crate) async fn connect_to(what: &str, password_key: &str, conn: &PostgresConnection) -> Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&conn.host)
        .port(conn.port)
        .user(&conn.user)
        .dbname(&conn.database)
        .application_name("sluice")
        .connect_timeout(Duration::from_secs(conn.connect_timeout_s));
    if let Some(password) = &conn.password {
        let secret = password.resolve(password_key).map_err(Error::Config)?;
        config.password(secret.expose());
    }
    let tls_key = format!("{}.tls", password_key.rsplit_once('.').map_or(password_key, |(prefix, _)| prefix));
    let tls = conn.tls.as_ref().map(|t| t.client_config(&tls_key)).transpose()?.flatten();
    let at = format!("PostgreSQL at {}:{} database '{}' as '{}'", conn.host, conn.port, conn.database, conn.user);
    connect_config(what, &at, config, tls).await
}

/// Opens a connection from a `postgres://` URL for `what` (e.g. the run catalog). Besides what
/// tokio-postgres reads, it takes libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
/// `verify-full`) and `sslrootcert` (a CA PEM file) parameters; errors never show the URL.
pub async fn connect_url(what: &str, url: &str) -> Result<Client> {
    let bad = |why: String| Error::Config(format!("{what}: {why}"));
    let mut parsed = url::Url::parse(url).map_err(|e| bad(format!("not a postgres:// URL ({e})")))?;
    let mut tls = crate::tls::TlsOptions { mode: crate::tls::TlsMode::Disable, ca: None };
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => {
                tls.mode = match value.as_ref() {
                    // "prefer" falls back to plain TCP silently in libpq; here it means "encrypt".
                    "prefer" => crate::tls::TlsMode::Require,
                    other => other.parse().map_err(|e: Error| bad(format!("sslmode: {e}")))?,
                }
            }
            "sslrootcert" => tls.ca = Some(value.into_owned().into()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    let config: tokio_postgres::Config =
        parsed.as_str().parse().map_err(|e| bad(format!("the PostgreSQL URL does not parse: {e}")))?;
    let key = format!("{what} (sslmode/sslrootcert)");
    let tls = tls.client_config(&key)?;
    let host = parsed.host_str().unwrap_or("localhost");
    let at = format!("PostgreSQL at {host}:{} database '{}'", parsed.port().unwrap_or(5432), parsed.path().trim_start_matches('/'));
    connect_config(what, &at, config, tls).await
}

/// Connects with `config`, over TLS when `tls` is set; `at` says where in errors.
async fn connect_config(
    what: &str,
    at: &str,
    mut config: tokio_postgres::Config,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Client> {
    let failed = |e: tokio_postgres::Error| {
        let how = if tls.is_some() { " over TLS" } else { "" };
        // The server's own reason (e.g. pg_hba's "no encryption") is in the error's source.
        let detail = std::error::Error::source(&e).map(|s| format!(" ({s})")).unwrap_or_default();
        Error::Source(format!("{what}: cannot connect to {at}{how}: {e}{detail}"))
    };
    let closed = |e: tokio_postgres::Error| tracing::debug!(error = %e, "postgres connection closed");
    match &tls {
        None => {
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(async move { connection.await.unwrap_or_else(closed) });
            Ok(client)
        }
        Some(tls) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.as_ref().clone());
            let (client, connection) = config.connect(connector).await.map_err(failed)?;
            tokio::spawn(async move { connection.await.unwrap_or_else(closed) });
            Ok(client)
        }
    }
}

/// `"a"."b"` from `a.b`.
fn quote_table(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str, type_name: &str) -> String {
    format!("'{}'::{type_name}", text.replace('\'', "''"))
}

/// Plans a read: columns and types, partition predicates, watermark window. `since` is the
/// watermark the previous version recorded.
pub async fn plan(
    source: &str,
    conn: &PostgresConnection,
    read: &TableRead,
    since: Option<String>,
) -> Result<PostgresPlan> {
    let client = connect(source, conn).await?;
    let err = |what: &str, e: tokio_postgres::Error| Error::Source(format!("source '{source}': {what}: {e}"));
    let (from, label) = match (&read.table, &read.query) {
        (Some(table), None) => (quote_table(table), table.clone()),
        (None, Some(query)) => (format!("({query}) AS sluice_q"), "query".to_string()),
        _ => {
            return Err(Error::Config(format!(
                "sources.{source}: give exactly one of table = \"schema.table\" or query = \"SELECT ...\""
            )));
        }
    };
    let statement = client
        .prepare(&format!("SELECT * FROM {from} LIMIT 0"))
        .await
        .map_err(|e| err(&format!("cannot read the columns of {label}"), e))?;
    let typmods: Vec<(String, i32)> = match &read.table {
        Some(table) => client
            .query(
                "SELECT attname::text, atttypmod FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 \
                 AND NOT attisdropped",
                &[table],
            )
            .await
            .map_err(|e| err(&format!("cannot read the column types of {label}"), e))?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
            .collect(),
        None => Vec::new(),
    };
    let mut columns = Vec::new();
    for column in statement.columns() {
        let typmod = typmods.iter().find(|(n, _)| n == column.name()).map_or(-1, |(_, m)| *m);
        let kind = PgKind::of(column.type_(), typmod).unwrap_or_else(|| PgKind::Unmapped(column.type_().name().to_string()));
        columns.push(PgColumn { name: column.name().to_string(), kind });
    }
    let type_of = |name: &str| statement.columns().iter().find(|c| c.name() == name).map(|c| c.type_().clone());

    let watermark = match &read.watermark_column {
        None => None,
        Some(column) => {
            let ty = type_of(column).ok_or_else(|| {
                Error::Config(format!("sources.{source}.watermark_column: {label} has no column '{column}'"))
            })?;
            let mut w = Watermark { column: column.clone(), type_name: ty.name().to_string(), since, upto: None };
            let row = client
                .query_one(&format!("SELECT max({})::text FROM {from}", quote_ident(column)), &[])
                .await
                .map_err(|e| err("cannot read the watermark", e))?;
            w.upto = row.get::<_, Option<String>>(0);
            Some(w)
        }
    };
    let window = watermark_predicate(&watermark);

    let n = read.partitions.max(1);
    let partitions = match (&read.partition_column, &read.table) {
        (Some(column), _) => {
            let ty = type_of(column).ok_or_else(|| {
                Error::Config(format!("sources.{source}.partition_column: {label} has no column '{column}'"))
            })?;
            let q = quote_ident(column);
            let expr = match ty {
                tokio_postgres::types::Type::INT2
                | tokio_postgres::types::Type::INT4
                | tokio_postgres::types::Type::INT8 => {
                    format!("{q}::bigint")
                }
                tokio_postgres::types::Type::DATE
                | tokio_postgres::types::Type::TIMESTAMP
                | tokio_postgres::types::Type::TIMESTAMPTZ => format!("floor(extract(epoch from {q}))::bigint"),
                other => {
                    return Err(Error::Config(format!(
                        "sources.{source}.partition_column: '{column}' is {}; use an integer, date or timestamp column",
                        other.name()
                    )));
                }
            };
            let row = client
                .query_one(&format!("SELECT min({expr}), max({expr}) FROM {from} WHERE {window}"), &[])
                .await
                .map_err(|e| err("cannot read the partition column's range", e))?;
            let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            ranges(&expr, lo, hi, n)
        }
        (None, Some(table)) => {
            // By physical layout: ranges of heap pages (TID range scans).
            let row = client
                .query_one(
                    "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint)::bigint",
                    &[table],
                )
                .await
                .map_err(|e| err("cannot read the table's size", e))?;
            let pages: i64 = row.get(0);
            let step = (pages / n as i64).max(1);
            let mut parts = Vec::new();
            let mut lo = 0i64;
            for i in 0..n {
                if i + 1 == n || lo + step >= pages {
                    parts.push(format!("ctid >= '({lo},0)'::tid"));
                    break;
                }
                parts.push(format!("ctid >= '({lo},0)'::tid AND ctid < '({},0)'::tid", lo + step));
                lo += step;
            }
            parts
        }
        (None, None) => vec!["TRUE".to_string()],
    };
    Ok(PostgresPlan {
        source: source.to_string(),
        connection: conn.clone(),
        from,
        label,
        columns,
        partitions,
        watermark,
        filter: None,
    })
}

fn watermark_predicate(w: &Option<Watermark>) -> String {
    let Some(w) = w else { return "TRUE".to_string() };
    let col = quote_ident(&w.column);
    let mut p = Vec::new();
    if let Some(since) = &w.since {
        p.push(format!("{col} > {}", literal(since, &w.type_name)));
    }
    match &w.upto {
        Some(upto) => p.push(format!("{col} <= {}", literal(upto, &w.type_name))),
        None => p.push("FALSE".to_string()),
    }
    p.join(" AND ")
}

/// Streams partition `partition` of `plan` as batches of at most `batch_rows` rows, with the
/// columns in `projection` (all when None).
pub fn read_partition(
    plan: PostgresPlan,
    partition: usize,
    projection: Option<Vec<usize>>,
    batch_rows: usize,
) -> impl Stream<Item = Result<RecordBatch>> + Send {
    async_stream::try_stream! {
        let predicate = plan.partitions.get(partition).cloned().ok_or_else(|| {
            Error::Source(format!("source '{}': no partition {partition}", plan.source))
        })?;
        let indices: Vec<usize> = projection.unwrap_or_else(|| (0..plan.columns.len()).collect());
        crate::relational::check_mapped(
            &plan.source,
            &plan.label,
            indices.iter().map(|&i| (plan.columns[i].name.as_str(), plan.columns[i].kind.unmapped())),
            |name| format!("{q}::text AS {q}", q = quote_ident(name)),
        )?;
        let full = plan.schema();
        let schema = Arc::new(full.project(&indices).map_err(|e| Error::Source(e.to_string()))?);
        let select = if indices.is_empty() {
            "1".to_string()
        } else {
            indices.iter().map(|&i| plan.columns[i].kind.select(&quote_ident(&plan.columns[i].name))).collect::<Vec<_>>().join(", ")
        };
        let filter = plan.filter.as_deref().unwrap_or("TRUE");
        let sql = format!("SELECT {select} FROM {} WHERE ({predicate}) AND ({}) AND ({filter})", plan.from, watermark_predicate(&plan.watermark));
        let client = connect(&plan.source, &plan.connection).await?;
        let rows = client.query_raw(&sql, std::iter::empty::<i32>()).await.map_err(|e| {
            Error::Source(format!("source '{}': reading {} (partition {partition}) failed: {e}", plan.source, plan.label))
        })?;
        futures::pin_mut!(rows);
        let mut builders = indices
            .iter()
            .map(|&i| Builder::new(&plan.columns[i].kind))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::Source)?;
        let mut n = 0usize;
        let mut total = 0u64;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| Error::Source(format!(
                "source '{}': reading {} (partition {partition}) failed after {total} rows: {e}", plan.source, plan.label
            )))?;
            for (b, builder) in builders.iter_mut().enumerate() {
                builder.push(&row, b).map_err(|why| Error::Source(format!(
                    "source '{}': {} column '{}' in partition {partition}, row {}: {why}",
                    plan.source, plan.label, plan.columns[indices[b]].name, total + n as u64 + 1
                )))?;
            }
            n += 1;
            if n == batch_rows {
                yield finish(&schema, &mut builders, n)?;
                total += n as u64;
                n = 0;
            }
        }
        if n > 0 {
            yield finish(&schema, &mut builders, n)?;
        }
    }
}

fn finish(schema: &SchemaRef, builders: &mut [Builder], rows: usize) -> Result<RecordBatch> {
    batch(schema, builders.iter_mut().map(Builder::finish).collect(), rows)
}
