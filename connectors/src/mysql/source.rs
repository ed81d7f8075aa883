//! Reading MySQL / MariaDB in parallel: partition predicates planned once on the client, one
//! streaming read per partition wherever the engine schedules it.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::Stream;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Value};
use serde::{Deserialize, Serialize};

use super::config::MysqlConnection;
use super::types::{Builder, MyKind};
use crate::error::{Error, Result};
use crate::relational::{FilterClass, TableRead, batch, ranges};

/// One column of the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MyColumn {
    /// Its name.
    pub name: String,
    /// How it is read.
    pub kind: MyKind,
}

/// What every partition read needs; made once on the client, carried in the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MysqlPlan {
    /// The source's name in the job.
    pub source: String,
    /// The connection (the password stays a reference).
    pub connection: MysqlConnection,
    /// `FROM` clause: a quoted table or `(query) AS q`.
    pub from: String,
    /// The table or query, as the user named it.
    pub label: String,
    /// The columns.
    pub columns: Vec<MyColumn>,
    /// One predicate per partition.
    pub partitions: Vec<String>,
    /// Incremental window: (column, since, upto).
    pub watermark: Option<(String, Option<String>, Option<String>)>,
    /// A condition of the query sent to the source with every partition's read.
    #[serde(default)]
    pub filter: Option<String>,
}

