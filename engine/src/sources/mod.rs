//! Sources as DataFusion tables that read on the executors: the client plans the partitions
//! (one query each), the plan carries them to the scheduler and executors ([`crate::codec`]),
//! and each executor task streams its own partitions straight from the source system.

pub mod files;
pub mod plan;
pub mod table;

pub use files::SourceFiles;
pub use plan::SourcePlan;
pub use table::SourceTable;
