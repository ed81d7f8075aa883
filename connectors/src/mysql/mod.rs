//! MySQL and MariaDB as a source: typed, partitioned, incremental reads.
//!
//! [`plan`] runs on the client (columns, types, partition predicates, watermark window);
//! [`read_partition`] runs once per partition wherever the engine schedules it.

mod config;
mod source;
mod types;

pub use config::MysqlConnection;
pub use source::{MysqlPlan, connect, plan, read_partition};
pub use types::MyKind;