impl MysqlPlan {
    /// The Arrow schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|c| Field::new(&c.name, c.kind.arrow(), true)).collect::<Vec<_>>(),
        ))
    }

    /// How column `name` may be compared in a condition sent to MySQL. Text is not compared
    /// there: its collations ignore case and trailing spaces, and JSON columns compare as JSON.
    pub fn filter_class(&self, name: &str) -> Option<FilterClass> {
        let column = self.columns.iter().find(|c| c.name == name)?;
        Some(match &column.kind {
            MyKind::Int8
            | MyKind::Int16
            | MyKind::Int32
            | MyKind::Int64
            | MyKind::UInt64AsDecimal
            | MyKind::Float32
            | MyKind::Float64
            | MyKind::Decimal { .. } => FilterClass::Number,
            MyKind::Bool => FilterClass::Bool,
            MyKind::Date => FilterClass::Date,
            MyKind::DateTime | MyKind::Timestamp => FilterClass::Timestamp(false),
            MyKind::Text | MyKind::Binary => FilterClass::NullOnly,
            MyKind::Unmapped(_) => return None,
        })
    }

    /// `mysql:database/table` as lineage records it, with the watermark window.
    pub fn lineage(&self) -> String {
        let base = self.lineage_of_rows();
        match &self.filter {
            Some(filter) => format!("{base} where {filter}"),
            None => base,
        }
    }

    fn lineage_of_rows(&self) -> String {
        match &self.watermark {
            Some((column, since, upto)) => format!(
                "mysql:{}/{} {column} in ({}, {}]",
                self.connection.database,
                self.label,
                since.as_deref().unwrap_or("-inf"),
                upto.as_deref().unwrap_or("-inf")
            ),
            None => format!("mysql:{}/{}", self.connection.database, self.label),
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_table(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Opens a connection with the session in UTC; errors name the source, host and database,
/// never the password.
pub async fn connect(source: &str, conn: &MysqlConnection) -> Result<Conn> {
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(conn.host.clone())
        .tcp_port(conn.port)
        .user(Some(conn.user.clone()))
        .db_name(Some(conn.database.clone()));
    if let Some(password) = &conn.password {
        let secret = password.resolve(&format!("sources.{source}.password")).map_err(Error::Config)?;
        opts = opts.pass(Some(secret.expose().to_string()));
    }
    let tls = conn.tls.as_ref().map(|t| crate::tls::mysql_ssl(t, &format!("sources.{source}.connection.tls"))).transpose()?.flatten();
    let how = if tls.is_some() { " over TLS" } else { "" };
    opts = opts.ssl_opts(tls);
    let mut c = Conn::new(opts).await.map_err(|e| {
        Error::Source(format!(
            "source '{source}': cannot connect to MySQL at {}:{} database '{}' as '{}'{how}: {e}",
            conn.host, conn.port, conn.database, conn.user
        ))
    })?;
    c.query_drop("SET time_zone = '+00:00'")
        .await
        .map_err(|e| Error::Source(format!("source '{source}': cannot set the session time zone: {e}")))?;
    Ok(c)
}

/// Plans a read: columns and types, partition predicates, watermark window.
pub async fn plan(source: &str, conn: &MysqlConnection, read: &TableRead, since: Option<String>) -> Result<MysqlPlan> {
    let mut c = connect(source, conn).await?;
    let err = |what: &str, e: mysql_async::Error| Error::Source(format!("source '{source}': {what}: {e}"));
    let (from, label) = match (&read.table, &read.query) {
        (Some(table), None) => (quote_table(table), table.clone()),
        (None, Some(query)) => (format!("({query}) AS sluice_q"), "query".to_string()),
        _ => {
            return Err(Error::Config(format!(
                "sources.{source}: give exactly one of table = \"table\" or query = \"SELECT ...\""
            )));
        }
    };
    let result = c
        .query_iter(format!("SELECT * FROM {from} LIMIT 0"))
        .await
        .map_err(|e| err(&format!("cannot read the columns of {label}"), e))?;
    let meta = result.columns().map(|c| c.to_vec()).unwrap_or_default();
    drop(result);
    let mut columns = Vec::new();
    for col in &meta {
        let name = col.name_str().to_string();
        let kind = MyKind::of(col.column_type(), col.flags(), col.column_length(), col.decimals(), col.character_set())
            .unwrap_or_else(|| MyKind::Unmapped(format!("{:?}", col.column_type()).trim_start_matches("MYSQL_TYPE_").to_lowercase()));
        columns.push(MyColumn { name, kind });
    }
    let kind_of = |name: &str| columns.iter().find(|c| c.name == name).map(|c| c.kind.clone());

    let watermark = match &read.watermark_column {
        None => None,
        Some(column) => {
            kind_of(column).ok_or_else(|| {
                Error::Config(format!("sources.{source}.watermark_column: {label} has no column '{column}'"))
            })?;
            let upto: Option<String> = c
                .query_first(format!("SELECT CAST(MAX({}) AS CHAR) FROM {from}", quote_ident(column)))
                .await
                .map_err(|e| err("cannot read the watermark", e))?
                .flatten();
            Some((column.clone(), since, upto))
        }
    };
    let window = window(&watermark);

    let n = read.partitions.max(1);
    let column = match (&read.partition_column, &read.table) {
        (Some(column), _) => Some(column.clone()),
        (None, Some(table)) => integer_primary_key(&mut c, table, &conn.database).await?,
        (None, None) => None,
    };
    let partitions = match column {
        None => vec!["TRUE".to_string()],
        Some(column) => {
            let q = quote_ident(&column);
            let expr = match kind_of(&column) {
                Some(MyKind::Int8 | MyKind::Int16 | MyKind::Int32 | MyKind::Int64) => format!("CAST({q} AS SIGNED)"),
                Some(MyKind::Date | MyKind::DateTime | MyKind::Timestamp) => {
                    format!("CAST(UNIX_TIMESTAMP({q}) AS SIGNED)")
                }
                Some(other) => {
                    return Err(Error::Config(format!(
                        "sources.{source}.partition_column: '{column}' is {other:?}; use an integer, date or timestamp column"
                    )));
                }
                None => {
                    return Err(Error::Config(format!(
                        "sources.{source}.partition_column: {label} has no column '{column}'"
                    )));
                }
            };
            let row: Option<(Option<i64>, Option<i64>)> = c
                .query_first(format!("SELECT MIN({expr}), MAX({expr}) FROM {from} WHERE {window}"))
                .await
                .map_err(|e| err("cannot read the partition column's range", e))?;
            let (lo, hi) = row.unwrap_or((None, None));
            ranges(&expr, lo, hi, n)
        }
    };
    let _ = c.disconnect().await;
    Ok(MysqlPlan {
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

/// The table's single-column integer primary key, to split reads by when no column is given.
async fn integer_primary_key(c: &mut Conn, table: &str, database: &str) -> Result<Option<String>> {
    let (schema, name) = table.split_once('.').unwrap_or((database, table));
    let keys: Vec<(String, String)> = c
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_KEY = 'PRI'",
            (schema, name),
        )
        .await
        .map_err(|e| Error::Source(format!("cannot read the primary key of {table}: {e}")))?;
    Ok(match keys.as_slice() {
        [(column, ty)] if ["tinyint", "smallint", "mediumint", "int", "bigint"].contains(&ty.as_str()) => {
            Some(column.clone())
        }
        _ => None,
    })
}

fn window(w: &Option<(String, Option<String>, Option<String>)>) -> String {
    let Some((column, since, upto)) = w else { return "TRUE".to_string() };
    let col = quote_ident(column);
    let mut p = Vec::new();
    if let Some(since) = since {
        p.push(format!("{col} > {}", literal(since)));
    }
    match upto {
        Some(upto) => p.push(format!("{col} <= {}", literal(upto))),
        None => p.push("FALSE".to_string()),
    }
    p.join(" AND ")
}

/// Streams partition `partition` of `plan` as batches of at most `batch_rows` rows, with the
/// columns in `projection` (all when None).
pub fn read_partition(
    plan: MysqlPlan,
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
            |name| format!("CAST({q} AS CHAR) AS {q}", q = quote_ident(name)),
        )?;
        let schema = Arc::new(plan.schema().project(&indices).map_err(|e| Error::Source(e.to_string()))?);
        let select = if indices.is_empty() {
            "1".to_string()
        } else {
            indices.iter().map(|&i| plan.columns[i].kind.select(&quote_ident(&plan.columns[i].name))).collect::<Vec<_>>().join(", ")
        };
        let filter = plan.filter.as_deref().unwrap_or("TRUE");
        let sql = format!("SELECT {select} FROM {} WHERE ({predicate}) AND ({}) AND ({filter})", plan.from, window(&plan.watermark));
        let mut conn = connect(&plan.source, &plan.connection).await?;
        let failed = |total: u64, e: mysql_async::Error| Error::Source(format!(
            "source '{}': reading {} (partition {partition}) failed after {total} rows: {e}", plan.source, plan.label
        ));
        let mut result = conn.query_iter(sql).await.map_err(|e| failed(0, e))?;
        let mut builders = indices.iter().map(|&i| Builder::new(&plan.columns[i].kind)).collect::<std::result::Result<Vec<_>, _>>().map_err(Error::Source)?;
        let (mut n, mut total) = (0usize, 0u64);
        while let Some(row) = result.next().await.map_err(|e| failed(total + n as u64, e))? {
            for (i, builder) in builders.iter_mut().enumerate() {
                let value = match row.as_ref(i) {
                    None | Some(Value::NULL) => None,
                    Some(Value::Bytes(b)) => Some(b.as_slice()),
                    Some(other) => Err(Error::Source(format!("unexpected value {other:?}")))?,
                };
                builder.push(value).map_err(|why| Error::Source(format!(
                    "source '{}': {} column '{}' in partition {partition}, row {}: {why}",
                    plan.source, plan.label, plan.columns[indices[i]].name, total + n as u64 + 1
                )))?;
            }
            n += 1;
            if n == batch_rows {
                yield finish(&schema, &mut builders, n)?;
                total += n as u64;
                n = 0;
            }
        }
        drop(result);
        if n > 0 {
            yield finish(&schema, &mut builders, n)?;
        }
        let _ = conn.disconnect().await;
    }
}

fn finish(schema: &SchemaRef, builders: &mut [Builder], rows: usize) -> Result<RecordBatch> {
    batch(schema, builders.iter_mut().map(Builder::finish).collect(), rows)
}
