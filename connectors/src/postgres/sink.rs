//! PostgreSQL as a sink: a serving table that holds the latest row per key (for example each
//! account's current score), upserted one micro-batch at a time.
//!
//! A batch travels as one JSON parameter and is unpacked by the server
//! (`jsonb_populate_recordset`), so every column type PostgreSQL can cast from JSON works and a
//! batch is one statement. Within a batch the last row of a key wins; against the table, a row
//! replaces the stored one unless it is older (`_timestamp`, when the table has one), so a
//! replayed event after a crash never overwrites a newer score.

use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::config::PostgresConnection;
use crate::error::{Error, Result};

/// Where results are upserted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingTable {
    /// How to reach the database.
    pub connection: PostgresConnection,
    /// The table, `name` or `schema.name`.
    pub table: String,
    /// The key columns: one row per key is kept.
    pub key: Vec<String>,
    /// Create the table (columns from the results, primary key `key`) when it does not exist.
    #[serde(default = "default_create")]
    pub create: bool,
}

fn default_create() -> bool {
    true
}

/// An open serving table.
pub struct Upserter {
    client: Client,
    table: ServingTable,
    statement: Option<(Vec<String>, String)>,
}

impl std::fmt::Debug for Upserter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upserter").field("table", &self.table.table).finish_non_exhaustive()
    }
}

/// `name` (or `schema.name`) as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    name.split('.').map(|part| format!("\"{}\"", part.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

/// The PostgreSQL type a result column is created with.
fn pg_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        _ => "jsonb",
    }
}

impl Upserter {
    /// Connects to the serving table's database.
    pub async fn open(table: &ServingTable) -> Result<Self> {
        if table.key.is_empty() {
            return Err(Error::Config(format!("serving table '{}': give key = [\"column\", ...]", table.table)));
        }
        let label = format!("serving table '{}'", table.table);
        let client = super::source::connect_to(&label, "output.table.connection.password", &table.connection).await?;
        Ok(Self { client, table: table.clone(), statement: None })
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Sink(format!("serving table '{}' in database '{}': {what}: {e}", self.table.table, self.table.connection.database))
    }

    /// Creates the table when asked to and checks that it has the key and every column.
    async fn prepare(&mut self, schema: &Schema) -> Result<()> {
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        for key in &self.table.key {
            if !columns.contains(key) {
                return Err(Error::Config(format!(
                    "serving table '{}': key column '{key}' is not a column of the results ({})",
                    self.table.table,
                    columns.join(", ")
                )));
            }
        }
        let name = quoted(&self.table.table);
        if self.table.create {
            let defs: Vec<String> =
                schema.fields().iter().map(|f| format!("{} {}", quoted(f.name()), pg_type(f.data_type()))).collect();
            let keys: Vec<String> = self.table.key.iter().map(|k| quoted(k)).collect();
            let ddl = format!("CREATE TABLE IF NOT EXISTS {name} ({}, PRIMARY KEY ({}))", defs.join(", "), keys.join(", "));
            self.client.batch_execute(&ddl).await.map_err(|e| self.error("creating it", e))?;
        }
        let list = columns.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(", ");
        let keys = self.table.key.iter().map(|k| quoted(k)).collect::<Vec<_>>().join(", ");
        let updates: Vec<String> = columns
            .iter()
            .filter(|c| !self.table.key.contains(c))
            .map(|c| format!("{} = EXCLUDED.{}", quoted(c), quoted(c)))
            .collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else if columns.iter().any(|c| c == "_timestamp") {
            format!(
                "DO UPDATE SET {} WHERE {name}.\"_timestamp\" IS NULL OR EXCLUDED.\"_timestamp\" IS NULL \
                 OR EXCLUDED.\"_timestamp\" >= {name}.\"_timestamp\"",
                updates.join(", ")
            )
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        // The latest row of each key in the batch: by event time and offset where the rows have
        // them (a query's output order is not the events' order), else the last one sent.
        let mut latest_first: Vec<&str> = ["_timestamp", "_offset"]
            .into_iter()
            .filter(|c| columns.iter().any(|name| name == c))
            .map(|c| if c == "_timestamp" { "\"_timestamp\" DESC NULLS LAST" } else { "\"_offset\" DESC" })
            .collect();
        latest_first.push("ordinality DESC");
        let sql = format!(
            "INSERT INTO {name} ({list}) SELECT {list} FROM (SELECT DISTINCT ON ({keys}) * \
             FROM jsonb_populate_recordset(NULL::{name}, $1::text::jsonb) WITH ORDINALITY AS r \
             ORDER BY {keys}, {}) AS latest ON CONFLICT ({keys}) {on_conflict}",
            latest_first.join(", ")
        );
        self.statement = Some((columns, sql));
        Ok(())
    }

    /// Upserts the rows of `batches`; returns how many rows were sent.
    pub async fn upsert(&mut self, batches: &[RecordBatch]) -> Result<u64> {
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(0) };
        let columns: Vec<String> = first.schema().fields().iter().map(|f| f.name().clone()).collect();
        if self.statement.as_ref().is_none_or(|(known, _)| *known != columns) {
            self.prepare(&first.schema()).await?;
        }
        let mut json = Vec::new();
        {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut json);
            for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                writer.write(batch).map_err(|e| self.error("encoding rows", e))?;
            }
            writer.finish().map_err(|e| self.error("encoding rows", e))?;
        }
        let json = String::from_utf8(json).map_err(|e| self.error("encoding rows", e))?;
        let sql = self.statement.as_ref().map(|(_, sql)| sql.clone()).unwrap_or_default();
        self.client.execute(&sql, &[&json]).await.map_err(|e| self.error("upserting", e))?;
        Ok(batches.iter().map(|b| b.num_rows() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_per_part() {
        assert_eq!(quoted("serving.scores"), "\"serving\".\"scores\"");
        assert_eq!(quoted("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn result_types_map_to_postgres() {
        assert_eq!(pg_type(&DataType::Float32), "real");
        assert_eq!(pg_type(&DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None)), "timestamp");
        assert_eq!(pg_type(&DataType::new_list(DataType::Float32, true)), "jsonb");
    }
}
