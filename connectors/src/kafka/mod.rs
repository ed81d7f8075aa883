//! Kafka topics (events from devices and services): a consumer group read in micro-batches whose
//! offsets are committed only after what they produced was acknowledged, and an idempotent
//! producer for results and dead letters.

mod config;
mod sink;
mod source;
mod topics;

pub use config::{KafkaConnection, StartFrom};
pub use sink::{Header, Producer, Record};
pub use source::{Consumer, Message, Offsets};
pub use topics::{create_topics, missing_topics};
