//! PostgreSQL as a source: typed, partitioned, incremental reads; and as a sink: a serving
//! table upserted per micro-batch ([`Upserter`]).
//!
//! [`plan`] runs on the client (columns, types, partition predicates, watermark window);
//! [`read_partition`] runs once per partition wherever the engine schedules it.

mod config;
mod sink;
mod source;
mod types;

pub use config::PostgresConnection;
pub use sink::{ServingTable, Upserter};
pub use source::{PgColumn, PostgresPlan, Watermark, connect, connect_url, plan, read_partition};
pub use types::PgKind;
